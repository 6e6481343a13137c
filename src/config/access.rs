//! Who may call the receiver: the token hashes of `[[sites]]` and `[[readers]]`, and the
//! readers' scopes.

use serde::Deserialize;

use super::{invalid, ConfigError};

/// `[[readers]]`: a person or a program that reads reports and the receiver's `/status`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Who this is (in the config only; never logged with a token).
    pub name: String,
    /// What the reader may see.
    pub scope: ReaderScope,
    /// Hex SHA-256 of the reader's bearer token; two hashes while the token is rotated.
    pub token_sha256: TokenHashes,
}

/// What a reader may see.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReaderScope {
    /// Counts: report totals and rows, `detail=days`, `/status`.
    Aggregate,
    /// Everything `aggregate` may, and patient lists: `detail=patients`, `defaulter_list`.
    Patients,
}

/// The hashes of one token: one string, or a list of two while the token is rotated (the
/// old and the new one both valid until the old one is removed).
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(from = "OneOrMore")]
pub struct TokenHashes(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

impl From<OneOrMore> for TokenHashes {
    fn from(value: OneOrMore) -> Self {
        match value {
            OneOrMore::One(hash) => Self(vec![hash]),
            OneOrMore::More(hashes) => Self(hashes),
        }
    }
}

impl TokenHashes {
    /// One hash.
    pub fn one(hash: impl Into<String>) -> Self {
        Self(vec![hash.into()])
    }

    /// Checks that there are one or two hashes of 64 hex digits, none given to another caller
    /// (`seen`: the hashes of the entries checked before); `whose` names the entry.
    pub(super) fn check(
        &self,
        field: &'static str,
        whose: &str,
        seen: &mut std::collections::HashSet<String>,
    ) -> Result<(), ConfigError> {
        if !(1..=2).contains(&self.0.len()) {
            return invalid(
                field,
                &format!("of {whose} must be one hash, or two while the token is rotated"),
            );
        }
        for hash in &self.0 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return invalid(
                    field,
                    &format!("of {whose} must be 64 hex digits (emr-stream hash-token)"),
                );
            }
            if !seen.insert(hash.to_ascii_lowercase()) {
                return invalid(
                    field,
                    &format!("of {whose} is also another site's or reader's token"),
                );
            }
        }
        Ok(())
    }
}
