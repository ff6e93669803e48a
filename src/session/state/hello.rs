//! HELO and EHLO (RFC 5321 §4.1.1.1): the client's name, a fresh start of the
//! transaction state, and the service extensions EHLO advertises.

use super::Session;
use crate::session::auth;
use crate::smtp::reply::Reply;

impl Session {
    /// HELO (`extended` false) or EHLO: any transaction is dropped, as after RSET.
    pub(super) fn hello(&mut self, domain: &[u8], extended: bool) {
        self.txn = None;
        let helo = String::from_utf8_lossy(domain).into_owned();
        let first = format!("{} Hello {}", self.config.hostname, helo);
        self.helo = Some((helo, extended));
        if !extended {
            return self.reply(Reply::plain(250, vec![first.into()]));
        }
        let size = format!("SIZE {}", self.config.max_message_size);
        self.reply(Reply::plain(
            250,
            vec![
                first.into(),
                "PIPELINING".into(),
                size.into(),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "ENHANCEDSTATUSCODES".into(),
                "CHUNKING".into(),
                "DSN".into(),
            ]
            .into_iter()
            .chain((self.offer_starttls && !self.tls_active).then(|| "STARTTLS".into()))
            .chain(
                (self.auth_policy.is_some() && self.tls_active && !self.authenticated)
                    .then(|| format!("AUTH {}", auth::MECHANISMS).into()),
            )
            .collect(),
        ));
    }
}
