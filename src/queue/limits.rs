//! Per-destination message rate, global across shards: a GCRA ("virtual scheduling")
//! limiter on one atomic, so shards never take a lock to ask "may I send now?".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// At most one message per `interval` on average, with no burst beyond one.
#[derive(Debug)]
pub struct RateLimit {
    interval_micros: u64,
    /// The theoretical arrival time of the next message, microseconds since the epoch.
    next_micros: AtomicU64,
}

impl RateLimit {
    /// `count` messages per `per`.
    pub fn new(count: u32, per: Duration) -> RateLimit {
        RateLimit {
            interval_micros: (per.as_micros() as u64 / u64::from(count.max(1))).max(1),
            next_micros: AtomicU64::new(0),
        }
    }

    /// Reserves the next slot. Returns how long to wait before sending (zero: now).
    pub fn reserve(&self, now_micros: u64) -> Duration {
        let mut current = self.next_micros.load(Ordering::Acquire);
        loop {
            let start = current.max(now_micros);
            match self.next_micros.compare_exchange_weak(
                current,
                start + self.interval_micros,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Duration::from_micros(start - now_micros),
                Err(seen) => current = seen,
            }
        }
    }
}

/// Parses `100/s`, `20/m`, `5000/h`.
pub fn parse_rate(s: &str) -> Option<(u32, Duration)> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((n, per))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_messages_evenly() {
        let r = RateLimit::new(10, Duration::from_secs(1));
        assert_eq!(r.reserve(1_000_000), Duration::ZERO);
        assert_eq!(r.reserve(1_000_000), Duration::from_millis(100));
        assert_eq!(r.reserve(1_000_000), Duration::from_millis(200));
        assert_eq!(r.reserve(5_000_000), Duration::ZERO);
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/s"), Some((100, Duration::from_secs(1))));
        assert_eq!(parse_rate("5/h"), Some((5, Duration::from_secs(3600))));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("fast"), None);
    }
}
