//! The settler: each recipient's reply in an [`AttemptReport`] becomes an outcome (RFC
//! 5321 §4.2.1: 2xx delivered, 4xx try again, 5xx bounce, 4xx past `delivery.max_age`
//! expired), the outcomes are appended to the spool, and only then acted on: logged,
//! reported to the sender (DSN), and handed back to the queue manager as [`Settled`]:
//! what to try again when, and whether the message is finished.
//!
//! The spool comes first so that a crash between deciding and acting repeats the action
//! (a second log line, a second delivery) rather than forgetting it: at least once, never
//! zero. A report (DSN) is spooled in the same append as the outcomes that call for it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_micros;
use crate::config::DeliveryConfig;
use crate::deliver::report::AttemptReport;
use crate::outcome::log::{LogEvent, ShardLog};
use crate::outcome::notice::{build_report, notices_for};
use crate::queue::message::{Finish, Job};
use crate::queue::queues::Queues;
use crate::queue::retry::{backoff, expired};
use crate::smtp::reply::Reply;
use crate::spool::commit::ShardSpool;
use crate::spool::read::SegmentReader;
use crate::spool::record::{encode_outcome, OutcomeKind, OutcomeRecord};
use crate::spool::segments::Segments;

/// One recipient's outcome, decided.
pub(crate) struct Decided {
    pub(crate) index: u32,
    pub(crate) reply: Reply,
    pub(crate) kind: OutcomeKind,
    pub(crate) next_attempt_micros: u64,
}

/// What a settle leaves to the queue manager.
#[derive(Debug, Default)]
pub struct Settled {
    /// Recipients to try again (one job), and when, microseconds since the epoch.
    pub retry: Option<(u64, Job)>,
    /// The message is finished: what is left to do about its record.
    pub finished: Option<Finish>,
}

/// One shard's settler: the only place that decides what becomes of a recipient.
pub struct Settler {
    /// This shard's spool writer.
    pub spool: Rc<ShardSpool>,
    /// This shard's segment maps (a report quotes the original).
    pub reader: Rc<SegmentReader>,
    /// Which segments still hold live records.
    pub segments: Arc<Segments>,
    /// Where reports (DSNs) are queued.
    pub queues: Arc<Queues>,
    /// The shard's delivery log.
    pub log: Rc<ShardLog>,
    /// Retry schedule, expiry and delay notices.
    pub delivery: DeliveryConfig,
    /// The reporting MTA's name in reports.
    pub hostname: String,
}

impl Settler {
    /// Records and acts on `report`: one reply per recipient tried.
    pub async fn settle(&self, report: AttemptReport) -> Settled {
        let AttemptReport {
            job,
            results,
            host,
            tls,
            next_hop_dsn,
            took,
        } = report;
        let host = host.as_deref();
        // Nothing is recorded for a message already finished (its record may be killed and
        // its references gone): outcome records written now would hold references that no
        // finish would ever release.
        if results.is_empty() || job.message.remaining() == 0 {
            return Settled::default();
        }
        let now = now_micros();
        let delivery = &self.delivery;
        let message = &job.message;
        let attempts = job.attempts + 1;
        let decided = self.decide(&job, results, now);
        let notices = notices_for(message, &decided, next_hop_dsn, now, delivery);
        let finals: Vec<(u32, OutcomeKind)> = decided
            .iter()
            .filter(|d| d.kind.is_final())
            .map(|d| (d.index, d.kind))
            .collect();
        let final_indices: Vec<u32> = finals.iter().map(|f| f.0).collect();
        // The report reads the original from the record, so it is built before anything
        // else.
        let mut report = build_report(self, message, &notices, host, now);
        // When these outcomes end the message and its record is in the segment this shard
        // is writing, the record is killed in the same append instead of writing them: a
        // dead record replays as nothing, and the kill is synced with the append at no
        // extra cost. Anywhere else a kill costs a sync of another file, so the outcomes
        // are written here as usual (they are what makes the finish durable) and the kill
        // waits to be batched with others (the queue manager's finishes).
        let kill = message
            .outcomes_coming(&final_indices)
            .filter(|record| self.spool.is_active(record.segment));
        let mut parts: Vec<Vec<u8>> = if kill.is_some() {
            Vec::new()
        } else {
            decided
                .iter()
                .map(|d| {
                    encode_outcome(&OutcomeRecord {
                        id: message.id,
                        recipient: d.index,
                        kind: d.kind,
                        attempts,
                        next_attempt_micros: d.next_attempt_micros,
                    })
                })
                .collect()
        };
        let n = parts.len() as u32;
        let outcomes_len: usize = parts.iter().map(Vec::len).sum();
        // The report is spooled in the same append as the outcomes that call for it: both
        // are durable or neither is, so a crash can repeat a report but never lose one.
        let mut records = n;
        if let Some(r) = report.as_mut() {
            parts.push(std::mem::take(&mut r.head));
            parts.push(std::mem::take(&mut r.wire));
            records += 1;
        }
        let kills = kill.into_iter().collect();
        let Ok(location) = self.spool.append_and_kill(parts, records, kills).await else {
            // The spool is closing: nothing was recorded, so nothing is acted on; the spool
            // still says what it said before this attempt, and a restart tries again.
            message.outcomes_abandoned();
            return Settled::default();
        };
        let finished = message.record_outcomes(location.segment, n, &finals, kill.is_some());
        if let Some(r) = report {
            r.enqueue(
                self,
                location.segment,
                location.offset + outcomes_len as u64,
                now,
            );
        }
        self.log_outcomes(&job, &decided, host, tls, took, now);
        let deferred: Vec<u32> = decided
            .iter()
            .filter(|d| d.kind == OutcomeKind::Deferred)
            .map(|d| d.index)
            .collect();
        let retry = (!deferred.is_empty()).then(|| {
            let due = decided
                .iter()
                .map(|d| d.next_attempt_micros)
                .filter(|&t| t > 0)
                .min()
                .unwrap_or(now);
            let job = Job {
                message: message.clone(),
                recipients: deferred.into(),
                attempts,
            };
            (due, job)
        });
        Settled { retry, finished }
    }

    /// Each reply's outcome: delivered, bounced, deferred until when, or expired.
    fn decide(&self, job: &Job, results: Vec<(u32, Reply)>, now: u64) -> Vec<Decided> {
        let delivery = &self.delivery;
        let message = &job.message;
        let attempts = job.attempts + 1;
        let too_old = expired(message.received_micros, delivery.max_age, now);
        // A deferral never reaches past the expiry time: the recipient expires then.
        let expiry = message.received_micros + delivery.max_age.as_micros() as u64 + 1;
        results
            .into_iter()
            .map(|(index, reply)| {
                let (kind, next_attempt_micros) = match reply.code / 100 {
                    2 => (OutcomeKind::Delivered, 0),
                    5 => (OutcomeKind::Bounced, 0),
                    _ if too_old => (OutcomeKind::Expired, 0),
                    _ => {
                        let noise = (message.id.unix_micros() << 8) ^ u64::from(index);
                        let delay = backoff(&delivery.retry, attempts, noise);
                        (
                            OutcomeKind::Deferred,
                            (now + delay.as_micros() as u64).min(expiry),
                        )
                    }
                };
                Decided {
                    index,
                    reply,
                    kind,
                    next_attempt_micros,
                }
            })
            .collect()
    }

    /// One log line per recipient settled.
    fn log_outcomes(
        &self,
        job: &Job,
        decided: &[Decided],
        host: Option<&str>,
        tls: Option<&str>,
        took: Duration,
        now: u64,
    ) {
        let message = &job.message;
        let delay = Duration::from_micros(now.saturating_sub(message.received_micros));
        for d in decided {
            let reply = d.reply.to_string();
            let event = match d.kind {
                OutcomeKind::Delivered => "delivered",
                OutcomeKind::Bounced => "bounced",
                OutcomeKind::Expired => "expired",
                OutcomeKind::Deferred => "deferred",
            };
            self.log.write(&LogEvent {
                event,
                id: Some(message.id),
                sender: &message.sender,
                recipient: Some(&message.recipients[d.index as usize]),
                host,
                tls,
                reply: Some(&reply),
                attempts: Some(job.attempts + 1),
                delay: Some(delay),
                // An attempt that made no connection (an expiry) took no time worth a field.
                attempt: (!took.is_zero()).then_some(took),
                next_attempt_micros: (d.kind == OutcomeKind::Deferred)
                    .then_some(d.next_attempt_micros),
                ..LogEvent::default()
            });
        }
    }

    /// Releases the references of a finished message whose record is durably killed.
    pub fn release(&self, finish: Finish) {
        self.segments.release(finish.record.segment, 1);
        self.segments.release_all(finish.held);
    }

    /// Kills the records of `finishes` (one write each, one sync per file), then releases
    /// their references. When the spool is closing, nothing is released: the next start
    /// finds these messages finished and kills them.
    pub async fn kill_and_release(&self, finishes: Vec<Finish>) {
        if finishes.is_empty() {
            return;
        }
        let records = finishes.iter().map(|f| f.record).collect();
        if self.spool.kill(records).await.is_err() {
            return;
        }
        for f in finishes {
            self.release(f);
        }
    }
}
