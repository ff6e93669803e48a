//! A queued message and the jobs that deliver it.
//!
//! A [`QueuedMessage`] is the envelope of one spooled message, shared (`Arc`) by every job
//! made from it, whichever shard runs them. The content stays in the spool segment; jobs
//! carry the record's location, never the body (STYLE.md: stages pass references).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::queue::SegQueue;

use crate::smtp::dsn::{MailDsn, RcptDsn};
use crate::spool::record::MessageId;
use crate::spool::replay::SegmentKey;

/// One message waiting for delivery of some of its recipients.
#[derive(Debug)]
pub struct QueuedMessage {
    /// The queue id.
    pub id: MessageId,
    /// The segment holding its record.
    pub segment: SegmentKey,
    /// Offset of its record in that segment.
    pub offset: u64,
    /// When it was accepted, microseconds since the epoch.
    pub received_micros: u64,
    /// The reverse-path; empty for `<>`.
    pub sender: String,
    /// All recipients, in record order (jobs refer to them by index).
    pub recipients: Vec<String>,
    /// Delivery needs SMTPUTF8.
    pub smtputf8: bool,
    /// The content has 8-bit octets: delivery needs 8BITMIME.
    pub eight_bit: bool,
    /// Octets of content in wire form.
    pub size: u64,
    /// Recipients not yet final.
    remaining: AtomicUsize,
    /// Segments holding outcome records about this message, one entry per record.
    outcome_segments: SegQueue<SegmentKey>,
    /// RET and ENVID (RFC 3461).
    pub mail_dsn: MailDsn,
    /// NOTIFY and ORCPT per recipient; empty when no recipient gave any.
    pub rcpt_dsn: Vec<RcptDsn>,
    /// A delay notice was sent for this message (one per message is enough).
    pub delay_notified: AtomicBool,
}

impl QueuedMessage {
    /// A message with `pending` recipients not yet final.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: MessageId,
        segment: SegmentKey,
        offset: u64,
        received_micros: u64,
        sender: String,
        recipients: Vec<String>,
        smtputf8: bool,
        eight_bit: bool,
        size: u64,
        pending: usize,
    ) -> QueuedMessage {
        QueuedMessage {
            id,
            segment,
            offset,
            received_micros,
            sender,
            recipients,
            smtputf8,
            eight_bit,
            size,
            remaining: AtomicUsize::new(pending),
            outcome_segments: SegQueue::new(),
            mail_dsn: MailDsn::default(),
            rcpt_dsn: Vec::new(),
            delay_notified: AtomicBool::new(false),
        }
    }

    /// Adds the DSN parameters from the stored MAIL and RCPT parameter strings.
    pub fn with_dsn<'a>(
        mut self,
        mail_params: &str,
        rcpt_params: impl Iterator<Item = &'a str>,
    ) -> QueuedMessage {
        self.mail_dsn = MailDsn::from_params(mail_params);
        let rcpt: Vec<RcptDsn> = rcpt_params.map(RcptDsn::from_params).collect();
        if rcpt.iter().any(|r| *r != RcptDsn::default()) {
            self.rcpt_dsn = rcpt;
        }
        self
    }

    /// The DSN parameters of recipient `index`.
    pub fn recipient_dsn(&self, index: u32) -> &RcptDsn {
        static NONE: RcptDsn = RcptDsn {
            notify: None,
            orcpt: None,
        };
        self.rcpt_dsn.get(index as usize).unwrap_or(&NONE)
    }

    /// Notes that an outcome record about this message was written to `segment`.
    pub fn add_outcome_segment(&self, segment: SegmentKey) {
        self.outcome_segments.push(segment);
    }

    /// Marks `n` recipients final. When that finishes the message, returns the segments of
    /// its outcome records (one entry per record), whose references go once its own
    /// record's segment is deleted (see `spool::segments`); else `None`.
    pub fn finish_recipients(&self, n: usize) -> Option<Vec<SegmentKey>> {
        if n == 0 || self.remaining.fetch_sub(n, Ordering::AcqRel) != n {
            return None;
        }
        let mut segments = Vec::new();
        while let Some(s) = self.outcome_segments.pop() {
            segments.push(s);
        }
        Some(segments)
    }

    /// Recipients not yet final.
    pub fn remaining(&self) -> usize {
        self.remaining.load(Ordering::Acquire)
    }
}

/// Some recipients of one message, all at one domain, to be tried in one transaction.
#[derive(Clone, Debug)]
pub struct Job {
    /// The message.
    pub message: Arc<QueuedMessage>,
    /// Indices into `message.recipients`.
    pub recipients: Vec<u32>,
    /// Attempts already made for these recipients.
    pub attempts: u32,
}

impl Job {
    /// The recipient addresses of this job.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.recipients
            .iter()
            .map(|&i| self.message.recipients[i as usize].as_str())
    }
}

/// The destination domain of an address, lower-cased: the key of its ready queue.
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map_or(address, |(_, d)| d)
        .to_ascii_lowercase()
}

/// Splits recipient indices into jobs: grouped by domain, at most `per_transaction` each.
/// `per_transaction` is looked up per domain.
pub fn jobs_for(
    message: &Arc<QueuedMessage>,
    indices: impl IntoIterator<Item = (u32, u32)>,
    per_transaction: impl Fn(&str) -> usize,
) -> Vec<(String, Job)> {
    let mut by_domain: std::collections::BTreeMap<(String, u32), Vec<u32>> = Default::default();
    for (i, attempts) in indices {
        let domain = domain_of(&message.recipients[i as usize]);
        by_domain.entry((domain, attempts)).or_default().push(i);
    }
    let mut jobs = Vec::new();
    for ((domain, attempts), indices) in by_domain {
        let limit = per_transaction(&domain).max(1);
        for chunk in indices.chunks(limit) {
            let job = Job {
                message: message.clone(),
                recipients: chunk.to_vec(),
                attempts,
            };
            jobs.push((domain.clone(), job));
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(recipients: &[&str]) -> Arc<QueuedMessage> {
        Arc::new(QueuedMessage::new(
            MessageId::new(1, 0, 1),
            SegmentKey { shard: 0, seq: 1 },
            16,
            0,
            "s@x.test".into(),
            recipients.iter().map(|r| r.to_string()).collect(),
            false,
            false,
            100,
            recipients.len(),
        ))
    }

    #[test]
    fn jobs_group_by_domain_and_respect_the_transaction_limit() {
        let m = message(&["a@A.test", "b@b.test", "c@a.test", "d@a.test", "e@a.test"]);
        let jobs = jobs_for(&m, (0..5).map(|i| (i, 0)), |_| 3);
        let shape: Vec<(&str, Vec<u32>)> = jobs
            .iter()
            .map(|(d, j)| (d.as_str(), j.recipients.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a.test", vec![0, 2, 3]),
                ("a.test", vec![4]),
                ("b.test", vec![1])
            ]
        );
    }

    #[test]
    fn finishing_the_last_recipient_returns_every_segment_once() {
        let m = message(&["a@a.test", "b@a.test"]);
        m.add_outcome_segment(SegmentKey { shard: 1, seq: 4 });
        assert_eq!(m.finish_recipients(1), None);
        m.add_outcome_segment(SegmentKey { shard: 0, seq: 2 });
        let segs = m.finish_recipients(1).unwrap();
        assert_eq!(segs.len(), 2);
        assert_eq!(m.finish_recipients(0), None);
    }
}
