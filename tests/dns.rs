//! The delivery resolver against a real DNS server: hickory-server, in this process on a
//! tokio thread, serving zones built in code on a 127.0.53.x address (one per test, so tests
//! run in parallel without sharing a server or its counters).
//!
//! The server's own code decides truncation (UDP answers to EDNS-less queries are cut at
//! 512 bytes with TC set), NXDOMAIN and NODATA with the SOA, and CNAME chasing. The test
//! handler in front of its catalog only counts queries per protocol and, for names under
//! `broken.test.`, answers SERVFAIL the way a recursive server does when the authorities of
//! a zone are unreachable.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType};
use pigeon::deliver::dns::{DnsError, MailHost, Resolver};

mod common;

/// Per-attempt timeout for resolvers talking to a live server (loopback answers in µs).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The main test zone.
const ZONE: &str = "pigeon.test.";

/// Size of the MX set (with the long names of [`big_mx_host`]) that cannot fit in 512 bytes.
const BIG_MX: usize = 30;

fn name(s: &str) -> Name {
    Name::from_str(s).unwrap()
}

fn v4(s: &str) -> RData {
    RData::A(A(s.parse().unwrap()))
}

fn v6(s: &str) -> RData {
    RData::AAAA(AAAA(s.parse().unwrap()))
}

fn mx(preference: u16, exchange: &str) -> RData {
    RData::MX(MX::new(preference, name(exchange)))
}

fn big_mx_host(i: usize) -> String {
    format!("mail-exchanger-number-{i:02}-with-a-deliberately-long-label.big.{ZONE}")
}

/// The records of `pigeon.test.`: (owner relative to the zone, TTL, data).
fn zone_records() -> Vec<(String, u32, RData)> {
    let mut r: Vec<(String, u32, RData)> = vec![
        // Plain MX set, out of preference order on purpose.
        ("mx".into(), 300, mx(20, "mx2.pigeon.test.")),
        ("mx".into(), 300, mx(10, "mx1.pigeon.test.")),
        ("mx1".into(), 300, v4("127.0.0.1")),
        ("mx2".into(), 300, v4("127.0.0.2")),
        ("mx2".into(), 300, v6("::2")),
        // Two hosts at one preference and a backup; TTL 0 so nothing is cached.
        ("shuffle".into(), 0, mx(10, "a.shuffle.pigeon.test.")),
        ("shuffle".into(), 0, mx(10, "b.shuffle.pigeon.test.")),
        ("shuffle".into(), 0, mx(20, "c.shuffle.pigeon.test.")),
        ("a.shuffle".into(), 0, v4("127.0.1.1")),
        ("b.shuffle".into(), 0, v4("127.0.1.2")),
        ("c.shuffle".into(), 0, v4("127.0.1.3")),
        // No MX: implicit MX.
        ("implicit".into(), 300, v4("127.0.0.3")),
        ("implicit6".into(), 300, v6("2001:db8::25")),
        // MX host with IPv6 only, and one with both families.
        ("six".into(), 300, mx(10, "host6.pigeon.test.")),
        ("host6".into(), 300, v6("2001:db8::1")),
        ("dual".into(), 300, mx(10, "hostdual.pigeon.test.")),
        ("hostdual".into(), 300, v6("2001:db8::2")),
        ("hostdual".into(), 300, v4("127.0.0.4")),
        // RFC 7505.
        ("nullmx".into(), 300, mx(0, ".")),
        // The MX target is the domain itself.
        ("self".into(), 300, mx(10, "self.pigeon.test.")),
        ("self".into(), 300, v4("127.0.0.5")),
        // The same host three times, in different cases and preferences.
        ("dup".into(), 300, mx(30, "MX1.pigeon.test.")),
        ("dup".into(), 300, mx(10, "mx1.pigeon.test.")),
        ("dup".into(), 300, mx(20, "mx1.PIGEON.test.")),
        // An MX target that looks like an IP address: a name (served by its own zone below).
        ("literal".into(), 300, mx(10, "192.0.2.1.")),
        // MX hosts that do not exist, or exist without addresses.
        ("noaddr".into(), 300, mx(10, "missing.pigeon.test.")),
        ("noaddr".into(), 300, mx(20, "mx-no-address.pigeon.test.")),
        ("mx-no-address".into(), 300, mx(10, "mx1.pigeon.test.")),
        // One MX host does not resolve; the other does.
        ("partial".into(), 300, mx(10, "missing.pigeon.test.")),
        ("partial".into(), 300, mx(20, "mx1.pigeon.test.")),
        // An alias for a domain with MX records.
        (
            "alias".into(),
            300,
            RData::CNAME(CNAME(name("mx.pigeon.test."))),
        ),
        // An MX host under a zone that fails.
        ("broken-host".into(), 300, mx(10, "mx.broken.test.")),
        // Short TTL, for expiry.
        ("short".into(), 1, mx(10, "mx1.pigeon.test.")),
    ];
    for i in 0..BIG_MX {
        let host = big_mx_host(i);
        let owner = host.trim_end_matches(&format!(".{ZONE}")).to_string();
        r.push(("big".into(), 300, mx(u16::try_from(i).unwrap() + 1, &host)));
        r.push((owner, 300, v4(&format!("127.0.2.{i}"))));
    }
    r
}

/// A zone with an SOA (negative TTL 60) and `records` (owners relative to `origin`, `@`
/// for the apex).
fn zone(origin: &str, records: Vec<(String, u32, RData)>) -> InMemoryZoneHandler {
    let origin = name(origin);
    let mut zone: InMemoryZoneHandler<TokioRuntimeProvider> =
        InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let soa = SOA::new(
        name("ns.pigeon.test."),
        name("hostmaster.pigeon.test."),
        1,
        3600,
        600,
        86400,
        60,
    );
    assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
    for (owner, ttl, data) in records {
        let owner = if owner == "@" {
            origin.clone()
        } else {
            name(&owner).append_domain(&origin).unwrap()
        };
        let record = Record::from_rdata(owner, ttl, data);
        assert!(zone.upsert_mut(record.clone(), 1), "{record}");
    }
    zone
}

/// Queries seen by one server, by protocol.
#[derive(Default)]
struct Counts {
    udp: AtomicUsize,
    tcp: AtomicUsize,
}

impl Counts {
    fn udp(&self) -> usize {
        self.udp.load(Ordering::SeqCst)
    }
    fn tcp(&self) -> usize {
        self.tcp.load(Ordering::SeqCst)
    }
}

/// hickory-server's catalog, with counters and a zone that fails.
struct Handler {
    catalog: Catalog,
    counts: Arc<Counts>,
    broken: LowerName,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        match request.protocol() {
            Protocol::Udp => self.counts.udp.fetch_add(1, Ordering::SeqCst),
            Protocol::Tcp => self.counts.tcp.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        let broken = request
            .queries
            .queries()
            .iter()
            .any(|q| self.broken.zone_of(q.name()));
        if broken {
            let response = MessageResponseBuilder::from_message_request(request)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(_) => {
                    let mut metadata =
                        Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
                    metadata.response_code = ResponseCode::ServFail;
                    ResponseInfo::from(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            };
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// A running hickory-server on `addr` (UDP and TCP) with query counters, stopped on drop.
struct DnsServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    #[allow(dead_code)] // held for its Drop, which stops the server
    server: common::dns::DnsServer,
}

impl DnsServer {
    fn start(ip: &str) -> DnsServer {
        let addr: SocketAddr = format!("{ip}:5301").parse().unwrap();
        let counts = Arc::new(Counts::default());
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&name(ZONE)),
            vec![Arc::new(zone(ZONE, zone_records()))],
        );
        catalog.upsert(
            LowerName::new(&name("192.0.2.1.")),
            vec![Arc::new(zone(
                "192.0.2.1.",
                vec![("@".into(), 300, v4("127.0.0.9"))],
            ))],
        );
        let handler = Handler {
            catalog,
            counts: counts.clone(),
            broken: LowerName::new(&name("broken.test.")),
        };
        DnsServer {
            addr,
            counts,
            server: common::dns::serve(addr, handler),
        }
    }

    fn queries(&self) -> usize {
        self.counts.udp() + self.counts.tcp()
    }
}

/// A UDP nameserver that reads every query and never answers.
fn black_hole(ip: &str) -> SocketAddr {
    let socket = StdUdpSocket::bind(format!("{ip}:5301")).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while socket.recv_from(&mut buf).is_ok() {}
    });
    addr
}

/// Runs `f` on a glommio executor, as a shard would.
fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap()
        .run(f)
}

fn names(hosts: &[MailHost]) -> Vec<&str> {
    hosts.iter().map(|h| h.name.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn mx_in_preference_order_with_addresses() {
    let server = DnsServer::start("127.0.53.1");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    let hosts = run(async move { resolver.mail_hosts("mx.pigeon.test").await.unwrap() });
    assert_eq!(
        hosts,
        [
            MailHost {
                name: "mx1.pigeon.test".into(),
                preference: 10,
                addrs: vec![ip("127.0.0.1")],
            },
            MailHost {
                name: "mx2.pigeon.test".into(),
                preference: 20,
                // IPv4 first.
                addrs: vec![ip("127.0.0.2"), ip("::2")],
            },
        ]
    );
}

#[test]
fn equal_preferences_are_shuffled() {
    let server = DnsServer::start("127.0.53.2");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    let orders = run(async move {
        let mut orders = Vec::new();
        for _ in 0..50 {
            let hosts = resolver.mail_hosts("shuffle.pigeon.test").await.unwrap();
            orders.push(names(&hosts).join(" "));
        }
        orders
    });
    let ab = "a.shuffle.pigeon.test b.shuffle.pigeon.test c.shuffle.pigeon.test";
    let ba = "b.shuffle.pigeon.test a.shuffle.pigeon.test c.shuffle.pigeon.test";
    assert!(orders.iter().all(|o| o == ab || o == ba), "{orders:?}");
    // Both orders among 50 draws: fails by chance with probability 2^-49.
    assert!(orders.iter().any(|o| o == ab), "{orders:?}");
    assert!(orders.iter().any(|o| o == ba), "{orders:?}");
    // TTL 0: every MX and A question went to the server each time. The AAAA answers are
    // negative and were cached for the SOA's negative TTL after the first lookup.
    assert_eq!(server.queries(), 7 + 49 * 4);
}

#[test]
fn implicit_mx_and_address_families() {
    let server = DnsServer::start("127.0.53.3");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        let implicit = resolver.mail_hosts("implicit.pigeon.test.").await.unwrap();
        assert_eq!(
            implicit,
            [MailHost {
                name: "implicit.pigeon.test".into(),
                preference: 0,
                addrs: vec![ip("127.0.0.3")],
            }]
        );
        let implicit6 = resolver.mail_hosts("IMPLICIT6.pigeon.test").await.unwrap();
        assert_eq!(implicit6[0].addrs, [ip("2001:db8::25")]);
        let six = resolver.mail_hosts("six.pigeon.test").await.unwrap();
        assert_eq!(names(&six), ["host6.pigeon.test"]);
        assert_eq!(six[0].addrs, [ip("2001:db8::1")]);
        let dual = resolver.mail_hosts("dual.pigeon.test").await.unwrap();
        assert_eq!(dual[0].addrs, [ip("127.0.0.4"), ip("2001:db8::2")]);
    });
}

#[test]
fn permanent_failures() {
    let server = DnsServer::start("127.0.53.4");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        let null = resolver.mail_hosts("nullmx.pigeon.test").await.unwrap_err();
        assert!(matches!(null, DnsError::NullMx), "{null}");
        assert!(null.is_permanent());
        assert_eq!(null.enhanced().to_string(), "5.1.10");

        let nx = resolver
            .mail_hosts("nothing.pigeon.test")
            .await
            .unwrap_err();
        assert!(matches!(nx, DnsError::NxDomain), "{nx}");
        assert_eq!(nx.enhanced().to_string(), "5.1.2");

        // One MX host does not exist, the other exists without addresses: every answer was
        // definite, so this is permanent.
        let none = resolver.mail_hosts("noaddr.pigeon.test").await.unwrap_err();
        assert!(matches!(none, DnsError::NoAddresses), "{none}");
        assert!(none.is_permanent());
        assert_eq!(none.enhanced().to_string(), "5.4.4");
    });
}

#[test]
fn servfail_is_temporary() {
    let server = DnsServer::start("127.0.53.6");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        let e = resolver
            .mail_hosts("example.broken.test")
            .await
            .unwrap_err();
        assert!(matches!(e, DnsError::Temporary(_)), "{e}");
        assert!(!e.is_permanent());
        assert_eq!(e.enhanced().to_string(), "4.4.3");
        assert!(e.to_string().contains("Server Failure"), "{e}");

        // The MX host's zone fails, and it is the only host: temporary, not NoAddresses.
        let e = resolver
            .mail_hosts("broken-host.pigeon.test")
            .await
            .unwrap_err();
        assert!(matches!(e, DnsError::Temporary(_)), "{e}");

        // One host fails permanently (NXDOMAIN), one resolves: the one that resolves.
        let hosts = resolver.mail_hosts("partial.pigeon.test").await.unwrap();
        assert_eq!(names(&hosts), ["mx1.pigeon.test"]);
    });
    // Failures are not cached: the next lookup asks again.
    let before = server.queries();
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        resolver
            .mail_hosts("example.broken.test")
            .await
            .unwrap_err();
        resolver
            .mail_hosts("example.broken.test")
            .await
            .unwrap_err();
    });
    assert_eq!(server.queries(), before + 2);
}

#[test]
fn silent_nameserver_times_out_and_the_next_one_answers() {
    let server = DnsServer::start("127.0.53.7");
    let silent = black_hole("127.0.53.8");
    let timeout = Duration::from_millis(300);

    // Only the silent one: temporary, after one timeout.
    let started = Instant::now();
    let resolver = Resolver::new(vec![silent], timeout);
    let e = run(async move { resolver.mail_hosts("mx.pigeon.test").await.unwrap_err() });
    let elapsed = started.elapsed();
    assert!(matches!(e, DnsError::Temporary(_)), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    // One timeout, not a retry per question; the upper bound is loose for a loaded machine.
    assert!(elapsed >= timeout && elapsed < 10 * timeout, "{elapsed:?}");

    // Silent first, live second: the answer comes from the second, and the resolver sticks
    // to it, so the MX and the four address questions cost one timeout, not five.
    let started = Instant::now();
    let resolver = Resolver::new(vec![silent, server.addr], timeout);
    let (hosts, stats) = run(async move {
        let hosts = resolver.mail_hosts("mx.pigeon.test").await.unwrap();
        (hosts, resolver.stats())
    });
    let elapsed = started.elapsed();
    assert_eq!(names(&hosts), ["mx1.pigeon.test", "mx2.pigeon.test"]);
    // The query count below is the real check that the silent server was asked only once.
    assert!(elapsed >= timeout && elapsed < 10 * timeout, "{elapsed:?}");
    assert_eq!(stats.udp_queries, 6);
    assert_eq!(server.queries(), 5);
}

#[test]
fn truncated_answer_is_fetched_over_tcp() {
    let server = DnsServer::start("127.0.53.9");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    let (hosts, stats) = run(async move {
        let hosts = resolver.mail_hosts("big.pigeon.test").await.unwrap();
        (hosts, resolver.stats())
    });
    assert_eq!(hosts.len(), BIG_MX);
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(host.preference, u16::try_from(i).unwrap() + 1);
        assert_eq!(format!("{}.", host.name), big_mx_host(i));
        assert_eq!(host.addrs, [ip(&format!("127.0.2.{i}"))]);
    }
    // The MX question went over TCP once, after its truncated UDP answer; the address
    // questions fit in UDP.
    assert_eq!(stats.tcp_queries, 1);
    assert_eq!(server.counts.tcp(), 1);
    assert_eq!(server.counts.udp(), 1 + 2 * BIG_MX);
}

#[test]
fn answers_are_cached_for_their_ttl() {
    let server = DnsServer::start("127.0.53.10");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        let first = resolver.mail_hosts("mx.pigeon.test").await.unwrap();
        let asked = server.queries();
        assert_eq!(asked, 5);
        let second = resolver.mail_hosts("MX.pigeon.test.").await.unwrap();
        assert_eq!(names(&first), names(&second));
        assert_eq!(server.queries(), asked, "second lookup went to the server");
        assert_eq!(resolver.stats().cache_hits, 5);

        // Negative answers too (NXDOMAIN, SOA minimum 60).
        resolver
            .mail_hosts("nothing.pigeon.test")
            .await
            .unwrap_err();
        resolver
            .mail_hosts("nothing.pigeon.test")
            .await
            .unwrap_err();
        assert_eq!(server.queries(), asked + 1);

        // A 1-second TTL expires.
        resolver.mail_hosts("short.pigeon.test").await.unwrap();
        let asked = server.queries();
        resolver.mail_hosts("short.pigeon.test").await.unwrap();
        assert_eq!(server.queries(), asked);
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        resolver.mail_hosts("short.pigeon.test").await.unwrap();
        assert_eq!(
            server.queries(),
            asked + 1,
            "MX with TTL 1 was not re-asked"
        );
    });
}

#[test]
fn mx_edge_cases() {
    let server = DnsServer::start("127.0.53.11");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    run(async move {
        // The MX target is the domain itself.
        let own = resolver.mail_hosts("self.pigeon.test").await.unwrap();
        assert_eq!(names(&own), ["self.pigeon.test"]);
        assert_eq!(own[0].preference, 10);
        assert_eq!(own[0].addrs, [ip("127.0.0.5")]);

        // Duplicates: one host, at its best preference.
        let dup = resolver.mail_hosts("dup.pigeon.test").await.unwrap();
        assert_eq!(dup.len(), 1, "{dup:?}");
        assert_eq!(dup[0].preference, 10);

        // "192.0.2.1." is a name, and its A record says 127.0.0.9.
        let literal = resolver.mail_hosts("literal.pigeon.test").await.unwrap();
        assert_eq!(names(&literal), ["192.0.2.1"]);
        assert_eq!(literal[0].addrs, [ip("127.0.0.9")]);

        // The domain is a CNAME: the chain the server returns is followed.
        let alias = resolver.mail_hosts("alias.pigeon.test").await.unwrap();
        assert_eq!(names(&alias), ["mx1.pigeon.test", "mx2.pigeon.test"]);

        // Not a domain name at all.
        let e = resolver.mail_hosts("a..b").await.unwrap_err();
        assert!(matches!(e, DnsError::NxDomain), "{e}");
    });
}

#[test]
fn ipv6_nameserver() {
    // Loopback IPv6 may be missing in some containers; the test needs it, as the resolver
    // must bind [::]:0 for an IPv6 nameserver.
    if StdUdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines have IPv6 loopback"
        );
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    let server = DnsServer::start("[::1]");
    let resolver = Resolver::new(vec![server.addr], TIMEOUT);
    let hosts = run(async move { resolver.mail_hosts("mx.pigeon.test").await.unwrap() });
    assert_eq!(names(&hosts), ["mx1.pigeon.test", "mx2.pigeon.test"]);
}
