//! The units configuration values are written in: sizes (`50MiB`), durations (`5m`,
//! through humantime) and rates (`100/s`), parsed once when the file is read.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A size in octets, written `50MiB`, `100MB`, `512KiB` or a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_size(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"50MiB\""))
            }),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `count` events per `per`, written `100/s`, `20/m` or `5000/h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many (at least 1).
    pub count: u32,
    /// In how long: a second, a minute or an hour.
    pub per: Duration,
}

impl Rate {
    /// Reads `100/s`, `20/m`, `5000/h` (also `sec`, `min`, `hour`...); `None` for anything
    /// else, including a count of zero. The caller names the key in its error.
    pub fn parse(s: &str) -> Option<Rate> {
        let (n, unit) = s.trim().split_once('/')?;
        let count: u32 = n.trim().parse().ok().filter(|&n| n > 0)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { count, per })
    }
}

/// `deserialize_with` for a humantime duration (`"5m"`, `"1h 30m"`).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional duration (the key's absence is the `None`).
pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// `deserialize_with` for a list of durations.
pub(super) fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_duration(s).map_err(serde::de::Error::custom))
        .collect()
}

/// A config value that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a duration like \"5m\": {source}")]
struct BadDuration {
    value: String,
    source: humantime::DurationError,
}

fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    humantime::parse_duration(s).map_err(|source| BadDuration {
        value: s.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("50MiB"), Some(50 << 20));
        assert_eq!(parse_size("10 MB"), Some(10_000_000));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("7 parsecs"), None);
        let c = crate::config::check("[timeouts]\ncommand = \"2m\"\n").unwrap();
        assert_eq!(c.timeouts.command, Duration::from_secs(120));
    }

    #[test]
    fn rates_parse() {
        let rate = |count, secs| {
            Some(Rate {
                count,
                per: Duration::from_secs(secs),
            })
        };
        assert_eq!(Rate::parse("100/s"), rate(100, 1));
        assert_eq!(Rate::parse("5/h"), rate(5, 3600));
        assert_eq!(Rate::parse("0/s"), None);
        assert_eq!(Rate::parse("fast"), None);
    }
}
