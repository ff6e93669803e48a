//! Signing keys: loading PEM files, making new keys, and the DNS record to publish.
//!
//! Accepted files are what operators have: PKCS#8 (`PRIVATE KEY`, from `openssl genpkey`
//! or `pigeon dkim keygen`) holding RSA or Ed25519, and PKCS#1 (`RSA PRIVATE KEY`, from
//! older `openssl genrsa` and most DKIM tutorials). Each error names what is wrong with the
//! file, because the caller reports it at start next to the file name and the operator has
//! nothing else to go on.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

use super::{Algorithm, DkimError};

/// DER of the rsaEncryption OID, 1.2.840.113549.1.1.1 (RFC 8017 appendix A.1).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// DER of the Ed25519 OID, 1.3.101.112 (RFC 8410 §3).
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// RSA sizes we sign with: RFC 8301 §3.2 wants at least 1024 and recommends 2048, and large
/// receivers now treat 1024 as weak, so 2048 is the floor (it is *ring*'s too); 8192 is
/// *ring*'s ceiling.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// A loaded private key, ready to sign. Cheap to share behind an `Arc`; signing takes
/// `&self` and may run on several shards at once.
pub struct SigningKey {
    inner: Inner,
}

enum Inner {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl fmt::Debug for SigningKey {
    /// Never prints key material: only the algorithm and, for RSA, the size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Rsa(k) => write!(f, "SigningKey(rsa, {} bits)", k.public().modulus_len() * 8),
            Inner::Ed25519(_) => f.write_str("SigningKey(ed25519)"),
        }
    }
}

impl SigningKey {
    /// Loads a PEM private key: PKCS#8 (`PRIVATE KEY`, RSA or Ed25519) or PKCS#1
    /// (`RSA PRIVATE KEY`). Text around the block (comments, `openssl -text` output) is
    /// ignored; errors name the problem (no block, encrypted, public key, too small, ...).
    pub fn from_pem(pem: &str) -> Result<SigningKey, DkimError> {
        let (label, der) = decode_pem(pem)?;
        match label.as_str() {
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der)
                .map(|k| SigningKey {
                    inner: Inner::Rsa(k),
                })
                .map_err(|e| rejected("rsa", e)),
            "ENCRYPTED PRIVATE KEY" => Err(DkimError::EncryptedKey),
            _ => Err(DkimError::UnsupportedPem(label)),
        }
    }

    /// Loads a DER PKCS#8 private key (RFC 5208 v1 or RFC 5958 v2), RSA or Ed25519.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, DkimError> {
        let (version, oid) = pkcs8_version_and_oid(der)?;
        if oid == OID_RSA_ENCRYPTION {
            RsaKeyPair::from_pkcs8(der)
                .map(|k| SigningKey {
                    inner: Inner::Rsa(k),
                })
                .map_err(|e| rejected("rsa", e))
        } else if oid == OID_ED25519 {
            // v2 files carry the public key and *ring* checks it against the private one;
            // v1 files (what `openssl genpkey` writes) have none to check.
            let parsed = if version == 0 {
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            } else {
                Ed25519KeyPair::from_pkcs8(der)
            };
            parsed
                .map(|k| SigningKey {
                    inner: Inner::Ed25519(k),
                })
                .map_err(|e| rejected("ed25519", e))
        } else {
            Err(DkimError::UnsupportedKeyAlgorithm(dotted_oid(oid)))
        }
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        match self.inner {
            Inner::Rsa(_) => Algorithm::RsaSha256,
            Inner::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    /// The DNS TXT record value to publish at `<selector>._domainkey.<domain>`:
    /// `v=DKIM1; k=rsa; p=...` or `v=DKIM1; k=ed25519; p=...` (RFC 6376 §3.6.1).
    ///
    /// For RSA, `p=` is a SubjectPublicKeyInfo: RFC 6376 is inconsistent between that and
    /// a bare RSAPublicKey (erratum 3017), and SubjectPublicKeyInfo is what OpenDKIM, Gmail
    /// and `openssl rsa -pubout` publish and every verifier reads. For Ed25519, `p=` is the
    /// raw 32-octet public key (RFC 8463 §4). A 2048-bit record is longer than one DNS
    /// character-string (255 octets); the publisher splits it into several.
    pub fn dns_record(&self) -> String {
        let p = match &self.inner {
            Inner::Rsa(k) => data_encoding::BASE64.encode(&rsa_spki(k.public().as_ref())),
            Inner::Ed25519(k) => data_encoding::BASE64.encode(k.public_key().as_ref()),
        };
        format!("v=DKIM1; k={}; p={}", self.algorithm().key_type(), p)
    }

    /// Signs the canonicalized header data (RFC 6376 §3.7, the input of step 2).
    ///
    /// RSA signs it as RSASSA-PKCS1-v1_5 with SHA-256, hashing internally; Ed25519 signs
    /// its SHA-256 digest, not the data itself (RFC 8463 §3: "the SHA-256 hash of the
    /// header data" is the Ed25519 message).
    pub(crate) fn sign_header_data(&self, data: &[u8]) -> Result<Vec<u8>, DkimError> {
        match &self.inner {
            Inner::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut sig)
                    .map_err(|_| DkimError::Signing)?;
                Ok(sig)
            }
            Inner::Ed25519(k) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                Ok(k.sign(digest.as_ref()).as_ref().to_vec())
            }
        }
    }
}

/// Makes a new key for `pigeon dkim keygen`: returns the PKCS#8 PEM to write to the key
/// file and the loaded key (for [`SigningKey::dns_record`]).
///
/// `rsa_bits` is used for RSA only and must be within 2048..=8192; 2048 is the usual
/// choice, since a 4096-bit record no longer fits some DNS hosting panels.
pub fn generate(algorithm: Algorithm, rsa_bits: usize) -> Result<(String, SigningKey), DkimError> {
    let der = match algorithm {
        Algorithm::Ed25519Sha256 => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| DkimError::KeyGeneration("system random source failed".into()))?
            .as_ref()
            .to_vec(),
        Algorithm::RsaSha256 => {
            use rsa::pkcs8::EncodePrivateKey;
            if !RSA_BITS.contains(&rsa_bits) {
                return Err(DkimError::RsaKeySize(rsa_bits));
            }
            // Key generation is the one step *ring* cannot do. It runs once, offline, so
            // the timing concerns about the `rsa` crate's private-key operations do not
            // apply; the key never signs through it.
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, rsa_bits)
                .map_err(|e| DkimError::KeyGeneration(e.to_string()))?;
            key.to_pkcs8_der()
                .map_err(|e| DkimError::KeyGeneration(e.to_string()))?
                .as_bytes()
                .to_vec()
        }
    };
    let key = SigningKey::from_pkcs8_der(&der)?;
    Ok((encode_pem("PRIVATE KEY", &der), key))
}

fn rejected(algorithm: &'static str, e: ring::error::KeyRejected) -> DkimError {
    // *ring* reports a short reason code; say it in words an operator can act on.
    let reason = match e.to_string().as_str() {
        "TooSmall" => "too small (RSA keys must be at least 2048 bits)".to_string(),
        "TooLarge" => "too large (RSA keys must be at most 8192 bits)".to_string(),
        "InconsistentComponents" => "its parts do not belong together (corrupt key?)".into(),
        "InvalidEncoding" => "malformed encoding".to_string(),
        "VersionNotSupported" => "unsupported PKCS#8 version".to_string(),
        "WrongAlgorithm" => "not a key of this algorithm".to_string(),
        "PublicKeyIsMissing" => "the public key is missing".to_string(),
        other => other.to_string(),
    };
    DkimError::KeyRejected { algorithm, reason }
}

/// Finds the first PEM block whose label is a private key (or, failing that, the first
/// block) and decodes it. RFC 7468 §2 allows text before and after blocks; base64 lines
/// may be of any width.
fn decode_pem(pem: &str) -> Result<(String, Vec<u8>), DkimError> {
    let mut first: Option<(String, &str)> = None;
    let mut rest = pem;
    while let Some(i) = rest.find("-----BEGIN ") {
        let after = &rest[i + "-----BEGIN ".len()..];
        let Some(j) = after.find("-----") else { break };
        let label = after[..j].to_string();
        let body = &after[j + 5..];
        let is_private = label.ends_with("PRIVATE KEY");
        if first.is_none() || is_private {
            first = Some((label, body));
        }
        if is_private {
            break;
        }
        rest = body;
    }
    let (label, body) = first.ok_or(DkimError::NoPemBlock)?;
    let end_line = format!("-----END {label}-----");
    let Some(end) = body.find(&end_line) else {
        return Err(DkimError::UnterminatedPem(label));
    };
    let body = &body[..end];
    // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: ...`) mean a legacy
    // password-protected PKCS#1 key.
    if body.contains("Proc-Type:") || body.contains("DEK-Info:") {
        return Err(DkimError::EncryptedKey);
    }
    let b64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let der = data_encoding::BASE64
        .decode(&b64)
        .map_err(|_| DkimError::PemBase64(label.clone()))?;
    Ok((label, der))
}

/// PEM with 64-character lines and LF endings, as OpenSSL writes it (RFC 7468 §2).
fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so any split of it is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER TLV: (tag, contents, rest). Only definite lengths of up to 4 octets, which is
/// all a key file needs.
fn der_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DkimError> {
    let bad = DkimError::MalformedKey("bad DER length");
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&first, mut rest) = rest.split_first().ok_or(bad.clone())?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad);
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(DkimError::MalformedKey("truncated DER"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Reads a PKCS#8 `PrivateKeyInfo`/`OneAsymmetricKey` far enough to tell its version and
/// algorithm OID (RFC 5958 §2): SEQUENCE { INTEGER version, SEQUENCE { OID, ... }, ... }.
fn pkcs8_version_and_oid(der: &[u8]) -> Result<(u8, &[u8]), DkimError> {
    let (tag, outer, _) = der_tlv(der)?;
    if tag != 0x30 {
        return Err(DkimError::MalformedKey("not a DER SEQUENCE"));
    }
    let (tag, version, rest) = der_tlv(outer)?;
    let version = match (tag, version) {
        (0x02, [v]) => *v,
        _ => return Err(DkimError::MalformedKey("bad version")),
    };
    let (tag, alg, _) = der_tlv(rest)?;
    if tag != 0x30 {
        return Err(DkimError::MalformedKey("bad algorithm identifier"));
    }
    let (tag, oid, _) = der_tlv(alg)?;
    if tag != 0x06 {
        return Err(DkimError::MalformedKey("bad algorithm OID"));
    }
    Ok((version, oid))
}

/// An OID's dotted form, for error messages.
fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                // The first octet group packs the first two arcs as 40 * a + b.
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// Wraps a DER RSAPublicKey (what *ring* exposes) in a SubjectPublicKeyInfo
/// (RFC 5280 §4.1.2.7): SEQUENCE { AlgorithmIdentifier rsaEncryption NULL, BIT STRING }.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut alg = vec![0x06, OID_RSA_ENCRYPTION.len() as u8];
    alg.extend_from_slice(OID_RSA_ENCRYPTION);
    alg.extend_from_slice(&[0x05, 0x00]);
    let mut bits = vec![0x00]; // no unused bits
    bits.extend_from_slice(rsa_public_key);
    let mut body = der_wrap(0x30, &alg);
    body.extend_from_slice(&der_wrap(0x03, &bits));
    der_wrap(0x30, &body)
}

fn der_wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_errors_name_the_problem() {
        assert_eq!(
            SigningKey::from_pem("hello").unwrap_err(),
            DkimError::NoPemBlock
        );
        assert_eq!(
            SigningKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .unwrap_err(),
            DkimError::UnsupportedPem("PUBLIC KEY".into())
        );
        assert_eq!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap_err(),
            DkimError::UnterminatedPem("PRIVATE KEY".into())
        );
        assert_eq!(
            SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----")
                .unwrap_err(),
            DkimError::PemBase64("PRIVATE KEY".into())
        );
        assert_eq!(
            SigningKey::from_pem(
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----"
            )
            .unwrap_err(),
            DkimError::EncryptedKey
        );
        // An EC P-256 PKCS#8 key (OpenSSL's `genpkey -algorithm EC`), cut after the OID.
        let ec = der_wrap(
            0x30,
            &[
                &[0x02, 0x01, 0x00][..],
                &der_wrap(
                    0x30,
                    &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
                ),
            ]
            .concat(),
        );
        assert_eq!(
            SigningKey::from_pkcs8_der(&ec).unwrap_err(),
            DkimError::UnsupportedKeyAlgorithm("1.2.840.10045.2.1".into())
        );
    }

    #[test]
    fn ed25519_generate_round_trips() {
        let (pem, key) = generate(Algorithm::Ed25519Sha256, 0).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519Sha256);
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.dns_record(), key.dns_record());
        assert!(key.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
        assert_eq!(
            generate(Algorithm::RsaSha256, 1024).unwrap_err(),
            DkimError::RsaKeySize(1024)
        );
    }
}
