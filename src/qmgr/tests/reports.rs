//! Which reports (DSNs) the sender gets, as RET and NOTIFY ask (RFC 3461): the whole
//! original or its headers, none to `<>` or for NOTIFY=NEVER, "relayed" unless the next
//! hop took DSN over, and one delay report per message.

use std::time::Duration;

use super::shard::{answered, config, job, on_executor, Found, Mail, Shard};
use super::{delivered, events, greylisted, no_such_user, the_report, SENDER};

#[test]
fn ret_full_returns_the_whole_original_in_the_failure_report() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let mail = Mail::from(SENDER).params("RET=FULL").to("r@b.example", "");
        let m = shard.receive(mail).await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, no_such_user())], false))
            .await;
        let report = the_report(&shard);
        let content = report.content();
        assert!(
            content.contains("Content-Type: message/rfc822"),
            "{content}"
        );
        assert!(content.contains("The figures are attached."), "{content}");
    });
}

#[test]
fn no_report_goes_to_the_null_sender_nor_to_a_recipient_who_asked_for_none() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let bounce = shard.receive(Mail::from("").to("r@b.example", "")).await;
        let never = shard
            .receive(Mail::from(SENDER).to("q@b.example", "NOTIFY=NEVER"))
            .await;
        for m in [&bounce, &never] {
            shard
                .qm
                .settle(answered(job(m, &[0], 0), vec![(0, no_such_user())], false))
                .await;
            assert_eq!(m.remaining(), 0);
        }
        assert_eq!(shard.records(), vec![Found::Dead, Found::Dead]);
        assert_eq!(shard.qm.queues.ready.total(), 0);
        assert_eq!(events(&shard), vec!["bounced", "bounced"]);
    });
}

#[test]
fn notify_success_on_a_2xx_to_a_next_hop_without_dsn_sends_a_relayed_report() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", "NOTIFY=SUCCESS"))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, delivered())], false))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.records()[0], Found::Dead);
        let report = the_report(&shard);
        let content = report.content();
        for field in [
            "Final-Recipient: rfc822; r@b.example\r\n",
            "Action: relayed\r\n",
            "Status: 2.0.0\r\n",
            "Remote-MTA: dns; mx.b.example\r\n",
        ] {
            assert!(content.contains(field), "no {field:?} in\n{content}");
        }
        assert_eq!(shard.qm.queues.ready.total(), 1);
        assert!(shard.ready_job("sender.example").is_some());
        let mut events = events(&shard);
        events.sort();
        assert_eq!(events, vec!["delivered", "received"]);
    });
}

#[test]
fn a_next_hop_that_offers_dsn_takes_the_success_report_over() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", "NOTIFY=SUCCESS"))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, delivered())], true))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.records(), vec![Found::Dead], "no report spooled");
        assert_eq!(shard.qm.queues.ready.total(), 0);
        assert!(shard.logged("received").is_empty());
        assert_eq!(shard.logged("delivered").len(), 1);
    });
}

#[test]
fn notify_delay_gets_one_delay_report_per_message_once_it_is_old_enough() {
    on_executor(|| async {
        let shard = Shard::start(config(|c| c.delivery.delay_warning = Duration::ZERO));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", "NOTIFY=DELAY,FAILURE"))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, greylisted())], false))
            .await;
        assert_eq!(shard.qm.deferred(), 1);
        let report = the_report(&shard);
        let content = report.content();
        for field in [
            "Action: delayed\r\n",
            "Status: 4.7.1\r\n",
            "Will-Retry-Until: ",
        ] {
            assert!(content.contains(field), "no {field:?} in\n{content}");
        }
        assert_eq!(shard.qm.queues.ready.total(), 1);

        shard
            .qm
            .settle(answered(job(&m, &[0], 1), vec![(0, greylisted())], false))
            .await;
        the_report(&shard);
        assert_eq!(shard.qm.queues.ready.total(), 1, "no second delay report");
        assert_eq!(shard.logged("deferred").len(), 2);
        assert_eq!(shard.logged("received").len(), 1);
    });
}
