//! Accepting connections: every shard binds every listener (glommio sets SO_REUSEPORT),
//! and each accepted connection that [`crate::accept::limits`] admits becomes a session
//! on the shard that accepted it; one it refuses gets 421 4.7.0 and is closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use ipnet::IpNet;

use crate::accept::limits::Admission;
use crate::auth::in_networks;
use crate::config::ListenerConfig;
use crate::session::driver::{self, Client, Services};
use crate::task::TaskCount;

/// What one shard's listeners share: admission, who may relay, the sessions alive, and
/// what each session is given.
pub struct Acceptor {
    /// Connections open, in total and per client, and the limits on them.
    pub admission: Arc<Admission>,
    /// Clients that may relay to any domain (`relay.networks`).
    pub relay_networks: Arc<[IpNet]>,
    /// Sessions alive on this shard: a stopping shard waits for them.
    pub sessions: Rc<TaskCount>,
    /// What each session is given.
    pub services: Rc<Services>,
}

/// Binds `address` on this shard, with SO_REUSEPORT.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(|e| std::io::Error::other(format!("bind {address}: {e}")))
}

/// Accepts connections until the shard stops, starting a session for each.
pub async fn accept_loop(listener: TcpListener, acceptor: Rc<Acceptor>, config: ListenerConfig) {
    let services = &acceptor.services;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            services.stop.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                match acceptor.admission.admit(peer.ip(), Instant::now()) {
                    Ok(admitted) => {
                        let client = Client {
                            peer,
                            may_relay: in_networks(&acceptor.relay_networks, peer.ip()),
                            exempt: acceptor.admission.is_exempt(peer.ip()),
                        };
                        let services = services.clone();
                        acceptor.sessions.spawn(async move {
                            driver::run(stream, &services, client, config.tls, config.mode).await;
                            drop(admitted);
                        });
                    }
                    Err(refusal) => {
                        tracing::info!(client = %peer, ?refusal, "connection refused");
                        let reply = refusal.reply(&services.config.hostname);
                        let timeout = services.timeouts.command;
                        glommio::spawn_local(refuse(stream, reply, timeout)).detach();
                    }
                };
            }
            Some(Err(e)) => {
                // Usually EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Tells a refused client why and closes. The reply is written in plain text even on an
/// implicit-TLS listener: a handshake would cost more than the refusal is meant to save,
/// and the client's TLS layer then fails at once instead of retrying in a loop.
async fn refuse(mut stream: TcpStream, reply: crate::smtp::reply::Reply, timeout: Duration) {
    let _ = stream.set_write_timeout(Some(timeout));
    let mut out = Vec::with_capacity(96);
    reply.write_to(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}
