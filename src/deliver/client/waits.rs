//! What the client waits for: the `Step` each expected reply answers, the [`Wait`] each
//! step stands for (and so its RFC 5321 §4.5.3.2 timeout), and the reply recorded when one
//! comes that no step waits for.

use std::fmt;
use std::time::Duration;

use crate::smtp::reply::{Enhanced, Reply};

/// How long the driver waits when writing one block of content: RFC 5321 §4.5.3.2.5 gives
/// 3 minutes per write. The content write is the driver's, so it has no [`Wait`].
pub const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(3 * 60);

/// Which RFC 5321 §4.5.3.2 timeout applies to the reply the client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The 220 greeting (§4.5.3.2.1: 5 minutes).
    Greeting,
    /// The EHLO or HELO reply (not named by the RFC; 5 minutes like MAIL).
    Ehlo,
    /// The STARTTLS reply (not named by RFC 3207; 5 minutes like MAIL).
    StartTls,
    /// The MAIL reply (§4.5.3.2.2: 5 minutes).
    Mail,
    /// A RCPT reply (§4.5.3.2.3: 5 minutes).
    Rcpt,
    /// The reply to DATA (§4.5.3.2.4: 2 minutes).
    DataInit,
    /// The reply after the content's final dot (§4.5.3.2.6: 10 minutes; the server may be
    /// scanning or storing the message).
    DataTermination,
    /// The RSET reply (not named by the RFC; 5 minutes).
    Rset,
    /// The QUIT reply (not named by the RFC; 5 minutes).
    Quit,
}

impl Wait {
    /// The RFC 5321 §4.5.3.2 timeout for this wait, the driver's default.
    pub fn default_timeout(self) -> Duration {
        let minutes = match self {
            Wait::DataInit => 2,
            Wait::DataTermination => 10,
            Wait::Greeting
            | Wait::Ehlo
            | Wait::StartTls
            | Wait::Mail
            | Wait::Rcpt
            | Wait::Rset
            | Wait::Quit => 5,
        };
        Duration::from_secs(minutes * 60)
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wait::Greeting => "greeting",
            Wait::Ehlo => "EHLO reply",
            Wait::StartTls => "STARTTLS reply",
            Wait::Mail => "MAIL reply",
            Wait::Rcpt => "RCPT reply",
            Wait::DataInit => "DATA reply",
            Wait::DataTermination => "reply to end of data",
            Wait::Rset => "RSET reply",
            Wait::Quit => "QUIT reply",
        })
    }
}

/// A command sent (or, for the greeting, a reply due without one): what the next reply
/// answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    /// The RCPT for this recipient index.
    Rcpt(usize),
    Data,
    /// The content's final `.`, whether the driver sent it after the content or we sent it
    /// alone to close a DATA nobody should have accepted.
    Dot,
    /// `BDAT n LAST` with the whole content (RFC 3030): its reply is the final one.
    Bdat,
    Quit,
}

impl Step {
    /// The wait this step's reply stands for, to pick its timeout.
    pub(super) fn wait(self) -> Wait {
        match self {
            Step::Greeting => Wait::Greeting,
            Step::Ehlo | Step::Helo => Wait::Ehlo,
            Step::StartTls => Wait::StartTls,
            Step::Rset => Wait::Rset,
            Step::Mail => Wait::Mail,
            Step::Rcpt(_) => Wait::Rcpt,
            Step::Data => Wait::DataInit,
            // RFC 3030 names no timeout; the server stores the message before answering,
            // as after the final dot.
            Step::Dot | Step::Bdat => Wait::DataTermination,
            Step::Quit => Wait::Quit,
        }
    }
}

/// The 4xx for a reply that has no place in the dialogue: another attempt may go better.
pub(super) fn unexpected(reply: &Reply) -> Reply {
    Reply::new(
        451,
        Enhanced(4, 5, 0),
        format!("Unexpected reply from server: {reply}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_rfc_5321() {
        assert_eq!(Wait::Greeting.default_timeout(), Duration::from_secs(300));
        assert_eq!(Wait::DataInit.default_timeout(), Duration::from_secs(120));
        assert_eq!(
            Wait::DataTermination.default_timeout(),
            Duration::from_secs(600)
        );
    }
}
