//! Message content scanning: `DataScanner` (DATA) and `BdatEncoder` (BDAT), with two
//! baselines over the same buffer to put the figures in ratio form.
//!
//! Run with `cargo bench --bench data_scan`. For a 5 KiB and a 1 MiB message of 76-character
//! CRLF lines, some of them dot-stuffed, each scanner is fed the content whole and in 16 KiB
//! reads (what the driver reads at a time). The body `Vec` is allocated once and cleared
//! between iterations, so the figures are scanning and copying, not allocation.
//!
//! Baselines, over the DATA input:
//! - `memchr_line_ends`: `memchr::memchr` finding every `\n`, the raw rate of finding line
//!   ends that any line-oriented scanner is bounded by;
//! - `memcpy`: appending the input to the body, the copy the scanners also make.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pigeon::smtp::data::{BdatEncoder, DataScanner, Faults};

/// The driver's read size.
const READ_SIZE: usize = 16 * 1024;
/// Text characters per body line, before CRLF.
const LINE_TEXT: usize = 76;

const HEADERS: &str = "From: Alice Smith <alice.smith@example.org>\r\n\
To: Bob Jones <bob@example.net>\r\n\
Subject: Notes from the quarterly review\r\n\
Date: Sat, 28 Nov 2026 21:04:25 +0000\r\n\
Message-ID: <20261128210425.4f2a9c@mail.example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n";

const WORDS: &[&str] = &[
    "the",
    "spool",
    "message",
    "delivery",
    "queue",
    "of",
    "and",
    "a",
    "to",
    "server",
    "review",
    "quarter",
    "in",
    "latency",
    "throughput",
    "we",
    "report",
    "is",
    "for",
    "recipient",
    "with",
    "disk",
    "on",
    "budget",
    "that",
    "figures",
    "by",
    "mail",
    "next",
];

/// Message content as the user wrote it (what BDAT carries): headers, then body lines of
/// exactly [`LINE_TEXT`] characters plus CRLF, every 20th starting with a dot. Whole lines
/// are added while the total stays within `target` octets.
fn raw_message(target: usize) -> Vec<u8> {
    let mut out = HEADERS.as_bytes().to_vec();
    let mut seed: u32 = 0x2545_f491;
    let mut next_word = move || {
        // A fixed LCG: the same text on every run.
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        WORDS[(seed >> 16) as usize % WORDS.len()]
    };
    let mut n = 0;
    while out.len() + LINE_TEXT + 2 <= target {
        let mut line = String::with_capacity(LINE_TEXT);
        if n % 20 == 7 {
            line.push_str("...");
        }
        while line.len() < LINE_TEXT {
            if !line.is_empty() && !line.ends_with('.') {
                line.push(' ');
            }
            line.push_str(next_word());
        }
        line.truncate(LINE_TEXT);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        n += 1;
    }
    out
}

/// What a client sends after DATA for `raw`: dot-stuffed, then `.CRLF`.
fn data_input(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 64 + 3);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn scan_data(input: &[u8], read: usize, body: &mut Vec<u8>) -> bool {
    body.clear();
    let mut scanner = DataScanner::new(usize::MAX);
    for chunk in input.chunks(read) {
        let (_, done) = scanner.feed(chunk, body);
        if done {
            return true;
        }
    }
    false
}

fn encode_bdat(raw: &[u8], read: usize, body: &mut Vec<u8>) -> Faults {
    body.clear();
    let mut encoder = BdatEncoder::new(usize::MAX);
    // One `BDAT <size> LAST` chunk, read `read` octets at a time.
    encoder.admit(raw.len() as u64);
    for piece in raw.chunks(read) {
        encoder.feed(piece, body);
    }
    encoder.finish(body)
}

fn count_line_ends(mut haystack: &[u8]) -> usize {
    let mut n = 0;
    while let Some(i) = memchr::memchr(b'\n', haystack) {
        n += 1;
        haystack = &haystack[i + 1..];
    }
    n
}

fn bench_size(c: &mut Criterion, label: &str, target: usize) {
    let raw = raw_message(target);
    let input = data_input(&raw);
    let wire = &input[..input.len() - 3];
    let mut body = Vec::with_capacity(input.len());

    // The benches must measure the success path: check once that it is one.
    for read in [input.len(), READ_SIZE] {
        assert!(scan_data(&input, read, &mut body));
        assert_eq!(body, wire);
        assert_eq!(encode_bdat(&raw, read, &mut body), Faults::default());
        assert_eq!(body, wire);
    }

    let mut group = c.benchmark_group(format!("data_scan/{label}"));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("data_whole", |b| {
        b.iter(|| scan_data(black_box(&input), input.len(), &mut body))
    });
    group.bench_function("data_16KiB_reads", |b| {
        b.iter(|| scan_data(black_box(&input), READ_SIZE, &mut body))
    });
    group.bench_function("memchr_line_ends", |b| {
        b.iter(|| count_line_ends(black_box(&input)))
    });
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            body.clear();
            body.extend_from_slice(black_box(&input));
        })
    });

    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("bdat_whole", |b| {
        b.iter(|| encode_bdat(black_box(&raw), raw.len(), &mut body))
    });
    group.bench_function("bdat_16KiB_reads", |b| {
        b.iter(|| encode_bdat(black_box(&raw), READ_SIZE, &mut body))
    });
    group.finish();
}

fn data_scan(c: &mut Criterion) {
    bench_size(c, "5KiB", 5 * 1024);
    bench_size(c, "1MiB", 1024 * 1024);
}

criterion_group!(benches, data_scan);
criterion_main!(benches);
