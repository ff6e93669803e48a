//! A real DNS server for delivery tests: hickory-server in this process, on a tokio
//! thread, serving zones built in code on `ip:5301` (UDP and TCP).

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, MX, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::RequestHandler;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;

/// A record: owner (absolute, with the trailing dot) and data.
pub type Rec = (String, RData);

/// An MX record.
pub fn mx(owner: &str, preference: u16, exchange: &str) -> Rec {
    (
        owner.to_owned(),
        RData::MX(MX::new(preference, Name::from_str(exchange).unwrap())),
    )
}

/// An A record.
pub fn a(owner: &str, ip: &str) -> Rec {
    (owner.to_owned(), RData::A(A(ip.parse().unwrap())))
}

/// A running DNS server, stopped on drop.
pub struct DnsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl DnsServer {
    /// Serves zone `origin` (e.g. `test.`) with `records` on `ip:5301`.
    pub fn start(ip: &str, origin: &str, records: Vec<Rec>) -> DnsServer {
        let addr: SocketAddr = format!("{ip}:5301").parse().unwrap();
        let origin_name = Name::from_str(origin).unwrap();
        let mut zone: InMemoryZoneHandler<TokioRuntimeProvider> =
            InMemoryZoneHandler::empty(origin_name.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str("ns.test.").unwrap(),
            Name::from_str("hostmaster.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            5,
        );
        assert!(zone.upsert_mut(
            Record::from_rdata(origin_name.clone(), 60, RData::SOA(soa)),
            1
        ));
        for (owner, data) in records {
            let record = Record::from_rdata(Name::from_str(&owner).unwrap(), 60, data);
            assert!(zone.upsert_mut(record.clone(), 1), "{record}");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin_name), vec![Arc::new(zone)]);
        serve(addr, catalog)
    }
}

/// Serves `handler` (a catalog, or a test handler in front of one) on `addr`, UDP and TCP,
/// on a tokio thread. The sockets are bound before this returns, so the server is
/// reachable at once.
pub fn serve<H: RequestHandler>(addr: SocketAddr, handler: H) -> DnsServer {
    let udp = UdpSocket::bind(addr).unwrap();
    let tcp = std::net::TcpListener::bind(addr).unwrap();
    udp.set_nonblocking(true).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let (stop_tx, stop_rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut server = Server::new(handler);
            server.register_socket(tokio::net::UdpSocket::from_std(udp).unwrap());
            server.register_listener(
                tokio::net::TcpListener::from_std(tcp).unwrap(),
                Duration::from_secs(5),
                65_535,
            );
            let token = server.shutdown_token().clone();
            let _ = stop_tx.send(Box::new(move || token.cancel()));
            let _ = server.block_until_done().await;
        });
    });
    DnsServer {
        addr,
        stop: Some(stop_rx.recv().unwrap()),
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}
