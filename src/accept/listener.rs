//! Accepting connections: every shard binds every listener (glommio sets SO_REUSEPORT),
//! and each accepted connection that [`crate::accept::limits`] admits becomes a session
//! on the shard that accepted it; one it refuses gets 421 4.7.0 and is closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{future, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::config::ListenerConfig;
use crate::runtime::shard::ShardContext;
use crate::session::driver;

/// Binds `address` on this shard, with SO_REUSEPORT.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).map_err(|e| std::io::Error::other(format!("bind {address}: {e}")))
}

/// Accepts connections until the shard stops, starting a session for each.
pub async fn accept_loop(listener: TcpListener, ctx: Rc<ShardContext>, config: ListenerConfig) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            ctx.stop.wait().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let Ok(peer) = stream.peer_addr() else {
                    continue;
                };
                let ctx = ctx.clone();
                match ctx.shared.admission.admit(peer.ip(), Instant::now()) {
                    Ok(admitted) => glommio::spawn_local(async move {
                        ctx.sessions.set(ctx.sessions.get() + 1);
                        driver::run(stream, &ctx, config.tls, config.mode).await;
                        ctx.sessions.set(ctx.sessions.get() - 1);
                        drop(admitted);
                    })
                    .detach(),
                    Err(refusal) => {
                        tracing::info!(client = %peer, ?refusal, "connection refused");
                        let reply = refusal.reply(&ctx.session.hostname);
                        glommio::spawn_local(refuse(stream, reply, ctx.timeouts.command)).detach()
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
