//! `[[dkim]]`: the signing keys, with domain, selector, canonicalization and header list
//! checked when the file is read. The key files themselves are read by
//! `runtime::files::Loaded::load`, which turns each entry into a [`Signer`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::units::optional_duration;
use super::{invalid, parse_text, ConfigError};
use crate::dkim::{Canonicalization, Signer, SigningKey};

/// `[[dkim]]`: one signing key, parsed. Two entries for one domain sign every message
/// twice (for example RSA and Ed25519 side by side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimConfig {
    /// Signing domain (`d=`), lower case without a final dot: messages whose From domain
    /// is this domain or below it.
    pub domain: String,
    /// Selector (`s=`): the key is published at `<selector>._domainkey.<domain>`.
    pub selector: String,
    /// PEM private key (PKCS#8 or PKCS#1), RSA of 2048 bits or more, or Ed25519.
    pub key: PathBuf,
    /// `header/body` canonicalization (`c=`); default `relaxed/relaxed`.
    pub canonicalization: DkimCanonicalization,
    /// Signature lifetime (`x=` = `t=` + this); none by default.
    pub expire: Option<Duration>,
    /// Header fields to sign instead of the default list.
    pub headers: Option<Vec<String>>,
}

/// The two halves of `c=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DkimCanonicalization {
    /// For the header fields.
    pub header: Canonicalization,
    /// For the body.
    pub body: Canonicalization,
}

impl DkimConfig {
    /// The signer for this entry, with its loaded `key`.
    pub fn signer(&self, key: SigningKey) -> Signer {
        let mut signer = Signer::new(self.domain.clone(), self.selector.clone(), Arc::new(key));
        signer.header_canon = self.canonicalization.header;
        signer.body_canon = self.canonicalization.body;
        signer.expire_after = self.expire;
        if let Some(headers) = &self.headers {
            signer.headers = headers.clone();
        }
        signer
    }
}

/// `[[dkim]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DkimToml {
    domain: String,
    selector: String,
    key: PathBuf,
    /// `header/body`, e.g. `"relaxed/simple"`.
    #[serde(default)]
    canonicalization: Option<String>,
    /// e.g. `"7d"`.
    #[serde(default, deserialize_with = "optional_duration")]
    expire: Option<Duration>,
    #[serde(default)]
    headers: Option<Vec<String>>,
}

/// Parses every `[[dkim]]` entry; errors name the entry and the field.
pub(super) fn parse(entries: Vec<DkimToml>) -> Result<Vec<DkimConfig>, ConfigError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.parse(i))
        .collect()
}

impl DkimToml {
    fn parse(self, i: usize) -> Result<DkimConfig, ConfigError> {
        let key = |field: &str| format!("dkim[{i}].{field}");
        let domain = self.domain.trim_end_matches('.').to_ascii_lowercase();
        if !crate::smtp::address::is_domain(domain.as_bytes()) {
            return Err(invalid(
                key("domain"),
                format!("{:?} is not a domain", self.domain),
            ));
        }
        if !domain.is_ascii() {
            return Err(invalid(
                key("domain"),
                "use the ASCII (xn--) form of the domain",
            ));
        }
        let selector_ok = !self.selector.is_empty()
            && self.selector.is_ascii()
            && self
                .selector
                .split('.')
                .all(|l| crate::smtp::address::is_domain(l.as_bytes()));
        if !selector_ok {
            return Err(invalid(
                key("selector"),
                format!("{:?} is not a selector", self.selector),
            ));
        }
        let canonicalization = match &self.canonicalization {
            None => DkimCanonicalization::default(),
            Some(c) => parse_text(
                c,
                parse_canonicalization,
                key("canonicalization"),
                ": like \"relaxed/relaxed\"",
            )?,
        };
        if let Some(headers) = &self.headers {
            // RFC 5322 §3.6.8: a field name is printable ASCII without ':'.
            let bad = headers
                .iter()
                .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
            if let Some(bad) = bad {
                return Err(invalid(
                    key("headers"),
                    format!("{bad:?} is not a header field name"),
                ));
            }
        }
        Ok(DkimConfig {
            domain,
            selector: self.selector,
            key: self.key,
            canonicalization,
            expire: self.expire,
            headers: self.headers,
        })
    }
}

/// `header/body`, each `simple` or `relaxed`.
fn parse_canonicalization(c: &str) -> Option<DkimCanonicalization> {
    let (header, body) = c.split_once('/')?;
    Some(DkimCanonicalization {
        header: header.parse().ok()?,
        body: body.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(extra: &str) -> String {
        format!("[[dkim]]\ndomain = \"Example.COM.\"\nselector = \"s1\"\nkey = \"k.pem\"\n{extra}")
    }

    #[test]
    fn entries_are_parsed_without_reading_the_key() {
        let c = crate::config::Config::parse(
            &entry("canonicalization = \"simple/relaxed\"\nexpire = \"7d\"\n"),
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let d = &c.dkim[0];
        assert_eq!(
            (d.domain.as_str(), d.selector.as_str()),
            ("example.com", "s1")
        );
        assert_eq!(
            d.canonicalization,
            DkimCanonicalization {
                header: Canonicalization::Simple,
                body: Canonicalization::Relaxed,
            }
        );
        assert_eq!(d.expire, Some(Duration::from_secs(7 * 86_400)));
        let c =
            crate::config::Config::parse(&entry(""), std::path::Path::new("test.toml")).unwrap();
        assert_eq!(c.dkim[0].canonicalization, DkimCanonicalization::default());
    }

    #[test]
    fn a_bad_canonicalization_is_named() {
        for bad in ["relaxed", "relaxed/loose", "nice/simple"] {
            let e = crate::config::Config::parse(
                &entry(&format!("canonicalization = \"{bad}\"\n")),
                std::path::Path::new("test.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.starts_with("dkim[0].canonicalization:") && e.contains(bad),
                "{e}"
            );
        }
    }
}
