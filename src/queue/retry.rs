//! When to try again: the configured schedule with jitter, and when to give up.

use std::time::Duration;

/// The delay before attempt `attempts + 1`, given `attempts` made: the schedule's entry
/// for that attempt (the last one repeats), spread by ±10% so that recipients deferred
/// together (a receiver's 451 to a whole list) do not all come back in the same second.
/// `noise` is any value that differs between recipients (e.g. a hash of the message id).
pub fn backoff(schedule: &[Duration], attempts: u32, noise: u64) -> Duration {
    let Some(last) = schedule.last() else {
        return Duration::from_secs(300);
    };
    let base = schedule
        .get(attempts.saturating_sub(1) as usize)
        .unwrap_or(last);
    let span = base.as_micros() as u64 / 5;
    if span == 0 {
        return *base;
    }
    let jitter = splitmix(noise) % (span + 1);
    *base - base.mul_f64(0.1) + Duration::from_micros(jitter)
}

/// True when a message received at `received_micros` has been queued longer than `max_age`.
pub fn expired(received_micros: u64, max_age: Duration, now_micros: u64) -> bool {
    now_micros.saturating_sub(received_micros) > max_age.as_micros() as u64
}

/// One step of SplitMix64: spreads a seed's bits (for jitter, and for MIME boundaries).
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_with_jitter_and_repeat() {
        let s: Vec<Duration> = [300, 600, 3600]
            .iter()
            .map(|&x| Duration::from_secs(x))
            .collect();
        for noise in 0..100 {
            let d = backoff(&s, 1, noise).as_secs_f64();
            assert!((270.0..=330.0).contains(&d), "{d}");
            let d = backoff(&s, 9, noise).as_secs_f64();
            assert!((3240.0..=3960.0).contains(&d), "{d}");
        }
        let spread: std::collections::HashSet<_> = (0..100).map(|n| backoff(&s, 2, n)).collect();
        assert!(spread.len() > 50, "jitter spreads retries");
    }

    #[test]
    fn expiry() {
        let day = Duration::from_secs(86_400);
        assert!(!expired(0, day, 86_400_000_000));
        assert!(expired(0, day, 86_400_000_001));
    }
}
