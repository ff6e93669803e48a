//! TLS for both sides of the tool, on pigeon's own configurations: the delivery client's
//! (`blast --starttls`) and the listener's (`sink --tls-cert`), TLS 1.2 and 1.3.
//!
//! A load generator talks to test servers with self-made certificates, so by default it
//! checks nothing but the handshake itself (pigeon's `opportunistic` client, like
//! `swaks --tls`); `--tls-ca` makes it verify the chain and the name against a CA file
//! (pigeon's `verify` client).

use std::path::Path;
use std::sync::Arc;

pub use pigeon::deliver::client::tls::version_name;
use pigeon::deliver::client::tls::{load_ca_file, TlsClients};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

/// The client configuration: verifying against the CA certificates in `ca` (PEM), or
/// accepting any certificate when there is none.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    // Without a CA file nothing is verified: no roots are needed.
    let roots = match ca {
        Some(path) => load_ca_file(path).map_err(|e| e.to_string())?,
        None => rustls::RootCertStore::empty(),
    };
    let clients = TlsClients::new(roots).map_err(|e| e.to_string())?;
    Ok(match ca {
        Some(_) => clients.verified,
        None => clients.unverified,
    })
}

/// The name to present (SNI) and verify: the target's host, or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_owned()).map_err(|e| format!("TLS name {host:?}: {e}"))
}
