//! The queue manager's loop: brings due deferrals back (or reports them expired), opens
//! agents' connections for domains with ready jobs within each domain's limits, batches
//! the kills of finished records, and otherwise sleeps until it is woken (a job was
//! queued, a connection ended with jobs left, a deferral or a finish arrived), the next
//! deferral is due, a batch of finishes is due, or it is time to prune.
//!
//! Every shard runs one, and the connection limits are global atomics, so any shard may
//! serve any domain without two of them exceeding its limit together.

use std::rc::Rc;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::clock::now_micros;
use crate::deliver::attempt;
use crate::deliver::report::{AttemptReport, Reporter};
use crate::qmgr::{QueueManager, FINISH_BATCH, FINISH_EVERY};
use crate::queue::ready::DomainQueue;
use crate::queue::retry::expired;
use crate::runtime::memory;

/// How often unused segment maps are dropped, freed memory is given back and the queues
/// of domains idle since the last time are retired.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// Holds one of a domain's connection slots, counted globally (the queue's atomic) and
/// for this shard; gives both back however the agent's connection ends, and wakes the
/// loop when jobs are left that another connection could take.
pub struct Slot {
    queue: Arc<DomainQueue>,
    qm: Rc<QueueManager>,
}

impl Slot {
    /// Takes a slot of `queue` when the domain has fewer than `limit` connections open
    /// and this shard fewer than `share`.
    fn take(
        qm: &Rc<QueueManager>,
        queue: &Arc<DomainQueue>,
        limit: u32,
        share: u32,
    ) -> Option<Slot> {
        let mut mine = qm.connections.borrow_mut();
        let n = mine.get(&queue.domain).copied().unwrap_or(0);
        if n >= share || !queue.try_open_connection(limit) {
            return None;
        }
        *mine.entry(queue.domain.clone()).or_default() += 1;
        Some(Slot {
            queue: queue.clone(),
            qm: qm.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.queue.close_connection();
        // Pairs with the fence in `ReadyQueues::push`: either the pusher sees this
        // connection gone (and wakes the shards), or this sees its job.
        fence(Ordering::SeqCst);
        let mut mine = self.qm.connections.borrow_mut();
        if let Some(n) = mine.get_mut(&self.queue.domain) {
            *n -= 1;
            if *n == 0 {
                mine.remove(&self.queue.domain);
            }
        }
        if !self.queue.is_empty() {
            self.qm.queues.wake(self.qm.shard).raise();
        }
    }
}

/// Runs until the shard stops, then kills what finished meanwhile.
pub async fn run(qm: Rc<QueueManager>) {
    let mut pruned = Instant::now();
    let mut finish_by: Option<Instant> = None;
    while !qm.stop.is_stopping() {
        // Other shards raise this loop's wake at every push that wants a connection: when
        // it is raised again during a pass, the next wait returns at once, so the loop
        // gives the shard's other tasks their turn here instead.
        glommio::yield_if_needed().await;
        let waiting = qm.finishing();
        if waiting > 0 {
            let by = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_EVERY);
            if waiting >= FINISH_BATCH || Instant::now() >= by {
                finish_by = None;
                let q = qm.clone();
                qm.tasks.spawn(async move { q.finish_pending().await });
            }
        }
        let next_due = bring_back_due(&qm);
        open_connections(&qm);
        if pruned.elapsed() > PRUNE_EVERY {
            prune(&qm);
            pruned = Instant::now();
        }
        // Asleep until the first of: a wake, the next deferral, the batch, the prune.
        let now = Instant::now();
        let mut until = pruned + PRUNE_EVERY;
        if let Some(by) = finish_by {
            until = until.min(by);
        }
        if let Some(due) = next_due {
            let wait = Duration::from_micros(due.saturating_sub(now_micros()));
            until = until.min(now + wait);
        }
        let wait = until.saturating_duration_since(now);
        qm.next_look.set(now_micros() + wait.as_micros() as u64);
        let sleep = glommio::timer::sleep(wait);
        let wake = qm.queues.wake(qm.shard).wait();
        future::or(future::or(wake, sleep), qm.stop.wait()).await;
    }
    // What finished before the stop is killed now, so a clean restart has less to do.
    qm.finish_pending().await;
}

/// Due deferrals go back to the ready queues; those past `delivery.max_age` go to the
/// settler as expired instead. Returns when the next deferral is due.
fn bring_back_due(qm: &Rc<QueueManager>) -> Option<u64> {
    let now = now_micros();
    let due = qm.deferred.borrow_mut().pop_due(now);
    for (message, recipients) in due.recipients {
        if expired(message.received_micros, qm.settler.delivery.max_age, now) {
            for (_, job) in qm.queues.jobs(&message, recipients) {
                qm.report(AttemptReport::expired(job));
            }
        } else {
            qm.queues.enqueue(&message, recipients);
        }
    }
    due.next_micros
}

/// Opens connections for domains with ready jobs.
fn open_connections(qm: &Rc<QueueManager>) {
    let shards = qm.queues.shard_count() as u32;
    for queue in qm.queues.ready.busy() {
        let policy = qm.queues.policy(&queue.domain);
        // No more connections than jobs: a connection finds work when it starts. And no
        // shard takes more than its share of the domain's limit, so a hot domain is
        // served by every core rather than by whichever shard looked first.
        let want = u32::try_from(queue.len())
            .unwrap_or(u32::MAX)
            .min(policy.max_connections);
        let share = policy.max_connections.div_ceil(shards.max(1)).max(1);
        // glommio runs a spawned task at once, up to its first await: an agent that finds
        // the queue empty (another shard's connections took the jobs since `want` was
        // read) ends before the next turn of this loop and gives its slot back. So the
        // loop stops when the queue is empty, and tries at most `want` times: it must
        // never spin without yielding.
        for _ in 0..want {
            if queue.is_empty() {
                break;
            }
            let Some(slot) = Slot::take(qm, &queue, want, share) else {
                break;
            };
            let agents = qm.agents.clone();
            let reporter = qm.clone();
            let policy = policy.clone();
            let queue = queue.clone();
            qm.tasks.spawn(async move {
                attempt::run(agents, &queue, &policy, &reporter).await;
                drop(slot);
            });
        }
    }
}

/// Drops unused segment maps, gives freed memory back, and (on one shard: the registry
/// is shared) retires the queues of idle domains.
fn prune(qm: &Rc<QueueManager>) {
    qm.agents.reader.prune();
    memory::give_back();
    if qm.shard == 0 {
        let retired = qm.queues.ready.retire_idle();
        if retired > 0 {
            tracing::debug!(retired, "idle domain queues retired");
            // A job that raced the retirement moved to a fresh queue: look again.
            qm.queues.wake_all();
        }
    }
}
