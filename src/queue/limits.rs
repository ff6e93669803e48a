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
}
