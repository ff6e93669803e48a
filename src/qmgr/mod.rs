//! The queue manager (Postfix's qmgr): one per shard, the home of every delivery
//! decision. It takes the shard's due deferrals and the reports of its delivery agents,
//! hands each report to the one [`Settler`], and carries out what the settler decides:
//! recipients to retry go on the shard's timer (and a long-deferred message may be
//! copied forward, [`compact`]), finished messages have their records killed in
//! batches. [`dispatch`] is its loop: it opens agents' connections for domains with
//! ready jobs, within each domain's limits, and sleeps until something happens.
//!
//! What it owns: the shard's deferred timer, its finished messages waiting for a batched
//! kill, and its per-domain connection counts ([`dispatch::Slot`]). What it shares: the
//! ready queues ([`Queues`]), written by intake and read by every shard's agents.

pub mod compact;
pub mod dispatch;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_micros;
use crate::deliver::agent::Agents;
use crate::deliver::report::{AttemptReport, Reporter};
use crate::outcome::settle::{Settled, Settler};
use crate::queue::deferred::Deferred;
use crate::queue::message::Finish;
use crate::queue::queues::Queues;
use crate::runtime::shutdown::ShardStop;
use crate::task::TaskCount;

/// How many finished messages may wait for their records to be killed together: one sync
/// per touched file per batch, instead of one per message.
pub const FINISH_BATCH: usize = 512;

/// How long finished messages may wait for that batch.
pub const FINISH_EVERY: Duration = Duration::from_millis(100);

/// One shard's queue manager.
pub struct QueueManager {
    /// This shard's number.
    pub shard: u8,
    /// The only place outcomes are decided.
    pub settler: Settler,
    /// The shard's delivery agents' shared state.
    pub agents: Rc<Agents>,
    /// The ready queues and shaping, shared by every shard.
    pub queues: Arc<Queues>,
    /// Recipients this shard deferred, until their retry time.
    deferred: RefCell<Deferred>,
    /// Finished messages whose records wait to be killed together.
    finishing: RefCell<Vec<Finish>>,
    /// Connections this shard has open, per domain (for a fair share of each domain's
    /// limit across shards); kept by [`dispatch::Slot`].
    connections: RefCell<HashMap<String, u32>>,
    /// Delivery work under way: connections, settles, copies forward. A stopping shard
    /// waits for it.
    pub tasks: Rc<TaskCount>,
    /// `spool.compact_after`: a deferred message whose record is older moves forward.
    pub compact_after: Duration,
    /// The shard's stop.
    pub stop: Rc<ShardStop>,
    /// When the dispatch loop will look next on its own (microseconds since the epoch):
    /// a deferral due before then wakes it, one due later needs not.
    next_look: Cell<u64>,
}

impl QueueManager {
    /// A queue manager for `shard` over `deferred` (what the spool owed at start).
    pub fn new(
        settler: Settler,
        agents: Rc<Agents>,
        deferred: Deferred,
        compact_after: Duration,
        stop: Rc<ShardStop>,
    ) -> Rc<QueueManager> {
        Rc::new(QueueManager {
            shard: agents.shard,
            queues: agents.queues.clone(),
            settler,
            agents,
            deferred: RefCell::new(deferred),
            finishing: RefCell::new(Vec::new()),
            connections: RefCell::new(HashMap::new()),
            tasks: TaskCount::new(),
            compact_after,
            stop,
            next_look: Cell::new(0),
        })
    }

    /// Settles `report` and carries out what the settler decided. Awaited by the task the
    /// report runs in ([`Reporter::report`]), or directly by tests.
    pub async fn settle(self: &Rc<Self>, report: AttemptReport) {
        let settled = self.settler.settle(report).await;
        self.carry_out(settled);
    }

    fn carry_out(self: &Rc<Self>, settled: Settled) {
        if let Some((due, job)) = settled.retry {
            let message = job.message.clone();
            self.deferred.borrow_mut().insert(now_micros(), due, job);
            // The loop may be asleep until a later deadline.
            if due < self.next_look.get() {
                self.queues.wake(self.shard).raise();
            }
            compact::after_deferral(self, &message);
        }
        if let Some(f) = settled.finished {
            self.finish(f);
        }
    }

    /// Carries out a [`Finish`]. A record already killed (with the last outcomes) has its
    /// references, and its outcome records', released at once. Otherwise the kill waits
    /// to be done together with others: the outcome records already on disk say the
    /// message is finished, so nothing is lost meanwhile, and a restart kills what was
    /// still waiting.
    pub fn finish(&self, finish: Finish) {
        if finish.killed {
            self.settler.release(finish);
            return;
        }
        let waiting = {
            let mut finishing = self.finishing.borrow_mut();
            finishing.push(finish);
            finishing.len()
        };
        // The first one starts the batch's clock; a full batch goes at once.
        if waiting == 1 || waiting >= FINISH_BATCH {
            self.queues.wake(self.shard).raise();
        }
    }

    /// Kills the records of every finish waiting, then releases their references.
    pub async fn finish_pending(&self) {
        let finishes = std::mem::take(&mut *self.finishing.borrow_mut());
        self.settler.kill_and_release(finishes).await;
    }

    /// Finished messages waiting for their batched kill.
    pub fn finishing(&self) -> usize {
        self.finishing.borrow().len()
    }

    /// Recipients on this shard's timer.
    pub fn deferred(&self) -> usize {
        self.deferred.borrow().len()
    }
}

/// Agents report here: each report is settled in a task of its own, counted among the
/// shard's delivery work, so the agent's next transaction does not wait for a sync.
impl Reporter for Rc<QueueManager> {
    fn report(&self, report: AttemptReport) {
        let qm = self.clone();
        self.tasks.spawn(async move { qm.settle(report).await });
    }
}
