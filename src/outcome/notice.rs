//! Which settled recipients the sender hears about (RFC 3461: failures, delays and
//! successes, as each recipient's NOTIFY asks), and the report message (RFC 3464) that
//! tells them, made ready to be spooled with the outcomes that call for it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::DeliveryConfig;
use crate::outcome::dsn::{self, Action, RecipientReport, Report};
use crate::outcome::log::LogEvent;
use crate::outcome::settle::{Decided, Settler};
use crate::queue::content::read_content;
use crate::queue::message::{NewMessage, QueuedMessage};
use crate::smtp::address::parse_mailbox;
use crate::smtp::data::{unstuff, BdatEncoder};
use crate::smtp::envelope::{Envelope, Recipient};
use crate::smtp::reply::Enhanced;
use crate::spool::location::{Location, SegmentKey};
use crate::spool::record::{encode_message, MessageId, OutcomeKind};

/// Which recipients get a notice, and which: failures unless NOTIFY says otherwise,
/// successes when asked and the next hop did not take over (RFC 3461 §6.2.7), delays when
/// asked and the message is older than `delivery.delay_warning` (once per message, for
/// every recipient deferred in that attempt who asked).
pub(crate) fn notices_for<'a>(
    message: &QueuedMessage,
    decided: &'a [Decided],
    next_hop_dsn: bool,
    now: u64,
    delivery: &DeliveryConfig,
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

/// A report (DSN) ready to be spooled: its record's parts and what queueing it needs.
pub(crate) struct PreparedReport {
    id: MessageId,
    to: String,
    smtputf8: bool,
    eight_bit: bool,
    size: u64,
    /// The record's frame and envelope, then its content: two parts of one append.
    pub(crate) head: Vec<u8>,
    pub(crate) wire: Vec<u8>,
}

impl PreparedReport {
    /// Queues the report once its record is durable at `segment`/`offset`.
    pub(crate) fn enqueue(self, settler: &Settler, segment: SegmentKey, offset: u64, now: u64) {
        let size = self.size;
        let message = QueuedMessage::new(NewMessage {
            id: self.id,
            record: Location { segment, offset },
            received_micros: now,
            sender: String::new(),
            recipients: [self.to],
            smtputf8: self.smtputf8,
            eight_bit: self.eight_bit,
            size,
            states: vec![0],
        })
        .into_shared();
        settler.queues.enqueue(&message, [(0, 0)]);
        settler.log.write(&LogEvent {
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
pub(crate) fn build_report(
    settler: &Settler,
    message: &QueuedMessage,
    notices: &[(&Decided, Action)],
    host: Option<&str>,
    now: u64,
) -> Option<PreparedReport> {
    if notices.is_empty() {
        return None;
    }
    let to = dsn::dsn_recipient(&message.sender)?;
    let original = match read_content(&settler.reader, message) {
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
    let retry_until = (message.received_micros / 1_000_000) + settler.delivery.max_age.as_secs();
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
    let hostname = &settler.hostname;
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
    let id = settler.spool.next_id();
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
        mail_dsn: Default::default(),
        recipients: vec![Recipient {
            mailbox,
            params: String::new(),
            dsn: Default::default(),
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
