//! Site tokens: configured as SHA-256 hashes; the site comes from the token, never from
//! the body. Comparison is constant-time in the hash.

use sha2::{Digest, Sha256};

use crate::config::SiteConfig;

/// Token hashes → site ids.
#[derive(Debug, Clone)]
pub struct SiteTokens {
    sites: Vec<([u8; 32], i64)>,
}

/// Hex SHA-256 of a token (what `sites.token_sha256` holds).
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

impl SiteTokens {
    /// From the receiver config's `[[sites]]` (already validated as 64 hex digits).
    pub fn new(sites: &[SiteConfig]) -> Self {
        Self {
            sites: sites
                .iter()
                .filter_map(|s| Some((unhex(&s.token_sha256)?, s.site_id)))
                .collect(),
        }
    }

    /// The configured sites, ascending.
    pub fn site_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.sites.iter().map(|(_, id)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The site of an `Authorization` header value, if it is `Bearer <known token>`.
    pub fn site_of(&self, authorization: Option<&str>) -> Option<i64> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() || token.len() > 512 {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, site) in &self.sites {
            let diff = hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(*site);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_to_site() {
        let tokens = SiteTokens::new(&[SiteConfig {
            site_id: 101,
            token_sha256: hash_token("s3cret"),
            name: String::new(),
        }]);
        assert_eq!(tokens.site_of(Some("Bearer s3cret")), Some(101));
        assert_eq!(tokens.site_of(Some("Bearer wrong")), None);
        assert_eq!(tokens.site_of(Some("s3cret")), None);
        assert_eq!(tokens.site_of(None), None);
    }
}
