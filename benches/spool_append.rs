//! The shard spool writer: `ShardSpool::append` of 5 KiB messages, with and without
//! `fdatasync`, one at a time and 32 at once (group commit).
//!
//! Run with `cargo bench --bench spool_append`. Each sample builds its own glommio
//! `LocalExecutor` and spool in a fresh temporary directory under cargo's target tmp dir
//! (on the file system of the checkout; set `PIGEON_BENCH_DIR` to measure another), makes
//! one unmeasured append so the segment is open, then times `iters` iterations with
//! `iter_custom`. Each append builds its record the way `session::driver::store` does:
//! a queue id, the `Received:` header, the 8-bit check, `encode_message` (CRC32C over the
//! content), then the three parts. `spool_record/encode_5KiB` times that step alone.
//!
//! - `serial`: one append per iteration, awaited before the next: with `always`, the
//!   latency of one write plus one `fdatasync`.
//! - `concurrent_32`: 32 tasks spawned per iteration, each appending once, all joined: the
//!   committer takes them as one batch and syncs once. Throughput is in records.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::LocalExecutorBuilder;
use pigeon::config::FsyncPolicy;
use pigeon::intake::received::received_header;
use pigeon::smtp::address::parse_mailbox;
use pigeon::smtp::envelope::{Envelope, Recipient};
use pigeon::spool::commit::{ShardSpool, SpoolOptions};
use pigeon::spool::record::encode_message;
use pigeon::spool::segments::Segments;

/// Size of the message content (wire form, before the `Received:` header).
const MESSAGE_SIZE: usize = 5 * 1024;
/// Appends in flight in the group-commit case.
const CONCURRENCY: usize = 32;
/// The default `spool.segment_size`.
const SEGMENT_SIZE: u64 = 64 << 20;

fn envelope() -> Envelope {
    Envelope {
        peer: "192.0.2.10:53124".parse().expect("socket address"),
        helo: "mail.sender.example".into(),
        protocol: "ESMTP",
        sender: Some(parse_mailbox(b"alice.smith@sender.example", false).expect("mailbox")),
        mail_params: format!("SIZE={MESSAGE_SIZE} BODY=8BITMIME"),
        mail_dsn: Default::default(),
        recipients: vec![Recipient {
            mailbox: parse_mailbox(b"bob@example.org", false).expect("mailbox"),
            params: String::new(),
            dsn: Default::default(),
        }],
        smtputf8: false,
        body_hashes: Vec::new(),
        auth: None,
    }
}

/// A 5 KiB message in wire form: headers, then 76-character lines.
fn message() -> Vec<u8> {
    let mut m = b"From: Alice Smith <alice.smith@sender.example>\r\n\
To: Bob <bob@example.org>\r\n\
Subject: Notes from the quarterly review\r\n\
Date: Sat, 28 Nov 2026 21:04:25 +0000\r\n\
Message-ID: <20261128210425.4f2a9c@sender.example>\r\n\
\r\n"
        .to_vec();
    let line = b"The spool keeps one append-only segment per shard, and syncs once per batch.";
    assert_eq!(line.len(), 76);
    while m.len() + line.len() + 2 <= MESSAGE_SIZE {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.resize(MESSAGE_SIZE - 2, b'x');
    m.extend_from_slice(b"\r\n");
    m
}

/// The record parts for one message, built as `session::driver::store` builds them.
fn record(spool: &ShardSpool, env: &Envelope, body: Vec<u8>) -> Vec<Vec<u8>> {
    let id = spool.next_id();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let received = received_header(env, "mx.example.org", &id.to_string(), now.as_secs());
    let eight_bit = !received.is_ascii() || !body.is_ascii();
    let head = encode_message(
        id,
        now.as_micros() as u64,
        env,
        eight_bit,
        &[&received, &body],
    );
    vec![head, received, body]
}

async fn append_one(spool: &ShardSpool, env: &Envelope, body: &[u8]) {
    let parts = record(spool, env, body.to_vec());
    spool.append(parts, 1).await.expect("append");
}

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("PIGEON_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// One sample: a fresh executor and spool, `iters` timed iterations of `concurrency`
/// appends each.
fn run(policy: FsyncPolicy, concurrency: usize, iters: u64) -> Duration {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let options = SpoolOptions {
        path: dir.path().to_path_buf(),
        fsync: policy,
        segment_size: SEGMENT_SIZE,
        min_free_space: 0,
        segments: Arc::new(Segments::new(dir.path().to_path_buf())),
    };
    let executor = LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    let elapsed = executor.run(async move {
        let (spool, committer) = ShardSpool::start(0, 1, options).expect("spool start");
        let committer = glommio::spawn_local(committer).detach();
        let env = Rc::new(envelope());
        let body: Rc<[u8]> = message().into();

        // Unmeasured: the first append creates the segment (and syncs its directory).
        append_one(&spool, &env, &body).await;

        let start = Instant::now();
        for _ in 0..iters {
            if concurrency == 1 {
                append_one(&spool, &env, &body).await;
                continue;
            }
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (spool, env, body) = (spool.clone(), env.clone(), body.clone());
                    glommio::spawn_local(async move { append_one(&spool, &env, &body).await })
                })
                .collect();
            for task in tasks {
                task.await;
            }
        }
        let elapsed = start.elapsed();

        // The committer ends once the last handle is gone; awaiting it closes the segment.
        drop(spool);
        committer.await;
        elapsed
    });
    drop(executor);
    drop(dir);
    elapsed
}

fn spool_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for (policy, name) in [
        (FsyncPolicy::Always, "always"),
        (FsyncPolicy::Never, "never"),
    ] {
        for (concurrency, shape) in [(1, "serial"), (CONCURRENCY, "concurrent_32")] {
            group.throughput(Throughput::Elements(concurrency as u64));
            group.bench_function(BenchmarkId::new(name, shape), |b| {
                b.iter_custom(|iters| run(policy, concurrency, iters))
            });
        }
    }
    group.finish();
}

/// The record building alone, for subtracting from the appends above.
fn spool_record(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let options = SpoolOptions {
        path: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Never,
        segment_size: SEGMENT_SIZE,
        min_free_space: 0,
        segments: Arc::new(Segments::new(dir.path().to_path_buf())),
    };
    // Only for `next_id`: the committer future is never polled and nothing is written.
    let (spool, _committer) = ShardSpool::start(0, 1, options).expect("spool start");
    let env = envelope();
    let body = message();
    let mut group = c.benchmark_group("spool_record");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_5KiB", |b| {
        b.iter(|| record(&spool, &env, body.clone()))
    });
    group.finish();
}

criterion_group!(benches, spool_append, spool_record);
criterion_main!(benches);
