//! The users file: `user:$argon2id$...` lines (PHC strings), `#` comments and blank lines.
//!
//! [`Credentials::load`] parses the whole file or names the first bad line;
//! [`Credentials::verify`] checks a password in constant time whether or not the user
//! exists; [`set_password`] is what `pigeon passwd` uses to add or replace one entry.
//! Nothing here logs a password or keeps one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use thiserror::Error;

/// A hash of a random password with the crate's default argon2id parameters (the ones
/// `pigeon passwd` uses). An unknown user is checked against it, so a miss costs as long
/// as a wrong password and timing does not tell which users exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$cGlnZW9uLWR1bW15LXNhbHQ$3u6Yy0GZ5Ik0Q3a1kJQXJ2bWcfGQ2Y0n5b3V3QmYxw8";

/// Why a users file was refused.
#[derive(Debug, Error)]
pub enum CredentialsError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `user:PHC-hash`.
    #[error("{path} line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// The loaded users: name to argon2 PHC string.
#[derive(Debug, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
}

impl Credentials {
    /// Reads and checks a users file.
    pub fn load(path: &Path) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
            path: path.to_owned(),
            source,
        })?;
        Credentials::parse(&text).map_err(|(line, reason)| CredentialsError::Line {
            path: path.to_owned(),
            line,
            reason,
        })
    }

    /// Parses the text of a users file; an error carries the line number and the reason.
    pub fn parse(text: &str) -> Result<Credentials, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| (i + 1, reason.to_owned());
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected user:hash"))?;
            valid_user(user).map_err(err)?;
            let parsed = PasswordHash::new(hash).map_err(|e| err(&format!("bad hash: {e}")))?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(err("not an argon2 hash (write it with `pigeon passwd`)"));
            }
            if users.insert(user.to_owned(), hash.to_owned()).is_some() {
                return Err(err(&format!("user {user:?} appears twice")));
            }
        }
        Ok(Credentials { users })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True without users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Slow on purpose (argon2): call it off the shard's
    /// executor thread.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        // Both strings were parsed at load (the dummy in a unit test).
        let Ok(hash) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        ok && known
    }
}

/// Checks a user name for the users file: not empty, no `:`, whitespace or control
/// characters (they would break the line format or the logs).
pub fn valid_user(user: &str) -> Result<(), &'static str> {
    if user.is_empty() {
        return Err("empty user name");
    }
    if user
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("a user name may not contain ':', white space or control characters");
    }
    Ok(())
}

/// Why a password could not be hashed.
#[derive(Debug, Error)]
pub enum HashError {
    /// The system's random source failed, so there is no salt.
    #[error("no random numbers from the system")]
    NoRandom,
    /// argon2 refused the salt or the password (too long, in practice).
    #[error("{0}")]
    Argon2(argon2::password_hash::Error),
}

/// Hashes a password with argon2id and the crate's default parameters, with a fresh
/// random salt; returns the PHC string.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| HashError::NoRandom)?;
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(HashError::Argon2)
}

/// Writes `user:hash` into the users file at `path`: replaces the user's line if there is
/// one, appends otherwise, and creates the file if needed. The new file is written beside
/// the old one with mode 0600, synced, then renamed over it, so a crash leaves either the
/// old file or the new one. Returns true if an entry was replaced.
pub fn set_password(path: &Path, user: &str, hash: &str) -> Result<bool, CredentialsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CredentialsError::Io {
        path: path.to_owned(),
        source,
    };
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let prefix = format!("{user}:");
    let mut replaced = false;
    let mut text = String::with_capacity(old.len() + 128);
    for line in old.lines() {
        if line.starts_with(&prefix) && !replaced {
            replaced = true;
            text.push_str(&prefix);
            text.push_str(hash);
        } else if line.starts_with(&prefix) {
            // A duplicate (hand-edited) would shadow nothing: the file would not load.
            continue;
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    if !replaced {
        text.push_str(&prefix);
        text.push_str(hash);
        text.push('\n');
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dummy_hash_uses_the_default_parameters() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = hash_password("x").unwrap();
        let real = PasswordHash::new(&real).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            dummy.hash.unwrap().len(),
            real.hash.unwrap().len(),
            "same output length"
        );
    }

    #[test]
    fn verifies_known_users_only() {
        let hash = hash_password("s3cret").unwrap();
        let c = Credentials::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert_eq!(c.len(), 1);
        assert!(c.verify("alice", "s3cret"));
        assert!(!c.verify("alice", "wrong"));
        assert!(!c.verify("bob", "s3cret"));
    }

    #[test]
    fn bad_lines_are_numbered() {
        let hash = hash_password("p").unwrap();
        let cases = [
            ("no colon here\n", 1, "user:hash"),
            (&format!("\n# c\nbad user:{hash}\n"), 3, "white space"),
            ("a:$plain$x\n", 1, "bad hash"),
            (&format!("a:{hash}\na:{hash}\n"), 2, "twice"),
        ];
        for (text, line, reason) in cases {
            let (n, why) = Credentials::parse(text).unwrap_err();
            assert_eq!(n, line, "{text:?}: {why}");
            assert!(why.contains(reason), "{text:?}: {why}");
        }
    }
}
