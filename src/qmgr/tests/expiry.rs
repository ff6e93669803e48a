//! `delivery.max_age`: a 4xx past it expires the recipient, a job that waited past it is
//! reported unattempted, and no deferral is ever due after it.

use std::time::Duration;

use super::shard::{answered, config, job, log_time, on_executor, reply, Found, Mail, Shard};
use super::{greylisted, the_report, SENDER};
use crate::deliver::report::AttemptReport;
use crate::spool::record::OutcomeKind;

#[test]
fn a_4xx_past_max_age_expires_the_recipient_and_reports_the_failure() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let max_age = shard.qm.settler.delivery.max_age;
        let mail = Mail::from(SENDER)
            .to("r@b.example", "")
            .aged(max_age + Duration::from_secs(3600));
        let m = shard.receive(mail).await;
        let busy = reply(451, (4, 3, 0), "Try again later");
        shard
            .qm
            .settle(answered(job(&m, &[0], 7), vec![(0, busy)], false))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.qm.deferred(), 0, "never retried again");
        assert_eq!(shard.records()[0], Found::Dead);
        let report = the_report(&shard);
        let content = report.content();
        for field in [
            "Action: failed\r\n",
            "Status: 4.4.7\r\n",
            "Diagnostic-Code: smtp; 451 4.3.0 Try again later\r\n",
        ] {
            assert!(content.contains(field), "no {field:?} in\n{content}");
        }
        assert_eq!(shard.qm.queues.ready.total(), 1);
        let expired = shard.logged("expired");
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0]["recipient"], "r@b.example");
        assert_eq!(expired[0]["reply"], "451 4.3.0 Try again later");
        assert_eq!(expired[0]["attempts"], 8);
        assert!(expired[0].get("next_attempt").is_none());
        assert!(shard.logged("deferred").is_empty());
    });
}

#[test]
fn a_job_that_expired_in_the_queue_is_reported_unattempted() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let max_age = shard.qm.settler.delivery.max_age;
        let mail = Mail::from(SENDER)
            .to("a@b.example", "")
            .to("c@b.example", "")
            .aged(max_age + Duration::from_secs(1));
        let m = shard.receive(mail).await;
        shard
            .qm
            .settle(AttemptReport::expired(job(&m, &[0, 1], 3)))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!((shard.qm.deferred(), shard.qm.finishing()), (0, 0));
        assert_eq!(shard.records()[0], Found::Dead);
        assert!(shard.replay().live().all(|l| l.sender.is_empty()));
        let expired = shard.logged("expired");
        assert_eq!(expired.len(), 2);
        for (l, r) in expired.iter().zip(["a@b.example", "c@b.example"]) {
            assert!(l.get("attempt_ms").is_none(), "no attempt was made");
            assert_eq!(l["recipient"], r);
            assert_eq!(
                l["reply"],
                "451 4.4.7 Message expired: delivery time exceeded"
            );
            assert_eq!(l["attempts"], 4);
            assert!(l.get("host").is_none(), "no server was asked");
        }
        // One report about both.
        let report = the_report(&shard);
        let content = report.content();
        assert_eq!(
            content.matches("Action: failed\r\n").count(),
            2,
            "{content}"
        );
        assert_eq!(content.matches("Status: 4.4.7\r\n").count(), 2, "{content}");
        assert!(!content.contains("Remote-MTA"), "{content}");
        assert_eq!(shard.qm.queues.ready.total(), 1);
    });
}

#[test]
fn a_deferral_never_reaches_past_the_expiry_time() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let max_age = shard.qm.settler.delivery.max_age;
        // Five minutes is the next retry; one minute is left.
        let mail = Mail::from(SENDER)
            .to("r@b.example", "")
            .aged(max_age - Duration::from_secs(60));
        let m = shard.receive(mail).await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, greylisted())], false))
            .await;
        let expiry = m.received_micros + max_age.as_micros() as u64 + 1;
        let o = shard.outcomes()[0];
        assert_eq!(
            (o.kind, o.next_attempt_micros),
            (OutcomeKind::Deferred, expiry)
        );
        assert_eq!(shard.qm.deferred(), 1);
        assert_eq!(
            shard.logged("deferred")[0]["next_attempt"],
            log_time(expiry)
        );
    });
}
