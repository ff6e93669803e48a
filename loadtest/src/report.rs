//! The JSON report each tool ends with: made from its report, and written to the `--json`
//! file when one is given.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why the report could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report cannot be made into JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The `--json` file cannot be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The report as pretty-printed JSON.
pub fn to_json<T: Serialize>(report: &T) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(report)?)
}

/// Writes `json` and a final newline to `path`.
pub fn write(path: &Path, json: &str) -> Result<(), ReportError> {
    std::fs::write(path, format!("{json}\n")).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}
