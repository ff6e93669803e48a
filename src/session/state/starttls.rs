//! STARTTLS (RFC 3207): offering it, accepting the command, and the session's fresh start
//! once the driver has run the handshake.

use super::{Event, Input, Session};
use crate::smtp::reply::{replies, Enhanced, Reply};

impl Session {
    /// Offers STARTTLS (RFC 3207) on this session's listener.
    pub fn offer_starttls(&mut self) {
        self.offer_starttls = true;
    }

    /// The session runs over TLS from the start (an implicit-TLS listener, RFC 8314).
    pub fn set_tls_active(&mut self) {
        self.tls_active = true;
    }

    /// The TLS handshake after STARTTLS succeeded. The session starts over, as RFC 3207 §4.2
    /// requires: the client must say EHLO again, and nothing said before counts.
    pub fn handle_tls_started(&mut self) {
        debug_assert!(matches!(self.input, Input::AwaitTls));
        self.tls_active = true;
        self.helo = None;
        self.txn = None;
        self.input = Input::Commands;
        self.discarding_line = false;
        self.close_if_stopping();
    }

    /// STARTTLS: refused under TLS or where not offered; otherwise 220 and input stops
    /// until the handshake is done.
    pub(super) fn starttls(&mut self) {
        if self.tls_active {
            return self.error(replies::bad_sequence("TLS already active"));
        }
        if !self.offer_starttls {
            return self.error(replies::not_implemented());
        }
        self.reply(Reply::new(220, Enhanced(2, 0, 0), "Ready to start TLS"));
        self.input = Input::AwaitTls;
        self.events.push_back(Event::StartTls);
    }
}
