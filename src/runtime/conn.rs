//! A TCP connection on a shard, in plain text or, after a handshake, TLS: one type for
//! both ends (sessions use the server side of futures-rustls, delivery the client side) and
//! for the load tools, so the STARTTLS dance is written once.

use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// A TLS stream over a glommio TCP stream: futures-rustls's client or server stream.
pub trait TlsOverTcp: AsyncRead + AsyncWrite + Unpin {
    /// The TCP stream underneath.
    fn tcp(&self) -> &TcpStream;
}

impl TlsOverTcp for futures_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl TlsOverTcp for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A connection, in plain text or TLS.
pub enum Conn<T> {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<T>),
    /// Neither: during a handshake (the TCP stream was handed to it), or after a failed
    /// one. Reads see the end of the stream, writes fail.
    Gone,
}

impl<T: TlsOverTcp> Conn<T> {
    /// The TCP stream underneath, if any.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(s) => Some(s.tcp()),
            Conn::Gone => None,
        }
    }

    /// Takes the plain TCP stream out for a TLS handshake, leaving [`Conn::Gone`]; `None`
    /// (and the connection unchanged) if it is not plain.
    pub fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Conn::Gone) {
            Conn::Plain(tcp) => Some(tcp),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Reads what is there, up to `buf.len()` octets.
    pub async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes all of `buf`. Over TLS the record goes out only when `flush` says so, so that
    /// content written in pieces travels in full records.
    pub async fn write_all(&mut self, buf: &[u8], flush: bool) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).await,
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                if flush {
                    s.flush().await?;
                }
                Ok(())
            }
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Closes the connection (a TLS close_notify first).
    pub async fn close(self) {
        match self {
            Conn::Plain(mut s) => drop(s.close().await),
            Conn::Tls(mut s) => drop(s.close().await),
            Conn::Gone => {}
        }
    }

    /// Bounds every read from now on; glommio takes no zero timeout, so at least 1 ms.
    pub fn set_read_timeout(&self, t: Duration) {
        if let Some(s) = self.tcp() {
            let _ = s.set_read_timeout(Some(t.max(Duration::from_millis(1))));
        }
    }

    /// Bounds every write from now on (at least 1 ms).
    pub fn set_write_timeout(&self, t: Duration) {
        if let Some(s) = self.tcp() {
            let _ = s.set_write_timeout(Some(t.max(Duration::from_millis(1))));
        }
    }
}
