//! The resolver's policy: MX lookup and ordering, null and implicit MX, host addresses, and
//! the per-shard TTL cache.
//!
//! [`Resolver::mail_hosts`] asks for the domain's MX records, then for the A and AAAA
//! records of every MX host at once, each question answered from the cache when it can be.
//! Interpreting a response ([`interpret`], [`order_mx`]) is pure code, tested without
//! sockets; only [`Transport`] touches the network.
//!
//! Cache rules:
//! - a positive answer lives for the smallest TTL among the records used, CNAMEs included,
//!   capped at [`MAX_TTL`];
//! - a negative answer (NXDOMAIN, or no record of the type) lives for the SOA's negative
//!   TTL when the response carries the zone's SOA (RFC 2308 §5: the smaller of the SOA
//!   record's TTL and its MINIMUM), [`DEFAULT_NEGATIVE_TTL`] otherwise, capped at
//!   [`MAX_NEGATIVE_TTL`];
//! - failures (timeouts, SERVFAIL) are not cached: the queue's retry is the point;
//! - TTL 0 means "do not cache" (RFC 1035 §3.2.1).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::seq::SliceRandom;

use super::transport::Transport;
use super::{DnsError, MailHost};

/// Longest time a positive answer is cached, whatever its TTL: one day, as unbound's
/// `cache-max-ttl` default. A record changed by its owner is picked up within a day.
const MAX_TTL: u32 = 86_400;

/// Longest time a negative answer is cached. RFC 2308 §5 allows hours, but a domain that
/// was just created (or an MX just added) should not wait long: five minutes, the first
/// retry interval of the default delivery schedule.
const MAX_NEGATIVE_TTL: u32 = 300;

/// Negative answers without an SOA in the authority section (so without a negative TTL):
/// one minute, long enough to absorb a burst of mail to one bad domain.
const DEFAULT_NEGATIVE_TTL: u32 = 60;

/// CNAMEs followed in one answer before giving up. Recursive servers stop chains at 8 to
/// 16 links; a longer one is a loop or a misconfiguration.
const MAX_CNAME_HOPS: usize = 8;

/// MX hosts kept per domain, after ordering. No legitimate domain needs more, and a hostile
/// one must not turn one delivery into hundreds of address queries.
const MAX_MX_HOSTS: usize = 32;

/// Cache entries per shard. When full, expired entries go first, then arbitrary ones:
/// bounded memory matters more than the hit rate of a resolver this far from full.
const MAX_CACHE_ENTRIES: usize = 10_000;

/// Where the system's nameservers are listed (resolv.conf(5)).
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port (RFC 1035 §4.2).
const DNS_PORT: u16 = 53;

/// One shard's resolver: lives on its shard, owns its cache.
///
/// Not `Sync` (cells, no locks): build it on the shard, or build it elsewhere and move it in
/// before first use. Call [`Resolver::mail_hosts`] from any task of the shard; concurrent
/// calls share the cache but not sockets (each question opens its own).
pub struct Resolver {
    transport: Transport,
    cache: RefCell<HashMap<(Name, RecordType), Entry>>,
    cache_hits: Cell<u64>,
}

/// Counters of one resolver since it was created, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Questions sent over UDP (one per nameserver tried).
    pub udp_queries: u64,
    /// Questions retried over TCP because the UDP answer was truncated.
    pub tcp_queries: u64,
    /// Questions answered from the cache.
    pub cache_hits: u64,
}

impl Resolver {
    /// A resolver asking `nameservers` in order (tests use 127.0.0.x:PORT). `timeout`
    /// bounds each attempt: the UDP exchange with one nameserver, and again the TCP retry
    /// if its answer is truncated. A zero timeout makes every attempt time out.
    pub fn new(nameservers: Vec<SocketAddr>, timeout: Duration) -> Resolver {
        Resolver {
            transport: Transport::new(nameservers, timeout),
            cache: RefCell::new(HashMap::new()),
            cache_hits: Cell::new(0),
        }
    }

    /// Nameservers from /etc/resolv.conf (port 53), for when the config gives none.
    ///
    /// As the C library does, a file without `nameserver` lines means 127.0.0.1. IPv6
    /// addresses may carry a numeric zone (`fe80::1%2`); entries with a named zone
    /// (`%eth0`) or that do not parse are skipped.
    pub fn system_nameservers() -> io::Result<Vec<SocketAddr>> {
        Ok(parse_resolv_conf(&std::fs::read_to_string(RESOLV_CONF)?))
    }

    /// The hosts to try for mail to `domain`, in order: MX by preference (equal preferences
    /// shuffled), each with its addresses (A and AAAA); no MX records → the domain itself
    /// (implicit MX, RFC 5321 §5.1).
    ///
    /// `domain` may be in U-labels (converted with IDNA) and may end with a dot; it is
    /// always taken as absolute (no search list). Hosts without an address are left out;
    /// see [`DnsError`] for what happens when that leaves none. Duplicate MX hosts are kept
    /// once, at their best preference; MX targets that look like IP addresses are looked up
    /// as names, as RFC 7505 §3 and RFC 5321 §5.1 require.
    pub async fn mail_hosts(&self, domain: &str) -> Result<Vec<MailHost>, DnsError> {
        let domain = parse_domain(domain)?;
        let targets = match self.lookup(&domain, RecordType::MX).await? {
            Lookup::NxDomain => return Err(DnsError::NxDomain),
            // RFC 5321 §5.1: no MX records, so the domain itself is the host, "as if it had
            // an MX record with a preference of 0".
            Lookup::NoData => vec![(0, domain.clone())],
            Lookup::Found(records) => order_mx(&records, &mut rand::rng())?,
        };

        let lookups = targets.iter().map(|(_, host)| self.addresses(host));
        let results = join_all(lookups.collect()).await;
        let mut hosts = Vec::with_capacity(targets.len());
        let mut failure = None;
        for ((preference, host), result) in targets.into_iter().zip(results) {
            match result {
                Ok(addrs) if !addrs.is_empty() => hosts.push(MailHost {
                    name: ascii_host(&host),
                    preference,
                    addrs,
                }),
                Ok(_) => tracing::debug!(%domain, %host, "mail host has no address"),
                Err(e) => {
                    tracing::debug!(%domain, %host, error = %e, "mail host lookup failed");
                    failure.get_or_insert(e);
                }
            }
        }
        if !hosts.is_empty() {
            Ok(hosts)
        } else {
            // One failed lookup might have found the address we lack: temporary. Only a
            // full set of definite negatives is permanent.
            Err(failure.unwrap_or(DnsError::NoAddresses))
        }
    }

    /// The addresses (A, then AAAA) of one host name, for configured routes: no MX lookup.
    pub async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = parse_domain(host)?;
        match self.addresses(&name).await? {
            addrs if addrs.is_empty() => Err(DnsError::NoAddresses),
            addrs => Ok(addrs),
        }
    }

    /// Counters since this resolver was created.
    pub fn stats(&self) -> Stats {
        Stats {
            udp_queries: self.transport.udp_queries.get(),
            tcp_queries: self.transport.tcp_queries.get(),
            cache_hits: self.cache_hits.get(),
        }
    }

    /// The A then AAAA addresses of `host`, asked concurrently. Succeeds with what it found
    /// when either lookup found something; fails ([`DnsError::Temporary`]) only when nothing
    /// was found and a lookup failed, so that "no address" is reported only when both
    /// answers were definite.
    async fn addresses(&self, host: &Name) -> Result<Vec<IpAddr>, DnsError> {
        let (v4, v6) = futures_lite::future::zip(
            self.lookup(host, RecordType::A),
            self.lookup(host, RecordType::AAAA),
        )
        .await;
        let mut addrs = Vec::new();
        let mut failure = None;
        for result in [v4, v6] {
            match result {
                Ok(Lookup::Found(records)) => {
                    for ip in records.iter().filter_map(address) {
                        if !addrs.contains(&ip) {
                            addrs.push(ip);
                        }
                    }
                }
                Ok(Lookup::NoData | Lookup::NxDomain) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) if addrs.is_empty() => Err(e),
            _ => Ok(addrs),
        }
    }

    /// The `rtype` records of `name`, from the cache or the nameservers.
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Result<Lookup, DnsError> {
        let key = (name.clone(), rtype);
        if let Some(lookup) = self.cached(&key) {
            return Ok(lookup);
        }
        let response = self
            .transport
            .query(name, rtype)
            .await
            .map_err(|e| DnsError::Temporary(format!("{rtype} {name}: {e}")))?;
        let (lookup, ttl) = interpret(&response, name, rtype)
            .map_err(|reason| DnsError::Temporary(format!("{rtype} {name}: {reason}")))?;
        self.remember(key, lookup.clone(), ttl);
        Ok(lookup)
    }

    fn cached(&self, key: &(Name, RecordType)) -> Option<Lookup> {
        let mut cache = self.cache.borrow_mut();
        let entry = cache.get(key)?;
        if entry.expires <= Instant::now() {
            cache.remove(key);
            return None;
        }
        self.cache_hits.set(self.cache_hits.get() + 1);
        Some(entry.lookup.clone())
    }

    fn remember(&self, key: (Name, RecordType), lookup: Lookup, ttl: u32) {
        if ttl == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHE_ENTRIES {
            cache.retain(|_, entry| entry.expires > now);
        }
        if cache.len() >= MAX_CACHE_ENTRIES {
            if let Some(victim) = cache.keys().next().cloned() {
                cache.remove(&victim);
            }
        }
        let expires = now + Duration::from_secs(u64::from(ttl));
        cache.insert(key, Entry { lookup, expires });
    }
}

/// A cached answer and when it stops being valid.
struct Entry {
    lookup: Lookup,
    expires: Instant,
}

/// What the nameservers said about one name and type.
#[derive(Clone, Debug, PartialEq)]
enum Lookup {
    /// The records of the asked type at the end of the CNAME chain (never empty).
    Found(Vec<RData>),
    /// The name exists but has no record of this type (NOERROR, no answer: "NODATA").
    NoData,
    /// The name does not exist (NXDOMAIN; RFC 6604: for the last name of a CNAME chain).
    NxDomain,
}

/// Reads a NOERROR or NXDOMAIN response to (`name`, `rtype`) into a [`Lookup`] and the
/// seconds it may be cached.
///
/// Recursive servers put the whole CNAME chain in the answer section (RFC 1034 §4.3.2
/// step 3a), so the chain is followed there, from `name` on. Records owned by other names
/// are ignored: they answer nothing we asked.
fn interpret(
    response: &Message,
    name: &Name,
    rtype: RecordType,
) -> Result<(Lookup, u32), &'static str> {
    let mut owner = name;
    let mut ttl = MAX_TTL;
    for _ in 0..=MAX_CNAME_HOPS {
        let records: Vec<_> = response
            .answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name == *owner)
            .collect();
        if !records.is_empty() {
            let ttl = records.iter().map(|r| r.ttl).fold(ttl, u32::min);
            let data = records.into_iter().map(|r| r.data.clone()).collect();
            return Ok((Lookup::Found(data), ttl));
        }
        let alias = response.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == *owner => Some((r.ttl, &target.0)),
            _ => None,
        });
        match alias {
            Some((alias_ttl, target)) => {
                ttl = ttl.min(alias_ttl);
                owner = target;
            }
            None => {
                let lookup = match response.metadata.response_code {
                    ResponseCode::NXDomain => Lookup::NxDomain,
                    _ => Lookup::NoData,
                };
                return Ok((lookup, negative_ttl(response)));
            }
        }
    }
    Err("CNAME chain too long")
}

/// How long a negative answer may be cached (RFC 2308 §5), within our bounds.
fn negative_ttl(response: &Message) -> u32 {
    let soa = response.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    });
    soa.unwrap_or(DEFAULT_NEGATIVE_TTL).min(MAX_NEGATIVE_TTL)
}

/// Turns MX records into the hosts to try: by preference, equal preferences in random order
/// (RFC 5321 §5.1, so that load spreads over equal hosts), each host once, at most
/// [`MAX_MX_HOSTS`].
///
/// An MX whose exchange is the root (`.`) names no host (RFC 7505 §3). If that leaves
/// nothing, the domain has a null MX and accepts no mail. A `.` next to real hosts breaks
/// RFC 7505's "MUST NOT advertise any other MX", and we use the real hosts.
fn order_mx(records: &[RData], rng: &mut impl rand::Rng) -> Result<Vec<(u16, Name)>, DnsError> {
    let mut hosts: Vec<(u16, Name)> = records
        .iter()
        .filter_map(|r| match r {
            RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
            _ => None,
        })
        .filter(|(_, exchange)| !has_no_labels(exchange))
        .collect();
    if hosts.is_empty() {
        return Err(DnsError::NullMx);
    }
    hosts.shuffle(rng);
    // A stable sort keeps the shuffled order within each preference.
    hosts.sort_by_key(|(preference, _)| *preference);
    // After the sort, the first occurrence of a host is its best preference.
    let mut seen = HashSet::new();
    hosts.retain(|(_, host)| seen.insert(host.clone()));
    hosts.truncate(MAX_MX_HOSTS);
    Ok(hosts)
}

/// The address in an A or AAAA record.
fn address(record: &RData) -> Option<IpAddr> {
    match record {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}

/// Parses a mail domain into an absolute DNS name. A string that is not a valid domain
/// name cannot exist in the DNS, hence [`DnsError::NxDomain`].
fn parse_domain(domain: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_utf8(domain).map_err(|_| DnsError::NxDomain)?;
    if has_no_labels(&name) {
        return Err(DnsError::NxDomain);
    }
    name.set_fqdn(true);
    Ok(name)
}

/// True for the root name (`.`, or the empty string before it is made absolute).
/// (`Name::is_empty` is always false, and `Name::is_root` depends on the FQDN flag.)
fn has_no_labels(name: &Name) -> bool {
    name.iter().next().is_none()
}

/// A host name as the SMTP client wants it: A-labels, no trailing dot.
fn ascii_host(name: &Name) -> String {
    let mut ascii = name.to_ascii();
    if ascii.ends_with('.') {
        ascii.pop();
    }
    ascii
}

/// The `nameserver` lines of a resolv.conf, on port 53; 127.0.0.1 if there are none.
fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => parse_nameserver(addr),
                _ => None,
            }
        })
        .collect();
    if servers.is_empty() {
        servers.push(SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT)));
    }
    servers
}

/// One resolv.conf nameserver address, with an optional numeric IPv6 zone.
fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    let (ip, zone) = match text.split_once('%') {
        Some((ip, zone)) => (ip, Some(zone)),
        None => (text, None),
    };
    match (ip.parse::<IpAddr>().ok()?, zone) {
        (IpAddr::V4(v4), None) => Some(SocketAddr::from((v4, DNS_PORT))),
        (IpAddr::V4(_), Some(_)) => None,
        (IpAddr::V6(v6), zone) => {
            let scope = match zone {
                Some(zone) => zone.parse().ok()?,
                None => 0,
            };
            Some(SocketAddrV6::new(v6, DNS_PORT, 0, scope).into())
        }
    }
}

/// Polls every future until all are done; outputs in input order. The A/AAAA lookups of
/// all MX hosts run at once, so a domain's lookup takes about one round trip, not one per
/// host. (futures-lite has no `join_all`, and this is all we need of one.)
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        // poll_fn returned Ready only once no future was pending, so every output is set.
        .map(|output| output.expect("every future completed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Message, OpCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
    use hickory_proto::rr::Record;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn mx(preference: u16, exchange: &str) -> RData {
        RData::MX(MX::new(preference, name(exchange)))
    }

    fn response(code: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Message {
        let mut m = Message::error_msg(1, OpCode::Query, code);
        m.answers = answers;
        m.authorities = authorities;
        m
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let data = SOA::new(name("ns.t."), name("h.t."), 1, 3600, 600, 86400, minimum);
        Record::from_rdata(name("t."), ttl, RData::SOA(data))
    }

    #[test]
    fn mx_are_ordered_by_preference_and_deduplicated() {
        let records = [
            mx(20, "b.t."),
            mx(10, "a.t."),
            mx(30, "A.t."),
            mx(5, "c.t."),
        ];
        let hosts = order_mx(&records, &mut StdRng::seed_from_u64(1)).unwrap();
        let got: Vec<_> = hosts.iter().map(|(p, h)| (*p, h.to_string())).collect();
        assert_eq!(
            got,
            [
                (5, "c.t.".into()),
                (10, "a.t.".into()),
                (20, "b.t.".to_string())
            ]
        );
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let records = [mx(10, "a.t."), mx(10, "b.t."), mx(20, "c.t.")];
        let mut rng = StdRng::seed_from_u64(7);
        let mut firsts = HashSet::new();
        for _ in 0..50 {
            let hosts = order_mx(&records, &mut rng).unwrap();
            assert_eq!(hosts[2].1, name("c.t."));
            firsts.insert(hosts[0].1.to_string());
        }
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn null_mx() {
        let rng = &mut StdRng::seed_from_u64(1);
        assert!(matches!(
            order_mx(&[mx(0, ".")], rng),
            Err(DnsError::NullMx)
        ));
        // A null MX next to a real one: the real one is used.
        let hosts = order_mx(&[mx(0, "."), mx(10, "a.t.")], rng).unwrap();
        assert_eq!(hosts, [(10, name("a.t."))]);
    }

    #[test]
    fn cname_chain_is_followed_and_ttl_is_the_minimum() {
        let answers = vec![
            Record::from_rdata(name("d.t."), 300, RData::CNAME(CNAME(name("e.t.")))),
            Record::from_rdata(name("e.t."), 100, RData::CNAME(CNAME(name("f.t.")))),
            Record::from_rdata(name("f.t."), 200, mx(10, "mx.t.")),
            // Owned by a name off the chain: ignored.
            Record::from_rdata(name("x.t."), 5, mx(10, "evil.t.")),
        ];
        let r = response(ResponseCode::NoError, answers, vec![]);
        let (lookup, ttl) = interpret(&r, &name("D.t."), RecordType::MX).unwrap();
        assert_eq!(lookup, Lookup::Found(vec![mx(10, "mx.t.")]));
        assert_eq!(ttl, 100);
    }

    #[test]
    fn cname_loop_is_an_error() {
        let answers = vec![
            Record::from_rdata(name("a.t."), 300, RData::CNAME(CNAME(name("b.t.")))),
            Record::from_rdata(name("b.t."), 300, RData::CNAME(CNAME(name("a.t.")))),
        ];
        let r = response(ResponseCode::NoError, answers, vec![]);
        assert!(interpret(&r, &name("a.t."), RecordType::A).is_err());
    }

    #[test]
    fn negative_answers_and_their_ttl() {
        let r = response(ResponseCode::NXDomain, vec![], vec![soa(3600, 120)]);
        assert_eq!(
            interpret(&r, &name("a.t."), RecordType::MX).unwrap(),
            (Lookup::NxDomain, 120)
        );
        let r = response(ResponseCode::NoError, vec![], vec![soa(30, 120)]);
        assert_eq!(
            interpret(&r, &name("a.t."), RecordType::MX).unwrap(),
            (Lookup::NoData, 30)
        );
        let r = response(ResponseCode::NoError, vec![], vec![soa(86400, 86400)]);
        assert_eq!(negative_ttl(&r), MAX_NEGATIVE_TTL);
        let r = response(ResponseCode::NoError, vec![], vec![]);
        assert_eq!(negative_ttl(&r), DEFAULT_NEGATIVE_TTL);
        // Records of another type at the name: still no data for this type.
        let a = Record::from_rdata(name("a.t."), 60, RData::A(A::new(192, 0, 2, 1)));
        let r = response(ResponseCode::NoError, vec![a], vec![]);
        assert_eq!(
            interpret(&r, &name("a.t."), RecordType::AAAA).unwrap().0,
            Lookup::NoData
        );
    }

    #[test]
    fn addresses_from_records() {
        assert_eq!(
            address(&RData::A(A::new(192, 0, 2, 1))),
            Some("192.0.2.1".parse().unwrap())
        );
        let v6: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(address(&RData::AAAA(AAAA(v6))), Some(IpAddr::V6(v6)));
        assert_eq!(address(&mx(1, "a.t.")), None);
    }

    #[test]
    fn domains_parse_to_absolute_names() {
        assert_eq!(parse_domain("Example.ORG").unwrap(), name("example.org."));
        assert_eq!(parse_domain("example.org.").unwrap(), name("example.org."));
        assert_eq!(
            ascii_host(&parse_domain("bücher.example").unwrap()),
            "xn--bcher-kva.example"
        );
        assert!(matches!(parse_domain(""), Err(DnsError::NxDomain)));
        assert!(matches!(parse_domain("."), Err(DnsError::NxDomain)));
        assert!(matches!(
            parse_domain(&"a".repeat(64)),
            Err(DnsError::NxDomain)
        ));
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver 192.0.2.53\n\
                    nameserver 2001:db8::53\nnameserver fe80::1%2\nnameserver fe80::1%eth0\n\
                    nameserver bogus\n; nameserver 192.0.2.1\noptions edns0\n";
        let servers: Vec<String> = parse_resolv_conf(text)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            servers,
            ["192.0.2.53:53", "[2001:db8::53]:53", "[fe80::1%2]:53"]
        );
        assert_eq!(
            parse_resolv_conf("search example.org\n"),
            [SocketAddr::from((Ipv4Addr::LOCALHOST, 53))]
        );
    }

    #[test]
    fn cache_expires_and_skips_ttl_zero() {
        let resolver = Resolver::new(vec![], Duration::from_secs(1));
        let key = (name("a.t."), RecordType::MX);
        resolver.remember(key.clone(), Lookup::NoData, 0);
        assert_eq!(resolver.cached(&key), None);
        resolver.remember(key.clone(), Lookup::NxDomain, 60);
        assert_eq!(resolver.cached(&key), Some(Lookup::NxDomain));
        // Keys are case-insensitive, as names are.
        assert_eq!(
            resolver.cached(&(name("A.T."), RecordType::MX)),
            Some(Lookup::NxDomain)
        );
        assert_eq!(resolver.stats().cache_hits, 2);
        resolver.cache.borrow_mut().get_mut(&key).unwrap().expires = Instant::now();
        assert_eq!(resolver.cached(&key), None);
        assert!(resolver.cache.borrow().is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let resolver = Resolver::new(vec![], Duration::from_secs(1));
        for i in 0..MAX_CACHE_ENTRIES + 10 {
            let key = (name(&format!("h{i}.t.")), RecordType::A);
            resolver.remember(key, Lookup::NoData, 60);
        }
        assert_eq!(resolver.cache.borrow().len(), MAX_CACHE_ENTRIES);
    }

    #[test]
    fn no_nameservers_is_temporary() {
        let resolver = Resolver::new(vec![], Duration::from_secs(1));
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let err = resolver.mail_hosts("example.org").await.unwrap_err();
                assert!(!err.is_permanent(), "{err}");
                assert!(err.to_string().contains("no nameserver"), "{err}");
            });
    }
}
