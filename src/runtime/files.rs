//! The files a configuration names, each read and parsed once at start into [`Loaded`]:
//! the DKIM keys, the users file, the listener certificate and key, the outbound CA file.
//! `check-config` loads them to check them; `serve` hands the same bundle to the shared
//! state. It lives here, with what consumes it, rather than in `config`: loading uses the
//! loaders of the stages the files are for, and `config` stays below every stage.
//! SIGHUP reads the certificate and the users file again, through the same functions
//! (`accept::tls::server_config`, `Credentials::load`).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use thiserror::Error;

use crate::accept::tls::{server_config, ServerTlsError};
use crate::auth::credentials::{Credentials, CredentialsError};
use crate::config::Config;
use crate::deliver::client::tls::{load_ca_file, system_roots_or_empty, CaFileError};
use crate::dkim::{DkimError, Signer, SigningKey};

/// A file the configuration names could not be loaded: the key naming it, and why.
#[derive(Debug, Error)]
#[error("{key}: {source}")]
pub struct LoadError {
    /// The key naming the file, e.g. `dkim[0].key`.
    pub key: String,
    /// What is wrong with the file.
    pub source: FileError,
}

/// What is wrong with one of the files; [`LoadError`] adds the key naming it.
#[derive(Debug, Error)]
pub enum FileError {
    /// The `[tls]` certificate or key.
    #[error(transparent)]
    Tls(#[from] ServerTlsError),
    /// `delivery.ca_file`.
    #[error(transparent)]
    Ca(#[from] CaFileError),
    /// `auth.users_file`.
    #[error(transparent)]
    Users(#[from] CredentialsError),
    /// A DKIM key file could not be read.
    #[error("cannot read {path}: {source}")]
    DkimRead {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A DKIM key file holds no usable key.
    #[error("{path}: {source}")]
    DkimKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with the key.
        source: DkimError,
    },
}

/// The loaded files of one configuration.
#[derive(Debug)]
pub struct Loaded {
    /// One signer per `[[dkim]]` entry, in order, its key loaded.
    pub dkim: Vec<Signer>,
    /// The users of `auth.users_file`, when `[auth]` is set.
    pub users: Option<Credentials>,
    /// The listeners' TLS configuration from `[tls]`, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The roots delivery verifies certificates against: `delivery.ca_file`, else the
    /// system's bundle (read here once, not once per shard).
    pub ca_roots: RootCertStore,
}

impl Loaded {
    /// Reads and parses every file `config` names. The error names the key of the first
    /// file that fails, and the file.
    pub fn load(config: &Config) -> Result<Loaded, LoadError> {
        let file = |key: &str| {
            let key = key.to_owned();
            move |source: FileError| LoadError { key, source }
        };
        let ca_roots = match &config.delivery.ca_file {
            Some(path) => load_ca_file(path)
                .map_err(FileError::from)
                .map_err(file("delivery.ca_file"))?,
            None => system_roots_or_empty(),
        };
        let tls = config
            .tls
            .as_ref()
            .map(|tls| server_config(&tls.cert, &tls.key))
            .transpose()
            .map_err(FileError::from)
            .map_err(file("tls"))?;
        let users = config
            .auth
            .as_ref()
            .map(|auth| Credentials::load(&auth.users_file))
            .transpose()
            .map_err(FileError::from)
            .map_err(file("auth.users_file"))?;
        let dkim = config
            .dkim
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let key = load_dkim_key(&d.key).map_err(file(&format!("dkim[{i}].key")))?;
                Ok(d.signer(key))
            })
            .collect::<Result<_, LoadError>>()?;
        Ok(Loaded {
            dkim,
            users,
            tls,
            ca_roots,
        })
    }
}

/// Reads a DKIM private key (PEM).
fn load_dkim_key(path: &std::path::Path) -> Result<SigningKey, FileError> {
    let pem = std::fs::read_to_string(path).map_err(|source| FileError::DkimRead {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pem(&pem).map_err(|source| FileError::DkimKey {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `check-config` does: parses `text` and loads the files it names.
    fn parse(text: &str) -> Result<Config, String> {
        let config =
            Config::parse(text, std::path::Path::new("test.toml")).map_err(|e| e.to_string())?;
        Loaded::load(&config).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn ca_file() {
        let e = parse("[delivery]\nca_file = \"/nonexistent/ca.pem\"\n").unwrap_err();
        assert!(
            e.starts_with("delivery.ca_file:") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = parse(&format!("[delivery]\nca_file = \"{}\"\n", empty.display())).unwrap_err();
        assert!(
            e.starts_with("delivery.ca_file:") && e.contains("no certificate"),
            "{e}"
        );
    }

    #[test]
    fn users_file_errors_name_the_key_and_the_line() {
        let e = parse("[auth]\nusers_file = \"/nonexistent/users\"\n").unwrap_err();
        assert!(e.starts_with("auth.users_file:"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, "# ok\nalice:not-a-hash\n").unwrap();
        let e = parse(&format!("[auth]\nusers_file = \"{}\"\n", users.display())).unwrap_err();
        assert!(
            e.starts_with("auth.users_file:") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn listener_certificate_errors_name_tls_and_the_file() {
        let e = parse("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n")
            .unwrap_err();
        assert!(
            e.starts_with("tls:") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn dkim_keys_are_loaded_into_signers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let (pem, _) = crate::dkim::generate(crate::dkim::Algorithm::Ed25519Sha256, 0).unwrap();
        std::fs::write(&path, pem).unwrap();
        let text = format!(
            "[[dkim]]\ndomain = \"example.com\"\nselector = \"s1\"\nkey = \"{}\"\n\
             canonicalization = \"simple/simple\"\nheaders = [\"From\", \"To\"]\n",
            path.display()
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let loaded = super::Loaded::load(&config).unwrap();
        let s = &loaded.dkim[0];
        assert_eq!(
            (s.domain.as_str(), s.selector.as_str()),
            ("example.com", "s1")
        );
        assert_eq!(s.body_canon, crate::dkim::Canonicalization::Simple);
        assert_eq!(s.headers, ["From", "To"]);
        std::fs::write(&path, "junk").unwrap();
        let e = super::Loaded::load(&config).unwrap_err().to_string();
        assert!(e.starts_with("dkim[0].key:") && e.contains("k.pem"), "{e}");
    }
}
