//! Configuration files of the tailer and the receiver (TOML), with defaults chosen so that the
//! demo needs no edits. Secrets (site tokens, database URLs with passwords) can come from the
//! environment instead of the file and never reach `Debug` output or logs.
//!
//! Invariant: a config that `validate()` accepted names real, non-empty values for everything
//! the process needs; errors name the bad field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod access;
mod receiver;
mod tailer;

pub use access::*;
pub use receiver::*;
pub use tailer::*;

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("config {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the field).
        message: String,
    },
    /// A field has a value that cannot work.
    #[error("config field `{field}` {problem}")]
    Invalid {
        /// Dotted name of the field.
        field: &'static str,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// A string that must not be printed: tokens, passwords, URLs with credentials.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

pub(crate) fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Replaces `value` with the environment variable `var` when that is set and non-empty.
pub(crate) fn from_env(value: &mut Secret, var: &str) {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            *value = Secret(v);
        }
    }
}

/// Default mapping file.
pub const DEFAULT_MAPPING: &str = "mappings/openmrs.toml";

pub(crate) fn default_mapping() -> PathBuf {
    PathBuf::from(DEFAULT_MAPPING)
}

/// An `Invalid` error for `field`.
pub(crate) fn invalid<T>(field: &'static str, problem: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        field,
        problem: problem.to_owned(),
    })
}

/// Whether `name` is a plain SQL identifier: ASCII letters, digits and `_`, not empty, at most
/// 64 characters. Every name that reaches SQL unquoted-by-the-driver passes this or the mapping.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn identifiers() {
        assert!(is_identifier("openmrs_1"));
        assert!(!is_identifier("a;drop"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("a`b"));
    }
}
