//! Per-domain ready queues, shared by all shards without a lock, each with a wake-up for
//! the connections lingering on it ([`DomainQueue::arrival`]).
//!
//! The registry is a lock-free skip list from domain to [`DomainQueue`]; each queue is a
//! set of lock-free FIFOs of jobs, one *lane* per shard, plus an atomic count of open
//! connections. Any shard may start a connection to any domain while the domain's
//! connection limit allows, so one hot domain (40% of a list at gmail.com) is served by
//! every core, not by the shard that happened to accept the message.
//!
//! A job goes into the lane of the shard that received its message (and so wrote its
//! record; the id says which, so pushing takes no lock), and a
//! shard takes from its own lane first and from the others only when its own is empty
//! (work stealing). So as long as every shard has work, a message is delivered by the
//! shard that wrote it: its content is read from that shard's own maps, and the kill of
//! its record when it is finished (`spool::record`) lands in the segment that shard is
//! syncing anyway, instead of costing a sync of another shard's file.
//!
//! A domain's queue leaves the registry once it has had no job and no connection for a
//! while ([`ReadyQueues::retire_idle`]), so that the queue managers, which walk the
//! registry whenever work arrives, walk the domains that have mail rather than every domain
//! ever mailed (a bulk sender reaches hundreds of thousands). A queue is retired by setting a
//! bit in its connection count, and only while that count is zero, so no connection can
//! open on a retired queue. Retiring races with pushing: a job can land in a queue that is
//! being taken out. Both sides raise their flag (the job, or the bit) and then look at the
//! other's behind a `SeqCst` fence, so at least one of them sees the other and moves the
//! job to the domain's current queue.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam::queue::SegQueue;
use crossbeam_skiplist::SkipMap;
use event_listener::{Event, IntoNotification};

use crate::queue::message::Job;
use crate::runtime::memory::long_lived;

/// The bit of a queue's connection count that says it was retired.
const RETIRED: u32 = 1 << 31;

/// The ready jobs of one destination domain and its open connections.
#[derive(Debug)]
pub struct DomainQueue {
    /// The domain, lower case.
    pub domain: String,
    /// One FIFO per shard: the jobs whose message record that shard wrote.
    lanes: Box<[SegQueue<Job>]>,
    /// Open connections, all shards together; with [`RETIRED`] set once the queue was
    /// taken out of the registry (a job that lands here after all is moved on).
    connections: AtomicU32,
    /// A job was pushed since [`ReadyQueues::retire_idle`] last looked.
    touched: AtomicBool,
    /// Wakes a connection lingering for the domain's next job.
    arrived: Event,
}

impl DomainQueue {
    fn new(domain: String, shards: usize) -> DomainQueue {
        DomainQueue {
            domain,
            lanes: (0..shards.max(1)).map(|_| SegQueue::new()).collect(),
            connections: AtomicU32::new(0),
            touched: AtomicBool::new(false),
            arrived: Event::new(),
        }
    }

    /// Tells one connection waiting in [`DomainQueue::arrival`] that a job came.
    pub fn notify_arrival(&self) {
        // `additional`: a second push before the first woken connection ran must wake a
        // second one, not count as the same wake.
        self.arrived.notify(1.additional());
    }

    /// Waits until a job may have arrived (a push since the wait began, or one already
    /// waiting), or until `timeout` passes. The caller pops and looks: another connection
    /// may have been quicker.
    pub async fn arrival(&self, timeout: std::time::Duration) {
        let listener = self.arrived.listen();
        if !self.is_empty() {
            return;
        }
        futures_lite::future::or(listener, async {
            glommio::timer::sleep(timeout).await;
        })
        .await;
    }

    /// Adds a job at the back of the lane of the shard that received its message (which
    /// wrote its record; a copy forward may since have moved it, rarely and late).
    /// Bypasses retirement: the server pushes through [`ReadyQueues::push`]; this is for
    /// tests and benches that hold a queue of their own.
    pub fn push(&self, job: Job) {
        let shard = usize::from(job.message.id.shard());
        self.lanes[shard % self.lanes.len()].push(job);
    }

    /// Takes a job for `shard`: the front of its own lane, else of another's.
    pub fn pop(&self, shard: u8) -> Option<Job> {
        let n = self.lanes.len();
        let own = usize::from(shard) % n;
        (0..n).find_map(|i| self.lanes[(own + i) % n].pop())
    }

    /// Jobs waiting (a hint: other shards push and pop concurrently).
    pub fn len(&self) -> usize {
        self.lanes.iter().map(SegQueue::len).sum()
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(SegQueue::is_empty)
    }

    /// Open connections to this domain, all shards together.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Acquire) & !RETIRED
    }

    /// True once the queue was taken out of the registry.
    fn is_retired(&self) -> bool {
        self.connections.load(Ordering::SeqCst) & RETIRED != 0
    }

    /// Takes a connection slot if fewer than `limit` are open (never on a retired queue:
    /// its domain has a fresh one).
    pub fn try_open_connection(&self, limit: u32) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n & RETIRED == 0 && n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a connection slot back.
    pub fn close_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every domain's ready queue.
#[derive(Debug)]
pub struct ReadyQueues {
    domains: SkipMap<String, Arc<DomainQueue>>,
    /// Lanes per queue: the number of shards.
    shards: usize,
}

impl ReadyQueues {
    /// An empty set of queues for `shards` shards.
    pub fn new(shards: usize) -> ReadyQueues {
        ReadyQueues {
            domains: SkipMap::new(),
            shards,
        }
    }

    /// The queue of `domain` (lower case), created on first use (and again after it was
    /// retired).
    pub fn domain(&self, domain: &str) -> Arc<DomainQueue> {
        loop {
            let entry = match self.domains.get(domain) {
                Some(e) => e,
                // Kept while the domain has mail, often for hours: in the long-lived heap.
                None => long_lived(|| {
                    let q = Arc::new(DomainQueue::new(domain.to_owned(), self.shards));
                    self.domains.get_or_insert(domain.to_owned(), q)
                }),
            };
            if !entry.value().is_retired() {
                return entry.value().clone();
            }
            // Being retired: help take it out, then find or make the fresh one.
            entry.remove();
        }
    }

    /// Queues a job for `domain`; returns the queue it went to.
    pub fn push(&self, domain: &str, job: Job) -> Arc<DomainQueue> {
        let queue = self.domain(domain);
        queue.touched.store(true, Ordering::Relaxed);
        queue.push(job);
        fence(Ordering::SeqCst);
        if queue.is_retired() {
            // Retired after we found it: the retirer may have looked before our job came.
            return self.rescue(&queue).unwrap_or(queue);
        }
        queue
    }

    /// Moves every job of a retired queue to its domain's current one; returns that one,
    /// if any job moved.
    fn rescue(&self, old: &DomainQueue) -> Option<Arc<DomainQueue>> {
        let mut current = None;
        for lane in old.lanes.iter() {
            while let Some(job) = lane.pop() {
                let queue = self.push(&old.domain, job);
                queue.notify_arrival();
                current = Some(queue);
            }
        }
        current
    }

    /// Takes out of the registry the queues that have had no job pushed since the last
    /// call, hold none now and have no connection open; returns how many. Called every few
    /// seconds by one shard: a domain idle for that long gets a fresh queue (an allocation)
    /// when mail for it comes again.
    pub fn retire_idle(&self) -> usize {
        let mut retired = 0;
        for entry in self.domains.iter() {
            let queue = entry.value();
            if queue.touched.swap(false, Ordering::Relaxed) || !queue.is_empty() {
                continue;
            }
            // No connection open, and none can open from now on: one atomic step.
            let idle =
                queue
                    .connections
                    .compare_exchange(0, RETIRED, Ordering::SeqCst, Ordering::SeqCst);
            if idle.is_err() {
                continue;
            }
            fence(Ordering::SeqCst);
            entry.remove();
            retired += 1;
            // A push that found the queue before the flag may have landed since the check.
            let _ = self.rescue(queue);
        }
        retired
    }

    /// Domains in the registry.
    #[cfg(test)]
    fn domains(&self) -> usize {
        self.domains.len()
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
    use crate::queue::message::NewMessage;
    use crate::queue::message::QueuedMessage;
    use crate::spool::location::Location;
    use crate::spool::location::SegmentKey;
    use crate::spool::record::MessageId;

    fn job(n: u32) -> Job {
        let m = QueuedMessage::new(NewMessage {
            id: MessageId::new(1, (n % 4) as u8, n),
            record: Location {
                segment: SegmentKey {
                    shard: (n % 4) as u8,
                    seq: 0,
                },
                offset: 0,
            },
            received_micros: 0,
            sender: String::new(),
            recipients: ["a@a.test"],
            smtputf8: false,
            eight_bit: false,
            size: 0,
            states: vec![0],
        });
        Job {
            message: Arc::new(m),
            recipients: Box::new([0]),
            attempts: 0,
        }
    }

    #[test]
    fn every_job_pushed_from_many_threads_is_popped_once() {
        let queues = Arc::new(ReadyQueues::new(4));
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
        let poppers: Vec<_> = (0..4u8)
            .map(|shard| {
                let q = queues.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for d in ["a.test", "b.test"] {
                        let dq = q.domain(d);
                        while let Some(j) = dq.pop(shard) {
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
    fn a_shard_takes_its_own_jobs_first_then_steals() {
        let q = ReadyQueues::new(2).domain("a.test");
        for n in [0, 1, 2, 3] {
            q.push(job(n));
        }
        // Received by shards 0, 1, 2, 3: with two lanes, 0 and 2 go to lane 0, 1 and 3 to 1.
        let order: Vec<u32> = std::iter::from_fn(|| q.pop(1))
            .map(|j| u32::from(j.message.id.shard()))
            .collect();
        assert_eq!(order, vec![1, 3, 0, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn idle_queues_leave_the_registry_and_come_back_fresh() {
        let queues = ReadyQueues::new(2);
        queues.push("a.test", job(1));
        queues.push("b.test", job(2));
        let b = queues.domain("b.test");
        assert!(b.try_open_connection(1));
        assert!(queues.domain("a.test").pop(0).is_some());
        // Pushed since the last look: kept this time.
        assert_eq!(queues.retire_idle(), 0);
        // a.test is idle now; b.test has a job and a connection.
        assert_eq!(queues.retire_idle(), 1);
        assert_eq!(queues.domains(), 1);
        assert!(b.pop(0).is_some());
        assert_eq!(queues.retire_idle(), 0, "a connection is still open");
        b.close_connection();
        assert_eq!(queues.retire_idle(), 1);
        assert_eq!(queues.domains(), 0);
        assert!(
            !b.try_open_connection(10),
            "no connection on a retired queue"
        );
        assert_eq!(b.connections(), 0);
        queues.push("a.test", job(3));
        assert_eq!(queues.busy().len(), 1);
        assert_eq!(queues.total(), 1);
    }

    #[test]
    fn no_job_is_lost_while_queues_are_retired_under_pushers() {
        let queues = Arc::new(ReadyQueues::new(2));
        let done = Arc::new(AtomicBool::new(false));
        let retirer = {
            let (q, done) = (queues.clone(), done.clone());
            std::thread::spawn(move || {
                let mut retired = 0;
                while !done.load(Ordering::Relaxed) {
                    retired += q.retire_idle();
                }
                retired
            })
        };
        // Poppers empty the queues as they fill, so they are often idle and retired.
        let poppers: Vec<_> = (0..2u8)
            .map(|shard| {
                let (q, done) = (queues.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while !done.load(Ordering::Relaxed) {
                        for d in ["a.test", "b.test", "c.test"] {
                            if let Some(j) = q.domain(d).pop(shard) {
                                seen.push(j.message.id);
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let pushers: Vec<_> = (0..3u32)
            .map(|t| {
                let q = queues.clone();
                std::thread::spawn(move || {
                    for i in 0..3000 {
                        let d = ["a.test", "b.test", "c.test"][(i % 3) as usize];
                        q.push(d, job(t * 3000 + i));
                        if i % 100 == 99 {
                            // Pauses, so that queues run empty and idle and get retired.
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for p in pushers {
            p.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let retired = retirer.join().unwrap();
        let mut all: Vec<_> = poppers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        for d in ["a.test", "b.test", "c.test"] {
            let q = queues.domain(d);
            while let Some(j) = q.pop(0) {
                all.push(j.message.id);
            }
        }
        let popped = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), popped, "a job was taken twice");
        assert_eq!(all.len(), 9000, "a job was lost ({retired} retirements)");
        assert!(retired > 0, "the race was not exercised");
    }

    #[test]
    fn connection_slots_stop_at_the_limit() {
        let q = ReadyQueues::new(1).domain("a.test");
        assert!(q.try_open_connection(2));
        assert!(q.try_open_connection(2));
        assert!(!q.try_open_connection(2));
        q.close_connection();
        assert!(q.try_open_connection(2));
    }
}
