//! Destinations that fail before any transaction (`AttemptReport::all`): every recipient
//! of the job gets the same outcome, and the sender one report.

use std::time::Duration;

use super::shard::{config, job, on_executor, reply, Found, Mail, Shard};
use super::{the_report, SENDER};
use crate::deliver::dns::DnsError;
use crate::deliver::report::AttemptReport;
use crate::spool::record::OutcomeKind;
use crate::spool::replay::RecipientState;

#[test]
fn a_destination_without_an_address_defers_every_recipient_of_the_job() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(
                Mail::from(SENDER)
                    .to("a@b.example", "")
                    .to("c@b.example", ""),
            )
            .await;
        let no_address = reply(451, (4, 4, 4), "no address to deliver to for b.example");
        let report = AttemptReport::all(job(&m, &[0, 1], 0), no_address, Duration::from_secs(1));
        shard.qm.settle(report).await;

        assert_eq!(m.remaining(), 2);
        assert_eq!(shard.qm.deferred(), 2, "both recipients on the timer");
        assert_eq!(shard.qm.queues.ready.total(), 0, "no report asked for");
        let outcomes = shard.outcomes();
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes
            .iter()
            .all(|o| o.kind == OutcomeKind::Deferred && o.attempts == 1));
        let states = &shard.replay().messages[&m.id].states;
        assert!(
            states
                .iter()
                .all(|s| matches!(s, RecipientState::Pending { attempts: 1, .. })),
            "{states:?}"
        );
        let deferred = shard.logged("deferred");
        assert_eq!(deferred.len(), 2);
        for (l, r) in deferred.iter().zip(["a@b.example", "c@b.example"]) {
            assert_eq!(l["recipient"], r);
            assert_eq!(
                l["reply"],
                "451 4.4.4 no address to deliver to for b.example"
            );
            assert!(l.get("host").is_none() && l.get("tls").is_none());
            assert!(l.get("next_attempt").is_some());
        }
    });
}

#[test]
fn a_domain_that_does_not_exist_bounces_every_recipient_with_one_report() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(
                Mail::from(SENDER)
                    .to("a@gone.example", "")
                    .to("c@gone.example", ""),
            )
            .await;
        let nxdomain = DnsError::NxDomain.reply();
        shard
            .qm
            .settle(AttemptReport::all(
                job(&m, &[0, 1], 0),
                nxdomain,
                Duration::ZERO,
            ))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.qm.deferred(), 0);
        assert_eq!(shard.records()[0], Found::Dead);
        let report = the_report(&shard);
        let content = report.content();
        for r in ["a@gone.example", "c@gone.example"] {
            let field = format!("Final-Recipient: rfc822; {r}\r\n");
            assert!(content.contains(&field), "no {field:?} in\n{content}");
        }
        assert_eq!(content.matches("Status: 5.1.2\r\n").count(), 2, "{content}");
        assert!(!content.contains("Remote-MTA"), "{content}");
        assert_eq!(shard.qm.queues.ready.total(), 1);
        let bounced = shard.logged("bounced");
        assert_eq!(bounced.len(), 2);
        for l in &bounced {
            assert_eq!(l["reply"], "550 5.1.2 the domain does not exist");
            assert!(l.get("host").is_none());
        }
    });
}
