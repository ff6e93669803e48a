//! Each kind of reply, settled: a 2xx delivers and finishes, a 4xx defers on the timer and
//! in the spool, a 5xx bounces with a report to the sender, a mixed transaction settles
//! each recipient on its own, and a report about a finished message changes nothing.

use super::shard::{answered, config, job, log_time, on_executor, Found, Mail, Shard, MX};
use super::{delivered, greylisted, no_such_user, text, the_report, SENDER};
use crate::clock::now_micros;
use crate::spool::record::{OutcomeKind, OutcomeRecord};
use crate::spool::replay::RecipientState;

#[test]
fn a_2xx_delivers_and_kills_the_record_with_nothing_left_to_do() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, delivered())], false))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.qm.deferred(), 0, "nothing to retry");
        assert_eq!(
            shard.qm.finishing(),
            0,
            "killed with the outcome, not later"
        );
        assert_eq!(shard.qm.queues.ready.total(), 0, "no report asked for");
        // The record is killed in the same append; the kill stands for the outcome record.
        assert_eq!(shard.records(), vec![Found::Dead]);
        assert!(
            shard.replay().messages.is_empty(),
            "a restart finds nothing to deliver"
        );
        assert_eq!(shard.refs(0), 0, "the record's reference is released");

        let log = shard.log();
        assert_eq!(log.len(), 1, "{log:?}");
        let l = &log[0];
        assert_eq!(l["event"], "delivered");
        assert_eq!(l["id"], m.id.to_string());
        assert_eq!(l["sender"], SENDER);
        assert_eq!(l["recipient"], "r@b.example");
        assert_eq!(l["host"], MX);
        assert_eq!(l["tls"], "TLSv1.3");
        assert_eq!(l["reply"], "250 2.0.0 Ok: queued as 4F2A");
        assert_eq!(l["attempts"], 1);
        assert_eq!(l["attempt_ms"], 20, "the agent's timing");
        assert!(l.get("next_attempt").is_none());
    });
}

#[test]
fn a_2xx_for_a_record_in_an_older_segment_records_the_outcome_and_batches_the_kill() {
    on_executor(|| async {
        // Every append that writes starts a new segment.
        let shard = Shard::start(config(|c| c.spool.segment_size.0 = 1));
        let a = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        let b = shard
            .receive(Mail::from(SENDER).to("q@c.example", ""))
            .await;
        shard
            .qm
            .settle(answered(job(&a, &[0], 0), vec![(0, delivered())], false))
            .await;

        assert_eq!(shard.qm.finishing(), 1, "the kill waits for a batch");
        assert_eq!(shard.qm.deferred(), 0);
        assert_eq!(
            shard.outcomes(),
            vec![OutcomeRecord {
                id: a.id,
                recipient: 0,
                kind: OutcomeKind::Delivered,
                attempts: 1,
                next_attempt_micros: 0,
            }]
        );
        // Meanwhile a restart knows the message is finished, and kills it.
        let r = shard.replay();
        assert!(r.messages[&a.id].is_done());
        assert_eq!(r.stale_records().len(), 1);
        assert_eq!(r.live().map(|m| m.id).collect::<Vec<_>>(), vec![b.id]);

        shard.qm.finish_pending().await;
        assert_eq!(shard.qm.finishing(), 0);
        assert!(
            !shard.segment_exists(0),
            "the old segment, drained, is deleted"
        );
        assert_eq!(
            shard.refs(2),
            0,
            "the outcome record's reference is released"
        );
        let r = shard.replay();
        assert_eq!(r.messages.keys().copied().collect::<Vec<_>>(), vec![b.id]);
    });
}

#[test]
fn a_4xx_defers_the_recipient_on_the_timer_and_in_the_spool() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        let before = now_micros();
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, greylisted())], false))
            .await;
        let after = now_micros();

        assert_eq!(m.remaining(), 1);
        assert_eq!(shard.qm.deferred(), 1, "on the shard's timer");
        assert_eq!(shard.qm.finishing(), 0);
        assert_eq!(shard.qm.queues.ready.total(), 0, "not ready again yet");
        let outcomes = shard.outcomes();
        assert_eq!(outcomes.len(), 1);
        let o = outcomes[0];
        assert_eq!((o.id, o.recipient), (m.id, 0));
        assert_eq!((o.kind, o.attempts), (OutcomeKind::Deferred, 1));
        // The first step of `delivery.retry` (5 min), ±10 %.
        let first = (before + 270_000_000)..=(after + 330_000_000);
        assert!(first.contains(&o.next_attempt_micros), "{o:?}");
        assert_eq!(
            shard.replay().messages[&m.id].states,
            vec![RecipientState::Pending {
                attempts: 1,
                next_attempt_micros: o.next_attempt_micros
            }]
        );

        let log = shard.log();
        assert_eq!(log.len(), 1, "{log:?}");
        let l = &log[0];
        assert_eq!(l["event"], "deferred");
        assert_eq!(l["recipient"], "r@b.example");
        assert_eq!(l["reply"], "451 4.7.1 Greylisted, try again later");
        assert_eq!(l["host"], MX);
        assert_eq!(l["attempts"], 1);
        assert_eq!(l["next_attempt"], log_time(o.next_attempt_micros));

        // The second attempt fails too: the next step of the schedule (10 min).
        let before = now_micros();
        shard
            .qm
            .settle(answered(job(&m, &[0], 1), vec![(0, greylisted())], false))
            .await;
        let after = now_micros();
        let o = *shard.outcomes().last().unwrap();
        assert_eq!((o.kind, o.attempts), (OutcomeKind::Deferred, 2));
        let second = (before + 540_000_000)..=(after + 660_000_000);
        assert!(second.contains(&o.next_attempt_micros), "{o:?}");
        assert_eq!(
            shard.replay().messages[&m.id].states,
            vec![RecipientState::Pending {
                attempts: 2,
                next_attempt_micros: o.next_attempt_micros
            }]
        );
        assert_eq!(shard.logged("deferred")[1]["attempts"], 2);
    });
}

#[test]
fn a_5xx_bounces_and_spools_and_queues_a_failure_report_to_the_sender() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let mail = Mail::from(SENDER).params("RET=HDRS ENVID=QF-2024").to(
            "r@b.example",
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;r@b.example",
        );
        let m = shard.receive(mail).await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, no_such_user())], false))
            .await;

        assert_eq!(m.remaining(), 0);
        assert_eq!((shard.qm.deferred(), shard.qm.finishing()), (0, 0));
        // The original is killed in the append that spools its report.
        let records = shard.records();
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[0], Found::Dead);
        let Found::Message {
            id: report_id,
            sender,
            recipients,
            content,
        } = the_report(&shard)
        else {
            unreachable!()
        };
        assert_eq!(sender, "", "reports come from <>");
        assert_eq!(recipients, vec![SENDER.to_string()]);
        for field in [
            "Subject: Undelivered Mail Returned to Sender\r\n",
            "Original-Envelope-Id: QF-2024\r\n",
            "Reporting-MTA: dns; mx.pigeon.test\r\n",
            &format!("X-Pigeon-Queue-ID: {}\r\n", m.id),
            "Original-Recipient: rfc822; r@b.example\r\n",
            "Final-Recipient: rfc822; r@b.example\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.b.example\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 No such user here\r\n",
            // RET=HDRS: the original's header section only.
            "Content-Type: text/rfc822-headers",
            "Subject: Quarterly figures\r\n",
        ] {
            assert!(content.contains(field), "no {field:?} in\n{content}");
        }
        assert!(!content.contains("The figures are attached."), "{content}");

        // A restart would deliver the report and nothing else.
        let r = shard.replay();
        let live: Vec<_> = r.live().collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].id, report_id);
        assert_eq!(shard.refs(0), 1, "only the report's record is live");
        // It is queued to the sender's domain, a fresh job.
        assert_eq!(shard.qm.queues.ready.total(), 1);
        let queued = shard.ready_job("sender.example").expect("report queued");
        assert_eq!(queued.message.id, report_id);
        assert_eq!(queued.message.sender, "");
        assert_eq!(queued.addresses().collect::<Vec<_>>(), vec![SENDER]);
        assert_eq!(queued.attempts, 0);
        assert_eq!(
            shard.content_of(&queued),
            content,
            "the queued report is the spooled one"
        );

        let bounced = shard.logged("bounced");
        assert_eq!(bounced.len(), 1);
        assert_eq!(bounced[0]["id"], m.id.to_string());
        assert_eq!(bounced[0]["recipient"], "r@b.example");
        assert_eq!(bounced[0]["reply"], "550 5.1.1 No such user here");
        assert_eq!(bounced[0]["host"], MX);
        assert_eq!(bounced[0]["attempts"], 1);
        let received = shard.logged("received");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0]["id"], report_id.to_string());
        assert_eq!(received[0]["host"], "local report");
        assert_eq!(received[0]["sender"], "");
        assert_eq!(received[0]["recipients"], 1);
        assert_eq!(received[0]["size"], content.len());
        assert_eq!(shard.log().len(), 2);
    });
}

#[test]
fn a_mixed_transaction_settles_each_recipient_on_its_own() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let mail = Mail::from(SENDER)
            .to("r1@b.example", "")
            .to("r2@b.example", "")
            .to("r3@b.example", "");
        let m = shard.receive(mail).await;
        let results = vec![(0, delivered()), (1, greylisted()), (2, no_such_user())];
        shard
            .qm
            .settle(answered(job(&m, &[0, 1, 2], 0), results, false))
            .await;

        assert_eq!(m.remaining(), 1);
        assert_eq!(shard.qm.deferred(), 1, "the 4xx recipient alone");
        assert_eq!(shard.qm.finishing(), 0);
        let outcomes = shard.outcomes();
        let kinds: Vec<_> = outcomes
            .iter()
            .map(|o| (o.recipient, o.kind, o.attempts))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, OutcomeKind::Delivered, 1),
                (1, OutcomeKind::Deferred, 1),
                (2, OutcomeKind::Bounced, 1),
            ]
        );
        let next = outcomes[1].next_attempt_micros;
        assert!(next > now_micros());
        assert_eq!(
            (
                outcomes[0].next_attempt_micros,
                outcomes[2].next_attempt_micros
            ),
            (0, 0)
        );
        assert_eq!(
            shard.replay().messages[&m.id].states,
            vec![
                RecipientState::Done(OutcomeKind::Delivered),
                RecipientState::Pending {
                    attempts: 1,
                    next_attempt_micros: next
                },
                RecipientState::Done(OutcomeKind::Bounced),
            ]
        );
        // The report is about the bounce only (the others asked for nothing else).
        let report = the_report(&shard);
        let content = report.content();
        assert!(content.contains("Final-Recipient: rfc822; r3@b.example\r\n"));
        for other in ["r1@b.example", "r2@b.example"] {
            assert!(
                !content.contains(&format!("Final-Recipient: rfc822; {other}")),
                "{content}"
            );
        }
        // Spooled after the outcome records of the same append: queued at its own offset.
        let queued = shard.ready_job("sender.example").expect("report queued");
        assert_eq!(shard.content_of(&queued), content);
        let lines: Vec<(String, String)> = shard
            .log()
            .iter()
            .filter(|l| l["event"] != "received")
            .map(|l| (text(&l["event"]), text(&l["recipient"])))
            .collect();
        let expected = [
            ("delivered", "r1@b.example"),
            ("deferred", "r2@b.example"),
            ("bounced", "r3@b.example"),
        ];
        assert_eq!(
            lines,
            expected.map(|(e, r)| (e.to_owned(), r.to_owned())).to_vec()
        );
        assert_eq!(shard.logged("received").len(), 1);

        // The deferred recipient is delivered on its second attempt: the message is done,
        // its record killed, and its earlier outcome records' references go with it.
        shard
            .qm
            .settle(answered(job(&m, &[1], 1), vec![(1, delivered())], false))
            .await;
        assert_eq!(m.remaining(), 0);
        assert_eq!(shard.qm.finishing(), 0);
        assert_eq!(shard.records()[0], Found::Dead);
        assert_eq!(shard.outcomes().len(), 3, "no new outcome record: the kill");
        let r = shard.replay();
        assert!(!r.messages.contains_key(&m.id), "a restart forgets it");
        assert_eq!(r.live().count(), 1, "the report");
        assert_eq!(shard.refs(0), 1, "only the report's record is live");
        let last = shard.logged("delivered").pop().unwrap();
        assert_eq!(last["recipient"], "r2@b.example");
        assert_eq!(last["attempts"], 2);
        assert_eq!(shard.qm.queues.ready.total(), 0, "no second report");
    });
}

#[test]
fn a_late_report_for_a_finished_message_records_nothing() {
    on_executor(|| async {
        let shard = Shard::start(config(|_| {}));
        let m = shard
            .receive(Mail::from(SENDER).to("r@b.example", ""))
            .await;
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, delivered())], false))
            .await;
        let records = shard.records();
        let lines = shard.log().len();
        shard
            .qm
            .settle(answered(job(&m, &[0], 0), vec![(0, no_such_user())], false))
            .await;
        assert_eq!(shard.records(), records);
        assert_eq!(shard.log().len(), lines);
        assert_eq!(shard.qm.queues.ready.total(), 0);
        assert_eq!((shard.qm.deferred(), shard.qm.finishing()), (0, 0));
    });
}
