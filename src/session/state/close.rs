//! The ways a session ends other than QUIT: read timeouts, the session time limit, server
//! shutdown and its deadline, and the client's EOF.

use super::{Event, Input, Session};
use crate::smtp::reply::{replies, Enhanced, Reply};

impl Session {
    /// A read timed out (RFC 5321 §4.5.3.2): 421 4.4.2 and close. Nothing half-received
    /// is kept.
    pub fn handle_timeout(&mut self) {
        self.txn = None;
        self.close_with(replies::timeout());
    }

    /// The session's total time (`timeouts.session`) is up: 421 4.4.2 and close. Nothing
    /// half-received is kept.
    pub fn handle_session_expired(&mut self) {
        self.txn = None;
        self.close_with(Reply::new(
            421,
            Enhanced(4, 4, 2),
            "Session time limit exceeded, closing connection",
        ));
    }

    /// The stop's grace period ran out: whatever is half-received is dropped, 421 4.3.2.
    pub fn handle_deadline(&mut self) {
        self.txn = None;
        self.close_with(replies::shutting_down());
    }

    /// The client closed its side. Whatever transaction was open is dropped.
    pub fn handle_eof(&mut self) {
        self.txn = None;
        if !matches!(self.input, Input::Closed) {
            self.input = Input::Closed;
            self.events.push_back(Event::Close);
        }
    }

    /// The server is stopping: a session inside message content may finish it; any other
    /// gets 421 4.3.2 now.
    pub fn handle_shutdown(&mut self) {
        self.shutting_down = true;
        match self.input {
            Input::Data(_)
            | Input::Chunk { .. }
            | Input::AwaitStore
            | Input::AwaitTls
            | Input::AwaitAuth => {}
            Input::Commands | Input::Sasl(_) => self.close_if_stopping(),
            Input::Closed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{codes, limited};
    use super::*;

    #[test]
    fn session_expiry_drops_the_transaction_with_421_4_4_2() {
        let mut s = limited(100, 100);
        codes(&mut s, b"");
        assert_eq!(codes(&mut s, b"MAIL FROM:<a@x.test>\r\n"), [250]);
        s.handle_session_expired();
        let mut out = Vec::new();
        s.take_output(&mut out);
        assert!(out.starts_with(b"421 4.4.2 "), "{out:?}");
        assert!(s.is_closed());
        assert!(matches!(s.poll_event(), Some(Event::Close)));
    }
}
