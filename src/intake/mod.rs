//! Intake (Postfix's cleanup): what happens to a message between the session's last
//! octet and its 250. [`Intake::submit`] adds the `Received:` header ([`received`]) and
//! the DKIM signatures ([`sign`]), appends the record to the shard's spool and waits
//! until it is durable, queues the recipients, and logs "received". The session driver
//! only moves bytes; the queue id or the reply to give comes back from here.

pub mod received;
pub mod sign;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::dkim::signers::Signers;
use crate::outcome::log::{LogEvent, ShardLog};
use crate::queue::message::{NewMessage, QueuedMessage};
use crate::queue::queues::Queues;
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::Reply;
use crate::spool::commit::ShardSpool;
use crate::spool::record::{encode_message, MessageId};

/// One shard's intake.
pub struct Intake {
    /// Our host name, for `Received:`.
    pub hostname: String,
    /// This shard's spool writer.
    pub spool: Rc<ShardSpool>,
    /// The DKIM signers.
    pub signers: Arc<Signers>,
    /// Clients whose mail is ours to sign (`relay.networks`), besides authenticated ones.
    pub relay_networks: Arc<[IpNet]>,
    /// Where the recipients are queued.
    pub queues: Arc<Queues>,
    /// The shard's delivery log.
    pub log: Rc<ShardLog>,
}

impl Intake {
    /// Whether the spool has room for another message (a session refuses MAIL when not).
    pub fn has_space(&self) -> bool {
        self.spool.has_space()
    }

    /// Takes one message: signs it, writes one record and waits until it is durable,
    /// queues its recipients. Returns its queue id, or the reply the client gets instead
    /// (nothing of the message is kept then).
    pub async fn submit(&self, envelope: &Envelope, body: Vec<u8>) -> Result<MessageId, Reply> {
        let id = self.spool.next_id();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let received =
            received::received_header(envelope, &self.hostname, &id.to_string(), now.as_secs());
        let trusted = crate::auth::in_networks(&self.relay_networks, envelope.peer.ip())
            || envelope.auth.is_some();
        let (signatures, signed_by) = if trusted {
            sign::dkim_sign(&self.signers, envelope, &body, now.as_secs())?
        } else {
            // Only mail from clients allowed to relay is signed: a stranger sending to one
            // of our relay.domains must not get a From header of ours signed with our key.
            (Vec::new(), String::new())
        };
        let received_micros = now.as_micros() as u64;
        let size = (received.len() + signatures.len() + body.len()) as u64;
        let eight_bit = !received.is_ascii() || !body.is_ascii();
        let head = encode_message(
            id,
            received_micros,
            envelope,
            eight_bit,
            &[&received, &signatures, &body],
        );
        let record = self
            .spool
            .append(vec![head, received, signatures, body], 1)
            .await
            .map_err(|e| e.reply())?;
        let sender = envelope.sender.as_ref().map_or("", |s| s.as_str());
        let message = QueuedMessage::new(NewMessage {
            id,
            record,
            received_micros,
            sender: sender.to_owned(),
            recipients: envelope.recipients.iter().map(|r| r.mailbox.as_str()),
            smtputf8: envelope.smtputf8,
            eight_bit,
            size,
            states: vec![0; envelope.recipients.len()],
        })
        .with_dsn(
            &envelope.mail_dsn,
            envelope.recipients.iter().map(|r| &r.dsn),
        )
        .into_shared();
        self.queues.enqueue(
            &message,
            (0..envelope.recipients.len() as u32).map(|i| (i, 0)),
        );
        self.log_received(id, envelope.peer, envelope, size, &signed_by);
        Ok(id)
    }

    fn log_received(
        &self,
        id: MessageId,
        peer: SocketAddr,
        envelope: &Envelope,
        size: u64,
        signed_by: &str,
    ) {
        let client = peer.to_string();
        self.log.write(&LogEvent {
            event: "received",
            id: Some(id),
            sender: envelope.sender.as_ref().map_or("", |s| s.as_str()),
            recipients: Some(envelope.recipients.len()),
            size: Some(size),
            host: Some(&client),
            dkim: (!signed_by.is_empty()).then_some(signed_by),
            auth: envelope.auth.as_deref(),
            ..LogEvent::default()
        });
        tracing::debug!(id = %id, client = %peer, size, "received");
    }
}
