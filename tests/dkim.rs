//! DKIM signatures made by `pigeon::dkim`, proven by an independent verifier: dkimpy
//! (PyPI `dkimpy[ed25519]`, tested with 1.1.8), run through `tests/support/dkim_verify.py`
//! with the public keys given through its DNS hook, so nothing touches the network.
//!
//! Every verifying test also carries a negative control (an altered message must fail), so
//! a verifier that said "pass" to everything would be caught. The RFC 8463 appendix A
//! example pins the body hash and the (deterministic) Ed25519 signature byte for byte.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;

use common::dkimpy::dkimpy;
use pigeon::dkim::{
    already_signed, from_domain, generate, sign_message, Algorithm, BodyHasher, Canonicalization,
    DkimError, Signer, SigningKey,
};
use proptest::prelude::*;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dkim")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// dkimpy's test messages have LF line ends; pigeon signs content form (CRLF).
fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 16);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// dkimpy's own 2048-bit RSA test key, PKCS#1 PEM.
fn rsa_key() -> Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(SigningKey::from_pem(&read("dkimpy/2048_testkey.key")).unwrap()))
        .clone()
}

/// RFC 8463's Ed25519 example key, PKCS#8 v1 PEM.
fn ed_key() -> Arc<SigningKey> {
    static KEY: OnceLock<Arc<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        Arc::new(SigningKey::from_pem(&read("rfc8463/ed25519-brisbane.private.pkcs8.pem")).unwrap())
    })
    .clone()
}

fn signer(
    key: Arc<SigningKey>,
    selector: &str,
    hc: Canonicalization,
    bc: Canonicalization,
) -> Signer {
    let mut s = Signer::new("example.com", selector, key);
    s.header_canon = hc;
    s.body_canon = bc;
    s
}

/// The DNS records dkimpy is given: one per (selector, key) under example.com.
fn record(s: &Signer) -> (String, String) {
    (
        format!("{}._domainkey.{}", s.selector, s.domain),
        s.key.dns_record(),
    )
}

/// Signs `message` with each signer (all over the original header section, as pigeon does
/// for dual signing) and prepends the fields.
fn signed(signers: &[&Signer], message: &[u8]) -> Vec<u8> {
    let t = now();
    let mut out = Vec::new();
    for s in signers {
        out.extend(sign_message(s, message, t).unwrap());
    }
    out.extend_from_slice(message);
    out
}

/// Messages that stress canonicalization and header selection; content form, CRLF.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let head =
        "From: Joe SixPack <joe@example.com>\r\nTo: Suzie Q <suzie@shopping.example.net>\r\n\
                Subject: Is dinner ready?\r\nDate: Fri, 11 Jul 2003 21:00:37 -0700\r\n\
                Message-ID: <20030712040037.46341.5F8J@example.com>\r\n";
    let with = |body: &[u8]| [head.as_bytes(), b"\r\n", body].concat();
    let long_line = format!("{}\r\n", "x".repeat(990));
    let mut big = Vec::new();
    for i in 0..4000 {
        big.extend_from_slice(format!("line {i}: the quick  brown\tfox \r\n").as_bytes());
    }
    vec![
        ("plain", with(b"Hi.\r\n\r\nWe lost the game.  Are you hungry yet?\r\n\r\nJoe.\r\n")),
        ("trailing blank lines", with(b"text\r\n\r\n\r\n\r\n")),
        ("trailing whitespace lines", with(b"text\r\n  \r\n\t\r\n")),
        ("long lines", with([long_line.as_bytes(), long_line.as_bytes(), b"end\r\n"].concat().as_slice())),
        ("large body", with(&big)),
        (
            "8-bit",
            [
                "From: J\u{f6}rg <j@example.com>\r\nTo: a@example.net\r\nSubject: caf\u{e9} \u{2615}\r\n"
                    .as_bytes(),
                b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
                "gr\u{fc}\u{df}e \u{1f600}\r\n".as_bytes(),
                b"latin-1 \xe9\xe8 bytes\r\n",
            ]
            .concat(),
        ),
        ("dot lines", with(b".\r\n..\r\n.hidden\r\n. \r\nend\r\n")),
        (
            "folding and odd whitespace",
            b"From:joe@example.com\r\nTo:\ta@example.net,\r\n\tb@example.net  \r\n\
              Subject:   folded\r\n\t  over\r\n   three lines  \r\nCc: c@example.net\r\n\
              Cc: d@example.net\r\nX-Unsigned: whatever\r\n\r\n  leading\r\n\tmixed \t whitespace\t \r\n"
                .to_vec(),
        ),
        ("empty body", with(b"")),
        ("body without final CRLF", with(b"no newline at the end")),
    ]
}

const COMBOS: [(Canonicalization, Canonicalization); 4] = [
    (Canonicalization::Simple, Canonicalization::Simple),
    (Canonicalization::Relaxed, Canonicalization::Relaxed),
    (Canonicalization::Relaxed, Canonicalization::Simple),
    (Canonicalization::Simple, Canonicalization::Relaxed),
];

/// Every case, every canonicalization pair, with `key`: all verify; the same messages with
/// one body byte changed, and with a signed header changed, all fail.
fn verify_matrix(key: Arc<SigningKey>) {
    let mut records = Vec::new();
    let mut good = Vec::new();
    let mut names = Vec::new();
    for (i, (hc, bc)) in COMBOS.iter().enumerate() {
        let s = signer(key.clone(), &format!("sel{i}"), *hc, *bc);
        records.push(record(&s));
        for (name, message) in cases() {
            names.push(format!("{name} ({hc}/{bc})"));
            good.push(signed(&[&s], &message));
        }
    }
    let verdicts = dkimpy(&records, &good);
    for (name, v) in names.iter().zip(&verdicts) {
        assert_eq!(v.len(), 1, "{name}");
        assert!(v[0].ok, "{name}: {}", v[0].error);
        assert_eq!(v[0].d, "example.com");
    }

    // Negative controls on the same messages.
    let mut bad = Vec::new();
    for m in &good {
        // One body byte: the case of the body's last letter (or one added to an empty
        // body).
        let mut body_changed = m.clone();
        let body_start = find(m, b"\r\n\r\n").unwrap() + 4;
        match body_changed[body_start..]
            .iter()
            .rposition(|b| b.is_ascii_alphabetic())
        {
            Some(i) => body_changed[body_start + i] ^= 0x20,
            None => body_changed.extend_from_slice(b"x\r\n"),
        }
        bad.push(body_changed);
        // A signed header: one letter of the Subject's value.
        let mut header_changed = m.clone();
        let value = find(&header_changed, b"\nSubject:").unwrap() + b"\nSubject:".len();
        let at = value
            + header_changed[value..]
                .iter()
                .position(|b| b.is_ascii_alphabetic())
                .unwrap();
        header_changed[at] ^= 0x01;
        bad.push(header_changed);
    }
    let verdicts = dkimpy(&records, &bad);
    for (i, v) in verdicts.iter().enumerate() {
        let what = if i % 2 == 0 {
            "body byte"
        } else {
            "signed header"
        };
        assert!(
            !v[0].ok,
            "{} with a changed {what} still verifies",
            names[i / 2]
        );
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn rsa_sha256_verifies_with_dkimpy() {
    verify_matrix(rsa_key());
}

#[test]
fn ed25519_sha256_verifies_with_dkimpy() {
    verify_matrix(ed_key());
}

#[test]
fn dual_signature_both_verify() {
    let rsa = Signer::new("example.com", "rsa1", rsa_key());
    let ed = Signer::new("example.com", "ed1", ed_key());
    let records = vec![record(&rsa), record(&ed)];
    let message = &cases()[0].1;
    // One body hash serves both signers (same body canonicalization), as in reception.
    let (headers, body) = message.split_at(find(message, b"\r\n\r\n").unwrap() + 2);
    let mut hasher = BodyHasher::new(Canonicalization::Relaxed);
    hasher.update(&body[2..]);
    let bh = hasher.finish();
    let t = now();
    let dual = [
        rsa.sign(headers, &bh, t).unwrap(),
        ed.sign(headers, &bh, t).unwrap(),
        message.clone(),
    ]
    .concat();
    let mut tampered = dual.clone();
    let at = find(&tampered, b"We lost").unwrap();
    tampered[at] = b'w';
    let v = dkimpy(&records, &[dual, tampered]);
    assert_eq!(v[0].len(), 2);
    assert!(v[0].iter().all(|s| s.ok), "{:?}", v[0]);
    assert_eq!((v[0][0].s.as_str(), v[0][1].s.as_str()), ("rsa1", "ed1"));
    assert!(v[1].iter().all(|s| !s.ok), "{:?}", v[1]);
}

#[test]
fn over_signed_from_and_relaxed_tolerance() {
    let relaxed = Signer::new("example.com", "r", ed_key());
    let simple = signer(
        ed_key(),
        "s",
        Canonicalization::Simple,
        Canonicalization::Simple,
    );
    let records = vec![record(&relaxed), record(&simple)];
    let message = &cases()[0].1;
    let m_relaxed = signed(&[&relaxed], message);
    let m_simple = signed(&[&simple], message);

    // Refolded Subject and trailing spaces on body lines: relaxed passes, simple fails.
    let mangle = |m: &[u8]| {
        let s = String::from_utf8(m.to_vec()).unwrap();
        s.replace(
            "Subject: Is dinner ready?",
            "Subject: Is dinner\r\n   ready?",
        )
        .replace("Hi.\r\n", "Hi.   \r\n")
        .into_bytes()
    };
    // A second From added in transit (above the first, where many readers look): the
    // over-signed From makes the signature fail. Adding an unsigned field does not.
    let second_from = |m: &[u8]| {
        let at = find(m, b"From:").unwrap();
        [&m[..at], b"From: Mallory <m@evil.example>\r\n", &m[at..]].concat()
    };
    let received = |m: &[u8]| [b"Received: from relay.example by mx.example\r\n", m].concat();

    let v = dkimpy(
        &records,
        &[
            mangle(&m_relaxed),
            mangle(&m_simple),
            second_from(&m_relaxed),
            received(&m_relaxed),
        ],
    );
    assert!(
        v[0][0].ok,
        "relaxed should survive refolding: {}",
        v[0][0].error
    );
    assert!(!v[1][0].ok, "simple should not survive refolding");
    assert!(!v[2][0].ok, "a second From must break the signature");
    assert!(
        v[3][0].ok,
        "an unsigned Received must not: {}",
        v[3][0].error
    );
}

#[test]
fn field_shape_tags_and_expiry() {
    let mut s = Signer::new("example.com", "sel", rsa_key());
    s.expire_after = Some(Duration::from_secs(7 * 86400));
    let message = &cases()[7].1; // folding case: two Cc fields
    let field = String::from_utf8(sign_message(&s, message, 1_700_000_000).unwrap()).unwrap();
    assert!(field.starts_with(
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel;"
    ));
    assert!(field.ends_with("\r\n") && !field.ends_with("\r\n\r\n"));
    for line in field.trim_end().split("\r\n") {
        assert!(line.len() <= 78, "{line:?}");
    }
    let unfolded = field.replace("\r\n ", " ");
    assert!(
        unfolded.contains(" t=1700000000; x=1700604800;"),
        "{unfolded}"
    );
    // Each present field once per instance, bottom-up; From once more than present.
    assert!(
        unfolded.contains(" h=From:From:To:Subject:Cc:Cc;"),
        "{unfolded}"
    );
    // And it verifies, with x= in the future.
    s.expire_after = Some(Duration::from_secs(3600));
    let v = dkimpy(&[record(&s)], &[signed(&[&s], message)]);
    assert!(v[0][0].ok, "{}", v[0][0].error);
}

/// RFC 8463 appendix A: the example message signed with the example Ed25519 key and the
/// example's parameters gives the example's bh= and (Ed25519 being deterministic) b=.
///
/// The generic [`Signer::sign`] writes its own tag list (`h=From:To:...`, no `i=` or
/// `q=`), and the signature covers the tag list's text, so it cannot give the RFC's b=:
/// [`Signer::sign_with_tags`] takes the RFC's tags verbatim (up to `b=`) instead. The body
/// hash and the header selection are the generic code's.
#[test]
fn rfc8463_example_reproduced() {
    let unsigned = read("rfc8463/unsigned-message.eml");
    let signed_rfc = read("rfc8463/signed-message.eml");
    let rfc_field = signed_rfc
        .split("\r\nDKIM-Signature:")
        .next()
        .unwrap()
        .strip_prefix("DKIM-Signature:")
        .unwrap();
    let tag = |name: &str| -> String {
        rfc_field
            .split(';')
            .find_map(|t| t.trim().strip_prefix(&format!("{name}=")))
            .unwrap()
            .split_whitespace()
            .collect()
    };
    let (rfc_bh, rfc_b) = (tag("bh"), tag("b"));

    // bh= through the streaming hasher (byte by byte, to exercise chunking too).
    let (headers, body) = unsigned.split_at(unsigned.find("\r\n\r\n").unwrap() + 2);
    let mut hasher = BodyHasher::new(Canonicalization::Relaxed);
    for b in &body.as_bytes()[2..] {
        hasher.update(std::slice::from_ref(b));
    }
    let bh = hasher.finish();
    assert_eq!(data_encoding::BASE64.encode(&bh), rfc_bh);
    assert_eq!(rfc_bh, "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=");

    // b= with the RFC's own tag list.
    let s = Signer::new("football.example.com", "brisbane", ed_key());
    let tags_up_to_b = &rfc_field[..rfc_field.find(" b=").unwrap() + 3];
    let field = s.sign_with_tags(headers.as_bytes(), tags_up_to_b).unwrap();
    let field = String::from_utf8(field).unwrap();
    let ours_b: String = field[field.rfind("b=").unwrap() + 2..]
        .split_whitespace()
        .collect();
    assert_eq!(ours_b, rfc_b);
    assert!(field.starts_with(&format!("DKIM-Signature:{tags_up_to_b}")));
    assert!(field.ends_with("==\r\n"));

    // The generic signer over the same message, same t=, verifies (different b=, since
    // its tag text differs) and carries the same bh=.
    let generic = String::from_utf8(s.sign(headers.as_bytes(), &bh, 1528637909).unwrap()).unwrap();
    assert!(generic
        .replace("\r\n ", " ")
        .contains(&format!("bh={rfc_bh};")));

    // The key is the RFC's: its record matches appendix A.2.
    assert_eq!(
        ed_key().dns_record(),
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    );

    // Harness check: dkimpy accepts the RFC's own signed message with the RFC's records
    // (its RSA key is 1024 bits, which dkimpy accepts and pigeon will not sign with).
    let zone = read("rfc8463/dns-records.zone");
    let rsa_record: String = zone
        .lines()
        .find(|l| l.starts_with("test._domainkey"))
        .unwrap()
        .split('"')
        .skip(1)
        .step_by(2)
        .collect();
    let records = vec![
        (
            "brisbane._domainkey.football.example.com".to_string(),
            ed_key().dns_record(),
        ),
        (
            "test._domainkey.football.example.com".to_string(),
            rsa_record,
        ),
    ];
    let v = dkimpy(&records, &[signed_rfc.into_bytes()]);
    assert!(v[0].iter().all(|s| s.ok), "{:?}", v[0]);
}

#[test]
fn keys_load_and_publish_what_dkimpy_published() {
    // dkimpy's RSA keys (PKCS#1 and PKCS#8): our record's p= is theirs.
    for (key, published) in [
        (
            "dkimpy/2048_testkey.key",
            "dkimpy/2048_testkey_wo_markers.pub.txt",
        ),
        (
            "dkimpy/2048_testkey_PKCS8.key",
            "dkimpy/2048_testkey_PKCS8.key.pub.txt",
        ),
    ] {
        let k = SigningKey::from_pem(&read(key)).unwrap();
        assert_eq!(k.algorithm(), Algorithm::RsaSha256);
        let p = |r: &str| r.split("p=").nth(1).unwrap().trim().to_string();
        assert_eq!(p(&k.dns_record()), p(&read(published)), "{key}");
        assert!(k.dns_record().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
    }
    // 1024-bit keys (RFC 6376's and RFC 8463's examples) are refused, with the reason.
    for small in [
        "rfc6376/appendix-c-brisbane.private.pem",
        "rfc8463/rsa-test.private.pem",
        "rfc8463/rsa-test.private.pkcs8.pem",
    ] {
        match SigningKey::from_pem(&read(small)) {
            Err(DkimError::KeyRejected {
                algorithm: "rsa",
                reason,
            }) => {
                assert!(reason.contains("2048"), "{reason}")
            }
            other => panic!("{small}: {other:?}"),
        }
    }
    // A public key where a private key belongs.
    assert_eq!(
        SigningKey::from_pem(&read("rfc8463/ed25519-brisbane.public.spki.pem")).unwrap_err(),
        DkimError::UnsupportedPem("PUBLIC KEY".into())
    );
}

#[test]
fn generated_keys_verify() {
    let (rsa_pem, rsa) = generate(Algorithm::RsaSha256, 2048).unwrap();
    let (ed_pem, ed) = generate(Algorithm::Ed25519Sha256, 0).unwrap();
    assert!(rsa_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // The PEM written to the key file loads back to the same key.
    let rsa_again = SigningKey::from_pem(&rsa_pem).unwrap();
    let ed_again = SigningKey::from_pem(&ed_pem).unwrap();
    assert_eq!(rsa_again.dns_record(), rsa.dns_record());
    assert_eq!(ed_again.dns_record(), ed.dns_record());
    let a = Signer::new("example.com", "gen-rsa", Arc::new(rsa_again));
    let b = Signer::new("example.com", "gen-ed", Arc::new(ed_again));
    let message = &cases()[0].1;
    let v = dkimpy(&[record(&a), record(&b)], &[signed(&[&a, &b], message)]);
    assert!(v[0].iter().all(|s| s.ok), "{:?}", v[0]);
}

#[test]
fn dkimpy_test_messages() {
    let rsa = Signer::new("example.com", "rsa", rsa_key());
    let ed = Signer::new("example.com", "ed", ed_key());
    let mut messages = Vec::new();
    for name in [
        "test.message",
        "test2.message",
        "test_extra.message",
        "rfc6376.msg",
        "rfc6376.w1258.msg",
    ] {
        let m = crlf(&std::fs::read(data(&format!("dkimpy/{name}"))).unwrap());
        messages.push(signed(&[&rsa, &ed], &m));
    }
    let v = dkimpy(&[record(&rsa), record(&ed)], &messages);
    for per in &v {
        // Our two signatures on top; test2.message also carries an old Gmail one below.
        assert!(per[0].ok && per[1].ok, "{per:?}");
    }
}

#[test]
fn signing_decisions() {
    let s = Signer::new("example.com", "sel", ed_key());
    let message = &cases()[0].1;
    let m = signed(&[&s], message);
    let headers = &m[..find(&m, b"\r\n\r\n").unwrap() + 2];
    assert!(already_signed(headers, "example.com", "sel"));
    assert!(already_signed(headers, "EXAMPLE.com", "SEL"));
    assert!(!already_signed(headers, "example.com", "other"));
    assert!(!already_signed(
        &message[..message.len() / 2],
        "example.com",
        "sel"
    ));
    assert_eq!(from_domain(headers).as_deref(), Some("example.com"));
    // Bad identities fail with a named tag, before any signing.
    let mut bad = s.clone();
    bad.domain = "exa mple.com".into();
    assert!(matches!(
        sign_message(&bad, message, 1),
        Err(DkimError::InvalidTag { tag: "d", .. })
    ));
}

/// §3.4.3 and §3.4.4, written as directly as possible over the whole body (CRLF lines).
fn reference_body(canon: Canonicalization, body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut rest = body;
    while let Some(i) = find(rest, b"\r\n") {
        lines.push(rest[..i].to_vec());
        rest = &rest[i + 2..];
    }
    if !rest.is_empty() {
        lines.push(rest.to_vec());
    }
    if canon == Canonicalization::Relaxed {
        for line in &mut lines {
            let mut out: Vec<u8> = Vec::new();
            for (i, &b) in line.iter().enumerate() {
                let wsp = b == b' ' || b == b'\t';
                let prev_wsp = i > 0 && (line[i - 1] == b' ' || line[i - 1] == b'\t');
                if !wsp {
                    if prev_wsp {
                        out.push(b' ');
                    }
                    out.push(b);
                }
            }
            *line = out;
        }
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out: Vec<u8> = lines
        .iter()
        .flat_map(|l| [&l[..], b"\r\n"].concat())
        .collect();
    if out.is_empty() && canon == Canonicalization::Simple {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn body_hash(canon: Canonicalization, chunks: &[&[u8]]) -> [u8; 32] {
    let mut h = BodyHasher::new(canon);
    for c in chunks {
        h.update(c);
    }
    h.finish()
}

proptest! {
    /// Any chunking of a body gives the same hash, and that hash is the SHA-256 of the
    /// reference canonical form. Bodies are drawn from the bytes that matter (CR, LF,
    /// SP, HTAB, dot, a letter, an 8-bit byte) so edge cases are common.
    #[test]
    fn body_hasher_chunking_is_invisible(
        body in proptest::collection::vec(
            prop::sample::select(vec![b'\r', b'\n', b' ', b'\t', b'.', b'a', 0xe9]), 0..300),
        cuts in proptest::collection::vec(0usize..300, 0..8),
    ) {
        // The reference handles CRLF lines; a CR not before LF is content in both.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
        cuts.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for c in cuts {
            chunks.push(&body[start..c]);
            start = c;
        }
        chunks.push(&body[start..]);
        for canon in [Canonicalization::Simple, Canonicalization::Relaxed] {
            let whole = body_hash(canon, &[&body]);
            prop_assert_eq!(body_hash(canon, &chunks), whole);
            let one_by_one: Vec<&[u8]> = body.chunks(1).collect();
            prop_assert_eq!(body_hash(canon, &one_by_one), whole);
            let expected = ring_sha256(&reference_body(canon, &body));
            prop_assert_eq!(whole, expected);
        }
    }
}

fn ring_sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

proptest! {
    /// The header readers take whatever a client sent: they must not panic on any bytes.
    #[test]
    fn header_readers_never_panic(
        headers in proptest::collection::vec(
            prop::sample::select(b"From:<>@,;:\"\\()[] \t\r\nab.DKIM-Signature=d=s=".to_vec()), 0..200),
    ) {
        let _ = from_domain(&headers);
        let _ = already_signed(&headers, "a", "b");
        let s = Signer::new("example.com", "sel", ed_key());
        prop_assert!(s.sign(&headers, &[0; 32], 1).is_ok());
    }
}

/// Keys and signers are shared by every shard; hashers move between tasks.
#[test]
fn shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<SigningKey>();
    send_sync::<Signer>();
    send::<BodyHasher>();
}
