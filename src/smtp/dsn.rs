//! The DSN extension's parameters (RFC 3461): RET and ENVID on MAIL, NOTIFY and ORCPT on
//! RCPT. Parsed here once, validated at the session and read again when outcomes decide
//! which delivery status notifications to send.

use crate::smtp::command::params;

/// RFC 3461 §4.4: ENVID is at most 100 characters.
const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2: ORCPT is at most 500 characters.
const MAX_ORCPT: usize = 500;

/// Which notifications a recipient asked for (RFC 3461 §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    /// NOTIFY=SUCCESS.
    pub success: bool,
    /// NOTIFY=FAILURE.
    pub failure: bool,
    /// NOTIFY=DELAY.
    pub delay: bool,
}

impl Notify {
    /// `NEVER`, or a comma-separated list of SUCCESS, FAILURE and DELAY.
    pub fn parse(v: &[u8]) -> Option<Notify> {
        if v.eq_ignore_ascii_case(b"NEVER") {
            return Some(Notify::default());
        }
        let mut n = Notify::default();
        for word in v.split(|&b| b == b',') {
            match word.to_ascii_uppercase().as_slice() {
                b"SUCCESS" => n.success = true,
                b"FAILURE" => n.failure = true,
                b"DELAY" => n.delay = true,
                _ => return None,
            }
        }
        Some(n)
    }

    /// The parameter as it is passed on to the next hop.
    pub fn to_param(&self) -> String {
        if !(self.success || self.failure || self.delay) {
            return "NOTIFY=NEVER".into();
        }
        let words: Vec<&str> = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
        format!("NOTIFY={}", words.join(","))
    }

    /// What applies without a NOTIFY parameter: failures are reported, successes are not,
    /// and delays are left to the MTA (RFC 3461 §4.1); pigeon sends them only when asked.
    pub fn default_unasked() -> Notify {
        Notify {
            failure: true,
            ..Notify::default()
        }
    }
}

/// The DSN parameters of one recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RcptDsn {
    /// NOTIFY, if given.
    pub notify: Option<Notify>,
    /// ORCPT as sent: `addr-type;xtext`.
    pub orcpt: Option<String>,
}

impl RcptDsn {
    /// Reads the DSN parameters from a RCPT parameter string (others are ignored).
    pub fn from_params(p: &str) -> RcptDsn {
        let mut out = RcptDsn::default();
        for param in params(p.as_bytes()) {
            if let Some(v) = param.value {
                out.take(&param.keyword.to_ascii_uppercase(), v);
            }
        }
        out
    }

    /// Takes one parameter (`keyword` upper case) if it is NOTIFY or ORCPT; the session
    /// calls it as it validates RCPT, so the parameters are read once.
    pub fn take(&mut self, keyword: &[u8], value: &[u8]) {
        match keyword {
            b"NOTIFY" => self.notify = Notify::parse(value),
            b"ORCPT" => self.orcpt = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }

    /// The notifications that apply.
    pub fn notify(&self) -> Notify {
        self.notify.unwrap_or_else(Notify::default_unasked)
    }

    /// The RCPT parameters to pass on to a next hop that offers DSN.
    pub fn to_params(&self) -> String {
        let mut p = self.notify.map(|n| n.to_param()).unwrap_or_default();
        if let Some(orcpt) = &self.orcpt {
            if !p.is_empty() {
                p.push(' ');
            }
            p.push_str("ORCPT=");
            p.push_str(orcpt);
        }
        p
    }
}

/// The DSN parameters of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailDsn {
    /// RET: `Some(true)` for FULL (return the whole message in a failure report),
    /// `Some(false)` for HDRS, `None` when not given (headers only).
    pub ret_full: Option<bool>,
    /// ENVID as sent (xtext).
    pub envid: Option<String>,
}

impl MailDsn {
    /// Reads the DSN parameters from a MAIL parameter string (others are ignored).
    pub fn from_params(p: &str) -> MailDsn {
        let mut out = MailDsn::default();
        for param in params(p.as_bytes()) {
            if let Some(v) = param.value {
                out.take(&param.keyword.to_ascii_uppercase(), v);
            }
        }
        out
    }

    /// Takes one parameter (`keyword` upper case) if it is RET or ENVID; the session calls
    /// it as it validates MAIL, so the parameters are read once.
    pub fn take(&mut self, keyword: &[u8], value: &[u8]) {
        match keyword {
            b"RET" => self.ret_full = Some(value.eq_ignore_ascii_case(b"FULL")),
            b"ENVID" => self.envid = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
    }
}

impl MailDsn {
    /// The MAIL parameters to pass on to a next hop that offers DSN.
    pub fn to_params(&self) -> String {
        let mut p = String::new();
        if let Some(full) = self.ret_full {
            p.push_str(if full { "RET=FULL" } else { "RET=HDRS" });
        }
        if let Some(envid) = &self.envid {
            if !p.is_empty() {
                p.push(' ');
            }
            p.push_str("ENVID=");
            p.push_str(envid);
        }
        p
    }
}

/// `RET=FULL` or `RET=HDRS`.
pub fn valid_ret(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"FULL") || v.eq_ignore_ascii_case(b"HDRS")
}

/// ENVID: xtext of at most 100 characters.
pub fn valid_envid(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_ENVID && is_xtext(v)
}

/// ORCPT: `addr-type ";" xtext`, at most 500 characters (RFC 3461 §4.2).
pub fn valid_orcpt(v: &[u8]) -> bool {
    let Some(semi) = memchr::memchr(b';', v) else {
        return false;
    };
    let (kind, addr) = (&v[..semi], &v[semi + 1..]);
    v.len() <= MAX_ORCPT
        && !kind.is_empty()
        && kind.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && !addr.is_empty()
        && is_xtext(addr)
}

/// RFC 3461 §4: xtext is printable ASCII except `+` and `=`, with `+XX` hex escapes.
fn is_xtext(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => {
                let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
                if i + 2 >= v.len() || !hex(v[i + 1]) || !hex(v[i + 2]) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            b if (b'!'..=b'~').contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_values() {
        assert_eq!(Notify::parse(b"NEVER"), Some(Notify::default()));
        let n = Notify::parse(b"success,Delay").unwrap();
        assert!(n.success && n.delay && !n.failure);
        assert_eq!(Notify::parse(b"SOMETIMES"), None);
        assert_eq!(Notify::parse(b""), None);
    }

    #[test]
    fn xtext_and_orcpt() {
        assert!(valid_orcpt(b"rfc822;user+2Bx@example.com"));
        assert!(!valid_orcpt(b"rfc822;user+2@x"));
        assert!(!valid_orcpt(b"rfc822;a=b"));
        assert!(!valid_orcpt(b"user@example.com"));
        assert!(valid_envid(b"QQ314159"));
        assert!(!valid_envid(&[b'x'; 101]));
        assert!(valid_ret(b"hdrs") && !valid_ret(b"ALL"));
    }

    #[test]
    fn params_are_read_back() {
        let r = RcptDsn::from_params("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b");
        assert_eq!(r.orcpt.as_deref(), Some("rfc822;a@b"));
        assert!(r.notify().success && r.notify().failure);
        assert_eq!(RcptDsn::from_params("").notify(), Notify::default_unasked());
        let m = MailDsn::from_params("SIZE=10 RET=FULL ENVID=abc");
        assert_eq!(m.ret_full, Some(true));
        assert_eq!(m.to_params(), "RET=FULL ENVID=abc");
        assert_eq!(m.envid.as_deref(), Some("abc"));
    }
}
