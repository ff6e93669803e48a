//! SMTP command-line and mailbox parsing: `Command::parse` and `parse_mailbox`.
//!
//! Run with `cargo bench --bench smtp_parse`. Each command line is benched on its own
//! (throughput in bytes of the line, without CRLF, as the session passes it), and the whole
//! set once as a mix (throughput in lines). See docs/benchmarks.md for figures.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pigeon::smtp::address::parse_mailbox;
use pigeon::smtp::command::Command;

/// What a typical ESMTP transaction sends, plus the unusual address forms the parser must
/// still handle. Lines are given without their CRLF, as the session hands them over.
const COMMANDS: &[(&str, &[u8])] = &[
    ("ehlo", b"EHLO mail-wr1-f54.google.example.com"),
    (
        "mail_size_body",
        b"MAIL FROM:<bounces+12345-abcd-user=example.org@em1234.sender.example.net> \
SIZE=48213 BODY=8BITMIME",
    ),
    ("rcpt", b"RCPT TO:<alice.smith@example.org>"),
    (
        "rcpt_quoted_local",
        b"RCPT TO:<\"john q. public\"@example.org>",
    ),
    (
        "rcpt_source_route",
        b"RCPT TO:<@relay1.example,@relay2.example:bob@example.org>",
    ),
    ("data", b"DATA"),
    ("bdat_last", b"BDAT 86016 LAST"),
    ("quit", b"QUIT"),
];

/// Paths as they stand between the angle brackets of MAIL or RCPT.
const MAILBOXES: &[(&str, &[u8])] = &[
    ("plain", b"alice.smith@example.org"),
    (
        "verp",
        b"bounces+12345-abcd-user=example.org@em1234.sender.example.net",
    ),
    ("quoted_local", b"\"john q. public\"@example.org"),
    (
        "source_route",
        b"@relay1.example,@relay2.example:bob@example.org",
    ),
    ("address_literal", b"postmaster@[192.0.2.17]"),
];

fn command_parse(c: &mut Criterion) {
    // Every line must parse: a bench of the error path would measure something else.
    for (name, line) in COMMANDS {
        assert!(Command::parse(line).is_ok(), "{name} does not parse");
    }
    let mut group = c.benchmark_group("command_parse");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &(name, line) in COMMANDS {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| Command::parse(black_box(line)))
        });
    }
    group.throughput(Throughput::Elements(COMMANDS.len() as u64));
    group.bench_function("mix", |b| {
        b.iter(|| {
            for (_, line) in COMMANDS {
                // Keep each result alive so the parse is not optimised away.
                let _ = black_box(Command::parse(black_box(line)));
            }
        })
    });
    group.finish();
}

fn mailbox_parse(c: &mut Criterion) {
    for (name, path) in MAILBOXES {
        assert!(parse_mailbox(path, false).is_ok(), "{name} does not parse");
    }
    let mut group = c.benchmark_group("parse_mailbox");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for &(name, path) in MAILBOXES {
        group.throughput(Throughput::Bytes(path.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), path, |b, path| {
            b.iter(|| parse_mailbox(black_box(path), false))
        });
    }
    group.finish();
}

criterion_group!(benches, command_parse, mailbox_parse);
criterion_main!(benches);
