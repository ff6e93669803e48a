//! What the queue asks of the allocator per queued recipient, part by part, for a queue
//! shaped like the "Memory per queued recipient" benchmark (`docs/benchmarks.md`):
//! messages of 100 recipients spread over 100 domains, every recipient deferred once.
//!
//! A server's RSS adds what no structure holds (freed memory the allocator keeps, buffers
//! of connections), so this says where the bytes of a queue go, and the benchmark says
//! what a server costs. `cargo run --release --example queue_memory -- [MESSAGES]`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use pigeon::queue::deferred::Deferred;
use pigeon::queue::message::{jobs_for, Job, NewMessage, QueuedMessage};
use pigeon::runtime::memory::Allocator;
use pigeon::spool::location::{Location, SegmentKey};
use pigeon::spool::record::MessageId;

/// pigeon's allocator (mimalloc, as in the server), counting the bytes asked for and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to pigeon's allocator unchanged; the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        Allocator.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        Allocator.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        LIVE.fetch_add(size as isize - layout.size() as isize, Ordering::Relaxed);
        Allocator.realloc(ptr, layout, size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_anon() -> isize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<isize>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let recipients = (messages * 100) as f64;
    let per = |bytes: isize| bytes as f64 / recipients;
    let (start, rss_start) = (live(), rss_anon());

    let queued: Vec<Arc<QueuedMessage>> = (0..messages)
        .map(|m| {
            let addresses = (0..100)
                .map(|k| {
                    let g = m * 100 + k;
                    format!("u{g}@d{}.test", g % 100)
                })
                .collect::<Vec<String>>();
            QueuedMessage::new(NewMessage {
                id: MessageId::new(1, 0, m as u32),
                record: Location {
                    segment: SegmentKey { shard: 0, seq: 1 },
                    offset: 16,
                },
                received_micros: 0,
                sender: "blast@pigeon-load.test".into(),
                recipients: addresses,
                smtputf8: false,
                eight_bit: false,
                size: 5261,
                states: vec![0; 100],
            })
            .into_shared()
        })
        .collect();
    let after_messages = live();

    let jobs: Vec<Job> = queued
        .iter()
        .flat_map(|m| jobs_for(m, (0..100).map(|i| (i, 0)), |_| 100))
        .map(|(_, job)| job)
        .collect();
    let after_jobs = live();

    // One attempt, one outcome record per job, as settling a deferral does.
    let outcome_segment = SegmentKey { shard: 1, seq: 2 };
    for job in &jobs {
        job.message.outcomes_coming(&[]);
        job.message
            .record_outcomes(outcome_segment, job.recipients.len() as u32, &[], false);
    }
    let after_outcomes = live();

    // Deferred over an hour's retry with its ±10% jitter; the jobs are consumed.
    let mut deferred = Deferred::new();
    let mut noise = 0u64;
    for job in jobs {
        noise = noise
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let due = 3_240_000_000 + (noise >> 20) % 720_000_000;
        deferred.insert(0, due, Job { attempts: 1, ..job });
    }
    let end = live();
    // Freed memory goes back to the kernel a second after it was freed, when the allocator
    // collects (the server does it every few seconds, `runtime::memory`).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pigeon::runtime::memory::give_back();

    println!("recipients deferred:          {}", deferred.len());
    let rows = [
        ("messages and addresses", after_messages - start),
        ("ready jobs (while queued)", after_jobs - after_messages),
        ("outcome segments (1 attempt)", after_outcomes - after_jobs),
        (
            "deferred entries",
            end - after_outcomes + (after_jobs - after_messages),
        ),
        ("queue in all, once deferred", end - start),
        ("RSS growth, once deferred", rss_anon() - rss_start),
    ];
    for (what, bytes) in rows {
        println!("{what:<30} {:6.1} bytes per recipient", per(bytes));
    }
    std::hint::black_box((&queued, &deferred));
}
