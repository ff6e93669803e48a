//! The queues every shard shares: the per-domain ready queues, each domain's resolved
//! shaping (policy and rate limiter, computed once), and the wake-up that tells each
//! shard's queue manager that work arrived, so that no one polls for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;
use event_listener::Event;

use crate::config::{Config, DomainPolicy};
use crate::queue::limits::RateLimit;
use crate::queue::message::{jobs_for, Job, QueuedMessage};
use crate::queue::ready::{DomainQueue, ReadyQueues};
use crate::runtime::memory::long_lived;

/// One shard's wake-up: raised by whoever gives its queue manager something to look at.
/// The flag coalesces a burst of pushes into one wake, and a wake from another shard's
/// thread is one eventfd write only when the shard sleeps (glommio's foreign wakers).
#[derive(Debug, Default)]
pub struct Wake {
    raised: AtomicBool,
    event: Event,
}

impl Wake {
    /// Asks the shard to look again.
    pub fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            self.event.notify(1);
        }
    }

    /// Resolves once [`Wake::raise`] was called since the last wait returned (at once if
    /// it already was).
    pub async fn wait(&self) {
        loop {
            if self.raised.swap(false, Ordering::AcqRel) {
                return;
            }
            let listener = self.event.listen();
            if self.raised.swap(false, Ordering::AcqRel) {
                return;
            }
            listener.await;
        }
    }
}

/// The ready queues and the shaping of every destination, shared by all shards.
#[derive(Debug)]
pub struct Queues {
    config: Arc<Config>,
    /// Per-domain ready queues.
    pub ready: ReadyQueues,
    /// One wake-up per shard.
    wakes: Box<[Wake]>,
    limiters: SkipMap<String, Arc<RateLimit>>,
    /// Each domain's resolved policy, computed once: it is asked for per message (the
    /// transaction size) and per dispatch pass.
    policies: SkipMap<String, Arc<DomainPolicy>>,
}

impl Queues {
    /// Empty queues for the shards of `config`.
    pub fn new(config: Arc<Config>) -> Queues {
        let shards = config.shard_count();
        Queues {
            ready: ReadyQueues::new(shards),
            wakes: (0..shards.max(1)).map(|_| Wake::default()).collect(),
            limiters: SkipMap::new(),
            policies: SkipMap::new(),
            config,
        }
    }

    /// How many shards share these queues.
    pub fn shard_count(&self) -> usize {
        self.wakes.len()
    }

    /// Shard `shard`'s wake-up.
    pub fn wake(&self, shard: u8) -> &Wake {
        &self.wakes[usize::from(shard) % self.wakes.len()]
    }

    /// Wakes every shard's queue manager: a domain has jobs that a connection may take.
    /// Every shard, because any shard may serve any domain within its share of the limit.
    pub fn wake_all(&self) {
        for w in self.wakes.iter() {
            w.raise();
        }
    }

    /// The shaping for `domain`.
    pub fn policy(&self, domain: &str) -> Arc<DomainPolicy> {
        if let Some(e) = self.policies.get(domain) {
            return e.value().clone();
        }
        // Kept for as long as the server runs: in the long-lived heap.
        long_lived(|| {
            let policy = Arc::new(self.config.domain_policy(domain));
            self.policies
                .get_or_insert(domain.to_owned(), policy)
                .value()
                .clone()
        })
    }

    /// The rate limiter of `domain`, if its policy sets a rate.
    pub fn rate_limit(&self, domain: &str, policy: &DomainPolicy) -> Option<Arc<RateLimit>> {
        let rate = policy.rate?;
        if let Some(e) = self.limiters.get(domain) {
            return Some(e.value().clone());
        }
        let limiter = long_lived(|| {
            let limiter = Arc::new(RateLimit::new(rate.count, rate.per));
            self.limiters
                .get_or_insert(domain.to_owned(), limiter)
                .value()
                .clone()
        });
        Some(limiter)
    }

    /// Queues the given recipients (index, attempts so far) of `message` as ready jobs,
    /// and wakes the shards when a domain could use another connection.
    pub fn enqueue(
        &self,
        message: &Arc<QueuedMessage>,
        pending: impl IntoIterator<Item = (u32, u32)>,
    ) {
        let mut wanted = false;
        for (domain, job) in self.jobs(message, pending) {
            wanted |= self.push(&domain, job);
        }
        if wanted {
            self.wake_all();
        }
    }

    /// Queues one job for `domain` and tells a connection lingering on it. Returns whether
    /// the domain could use another connection: fewer are open than jobs wait, and fewer
    /// than its limit. When not, the queue managers need not look: the open connections
    /// take the job, and one that closes while jobs are left wakes its shard
    /// (`qmgr::dispatch::Slot`).
    fn push(&self, domain: &str, job: Job) -> bool {
        let queue: Arc<DomainQueue> = self.ready.push(domain, job);
        queue.notify_arrival();
        let open = queue.connections();
        // The policy is looked up only when the count says a connection could help.
        (open as usize) < queue.len() && open < self.policy(&queue.domain).max_connections
    }

    /// Splits the given recipients (index, attempts so far) of `message` into jobs of at
    /// most each domain's `max_recipients_per_transaction`.
    pub fn jobs(
        &self,
        message: &Arc<QueuedMessage>,
        pending: impl IntoIterator<Item = (u32, u32)>,
    ) -> Vec<(String, Job)> {
        let per_transaction = |d: &str| self.policy(d).max_recipients_per_transaction as usize;
        jobs_for(message, pending, per_transaction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::tests::on_executor;

    /// Whether `wake` is raised within `within` (a bound so that a lost wake fails the
    /// test instead of hanging it).
    async fn woken(wake: &Wake, within: std::time::Duration) -> bool {
        futures_lite::future::or(
            async {
                wake.wait().await;
                true
            },
            async {
                glommio::timer::sleep(within).await;
                false
            },
        )
        .await
    }

    #[test]
    fn a_raise_before_the_wait_is_not_lost_and_a_burst_is_one_wake() {
        on_executor(|| async {
            let wake = Wake::default();
            wake.raise();
            wake.raise();
            assert!(woken(&wake, std::time::Duration::from_secs(10)).await);
            assert!(
                !woken(&wake, std::time::Duration::from_millis(50)).await,
                "two raises, two wakes"
            );
        });
    }

    #[test]
    fn a_raise_from_another_thread_wakes_a_waiting_shard() {
        on_executor(|| async {
            let wake = Arc::new(Wake::default());
            let other = wake.clone();
            let t = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                other.raise();
            });
            assert!(
                woken(&wake, std::time::Duration::from_secs(10)).await,
                "the wake from another thread was lost"
            );
            t.join().unwrap();
        });
    }
}
