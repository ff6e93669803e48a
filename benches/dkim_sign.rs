//! DKIM signing cost per message: body hash plus one signature, for a typical 5 KiB message
//! and a 1 MiB one, with each algorithm (relaxed/relaxed). For 5 KiB the signature
//! dominates (RSA-2048 far more than Ed25519); for 1 MiB the body hash does, and the
//! `body_hash` group shows it alone for each body canonicalization.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pigeon::dkim::{sign_message, BodyHasher, Canonicalization, Signer, SigningKey};

/// The test keys (dkimpy's 2048-bit RSA key, RFC 8463's Ed25519 key), so runs compare.
fn key(rel: &str) -> Arc<SigningKey> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dkim")
        .join(rel);
    let pem = std::fs::read_to_string(&path).expect("test key present");
    Arc::new(SigningKey::from_pem(&pem).expect("test key loads"))
}

/// A message of about `size` octets: the usual header fields, then text lines of mixed
/// length with the runs of spaces and tabs that relaxed canonicalization works on.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Newsletter <news@example.com>\r\nTo: reader@example.net\r\n\
        Subject: This week's news, folded\r\n over two lines\r\n\
        Date: Tue, 14 Nov 2023 22:13:20 +0000\r\nMessage-ID: <1700000000.42@example.com>\r\n\
        MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
        List-Unsubscribe: <https://example.com/u/42>\r\n\r\n"
        .to_vec();
    let mut i = 0;
    while m.len() < size {
        let line = match i % 4 {
            0 => "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n",
            1 => "  indented\tline with  double spaces   and trailing blanks   \r\n",
            2 => "\r\n",
            _ => "Short line.\r\n",
        };
        m.extend_from_slice(line.as_bytes());
        i += 1;
    }
    m
}

fn bench(c: &mut Criterion) {
    let signers = [
        (
            "rsa-sha256",
            Signer::new("example.com", "s1", key("dkimpy/2048_testkey.key")),
        ),
        (
            "ed25519-sha256",
            Signer::new(
                "example.com",
                "s2",
                key("rfc8463/ed25519-brisbane.private.pkcs8.pem"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("dkim_sign");
    for (size_name, size) in [("5KiB", 5 * 1024), ("1MiB", 1024 * 1024)] {
        let m = message(size);
        group.throughput(Throughput::Bytes(m.len() as u64));
        for (alg, signer) in &signers {
            group.bench_function(format!("{alg}/{size_name}"), |b| {
                b.iter(|| sign_message(signer, black_box(&m), 1_700_000_000).expect("signs"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("body_hash");
    let m = message(1024 * 1024);
    group.throughput(Throughput::Bytes(m.len() as u64));
    for canon in [Canonicalization::Simple, Canonicalization::Relaxed] {
        group.bench_function(format!("{canon}/1MiB"), |b| {
            b.iter(|| {
                // 64 KiB chunks, as DATA arrives from the socket.
                let mut h = BodyHasher::new(canon);
                for chunk in black_box(&m).chunks(64 * 1024) {
                    h.update(chunk);
                }
                h.finish()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
