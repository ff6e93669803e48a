//! Injected faults: which RCPT, MAIL or message gets which reply, decided from a hash of
//! the recipient (or of the message's recipients), so a run is reproducible.
//!
//! Faults of one stage take consecutive slices of the hash space (`rcpt:451:30` then
//! `rcpt:550:5` refuse disjoint sets: hash mod 100 in 0..30, then 30..35). A transient fault
//! (4xx, disconnect) hits a key on its first try only: the key goes into a refused set, and
//! the next try passes, as a retrying MTA expects of a greylisting server. A permanent
//! fault (5xx) hits every try.

use std::collections::HashSet;
use std::sync::Mutex;

/// A `--fault` specification that cannot be used, alone or with the others.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Not `STAGE:CODE:PERCENT` nor `disconnect:STAGE:PERCENT` with a known stage.
    #[error("bad --fault {spec:?}: want STAGE:CODE:PERCENT or disconnect:STAGE:PERCENT")]
    Syntax {
        /// The specification as given.
        spec: String,
    },
    /// The reply code is not a refusal (4xx or 5xx).
    #[error("bad --fault {spec:?}: code must be 4xx or 5xx")]
    Code {
        /// The specification as given.
        spec: String,
    },
    /// The share of keys is over 100%.
    #[error("bad --fault {spec:?}: percent over 100")]
    Percent {
        /// The specification as given.
        spec: String,
    },
    /// The faults of one stage take more than the whole hash space between them.
    #[error("faults at {stage:?} add up to {total}%, over 100")]
    OverFull {
        /// The stage.
        stage: Stage,
        /// The sum of its faults' percentages.
        total: u32,
    },
}

/// Where a fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// At MAIL FROM.
    Mail,
    /// At RCPT TO, per recipient.
    Rcpt,
    /// After the content's final dot, per message.
    Data,
    /// At STARTTLS, per connection: a refusal, or (`disconnect`) a 220 and then no
    /// handshake, which the client sees as a failed handshake.
    Starttls,
}

/// What the client gets instead of a 250.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// This reply code.
    Reply(u16),
    /// The connection is closed without a reply.
    Disconnect,
}

/// One `--fault` specification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Where it strikes.
    pub stage: Stage,
    /// What it does.
    pub action: Action,
    /// Share of keys hit, 0 to 100.
    pub percent: u8,
}

impl Fault {
    /// Parses `rcpt:451:30`, `data:452:10`, `mail:421:5`, `starttls:454:50`,
    /// `disconnect:rcpt:1` or `disconnect:starttls:100`.
    pub fn parse(spec: &str) -> Result<Fault, FaultError> {
        let parts: Vec<&str> = spec.split(':').collect();
        let bad = || FaultError::Syntax {
            spec: spec.to_owned(),
        };
        let [first, second, pct] = parts[..] else {
            return Err(bad());
        };
        let stage_of = |s: &str| match s {
            "mail" => Ok(Stage::Mail),
            "rcpt" => Ok(Stage::Rcpt),
            "data" => Ok(Stage::Data),
            "starttls" => Ok(Stage::Starttls),
            _ => Err(bad()),
        };
        let (stage, action) = if first == "disconnect" {
            (stage_of(second)?, Action::Disconnect)
        } else {
            let code: u16 = second.parse().map_err(|_| bad())?;
            if !(400..600).contains(&code) {
                return Err(FaultError::Code {
                    spec: spec.to_owned(),
                });
            }
            (stage_of(first)?, Action::Reply(code))
        };
        let percent: u8 = pct.parse().map_err(|_| bad())?;
        if percent > 100 {
            return Err(FaultError::Percent {
                spec: spec.to_owned(),
            });
        }
        Ok(Fault {
            stage,
            action,
            percent,
        })
    }

    fn is_transient(&self) -> bool {
        match self.action {
            Action::Disconnect => true,
            Action::Reply(code) => code < 500,
        }
    }
}

/// Every fault of a run, and the keys already refused once. Shared by all shards.
#[derive(Debug, Default)]
pub struct FaultPlan {
    faults: Vec<Fault>,
    /// Hashes of keys refused by a transient fault. Touched only for keys that a fault
    /// selects, never for the others, so it is no lock on the hot path; a shared set (not
    /// one per shard) because a retry may well arrive on another shard.
    refused: Mutex<HashSet<u64>>,
}

impl FaultPlan {
    /// A plan from `--fault` specifications.
    pub fn new(faults: Vec<Fault>) -> Result<FaultPlan, FaultError> {
        for stage in [Stage::Mail, Stage::Rcpt, Stage::Data, Stage::Starttls] {
            let total: u32 = faults
                .iter()
                .filter(|f| f.stage == stage)
                .map(|f| u32::from(f.percent))
                .sum();
            if total > 100 {
                return Err(FaultError::OverFull { stage, total });
            }
        }
        Ok(FaultPlan {
            faults,
            refused: Mutex::new(HashSet::new()),
        })
    }

    /// True when no fault is configured for `stage`: callers skip building the key.
    pub fn is_clear(&self, stage: Stage) -> bool {
        !self.faults.iter().any(|f| f.stage == stage)
    }

    /// The fault for `key` (a recipient, a sender, or a message's recipients) at `stage`,
    /// if it is hit now.
    pub fn check(&self, stage: Stage, key: &[u8]) -> Option<Action> {
        if self.is_clear(stage) {
            return None;
        }
        let h = hash(stage, key);
        let slot = (h % 100) as u8;
        let mut from = 0u8;
        for f in self.faults.iter().filter(|f| f.stage == stage) {
            let to = from.saturating_add(f.percent);
            if (from..to).contains(&slot) {
                if !f.is_transient() {
                    return Some(f.action);
                }
                // A poisoned lock only means another shard panicked; the set is still valid.
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                return refused.insert(h).then_some(f.action);
            }
            from = to;
        }
        None
    }
}

/// FNV-1a over the stage and the key, lower-cased (addresses compare case-insensitively
/// in practice), then a finaliser so that `% 100` sees well-mixed bits.
fn hash(stage: Stage, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in std::iter::once(stage as u8).chain(key.iter().map(u8::to_ascii_lowercase)) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!(
            Fault::parse("rcpt:451:30").unwrap(),
            Fault {
                stage: Stage::Rcpt,
                action: Action::Reply(451),
                percent: 30
            }
        );
        assert_eq!(
            Fault::parse("disconnect:data:1").unwrap().action,
            Action::Disconnect
        );
        assert!(Fault::parse("rcpt:251:30").is_err());
        assert!(Fault::parse("rcpt:451").is_err());
        assert!(Fault::parse("helo:451:3").is_err());
        assert!(Fault::parse("rcpt:451:101").is_err());
        assert_eq!(
            Fault::parse("disconnect:starttls:100").unwrap().stage,
            Stage::Starttls
        );
    }

    #[test]
    fn transient_faults_hit_first_try_only() {
        let plan = FaultPlan::new(vec![Fault::parse("rcpt:451:30").unwrap()]).unwrap();
        let keys: Vec<String> = (0..1000).map(|i| format!("u{i}@d.test")).collect();
        let first: Vec<bool> = keys
            .iter()
            .map(|k| plan.check(Stage::Rcpt, k.as_bytes()).is_some())
            .collect();
        let hit = first.iter().filter(|&&h| h).count();
        assert!((250..350).contains(&hit), "{hit} of 1000 hit");
        assert!(keys
            .iter()
            .all(|k| plan.check(Stage::Rcpt, k.as_bytes()).is_none()));
    }

    #[test]
    fn permanent_faults_hit_every_try_and_slices_are_disjoint() {
        let plan = FaultPlan::new(vec![
            Fault::parse("rcpt:451:30").unwrap(),
            Fault::parse("rcpt:550:20").unwrap(),
        ])
        .unwrap();
        let mut perm = 0;
        for i in 0..1000 {
            let k = format!("u{i}@d.test");
            let a = plan.check(Stage::Rcpt, k.as_bytes());
            if a == Some(Action::Reply(550)) {
                perm += 1;
                assert_eq!(plan.check(Stage::Rcpt, k.as_bytes()), a);
            }
        }
        assert!((150..250).contains(&perm), "{perm}");
        assert!(FaultPlan::new(vec![
            Fault::parse("data:451:60").unwrap(),
            Fault::parse("data:554:50").unwrap()
        ])
        .is_err());
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let msg = |spec: &str| Fault::parse(spec).unwrap_err().to_string();
        assert_eq!(
            msg("rcpt:451"),
            "bad --fault \"rcpt:451\": want STAGE:CODE:PERCENT or disconnect:STAGE:PERCENT"
        );
        assert_eq!(
            msg("rcpt:251:30"),
            "bad --fault \"rcpt:251:30\": code must be 4xx or 5xx"
        );
        assert_eq!(
            msg("rcpt:451:101"),
            "bad --fault \"rcpt:451:101\": percent over 100"
        );
        let over = FaultPlan::new(vec![
            Fault::parse("data:451:60").unwrap(),
            Fault::parse("data:554:50").unwrap(),
        ])
        .unwrap_err();
        assert_eq!(over.to_string(), "faults at Data add up to 110%, over 100");
    }
}
