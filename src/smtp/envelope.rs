//! What a session hands to intake: the envelope of one accepted message.

use std::net::SocketAddr;

use crate::dkim::Canonicalization;
use crate::smtp::address::Mailbox;
use crate::smtp::dsn::{MailDsn, RcptDsn};

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path.
    pub mailbox: Mailbox,
    /// Its ESMTP parameters, as sent (validated, space-separated): what the record keeps.
    pub params: String,
    /// Its DSN parameters (NOTIFY, ORCPT), parsed once by the session.
    pub dsn: RcptDsn,
}

/// The envelope of one message, complete when the session emits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The client's address.
    pub peer: SocketAddr,
    /// The EHLO/HELO argument, as sent.
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPSA`, `UTF8SMTP`… (RFC 3848, RFC 6531 §3.7.3): the `with`
    /// clause.
    pub protocol: &'static str,
    /// The reverse-path; `None` for the null sender `<>`.
    pub sender: Option<Mailbox>,
    /// The MAIL parameters, as sent (validated): what the record keeps.
    pub mail_params: String,
    /// The DSN parameters of MAIL (RET, ENVID), parsed once by the session.
    pub mail_dsn: MailDsn,
    /// Accepted recipients, in the order they were given.
    pub recipients: Vec<Recipient>,
    /// The client asked for SMTPUTF8.
    pub smtputf8: bool,
    /// DKIM body hashes computed while the content streamed in, one per body
    /// canonicalization the configured signers use (empty without DKIM).
    pub body_hashes: Vec<(Canonicalization, [u8; 32])>,
    /// The user the client authenticated as (SMTP AUTH), if it did.
    pub auth: Option<String>,
}
