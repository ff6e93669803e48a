//! The message blast sends, built once per run in wire form: CRLF line endings,
//! dot-stuffed (RFC 5321 §4.5.2), followed by the terminating `.CRLF`, so each session sends
//! it with one write.

use std::time::{SystemTime, UNIX_EPOCH};

/// Body line length before CRLF: the usual MIME limit (RFC 2045 §6.8) is 76.
const LINE: usize = 76;

/// Every this many body lines, one starts with a dot, so that stuffing is exercised at both
/// ends of the wire.
const DOT_EVERY: usize = 40;

/// A generated message of `size` octets (before stuffing, CRLFs included): a valid header
/// section, then 76-character lines of text.
pub fn generate(size: usize, sender: &str) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut msg = format!(
        "From: <{sender}>\r\n\
         To: undisclosed-recipients:;\r\n\
         Subject: pigeon-load test message\r\n\
         Date: {}\r\n\
         Message-ID: <{}.{}@pigeon-load.test>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n",
        rfc5322_date(now.as_secs()),
        now.as_nanos(),
        std::process::id(),
    )
    .into_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    let mut n = 0usize;
    while msg.len() + 2 < size {
        let room = (size - msg.len() - 2).min(LINE);
        for i in 0..room {
            let c = if i == 0 && n % DOT_EVERY == DOT_EVERY - 1 {
                b'.'
            } else {
                alphabet[(n * 7 + i * 13) % alphabet.len()]
            };
            msg.push(c);
        }
        msg.extend_from_slice(b"\r\n");
        n += 1;
    }
    to_wire(&msg)
}

/// A message read from a file: line endings made CRLF, a final CRLF added if missing.
pub fn from_eml(raw: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(raw.len() + raw.len() / 40);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        msg.extend_from_slice(text);
        msg.extend_from_slice(b"\r\n");
    }
    to_wire(&msg)
}

/// Dot-stuffs CRLF text and appends the terminator.
fn to_wire(msg: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(msg.len() + msg.len() / 64 + 3);
    for line in msg.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// `Thu, 01 Jan 1970 00:00:00 +0000` (RFC 5322 §3.3), in UTC.
fn rfc5322_date(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from day number (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {name} {year} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_message_has_the_size_and_is_stuffed() {
        for size in [300, 5120, 100_000] {
            let wire = generate(size, "s@x.test");
            assert!(wire.ends_with(b"\r\n.\r\n"));
            let body = &wire[..wire.len() - 3];
            let plain = pigeon::smtp::data::unstuff(body);
            assert_eq!(plain.len(), size);
            assert!(plain.split(|&b| b == b'\n').all(|l| l.len() <= LINE + 1));
            // Each dotted line was stuffed.
            let dotted = plain
                .split(|&b| b == b'\n')
                .filter(|l| l.first() == Some(&b'.'));
            assert_eq!(
                dotted.count(),
                body.windows(3).filter(|w| w == b"\n..").count()
            );
        }
    }

    #[test]
    fn eml_gets_crlf_and_stuffing() {
        assert_eq!(
            from_eml(b"A: b\n\n.x\nend"),
            b"A: b\r\n\r\n..x\r\nend\r\n.\r\n"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_709_251_199),
            "Thu, 29 Feb 2024 23:59:59 +0000"
        );
    }
}
