//! DKIM signing (RFC 6376) with `rsa-sha256` and `ed25519-sha256` (RFC 8463). Pure: no
//! sockets, no clock, no files.
//!
//! # How a message is signed
//!
//! ```text
//!  DATA streams in ──▶ BodyHasher::update (any chunking) ──▶ finish() = bh=
//!  header section + bh= + now ──▶ Signer::sign ──▶ "DKIM-Signature: ...\r\n" to prepend
//! ```
//!
//! The body hash is computed while the content arrives, so signing never reads the
//! message again; [`Signer::sign`] then only canonicalizes the (small) header section and
//! makes one signature. Two [`Signer`]s over the same header section and body hash give a
//! dual signature (one RSA, one Ed25519), each field prepended independently; the body
//! hash may be shared when both use the same body canonicalization.
//!
//! # Layout
//!
//! - [`canonicalize`]: header and body canonicalization (RFC 6376 §3.4), [`BodyHasher`].
//! - [`key`]: [`SigningKey`] (PEM loading, DNS record) and key generation.
//! - [`sign`]: [`Signer`], the header hash (§3.7), selection of signed header fields
//!   (§5.4) and the folded `DKIM-Signature` field.
//! - [`header`]: reading header sections: [`from_domain`], [`already_signed`].
//! - [`signers`]: the configured signers, and which sign mail from a domain.
//!
//! # Crypto
//!
//! *ring* makes every signature and every SHA-256: it is the provider rustls already brings,
//! its RSA is constant-time, and Ed25519 signatures are deterministic, which lets the tests
//! reproduce RFC 8463's example byte for byte. *ring* cannot generate RSA keys, so
//! [`generate`] uses the RustCrypto `rsa` crate for that one offline step and hands the
//! PKCS#8 result to *ring*; `rsa` never signs (its private-key operations are not
//! constant-time, RUSTSEC-2023-0071).
//!
//! # Errors and panics
//!
//! Key and parameter problems are [`DkimError`]s naming the problem. Nothing here panics
//! on any input.

pub mod canonicalize;
pub mod header;
pub mod key;
pub mod sign;
pub mod signers;

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

pub use canonicalize::BodyHasher;
pub use header::{already_signed, from_domain};
pub use key::{generate, SigningKey};
pub use sign::{sign_message, Signer, DEFAULT_HEADERS};

/// A DKIM signing algorithm (the `a=` tag, RFC 6376 §3.5; RFC 8463 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 6376 §3.3.1); keys of 2048 bits and up.
    RsaSha256,
    /// Ed25519 over the SHA-256 hash of the header data (RFC 8463 §3).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` tag value: `rsa-sha256` or `ed25519-sha256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key type in the DNS record's `k=` tag (RFC 6376 §3.6.1): `rsa` or `ed25519`.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = DkimError;

    /// Accepts the key type (`rsa`, `ed25519`, as `pigeon dkim keygen --algo` takes it) or
    /// the `a=` name, in any case.
    fn from_str(s: &str) -> Result<Algorithm, DkimError> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Ok(Algorithm::RsaSha256),
            "ed25519" | "ed25519-sha256" => Ok(Algorithm::Ed25519Sha256),
            _ => Err(DkimError::UnknownAlgorithm(s.to_string())),
        }
    }
}

/// A canonicalization algorithm (RFC 6376 §3.4), chosen separately for header and body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Canonicalization {
    /// Tolerates no change except trailing empty lines of the body (§3.4.1, §3.4.3).
    Simple,
    /// Tolerates whitespace changes and refolding (§3.4.2, §3.4.4). The default, because
    /// relays and list servers routinely refold headers and trim trailing spaces.
    #[default]
    Relaxed,
}

impl Canonicalization {
    /// The name used in the `c=` tag: `simple` or `relaxed`.
    pub fn name(self) -> &'static str {
        match self {
            Canonicalization::Simple => "simple",
            Canonicalization::Relaxed => "relaxed",
        }
    }
}

impl fmt::Display for Canonicalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Canonicalization {
    type Err = DkimError;

    /// `simple` or `relaxed`, in any case.
    fn from_str(s: &str) -> Result<Canonicalization, DkimError> {
        match s.to_ascii_lowercase().as_str() {
            "simple" => Ok(Canonicalization::Simple),
            "relaxed" => Ok(Canonicalization::Relaxed),
            _ => Err(DkimError::UnknownCanonicalization(s.to_string())),
        }
    }
}

/// Why a key could not be loaded or made, or a message could not be signed.
///
/// Key errors surface at start (config check) or in `pigeon dkim keygen`, where the caller
/// adds the file name; signing errors are rare (a bad tag value in config, or *ring*
/// refusing an operation) and are reported to the client as a temporary failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DkimError {
    /// The text holds no `-----BEGIN ...-----` / `-----END ...-----` block.
    #[error("no PEM block found (expected \"-----BEGIN PRIVATE KEY-----\" or \"-----BEGIN RSA PRIVATE KEY-----\")")]
    NoPemBlock,
    /// A PEM block whose END line is missing or names another label.
    #[error("PEM block \"{0}\" has no matching END line")]
    UnterminatedPem(String),
    /// The PEM body is not valid base64.
    #[error("PEM block \"{0}\" is not valid base64")]
    PemBase64(String),
    /// A password-protected key; pigeon reads keys unattended, so they are stored clear
    /// (and protected by file permissions).
    #[error("the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)")]
    EncryptedKey,
    /// A PEM block of a kind that is not a usable private key (a public key, a certificate,
    /// an EC key...).
    #[error("PEM block \"{0}\" is not an RSA or Ed25519 private key (expected PRIVATE KEY or RSA PRIVATE KEY)")]
    UnsupportedPem(String),
    /// A PKCS#8 key whose algorithm DKIM does not use (its OID, dotted).
    #[error("unsupported key algorithm (OID {0}); DKIM keys are RSA or Ed25519")]
    UnsupportedKeyAlgorithm(String),
    /// The DER inside the PEM is not a well-formed PKCS#8 structure.
    #[error("malformed PKCS#8 key: {0}")]
    MalformedKey(&'static str),
    /// *ring* refused the key; `reason` says why (too small, inconsistent, ...).
    #[error("{algorithm} key rejected: {reason}")]
    KeyRejected {
        /// `rsa` or `ed25519`.
        algorithm: &'static str,
        /// The reason, in words.
        reason: String,
    },
    /// `generate` was asked for an RSA size outside 2048..=8192 bits: below 2048 is refused
    /// by receivers that follow RFC 8301 and by *ring*; above 8192 *ring* cannot sign.
    #[error("RSA key size {0} bits is outside 2048..=8192")]
    RsaKeySize(usize),
    /// RSA key generation failed (the system random source, in practice).
    #[error("RSA key generation failed: {0}")]
    KeyGeneration(String),
    /// An algorithm name that is neither `rsa` nor `ed25519`.
    #[error("unknown DKIM algorithm \"{0}\" (expected rsa or ed25519)")]
    UnknownAlgorithm(String),
    /// A canonicalization name that is neither `simple` nor `relaxed`.
    #[error("unknown DKIM canonicalization \"{0}\" (expected simple or relaxed)")]
    UnknownCanonicalization(String),
    /// A tag value that cannot be written into the signature (empty, or holding `;`,
    /// whitespace or control characters), or explicit tags that contradict the signer.
    #[error("invalid DKIM {tag}= value \"{value}\": {why}")]
    InvalidTag {
        /// The tag name (`d`, `s`, `h`, ...).
        tag: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// *ring* failed to make a signature (it reports no detail).
    #[error("signing failed")]
    Signing,
}
