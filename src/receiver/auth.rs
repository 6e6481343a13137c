//! Who is calling: site tokens (send batches; the site comes from the token, never from the
//! body) and reader tokens (read reports and `/status`, with a scope). Both are configured as
//! SHA-256 hashes, one or two per token (two while it is rotated). Comparison is constant-time
//! in the hash and goes over every entry.
//!
//! A token comes as `Authorization: Bearer TOKEN`, or from a browser as HTTP Basic with the
//! token as the password (any user name), so that a person can open `/status` with the
//! browser's own login prompt.

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::config::{ReaderConfig, ReaderScope, SiteConfig, TokenHashes};

/// The longest token looked at.
const MAX_TOKEN: usize = 512;

/// A caller the configuration knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A facility's tailer, sending batches of this site.
    Site(i64),
    /// A reader of reports, with what it may see.
    Reader(ReaderScope),
}

/// Token hashes → callers.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
    site_ids: Vec<i64>,
}

/// Hex SHA-256 of a token (what `token_sha256` holds).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

/// The token an `Authorization` header value carries, if any.
fn presented(authorization: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let rest = rest.trim();
    if rest.len() > MAX_TOKEN * 2 {
        return None;
    }
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        pair.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    (!token.is_empty() && token.len() <= MAX_TOKEN).then_some(token)
}

impl Tokens {
    /// From the receiver config's `[[sites]]` and `[[readers]]` (already validated: 64 hex
    /// digits each, no hash given to two callers).
    pub fn new(sites: &[SiteConfig], readers: &[ReaderConfig]) -> Self {
        fn hashes(
            of: &TokenHashes,
            caller: Caller,
        ) -> impl Iterator<Item = ([u8; 32], Caller)> + '_ {
            of.0.iter().filter_map(move |h| Some((unhex(h)?, caller)))
        }
        let mut entries = Vec::new();
        for site in sites {
            entries.extend(hashes(&site.token_sha256, Caller::Site(site.site_id)));
        }
        for reader in readers {
            entries.extend(hashes(&reader.token_sha256, Caller::Reader(reader.scope)));
        }
        let mut site_ids: Vec<i64> = sites.iter().map(|s| s.site_id).collect();
        site_ids.sort_unstable();
        site_ids.dedup();
        Self { entries, site_ids }
    }

    /// The configured sites, ascending.
    pub fn site_ids(&self) -> Vec<i64> {
        self.site_ids.clone()
    }

    /// The caller of an `Authorization` header value, if it carries a known token.
    pub fn caller(&self, authorization: Option<&str>) -> Option<Caller> {
        let token = presented(authorization?)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, caller) in &self.entries {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(*caller);
            }
        }
        found
    }
}

/// Why a request for reports is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token, or one nobody is configured with: 401.
    Unknown,
    /// A site token, which sends batches and reads nothing: 403.
    Site,
    /// A reader whose scope does not cover patient lists: 403.
    Scope,
}

impl Refused {
    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Self::Unknown => 401,
            Self::Site | Self::Scope => 403,
        }
    }

    /// What the caller is told.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => {
                "missing or unknown bearer token: reports and /status need a reader token"
            }
            Self::Site => "a site token sends batches; reports and /status need a reader token",
            Self::Scope => "patient lists need a reader with scope \"patients\"",
        }
    }
}

impl Tokens {
    /// The scope of a reader's token; a site token or an unknown one is refused.
    pub fn reader(&self, authorization: Option<&str>) -> Result<ReaderScope, Refused> {
        match self.caller(authorization) {
            None => Err(Refused::Unknown),
            Some(Caller::Site(_)) => Err(Refused::Site),
            Some(Caller::Reader(scope)) => Ok(scope),
        }
    }
}

/// Whether a reader of `scope` may see the answer: counts for any reader, lists of patients
/// for a `patients` reader.
pub fn allows(scope: ReaderScope, patient_list: bool) -> Result<(), Refused> {
    if patient_list && scope != ReaderScope::Patients {
        return Err(Refused::Scope);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(
            &[SiteConfig {
                site_id: 101,
                token_sha256: TokenHashes(vec![hash_token("old-site"), hash_token("s3cret")]),
                name: String::new(),
            }],
            &[
                ReaderConfig {
                    name: "dashboard".into(),
                    scope: ReaderScope::Aggregate,
                    token_sha256: TokenHashes::one(hash_token("counts")),
                },
                ReaderConfig {
                    name: "tracing team".into(),
                    scope: ReaderScope::Patients,
                    token_sha256: TokenHashes::one(hash_token("lists")),
                },
            ],
        )
    }

    #[test]
    fn token_to_site() {
        let tokens = tokens();
        assert_eq!(
            tokens.caller(Some("Bearer s3cret")),
            Some(Caller::Site(101))
        );
        assert_eq!(
            tokens.caller(Some("Bearer old-site")),
            Some(Caller::Site(101)),
            "both hashes work"
        );
        assert_eq!(tokens.caller(Some("Bearer wrong")), None);
        assert_eq!(tokens.caller(Some("s3cret")), None);
        assert_eq!(
            tokens.caller(Some("Bearer counts")),
            Some(Caller::Reader(ReaderScope::Aggregate)),
            "a reader sends nothing"
        );
        assert_eq!(tokens.caller(None), None);
    }

    #[test]
    fn readers_and_scopes() {
        let tokens = tokens();
        assert_eq!(tokens.reader(None), Err(Refused::Unknown));
        assert_eq!(tokens.reader(Some("Bearer nope")), Err(Refused::Unknown));
        assert_eq!(tokens.reader(Some("Bearer s3cret")), Err(Refused::Site));
        assert_eq!(
            tokens.reader(Some("Bearer counts")),
            Ok(ReaderScope::Aggregate)
        );
        assert_eq!(
            tokens
                .reader(Some("Bearer counts"))
                .and_then(|s| allows(s, true).map(|()| s)),
            Err(Refused::Scope)
        );
        assert_eq!(
            tokens
                .reader(Some("Bearer lists"))
                .and_then(|s| allows(s, true).map(|()| s)),
            Ok(ReaderScope::Patients)
        );
    }

    #[test]
    fn basic_auth_carries_the_token_as_password() {
        let tokens = tokens();
        let basic = |pair: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        };
        assert_eq!(
            tokens.caller(Some(&basic("anyone:lists"))),
            Some(Caller::Reader(ReaderScope::Patients))
        );
        assert_eq!(
            tokens.caller(Some(&basic("lists"))),
            None,
            "no colon, no password"
        );
        assert_eq!(tokens.caller(Some(&basic("x:"))), None);
        assert_eq!(tokens.caller(Some("Basic !!!")), None);
        assert_eq!(tokens.caller(Some("Digest lists")), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(tokens.caller(Some(&long)), None);
    }
}
