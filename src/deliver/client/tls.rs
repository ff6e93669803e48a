//! TLS for delivery (STARTTLS, RFC 3207): the two rustls client configurations every
//! connection picks from, built once per shard. TLS 1.2 and 1.3 on the ring provider, as
//! for listeners.
//!
//! Under `opportunistic` and `required` the certificate is not checked (Postfix's `may`
//! and `encrypt`): most MX hosts present one that would not verify, and refusing them would
//! send the mail in plain text instead, which is worse. The handshake signatures still are,
//! so the session key really belongs to whoever holds the presented certificate. Under
//! `verify` the certificate must chain to `delivery.ca_file` or the system's roots and name
//! the host connected to.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// Where distributions keep the system's CA bundle (the files rustls-native-certs and
/// OpenSSL look at); `SSL_CERT_FILE` comes first, as for OpenSSL.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why CA certificates could not be loaded; errors name the file.
#[derive(Debug, Error)]
pub enum CaFileError {
    /// The file is unreadable or not PEM.
    #[error("{path}: {source}")]
    Read {
        /// The CA file.
        path: PathBuf,
        /// What reading it gave.
        source: pem::Error,
    },
    /// The file holds no certificate.
    #[error("{path}: no certificate")]
    NoCertificate {
        /// The CA file.
        path: PathBuf,
    },
    /// webpki refused a certificate of the file as a trust anchor.
    #[error("{path}: {source}")]
    Rejected {
        /// The CA file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// None of the places a system keeps its CA bundle has one.
    #[error("none of {SYSTEM_BUNDLES:?} exists")]
    NoSystemBundle,
    /// The system bundle holds no certificate webpki accepts.
    #[error("{path}: no usable certificate")]
    NoUsableCertificate {
        /// The bundle.
        path: PathBuf,
    },
}

/// Why the client configurations could not be built.
#[derive(Debug, Error)]
pub enum TlsClientError {
    /// rustls refused the protocol versions (not expected with the ring provider).
    #[error("{0}")]
    Protocol(#[from] rustls::Error),
}

/// The client configurations for delivery.
#[derive(Debug, Clone)]
pub struct TlsClients {
    /// Any certificate accepted (`opportunistic`, `required`).
    pub unverified: Arc<ClientConfig>,
    /// Certificates checked against the roots and the host name (`verify`).
    pub verified: Arc<ClientConfig>,
}

impl TlsClients {
    /// Builds both configurations; `verify` checks certificates against `roots` (from
    /// [`load_ca_file`] or [`system_roots_or_empty`], loaded once at start).
    pub fn new(roots: RootCertStore) -> Result<TlsClients, TlsClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        };
        let unverified = builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        let verified = builder()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClients {
            unverified: Arc::new(unverified),
            verified: Arc::new(verified),
        })
    }
}

/// Reads a PEM file of CA certificates into a root store; errors name the file and say
/// what is wrong (unreadable, not PEM, no certificate, a certificate webpki refuses).
pub fn load_ca_file(path: &Path) -> Result<RootCertStore, CaFileError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|source| CaFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CaFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| CaFileError::Rejected {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The system's CA bundle, or no root at all when it cannot be read: then `verify` can
/// never succeed, which is logged here, once (it is called once, at start).
pub fn system_roots_or_empty() -> RootCertStore {
    system_roots().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no system CA bundle: tls = \"verify\" will defer all mail");
        RootCertStore::empty()
    })
}

/// The system's CA bundle. Unparsable entries are skipped, as every TLS library does with
/// these files (they may hold certificates webpki does not accept).
fn system_roots() -> Result<RootCertStore, CaFileError> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        })
        .ok_or(CaFileError::NoSystemBundle)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .map_err(|source| CaFileError::Read {
            path: path.clone(),
            source,
        })?
        .filter_map(Result::ok)
        .collect();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CaFileError::NoUsableCertificate { path });
    }
    Ok(roots)
}

/// The protocol version of an established session, as logs spell it (`TLSv1.3`).
pub fn version_name(session: &rustls::CommonState) -> &'static str {
    match session.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    }
}

/// The name to ask for (SNI) and, under `verify`, to check: the MX or route host; for an
/// IP address (a route or an address literal, RFC 5321 §4.1.3) the address, which only a
/// certificate with that IP in its SAN matches.
pub fn server_name(host: &str, ip: IpAddr) -> ServerName<'static> {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(|h| h.strip_prefix("IPv6:").unwrap_or(h));
    if let Some(Ok(ip)) = literal.map(str::parse::<IpAddr>) {
        return ServerName::IpAddress(ip.into());
    }
    match ServerName::try_from(host.trim_end_matches('.').to_owned()) {
        Ok(name) => name,
        Err(_) => ServerName::IpAddress(ip.into()),
    }
}

/// Accepts any certificate chain but checks the handshake signatures: encryption without
/// authentication (RFC 7435, opportunistic security).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            server_name("mx.example.com.", ip),
            ServerName::try_from("mx.example.com").unwrap()
        );
        assert_eq!(
            server_name("192.0.2.7", ip),
            ServerName::IpAddress("192.0.2.7".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name("[IPv6:2001:db8::1]", ip),
            ServerName::IpAddress("2001:db8::1".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name("bad name!", ip),
            ServerName::IpAddress(ip.into())
        );
    }
}
