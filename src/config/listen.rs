//! `[[listener]]` and `[tls]`: the SMTP ports pigeon binds, what each accepts, and the
//! certificate they offer. A listener that could not work as configured (TLS without a
//! certificate, submission without AUTH) is refused here rather than run without it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[[listener]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to bind on every shard.
    pub address: SocketAddr,
    /// `relay` (port 25 style) or `submission` (AUTH required).
    #[serde(default)]
    pub mode: ListenerMode,
    /// `none`, `starttls` or `implicit`.
    #[serde(default)]
    pub tls: TlsMode,
}

/// What a listener accepts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Mail for `relay.domains` from anyone; any domain from `relay.networks`.
    #[default]
    Relay,
    /// Authenticated clients only.
    Submission,
}

/// TLS on a listener.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text only.
    #[default]
    None,
    /// STARTTLS offered (RFC 3207).
    Starttls,
    /// TLS from the first byte (RFC 8314).
    Implicit,
}

/// `[tls]`. The files are read by `runtime::files::Loaded::load` at start and by
/// `Shared::load_tls` on SIGHUP, both through `accept::tls::server_config`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The configured listeners, or the default one on 127.0.0.1:2525 when there are none.
pub(super) fn or_default(mut listeners: Vec<ListenerConfig>) -> Vec<ListenerConfig> {
    if listeners.is_empty() {
        listeners.push(ListenerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 2525)),
            mode: ListenerMode::Relay,
            tls: TlsMode::None,
        });
    }
    listeners
}

/// Refuses listeners that cannot work with what else is configured: `has_tls` is a
/// `[tls]` section, `has_auth` an `[auth]` one.
pub(super) fn validate(
    listeners: &[ListenerConfig],
    has_tls: bool,
    has_auth: bool,
) -> Result<(), ConfigError> {
    for (i, l) in listeners.iter().enumerate() {
        // Refuse what cannot work rather than run a listener that silently lacks it (a
        // TLS port without a certificate, a submission port without AUTH).
        if l.tls != TlsMode::None && !has_tls {
            return Err(invalid(
                format!("listener[{i}].tls"),
                "needs [tls] cert and key",
            ));
        }
        // Submission is AUTH-only, and AUTH is offered only under TLS (RFC 8314 §3).
        if l.mode == ListenerMode::Submission && !has_auth {
            return Err(invalid(
                format!("listener[{i}].mode"),
                "submission needs [auth]",
            ));
        }
        if l.mode == ListenerMode::Submission && l.tls == TlsMode::None {
            return Err(invalid(
                format!("listener[{i}].mode"),
                "submission needs tls = \"starttls\" or \"implicit\"",
            ));
        }
    }
    Ok(())
}
