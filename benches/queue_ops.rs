//! Ready-queue operations: pushing and popping jobs on one domain's lock-free queue, from
//! one thread and from several at once (the shards of a hot domain), against a
//! `Mutex<VecDeque>` doing the same work in the same run as the peer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pigeon::queue::message::{Job, NewMessage, QueuedMessage};
use pigeon::queue::ready::ReadyQueues;
use pigeon::spool::location::{Location, SegmentKey};
use pigeon::spool::record::MessageId;

const OPS: u64 = 10_000;

fn job(message: &Arc<QueuedMessage>) -> Job {
    Job {
        message: message.clone(),
        recipients: Box::new([0]),
        attempts: 0,
    }
}

fn message() -> Arc<QueuedMessage> {
    Arc::new(QueuedMessage::new(NewMessage {
        id: MessageId::new(1, 0, 1),
        record: Location {
            segment: SegmentKey { shard: 0, seq: 1 },
            offset: 16,
        },
        received_micros: 0,
        sender: "list@src.test".into(),
        recipients: ["a@gmail.test"],
        smtputf8: false,
        eight_bit: false,
        size: 5120,
        states: vec![0],
    }))
}

/// `threads` threads each push then pop OPS jobs; returns the wall time.
fn lock_free(threads: usize, iters: u64) -> Duration {
    let queues = Arc::new(ReadyQueues::new(threads));
    let m = message();
    let start = Instant::now();
    for _ in 0..iters {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (q, m) = (queues.domain("gmail.test"), m.clone());
                std::thread::spawn(move || {
                    for _ in 0..OPS {
                        q.push(job(&m));
                    }
                    for _ in 0..OPS {
                        while q.pop(t as u8).is_none() {}
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    }
    start.elapsed()
}

fn mutexed(threads: usize, iters: u64) -> Duration {
    let q = Arc::new(Mutex::new(VecDeque::new()));
    let m = message();
    let start = Instant::now();
    for _ in 0..iters {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (q, m) = (q.clone(), m.clone());
                std::thread::spawn(move || {
                    for _ in 0..OPS {
                        q.lock().unwrap().push_back(job(&m));
                    }
                    for _ in 0..OPS {
                        while q.lock().unwrap().pop_front().is_none() {}
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    }
    start.elapsed()
}

fn queue_ops(c: &mut Criterion) {
    let mut group = c.benchmark_group("ready_queue");
    for threads in [1, 2, 4] {
        group.throughput(Throughput::Elements(2 * OPS * threads as u64));
        group.bench_function(format!("lock_free/{threads}_threads"), |b| {
            b.iter_custom(|iters| lock_free(threads, iters))
        });
        group.bench_function(format!("mutex_vecdeque/{threads}_threads"), |b| {
            b.iter_custom(|iters| mutexed(threads, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, queue_ops);
criterion_main!(benches);
