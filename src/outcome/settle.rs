//! Settling an attempt: each recipient's reply becomes an outcome (RFC 5321 §4.2.1:
//! 2xx delivered, 4xx try again, 5xx bounce), the outcomes are appended to the spool, and
//! only then acted on: logged, deferred, bounced, and the message released once final.
//!
//! The spool comes first so that a crash between deciding and acting repeats the action
//! (a second log line, a second DSN) rather than forgetting it: at least once, never zero.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::outcome::dsn::{self, Action, RecipientReport, Report};
use crate::outcome::log::LogEvent;
use crate::queue::message::{domain_of, Job, QueuedMessage};
use crate::queue::retry::{backoff, expired};
use crate::runtime::shard::ShardContext;
use crate::session::data::{unstuff, BdatEncoder};
use crate::session::envelope::{Envelope, Recipient};
use crate::smtp::address::parse_mailbox;
use crate::smtp::reply::{Enhanced, Reply};
use crate::spool::record::{encode_message, encode_outcome, OutcomeKind, OutcomeRecord};

/// Microseconds since the epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

struct Decided {
    index: u32,
    reply: Reply,
    kind: OutcomeKind,
    next_attempt_micros: u64,
}

/// Records and acts on the results of one attempt at `job`: one reply per recipient
/// (index into the message's recipients). `host` is the server that answered, if any;
/// `next_hop_dsn` says whether it offered DSN and so took over notifications (RFC 3461).
pub async fn settle(
    ctx: &ShardContext,
    job: Job,
    host: Option<&str>,
    next_hop_dsn: bool,
    results: Vec<(u32, Reply)>,
) {
    if results.is_empty() {
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
    let records: Vec<Vec<u8>> = decided
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
        .collect();
    let n = records.len();
    let Ok(location) = ctx.spool.append(records, n as u32).await else {
        // The spool is closing: nothing was recorded, so nothing is acted on; the spool
        // still says what it said before this attempt, and a restart tries again.
        return;
    };
    for _ in 0..n {
        message.add_outcome_segment(location.segment);
    }

    let delay = Duration::from_micros(now.saturating_sub(message.received_micros));
    let mut deferred = Vec::new();
    let mut notices = Vec::new();
    let mut finals = 0;
    let warn_delay = delay >= delivery.delay_warning;
    for d in &decided {
        let reply = d.reply.to_string();
        let event = match d.kind {
            OutcomeKind::Delivered => "delivered",
            OutcomeKind::Bounced => "bounced",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Deferred => "deferred",
        };
        ctx.shared.log.write(&LogEvent {
            event,
            id: Some(message.id),
            sender: &message.sender,
            recipient: Some(&message.recipients[d.index as usize]),
            host,
            reply: Some(&reply),
            attempts: Some(attempts),
            delay: Some(delay),
            next_attempt_micros: (d.kind == OutcomeKind::Deferred).then_some(d.next_attempt_micros),
            ..LogEvent::default()
        });
        let notify = message.recipient_dsn(d.index).notify();
        match d.kind {
            OutcomeKind::Deferred => {
                deferred.push(d.index);
                // Only when asked for, and once per message (RFC 3461 §4.1 leaves delay
                // notices to the MTA).
                let asked = message
                    .recipient_dsn(d.index)
                    .notify
                    .is_some_and(|n| n.delay);
                if asked && warn_delay && !message.delay_notified.swap(true, Ordering::AcqRel) {
                    notices.push((d, Action::Delayed));
                }
            }
            OutcomeKind::Delivered => {
                finals += 1;
                if notify.success && !next_hop_dsn {
                    notices.push((d, Action::Relayed));
                }
            }
            OutcomeKind::Bounced | OutcomeKind::Expired => {
                finals += 1;
                if notify.failure {
                    notices.push((d, Action::Failed));
                }
            }
        }
    }
    if let Some(&first) = deferred.first() {
        let due = decided
            .iter()
            .map(|d| d.next_attempt_micros)
            .filter(|&t| t > 0)
            .min();
        let domain = domain_of(&message.recipients[first as usize]);
        let retry = Job {
            message: message.clone(),
            recipients: deferred,
            attempts,
        };
        ctx.deferred
            .borrow_mut()
            .insert(due.unwrap_or(now), domain, retry);
    }
    if !notices.is_empty() {
        notify(ctx, message, &notices, host, now).await;
    }
    if let Some(outcome_segments) = message.finish_recipients(finals) {
        ctx.shared.segments.release_after(message.segment, outcome_segments);
    }
}

/// Recipients that expired without an attempt (queued past `delivery.max_age`).
pub async fn expire(ctx: &ShardContext, job: Job) {
    let reply = Reply::new(
        451,
        Enhanced(4, 4, 7),
        "Message expired: delivery time exceeded",
    );
    let results = job.recipients.iter().map(|&i| (i, reply.clone())).collect();
    settle(ctx, job, None, false, results).await;
}

/// Sends the sender an RFC 3464 report about `notices` (failed, delayed or relayed
/// recipients), unless the sender is `<>`.
async fn notify(
    ctx: &ShardContext,
    message: &Arc<QueuedMessage>,
    notices: &[(&Decided, Action)],
    host: Option<&str>,
    now: u64,
) {
    let Some(to) = dsn::dsn_recipient(&message.sender) else {
        return;
    };
    let original = match ctx.reader.content(message.segment, message.offset) {
        Ok(c) => unstuff(c.bytes()),
        Err(e) => {
            tracing::warn!(id = %message.id, error = %e, "cannot read the original for a bounce");
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
    let id = message.id.to_string();
    let report = Report {
        reporting_mta: hostname,
        envelope_id: message.mail_dsn.envid.as_deref(),
        arrival_unix: message.received_micros / 1_000_000,
        queue_id: &id,
        sender: &message.sender,
        recipients,
        original: &original,
        // The whole message goes back only in a failure report for RET=FULL (RFC 3461 §4.3).
        return_full: any_failed && message.mail_dsn.ret_full == Some(true),
    };
    let dsn_id = ctx.spool.next_id();
    let content = dsn::build(
        &report,
        &format!("<{dsn_id}.dsn@{hostname}>"),
        now / 1_000_000,
    );
    if let Err(e) = inject(ctx, to, content, now).await {
        tracing::error!(id = %message.id, error = %e, "cannot queue a bounce");
    }
}

/// Spools and queues a message pigeon wrote itself (a DSN), from `<>` to `to`.
async fn inject(ctx: &ShardContext, to: &str, content: Vec<u8>, now: u64) -> Result<(), String> {
    let mailbox = parse_mailbox(to.as_bytes(), true).map_err(|e| e.to_string())?;
    let mut wire = Vec::with_capacity(content.len() + 64);
    let mut encoder = BdatEncoder::new(usize::MAX);
    encoder.admit(content.len() as u64);
    encoder.feed(&content, &mut wire);
    encoder.finish(&mut wire);
    let envelope = Envelope {
        peer: ([127, 0, 0, 1], 0).into(),
        helo: ctx.session.hostname.clone(),
        protocol: "LOCAL",
        sender: None,
        mail_params: String::new(),
        recipients: vec![Recipient {
            mailbox,
            params: String::new(),
        }],
        smtputf8: !to.is_ascii(),
    };
    let id = ctx.spool.next_id();
    let eight_bit = !wire.is_ascii();
    let head = encode_message(id, now, &envelope, eight_bit, &[&wire]);
    let size = wire.len() as u64;
    let location = ctx
        .spool
        .append(vec![head, wire], 1)
        .await
        .map_err(|e| e.to_string())?;
    let message = Arc::new(QueuedMessage::new(
        id,
        location.segment,
        location.offset,
        now,
        String::new(),
        vec![to.to_owned()],
        envelope.smtputf8,
        eight_bit,
        size,
        1,
    ));
    ctx.shared.enqueue(&message, [(0, 0)]);
    ctx.shared.log.write(&LogEvent {
        event: "received",
        id: Some(id),
        sender: "",
        recipients: Some(1),
        size: Some(size),
        host: Some("local bounce"),
        ..LogEvent::default()
    });
    Ok(())
}
