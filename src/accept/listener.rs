//! Accepting connections: every shard binds every listener (glommio sets SO_REUSEPORT),
//! and each accepted connection becomes a session on the shard that accepted it.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::future;
use glommio::net::TcpListener;

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
                let ctx = ctx.clone();
                glommio::spawn_local(async move {
                    ctx.sessions.set(ctx.sessions.get() + 1);
                    driver::run(stream, &ctx, config.tls, config.mode).await;
                    ctx.sessions.set(ctx.sessions.get() - 1);
                })
                .detach();
            }
            Some(Err(e)) => {
                // Usually EMFILE: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
