//! Settling an attempt: each recipient's reply becomes an outcome (RFC 5321 §4.2.1:
//! 2xx delivered, 4xx try again, 5xx bounce), the outcomes are appended to the spool, and
//! only then acted on: logged, deferred, bounced, and the message released once final.
//!
//! The spool comes first so that a crash between deciding and acting repeats the action
//! (a second log line, a second delivery) rather than forgetting it: at least once, never
//! zero. A report (DSN) is spooled in the same append as the outcomes that call for it.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock::now_micros;
use crate::outcome::dsn::{self, Action, RecipientReport, Report};
use crate::outcome::log::LogEvent;
use crate::queue::message::{Finish, Job, QueuedMessage};
use crate::queue::retry::{backoff, expired};
use crate::runtime::shard::ShardContext;
use crate::smtp::address::parse_mailbox;
use crate::smtp::data::{unstuff, BdatEncoder};
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::reply::{Enhanced, Reply};
use crate::spool::compact;
use crate::spool::location::SegmentKey;
use crate::spool::record::{encode_message, encode_outcome, MessageId, OutcomeKind, OutcomeRecord};

struct Decided {
    index: u32,
    reply: Reply,
    kind: OutcomeKind,
    next_attempt_micros: u64,
}

/// Records and acts on the results of one attempt at `job`: one reply per recipient
/// (index into the message's recipients). `host` is the server that answered, if any, and
/// `tls` the TLS version of that connection, if it used TLS;
/// `next_hop_dsn` says whether it offered DSN and so took over notifications (RFC 3461).
pub async fn settle(
    ctx: &Rc<ShardContext>,
    job: Job,
    host: Option<&str>,
    tls: Option<&str>,
    next_hop_dsn: bool,
    results: Vec<(u32, Reply)>,
) {
    // Nothing is recorded for a message already finished (its record may be killed and
    // its references gone): outcome records written now would hold references that no
    // finish would ever release.
    if results.is_empty() || job.message.remaining() == 0 {
        return;
    }
    let now = now_micros();
    let delivery = &ctx.shared.config.delivery;
    let message = &job.message;
    let attempts = job.attempts + 1;
    let too_old = expired(message.received_micros, delivery.max_age, now);
    // A deferral never reaches past the expiry time: the recipient expires then.
    let expiry = message.received_micros + delivery.max_age.as_micros() as u64 + 1;
    let decided: Vec<Decided> = results
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
        .collect();
    let notices = notices_for(message, &decided, next_hop_dsn, now, delivery);
    let finals: Vec<(u32, OutcomeKind)> = decided
        .iter()
        .filter(|d| d.kind.is_final())
        .map(|d| (d.index, d.kind))
        .collect();
    let final_indices: Vec<u32> = finals.iter().map(|f| f.0).collect();
    // The report reads the original from the record, so it is built before anything else.
    let mut report = build_report(ctx, message, &notices, host, now);
    // When these outcomes end the message and its record is in the segment this shard is
    // writing, the record is killed in the same append instead of writing them: a dead
    // record replays as nothing, and the kill is synced with the append at no extra cost.
    // Anywhere else a kill costs a sync of another file, so the outcomes are written here
    // as usual (they are what makes the finish durable) and the kill waits to be batched
    // with others (`finish`).
    let kill = message
        .outcomes_coming(&final_indices)
        .filter(|record| ctx.spool.is_active(record.segment));
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
    // The report is spooled in the same append as the outcomes that call for it: both are
    // durable or neither is, so a crash can repeat a report but never lose one.
    let mut records = n;
    if let Some(r) = report.as_mut() {
        parts.push(std::mem::take(&mut r.head));
        parts.push(std::mem::take(&mut r.wire));
        records += 1;
    }
    let kills = kill.into_iter().collect();
    let Ok(location) = ctx.spool.append_and_kill(parts, records, kills).await else {
        // The spool is closing: nothing was recorded, so nothing is acted on; the spool
        // still says what it said before this attempt, and a restart tries again.
        message.outcomes_abandoned();
        return;
    };
    let finished = message.record_outcomes(location.segment, n, &finals, kill.is_some());
    if let Some(r) = report {
        r.enqueue(
            ctx,
            location.segment,
            location.offset + outcomes_len as u64,
            now,
        );
    }

    let delay = Duration::from_micros(now.saturating_sub(message.received_micros));
    let mut deferred = Vec::new();
    for d in &decided {
        let reply = d.reply.to_string();
        let event = match d.kind {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Bounced => "bounced",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Deferred => "deferred",
        };
        ctx.log(&LogEvent {
            event,
            id: Some(message.id),
            sender: &message.sender,
            recipient: Some(&message.recipients[d.index as usize]),
            host,
            tls,
            reply: Some(&reply),
            attempts: Some(attempts),
            delay: Some(delay),
            next_attempt_micros: (d.kind == OutcomeKind::Deferred).then_some(d.next_attempt_micros),
            ..LogEvent::default()
        });
        if d.kind == OutcomeKind::Deferred {
            deferred.push(d.index);
        }
    }
    if !deferred.is_empty() {
        let due = decided
            .iter()
            .map(|d| d.next_attempt_micros)
            .filter(|&t| t > 0)
            .min();
        let retry = Job {
            message: message.clone(),
            recipients: deferred.into(),
            attempts,
        };
        ctx.deferred
            .borrow_mut()
            .insert(now, due.unwrap_or(now), retry);
        compact::after_deferral(ctx, message);
    }
    if let Some(f) = finished {
        finish(ctx, f);
    }
}

/// Carries out a [`Finish`]. A record already killed (with the last outcomes) has its
/// references, and its outcome records', released at once. Otherwise the kill waits for
/// [`finish_pending`] to do it together with others: the outcome records already on disk
/// say the message is finished, so nothing is lost meanwhile, and a restart kills what
/// was still waiting.
pub fn finish(ctx: &ShardContext, finish: Finish) {
    if finish.killed {
        release(ctx, finish);
    } else {
        ctx.finishing.borrow_mut().push(finish);
    }
}

/// Kills the records of every finish waiting (one write each, one sync per file), then
/// releases their references. Run by the scheduler every so often, and once at the stop.
pub async fn finish_pending(ctx: &ShardContext) {
    let finishes = std::mem::take(&mut *ctx.finishing.borrow_mut());
    if finishes.is_empty() {
        return;
    }
    let records = finishes.iter().map(|f| f.record).collect();
    if ctx.spool.kill(records).await.is_err() {
        // Closing: the next start finds these messages finished and kills them.
        return;
    }
    for f in finishes {
        release(ctx, f);
    }
}

/// Releases the references of a finished message whose record is durably killed.
fn release(ctx: &ShardContext, finish: Finish) {
    let segments = &ctx.shared.segments;
    segments.release(finish.record.segment, 1);
    segments.release_all(finish.held);
}

/// Which recipients get a notice, and which: failures unless NOTIFY says otherwise,
/// successes when asked and the next hop did not take over (RFC 3461 §6.2.7), delays when
/// asked and the message is older than `delivery.delay_warning` (once per message, for
/// every recipient deferred in that attempt who asked).
fn notices_for<'a>(
    message: &QueuedMessage,
    decided: &'a [Decided],
    next_hop_dsn: bool,
    now: u64,
    delivery: &crate::config::DeliveryConfig,
) -> Vec<(&'a Decided, Action)> {
    let old_enough = Duration::from_micros(now.saturating_sub(message.received_micros))
        >= delivery.delay_warning;
    let wants_delay = |d: &Decided| {
        d.kind == OutcomeKind::Deferred
            && message
                .recipient_dsn(d.index)
                .notify
                .is_some_and(|n| n.delay)
    };
    let send_delays = old_enough
        && decided.iter().any(wants_delay)
        && !message.delay_notified.swap(true, Ordering::AcqRel);
    decided
        .iter()
        .filter_map(|d| {
            let notify = message.recipient_dsn(d.index).notify();
            let action = match d.kind {
                OutcomeKind::Deferred if send_delays && wants_delay(d) => Action::Delayed,
                OutcomeKind::Delivered if notify.success && !next_hop_dsn => Action::Relayed,
                OutcomeKind::Bounced | OutcomeKind::Expired if notify.failure => Action::Failed,
                _ => return None,
            };
            Some((d, action))
        })
        .collect()
}

/// Recipients that expired without an attempt (queued past `delivery.max_age`).
pub async fn expire(ctx: &Rc<ShardContext>, job: Job) {
    let reply = Reply::new(
        451,
        Enhanced(4, 4, 7),
        "Message expired: delivery time exceeded",
    );
    let results = job.recipients.iter().map(|&i| (i, reply.clone())).collect();
    settle(ctx, job, None, None, false, results).await;
}

/// A report (DSN) ready to be spooled: its record's parts and what queueing it needs.
struct PreparedReport {
    id: MessageId,
    to: String,
    smtputf8: bool,
    eight_bit: bool,
    size: u64,
    head: Vec<u8>,
    wire: Vec<u8>,
}

impl PreparedReport {
    /// Queues the report once its record is durable at `segment`/`offset`.
    fn enqueue(self, ctx: &ShardContext, segment: SegmentKey, offset: u64, now: u64) {
        let size = self.size;
        let message = QueuedMessage::new(
            self.id,
            segment,
            offset,
            now,
            String::new(),
            [self.to],
            self.smtputf8,
            self.eight_bit,
            size,
            vec![0],
        )
        .into_shared();
        ctx.shared.enqueue(&message, [(0, 0)]);
        ctx.log(&LogEvent {
            event: "received",
            id: Some(self.id),
            sender: "",
            recipients: Some(1),
            size: Some(size),
            host: Some("local report"),
            ..LogEvent::default()
        });
    }
}

/// Builds the RFC 3464 report about `notices` (failed, delayed or relayed recipients) to
/// the sender, from `<>`; none when there is nothing to report or the sender is `<>`.
fn build_report(
    ctx: &ShardContext,
    message: &QueuedMessage,
    notices: &[(&Decided, Action)],
    host: Option<&str>,
    now: u64,
) -> Option<PreparedReport> {
    if notices.is_empty() {
        return None;
    }
    let to = dsn::dsn_recipient(&message.sender)?;
    let original = match compact::read_content(&ctx.reader, message) {
        Ok(c) => unstuff(c.bytes()),
        Err(e) => {
            tracing::warn!(id = %message.id, error = %e, "cannot read the original for a report");
            Vec::new()
        }
    };
    let diagnostics: Vec<String> = notices.iter().map(|(d, _)| d.reply.to_string()).collect();
    let dsn_params: Vec<_> = notices
        .iter()
        .map(|(d, _)| message.recipient_dsn(d.index))
        .collect();
    let retry_until =
        (message.received_micros / 1_000_000) + ctx.shared.config.delivery.max_age.as_secs();
    let any_failed = notices.iter().any(|(_, a)| *a == Action::Failed);
    let recipients = notices
        .iter()
        .zip(&diagnostics)
        .zip(&dsn_params)
        .map(|(((d, action), diagnostic), params)| RecipientReport {
            recipient: &message.recipients[d.index as usize],
            original_recipient: params.orcpt.as_deref(),
            action: *action,
            status: match (action, d.kind) {
                (_, OutcomeKind::Expired) => Enhanced(4, 4, 7),
                (Action::Relayed, _) => d.reply.enhanced.unwrap_or(Enhanced(2, 0, 0)),
                (Action::Delayed, _) => d.reply.enhanced.unwrap_or(Enhanced(4, 0, 0)),
                _ => d.reply.enhanced.unwrap_or(Enhanced(5, 0, 0)),
            },
            remote_mta: host,
            diagnostic: Some(diagnostic),
            last_attempt_unix: Some(now / 1_000_000),
            will_retry_until_unix: (*action == Action::Delayed).then_some(retry_until),
        })
        .collect();
    let hostname = &ctx.session.hostname;
    let queue_id = message.id.to_string();
    let report = Report {
        reporting_mta: hostname,
        envelope_id: message.mail_dsn.envid.as_deref(),
        arrival_unix: message.received_micros / 1_000_000,
        queue_id: &queue_id,
        sender: &message.sender,
        recipients,
        original: &original,
        // The whole message goes back only in a failure report for RET=FULL (RFC 3461 §4.3).
        return_full: any_failed && message.mail_dsn.ret_full == Some(true),
    };
    let id = ctx.spool.next_id();
    let content = dsn::build(&report, &format!("<{id}.dsn@{hostname}>"), now / 1_000_000);
    let mailbox = match parse_mailbox(to.as_bytes(), true) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(id = %message.id, error = %e, "cannot address a report to the sender");
            return None;
        }
    };
    let mut wire = Vec::with_capacity(content.len() + 64);
    let mut encoder = BdatEncoder::new(usize::MAX);
    encoder.admit(content.len() as u64);
    encoder.feed(&content, &mut wire);
    encoder.finish(&mut wire);
    let envelope = Envelope {
        peer: ([127, 0, 0, 1], 0).into(),
        helo: hostname.clone(),
        protocol: "LOCAL",
        sender: None,
        mail_params: String::new(),
        recipients: vec![Recipient {
            mailbox,
            params: String::new(),
        }],
        smtputf8: !to.is_ascii(),
        body_hashes: Vec::new(),
        auth: None,
    };
    let eight_bit = !wire.is_ascii();
    let head = encode_message(id, now, &envelope, eight_bit, &[&wire]);
    Some(PreparedReport {
        id,
        to: to.to_owned(),
        smtputf8: envelope.smtputf8,
        eight_bit,
        size: wire.len() as u64,
        head,
        wire,
    })
}
