//! TLS for listeners: the rustls server configuration from the PEM files in `[tls]`,
//! TLS 1.2 and 1.3 only, on the ring provider (the one DKIM signing already uses).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use thiserror::Error;

/// Why the listener certificate and key could not be loaded; the file errors name it.
#[derive(Debug, Error)]
pub enum ServerTlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("{path}: {source}")]
    Cert {
        /// The certificate file.
        path: PathBuf,
        /// What reading it gave.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{path}: no certificate")]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file is unreadable, not PEM, or holds no private key.
    #[error("{path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What reading it gave.
        source: pem::Error,
    },
    /// rustls refused the protocol versions (not expected with the ring provider).
    #[error("{0}")]
    Protocol(rustls::Error),
    /// The key is not the certificate's, or rustls refused either.
    #[error("certificate and key do not match: {0}")]
    Mismatch(rustls::Error),
}

/// Builds the server configuration from a certificate chain and a private key, both PEM.
/// Errors name the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ServerTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|source| ServerTlsError::Cert {
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerTlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| ServerTlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ServerTlsError::Protocol)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServerTlsError::Mismatch)?;
    Ok(Arc::new(config))
}
