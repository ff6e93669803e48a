//! The queue manager's loop ([`dispatch::run`]), with every domain's connection limit at
//! 0 so that it never starts an agent: due deferrals come back ready (or expired), and the
//! records of finished messages are killed in batches and at the stop.

use std::time::Duration;

use super::shard::{answered, config, eventually, job, no_connections, on_executor, Mail, Shard};
use super::{delivered, greylisted, the_report, SENDER};
use crate::qmgr::dispatch;

#[test]
fn the_loop_brings_a_due_deferral_back_to_the_ready_queue() {
    on_executor(|| async {
        let shard = Shard::start(config(|c| {
            no_connections(c);
            c.delivery.retry = vec![Duration::from_secs(1)];
        }));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, greylisted())], false))
            .await;
        assert_eq!(shard.qm.deferred(), 1);
        let looping = glommio::spawn_local(dispatch::run(shard.qm.clone())).detach();
        eventually("the deferral is ready again", || {
            shard.qm.queues.ready.total() == 1
        })
        .await;
        assert_eq!(shard.qm.deferred(), 0);
        let again = shard.ready_job("b.example").expect("queued for its domain");
        assert_eq!(again.message.id, m.id);
        assert_eq!(&*again.recipients, &[0]);
        assert_eq!(again.attempts, 1, "the attempt made counts");
        shard.stop.begin(Duration::ZERO);
        looping.await;
    });
}

#[test]
fn the_loop_expires_a_deferral_that_comes_due_past_max_age() {
    on_executor(|| async {
        let shard = Shard::start(config(|c| {
            no_connections(c);
            c.delivery.max_age = Duration::from_secs(1);
        }));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, greylisted())], false))
            .await;
        // Due at the expiry time, not in five minutes.
        assert!(shard.outcomes()[0].next_attempt_micros <= m.received_micros + 1_000_001);
        let looping = glommio::spawn_local(dispatch::run(shard.qm.clone())).detach();
        eventually("the recipient expired", || m.remaining() == 0).await;
        shard.stop.begin(Duration::ZERO);
        looping.await;
        assert!(
            shard
                .qm
                .tasks
                .drained(std::time::Instant::now() + Duration::from_secs(10))
                .await,
            "the settle ended"
        );

        assert_eq!(shard.qm.deferred(), 0);
        let expired = shard.logged("expired");
        assert_eq!(expired.len(), 1);
        assert_eq!(
            expired[0]["reply"],
            "451 4.4.7 Message expired: delivery time exceeded"
        );
        assert_eq!(expired[0]["attempts"], 2);
        assert!(!shard.replay().messages.contains_key(&m.id));
        assert!(the_report(&shard).content().contains("Status: 4.4.7\r\n"));
        assert!(shard.ready_job("b.example").is_none(), "not tried again");
        assert!(shard.ready_job("sender.example").is_some(), "the report");
    });
}

#[test]
fn the_loop_kills_the_records_of_finished_messages_in_a_batch() {
    on_executor(|| async {
        let shard = Shard::start(config(|c| {
            no_connections(c);
            c.spool.segment_size.0 = 1;
        }));
        let a = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .receive(Mail::from(SENDER).to("q@c.example", ""))
            .await;
        let looping = glommio::spawn_local(dispatch::run(shard.qm.clone())).detach();
        shard
            .qm
            .settle(answered(job(&a, &[0], 0), vec![(0, delivered())], false))
            .await;
        assert_eq!(shard.qm.finishing(), 1);
        eventually("the drained segment is deleted", || {
            !shard.segment_exists(0)
        })
        .await;
        assert_eq!(shard.qm.finishing(), 0);
        assert!(!shard.replay().messages.contains_key(&a.id));
        shard.stop.begin(Duration::ZERO);
        looping.await;
    });
}

#[test]
fn a_stopping_loop_kills_what_finished_before_it_ends() {
    on_executor(|| async {
        let shard = Shard::start(config(|c| {
            no_connections(c);
            c.spool.segment_size.0 = 1;
        }));
        let a = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .receive(Mail::from(SENDER).to("q@c.example", ""))
            .await;
        let looping = glommio::spawn_local(dispatch::run(shard.qm.clone())).detach();
        shard
            .qm
            .settle(answered(job(&a, &[0], 0), vec![(0, delivered())], false))
            .await;
        assert_eq!(shard.qm.finishing(), 1);
        shard.stop.begin(Duration::ZERO);
        looping.await;
        assert_eq!(shard.qm.finishing(), 0);
        assert!(
            !shard.segment_exists(0),
            "killed and deleted before the loop ended"
        );
        assert!(!shard.replay().messages.contains_key(&a.id));
    });
}
