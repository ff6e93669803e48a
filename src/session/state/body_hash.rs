//! The DKIM body hashes (RFC 6376 §3.7) a session computes while content streams in, so
//! signing never reads the message again.

use crate::dkim::{BodyHasher, Canonicalization};
use crate::smtp::data::BodyTap;

/// DKIM body hashes kept up to date while content streams in.
pub(super) struct BodyHashes {
    tap: BodyTap,
    hashers: Vec<BodyHasher>,
}

impl std::fmt::Debug for BodyHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHashes")
            .field("seen", &self.tap.seen())
            .finish()
    }
}

impl BodyHashes {
    /// Hashers for each of `canons`; `None` when there is nothing to hash.
    pub(super) fn new(canons: &[Canonicalization]) -> Option<BodyHashes> {
        (!canons.is_empty()).then(|| BodyHashes {
            tap: BodyTap::new(),
            hashers: canons.iter().map(|&c| BodyHasher::new(c)).collect(),
        })
    }

    /// Hashes the wire form up to `upto` (what is final of it).
    pub(super) fn advance(&mut self, wire: &[u8], upto: usize) {
        let hashers = &mut self.hashers;
        self.tap
            .advance(wire, upto, |b| hashers.iter_mut().for_each(|h| h.update(b)));
    }

    /// Hashes what is left of the wire form and gives each canonicalization's hash.
    pub(super) fn finish(mut self, wire: &[u8]) -> Vec<(Canonicalization, [u8; 32])> {
        self.advance(wire, wire.len());
        self.hashers
            .into_iter()
            .map(|h| (h.canonicalization(), h.finish()))
            .collect()
    }
}
