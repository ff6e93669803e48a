//! The configured signers (`[[dkim]]`), and which of them sign mail from a given domain.

use crate::dkim::{Canonicalization, Signer};

/// Every configured signer.
#[derive(Debug, Default)]
pub struct Signers(Vec<Signer>);

impl Signers {
    /// The signers, as configured.
    pub fn new(signers: Vec<Signer>) -> Signers {
        Signers(signers)
    }

    /// True when no signer is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The signers for mail from `from_domain`: those of the closest configured domain
    /// at or above it (`news.example.com` is signed by an `example.com` key unless it has
    /// keys of its own). Two keys for that domain sign twice.
    pub fn for_domain(&self, from_domain: &str) -> Vec<&Signer> {
        let covers = |d: &str| {
            from_domain == d
                || (from_domain.len() > d.len()
                    && from_domain.ends_with(d)
                    && from_domain.as_bytes()[from_domain.len() - d.len() - 1] == b'.')
        };
        let Some(best) = self
            .0
            .iter()
            .filter(|s| covers(&s.domain))
            .map(|s| s.domain.len())
            .max()
        else {
            return Vec::new();
        };
        self.0
            .iter()
            .filter(|s| s.domain.len() == best && covers(&s.domain))
            .collect()
    }

    /// The distinct body canonicalizations the signers use: the session hashes the body
    /// with each as it streams in.
    pub fn body_canons(&self) -> Vec<Canonicalization> {
        let mut canons: Vec<Canonicalization> = self.0.iter().map(|s| s.body_canon).collect();
        canons.sort_by_key(|c| c.name());
        canons.dedup();
        canons
    }
}
