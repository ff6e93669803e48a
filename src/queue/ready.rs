//! Per-domain ready queues, shared by all shards without a lock.
//!
//! The registry is a lock-free skip list from domain to [`DomainQueue`]; each queue is a
//! lock-free FIFO of jobs plus an atomic count of open connections. Any shard may start a
//! connection to any domain while the domain's connection limit allows, so one hot domain
//! (40% of a list at gmail.com) is served by every core, not by the shard that happened
//! to accept the message.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam::queue::SegQueue;
use crossbeam_skiplist::SkipMap;

use crate::queue::message::Job;

/// The ready jobs of one destination domain and its open connections.
#[derive(Debug)]
pub struct DomainQueue {
    /// The domain, lower case.
    pub domain: String,
    jobs: SegQueue<Job>,
    connections: AtomicU32,
}

impl DomainQueue {
    fn new(domain: String) -> DomainQueue {
        DomainQueue {
            domain,
            jobs: SegQueue::new(),
            connections: AtomicU32::new(0),
        }
    }

    /// Adds a job at the back.
    pub fn push(&self, job: Job) {
        self.jobs.push(job);
    }

    /// Takes the job at the front.
    pub fn pop(&self) -> Option<Job> {
        self.jobs.pop()
    }

    /// Jobs waiting (a hint: other shards push and pop concurrently).
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Open connections to this domain, all shards together.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Acquire)
    }

    /// Takes a connection slot if fewer than `limit` are open.
    pub fn try_open_connection(&self, limit: u32) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a connection slot back.
    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every domain's ready queue.
#[derive(Debug, Default)]
pub struct ReadyQueues {
    domains: SkipMap<String, Arc<DomainQueue>>,
}

impl ReadyQueues {
    /// An empty set of queues.
    pub fn new() -> ReadyQueues {
        ReadyQueues::default()
    }

    /// The queue of `domain` (lower case), created on first use.
    pub fn domain(&self, domain: &str) -> Arc<DomainQueue> {
        if let Some(e) = self.domains.get(domain) {
            return e.value().clone();
        }
        let q = Arc::new(DomainQueue::new(domain.to_owned()));
        self.domains
            .get_or_insert(domain.to_owned(), q)
            .value()
            .clone()
    }

    /// Queues a job for `domain`.
    pub fn push(&self, domain: &str, job: Job) {
        self.domain(domain).push(job);
    }

    /// Every domain queue that has jobs waiting.
    pub fn busy(&self) -> Vec<Arc<DomainQueue>> {
        self.domains
            .iter()
            .map(|e| e.value().clone())
            .filter(|q| !q.is_empty())
            .collect()
    }

    /// Jobs waiting over all domains.
    pub fn total(&self) -> usize {
        self.domains.iter().map(|e| e.value().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::message::QueuedMessage;
    use crate::spool::record::MessageId;
    use crate::spool::replay::SegmentKey;

    fn job(n: u32) -> Job {
        let m = QueuedMessage::new(
            MessageId::new(1, 0, n),
            SegmentKey { shard: 0, seq: 0 },
            0,
            0,
            String::new(),
            vec!["a@a.test".into()],
            false,
            false,
            0,
            vec![0],
        );
        Job {
            message: Arc::new(m),
            recipients: Box::new([0]),
            attempts: 0,
        }
    }

    #[test]
    fn every_job_pushed_from_many_threads_is_popped_once() {
        let queues = Arc::new(ReadyQueues::new());
        let pushers: Vec<_> = (0..4)
            .map(|t| {
                let q = queues.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        q.push(
                            if i % 2 == 0 { "a.test" } else { "b.test" },
                            job(t * 1000 + i),
                        );
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        assert_eq!(queues.total(), 4000);
        let poppers: Vec<_> = (0..4)
            .map(|_| {
                let q = queues.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for d in ["a.test", "b.test"] {
                        let dq = q.domain(d);
                        while let Some(j) = dq.pop() {
                            seen.push(j.message.id);
                        }
                    }
                    seen
                })
            })
            .collect();
        let mut all: Vec<_> = poppers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4000);
        assert!(queues.busy().is_empty());
    }

    #[test]
    fn connection_slots_stop_at_the_limit() {
        let q = ReadyQueues::new().domain("a.test");
        assert!(q.try_open_connection(2));
        assert!(q.try_open_connection(2));
        assert!(!q.try_open_connection(2));
        q.close_connection();
        assert!(q.try_open_connection(2));
    }
}
