//! A shard's delivery scheduler: brings due deferred jobs back to the ready queues and
//! opens connections for domains with ready jobs, within each domain's connection limit.
//! Every shard runs one, and the limits are global atomics, so any shard may serve any
//! domain without two of them exceeding its limit together.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::clock::now_micros;
use crate::deliver::attempt;
use crate::outcome::settle;
use crate::runtime::memory;
use crate::runtime::shard::ShardContext;

/// How often the scheduler looks for work. Short enough that a message goes out within a
/// few milliseconds of its 250; each look is a walk over the domains with ready jobs.
const TICK: Duration = Duration::from_millis(10);

/// How often unused segment maps are dropped, freed memory is given back and the queues
/// of domains idle since the last time are retired.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// How long finished messages may wait for their records to be killed together, and how
/// many may wait: one sync per touched file per batch, instead of one per message.
const FINISH_EVERY: Duration = Duration::from_millis(100);
const FINISH_BATCH: usize = 512;

/// Runs until the shard stops.
pub async fn run(ctx: Rc<ShardContext>) {
    let mut pruned = Instant::now();
    let mut finished = Instant::now();
    while !ctx.stop.is_stopping() {
        let waiting = ctx.finishing.borrow().len();
        if waiting >= FINISH_BATCH || (waiting > 0 && finished.elapsed() >= FINISH_EVERY) {
            finished = Instant::now();
            let c = ctx.clone();
            ctx.spawn_counted(async move { settle::finish_pending(&c).await });
        }
        let due = ctx.deferred.borrow_mut().pop_due(now_micros());
        for (message, recipients) in due {
            ctx.shared.enqueue(&message, recipients);
        }
        for queue in ctx.shared.ready.busy() {
            let policy = ctx.shared.policy(&queue.domain);
            // No more connections than jobs: a connection finds work when it starts. And no
            // shard takes more than its share of the domain's limit, so a hot domain is
            // served by every core rather than by whichever shard looked first.
            let want = u32::try_from(queue.len())
                .unwrap_or(u32::MAX)
                .min(policy.max_connections);
            let share = policy
                .max_connections
                .div_ceil(ctx.shard_count.max(1))
                .max(1);
            // glommio runs a spawned task at once, up to its first await: an attempt that
            // finds the queue empty (another shard's connections took the jobs since `want`
            // was read) ends before the next turn of this loop and gives its slot back. So
            // the loop stops when the queue is empty, and tries at most `want` times: it
            // must never spin without yielding.
            for _ in 0..want {
                let mine = ctx
                    .domain_connections
                    .borrow()
                    .get(&queue.domain)
                    .copied()
                    .unwrap_or(0);
                if queue.is_empty() || mine >= share || !queue.try_open_connection(want) {
                    break;
                }
                *ctx.domain_connections
                    .borrow_mut()
                    .entry(queue.domain.clone())
                    .or_default() += 1;
                let task = attempt::run(ctx.clone(), queue.clone(), policy.clone());
                glommio::spawn_local(task).detach();
            }
        }
        if pruned.elapsed() > PRUNE_EVERY {
            ctx.reader.prune();
            memory::give_back();
            if ctx.id == 0 {
                // One shard is enough: the registry is shared.
                let retired = ctx.shared.ready.retire_idle();
                if retired > 0 {
                    tracing::debug!(retired, "idle domain queues retired");
                }
            }
            pruned = Instant::now();
        }
        future::or(glommio::timer::sleep(TICK), ctx.stop.wait()).await;
    }
    // What finished before the stop is killed now, so a clean restart has less to do.
    settle::finish_pending(&ctx).await;
}
