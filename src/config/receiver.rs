//! `receiver.toml`: the central service's configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    default_mapping, from_env, invalid, is_identifier, load, ConfigError, ReaderConfig, Secret,
    TokenHashes,
};

/// `receiver.toml`: the central service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Listen address of the API, `/metrics` and `/healthz`; port 0 picks a free port.
    #[serde(default = "default_receiver_listen")]
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate (reloaded on SIGHUP).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Serve plain HTTP on an address other than loopback (without `[tls]`); off by default:
    /// tokens and patient lists would cross the network in clear.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// The mapping file; the mirror, cdr and IDS schema files are beside it.
    #[serde(default = "default_mapping")]
    pub mapping: PathBuf,
    /// The MySQL operational mirror.
    pub mysql: MirrorConfig,
    /// PostgreSQL (schemas `cdr` and `ids`).
    pub postgres: PostgresConfig,
    /// The sites allowed to send, with their token hashes.
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
    /// Who may read reports and `/status`, with their token hashes and scopes.
    #[serde(default)]
    pub readers: Vec<ReaderConfig>,
    /// Input limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// IDS maintenance: the queue's workers, the background verifier.
    #[serde(default)]
    pub ids: IdsConfig,
}

/// Default listen address of the receiver.
pub const DEFAULT_RECEIVER_LISTEN: &str = "127.0.0.1:8080";

fn default_receiver_listen() -> SocketAddr {
    DEFAULT_RECEIVER_LISTEN
        .parse()
        .expect("valid default address")
}

/// `[tls]`: the receiver's HTTPS certificate.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the server certificate, then its intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[mysql]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// `mysql://user:password@host:port` (no database); env `EMR_RECEIVER_MYSQL_URL` overrides.
    #[serde(default)]
    pub url: Secret,
    /// The mirror database; created when missing.
    #[serde(default = "default_mirror_db")]
    pub database: String,
    /// The CA (PEM) that signed the server's certificate: TLS only, verified against this CA
    /// and the URL's host name.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connect in plain to a host other than this machine (without `ca_file`); off by
    /// default.
    #[serde(default)]
    pub allow_plain: bool,
}

fn default_mirror_db() -> String {
    "cdr_mirror".into()
}

/// `[postgres]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db`; env `EMR_RECEIVER_PG_URL` overrides.
    #[serde(default)]
    pub url: Secret,
    /// Connection pool size.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
    /// Create the `cdr` and `ids` tables hash-partitioned by `site_id` into this many
    /// partitions (0: plain tables). Only takes effect when the tables are created: an
    /// existing store keeps its layout.
    #[serde(default)]
    pub partitions: u32,
    /// The CA (PEM) that signed the server's certificate: TLS only (`sslmode=require`),
    /// verified against this CA and the URL's host name (as libpq's `verify-full`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connect in plain to a host other than this machine (without `ca_file`); off by
    /// default.
    #[serde(default)]
    pub allow_plain: bool,
}

fn default_pool() -> usize {
    8
}

/// `[[sites]]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The facility's site id (its `current_health_center_id`).
    pub site_id: i64,
    /// Hex SHA-256 of the site's bearer token (`emr-stream hash-token` prints it); two
    /// hashes while the token is rotated.
    pub token_sha256: TokenHashes,
    /// A human name, for status pages.
    #[serde(default)]
    pub name: String,
}

/// Default cap of a compressed request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default cap of a decompressed request body.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// `[limits]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body as sent (compressed), bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest accepted body after gunzip, bytes.
    #[serde(default = "default_max_decompressed")]
    pub max_decompressed_bytes: usize,
    /// Most visits in one batch.
    #[serde(default = "default_max_visits")]
    pub max_visits: usize,
    /// Most rows in one batch.
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_visits: default_max_visits(),
            max_rows: default_max_rows(),
        }
    }
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_decompressed() -> usize {
    DEFAULT_MAX_DECOMPRESSED_BYTES
}
fn default_max_visits() -> usize {
    10_000
}
fn default_max_rows() -> usize {
    200_000
}

/// Default: at most this many patients are recomputed inside a batch's apply transaction.
/// A facility's batches in real time hold a few visits; a batch of a backlog (a catch-up
/// after an outage) holds hundreds, and the next batches hold the same patients' other
/// visits: queued, each patient is recomputed once after them instead of once per batch.
/// `scripts/bench-e2e.sh`, 2000 patients over 10 days (22 batches of about 300 patients),
/// `AGAIN=1`, alternating, two pairs: 2000 against 200, IDS maintenance 4.24 / 4.08 s in the
/// batches' transactions and 0.13 / 0.18 s in the queue, against 1.55 / 1.13 s and
/// 1.25 / 0.96 s; the IDS tables current after 11.58 / 11.04 s against 9.98 / 7.68 s.
pub const DEFAULT_INLINE_MAX_PATIENTS: i32 = 200;

/// `[ids]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct IdsConfig {
    /// A batch touching at most this many patients has their derived rows recomputed in its
    /// own transaction (reports see it at commit); a bigger one goes through the queue.
    #[serde(default = "default_inline_max")]
    pub inline_max_patients: i32,
    /// Queue workers in this receiver (0: none; other receivers drain the queue).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How often an idle worker looks for queued patients (ms).
    #[serde(default = "default_queue_poll")]
    pub queue_poll_ms: u64,
    /// Verify the tables against their definitions in the background, site by site.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Share of the verifier's time spent checking (it rests the rest), percent.
    #[serde(default = "default_verify_duty")]
    pub verify_duty_percent: u32,
}

impl Default for IdsConfig {
    fn default() -> Self {
        Self {
            inline_max_patients: DEFAULT_INLINE_MAX_PATIENTS,
            workers: default_workers(),
            queue_poll_ms: default_queue_poll(),
            verify: true,
            verify_duty_percent: default_verify_duty(),
        }
    }
}

fn default_inline_max() -> i32 {
    DEFAULT_INLINE_MAX_PATIENTS
}
fn default_workers() -> usize {
    1
}
fn default_queue_poll() -> u64 {
    250
}
fn default_true() -> bool {
    true
}
fn default_verify_duty() -> u32 {
    10
}

impl ReceiverConfig {
    /// Reads, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load(path)?;
        from_env(&mut config.mysql.url, "EMR_RECEIVER_MYSQL_URL");
        from_env(&mut config.postgres.url, "EMR_RECEIVER_PG_URL");
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.allow_plain_http {
            return invalid(
                "listen",
                &format!(
                    "{} is not a loopback address: configure [tls] (cert_file, key_file) to serve \
                     HTTPS, or set allow_plain_http = true behind a proxy that terminates TLS",
                    self.listen
                ),
            );
        }
        if !self.mysql.url.expose().starts_with("mysql://") {
            return invalid(
                "mysql.url",
                "must be mysql://user:pass@host:port (or set EMR_RECEIVER_MYSQL_URL)",
            );
        }
        for (field, url, ca, plain) in [
            (
                "mysql.ca_file",
                self.mysql.url.expose(),
                &self.mysql.ca_file,
                self.mysql.allow_plain,
            ),
            (
                "postgres.ca_file",
                self.postgres.url.expose(),
                &self.postgres.ca_file,
                self.postgres.allow_plain,
            ),
        ] {
            if ca.is_none() && !plain && !crate::store_tls::is_local(url) {
                return invalid(
                    field,
                    "is needed for a server on another host (TLS verified against it), or set \
                     allow_plain = true in that section",
                );
            }
        }
        if !is_identifier(&self.mysql.database) {
            return invalid("mysql.database", "must be a plain database name");
        }
        if !self.postgres.url.expose().starts_with("postgres") {
            return invalid(
                "postgres.url",
                "must be postgres://... (or set EMR_RECEIVER_PG_URL)",
            );
        }
        if self.sites.is_empty() {
            return invalid("sites", "is empty: no site could send anything");
        }
        let mut seen = std::collections::HashSet::new();
        for site in &self.sites {
            let whose = format!("site {}", site.site_id);
            site.token_sha256
                .check("sites.token_sha256", &whose, &mut seen)?;
        }
        let mut names = std::collections::HashSet::new();
        for reader in &self.readers {
            if reader.name.trim().is_empty() {
                return invalid("readers.name", "must name the reader");
            }
            if !names.insert(reader.name.as_str()) {
                return invalid(
                    "readers.name",
                    &format!("{:?} is given to two readers", reader.name),
                );
            }
            let whose = format!("reader {:?}", reader.name);
            reader
                .token_sha256
                .check("readers.token_sha256", &whose, &mut seen)?;
        }
        if self.ids.inline_max_patients < 0 {
            return invalid("ids.inline_max_patients", "must not be negative");
        }
        if !(1..=100).contains(&self.ids.verify_duty_percent) {
            return invalid("ids.verify_duty_percent", "must be 1 to 100");
        }
        if self.postgres.partitions > 1024 {
            return invalid("postgres.partitions", "must be at most 1024");
        }
        if self.ids.workers + 3 > self.postgres.pool_size {
            return invalid(
                "postgres.pool_size",
                "must leave room for the queue workers, the verifier and requests (ids.workers + 3)",
            );
        }
        if self.limits.max_decompressed_bytes < self.limits.max_body_bytes {
            return invalid(
                "limits.max_decompressed_bytes",
                "must be at least limits.max_body_bytes",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReaderScope;

    const HASH_A: &str = "05174b1cd90deac636d1fdc9b31bddf2ecc8623b6b086dfec240920ef83a7132";
    const HASH_B: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn config(sites_and_readers: &str) -> Result<ReceiverConfig, String> {
        let text = format!(
            "{sites_and_readers}[mysql]\nurl = \"mysql://u:p@127.0.0.1:1\"\n[postgres]\nurl = \"postgres://u:p@localhost/db\"\n"
        );
        let config: ReceiverConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/receiver.example.toml");
        let config: ReceiverConfig = load(&path).unwrap();
        config.validate().unwrap();
        assert!(config
            .readers
            .iter()
            .any(|r| r.scope == ReaderScope::Patients));
        assert!(config
            .readers
            .iter()
            .any(|r| r.scope == ReaderScope::Aggregate));
    }

    #[test]
    fn tokens_take_one_or_two_hashes() {
        let c = config(&format!(
            "[[sites]]\nsite_id = 1\ntoken_sha256 = [\"{HASH_A}\", \"{HASH_B}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.sites[0].token_sha256.0.len(), 2);
        let three = config(&format!(
            "[[sites]]\nsite_id = 1\ntoken_sha256 = [\"{HASH_A}\", \"{HASH_B}\", \"{HASH_A}\"]\n"
        ))
        .unwrap_err();
        assert!(three.contains("rotated"), "{three}");
        let short = config("[[sites]]\nsite_id = 1\ntoken_sha256 = \"abc\"\n").unwrap_err();
        assert!(short.contains("64 hex"), "{short}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let site = format!("[[sites]]\nsite_id = 1\ntoken_sha256 = \"{HASH_A}\"\n");
        let open = config(&format!("listen = \"0.0.0.0:8443\"\n{site}")).unwrap_err();
        assert!(open.contains("[tls]"), "{open}");
        config(&format!(
            "listen = \"0.0.0.0:8443\"\nallow_plain_http = true\n{site}"
        ))
        .unwrap();
        config(&format!(
            "listen = \"0.0.0.0:8443\"\n{site}[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n"
        ))
        .unwrap();
        config(&format!("listen = \"127.0.0.1:8080\"\n{site}")).unwrap();
    }

    #[test]
    fn stores_on_another_host_need_a_ca_or_an_opt_in() {
        let site = format!("[[sites]]\nsite_id = 1\ntoken_sha256 = \"{HASH_A}\"\n");
        let text = |mysql: &str, pg: &str| {
            format!("{site}[mysql]\nurl = \"mysql://u:p@db.example.org:3306\"\n{mysql}[postgres]\nurl = \"postgres://u:p@10.1.2.3/db\"\n{pg}")
        };
        let parse = |t: String| -> Result<ReceiverConfig, String> {
            let c: ReceiverConfig = toml::from_str(&t).map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())?;
            Ok(c)
        };
        let e = parse(text("", "")).unwrap_err();
        assert!(e.contains("mysql.ca_file"), "{e}");
        let e = parse(text("ca_file = \"ca.pem\"\n", "")).unwrap_err();
        assert!(e.contains("postgres.ca_file"), "{e}");
        parse(text("ca_file = \"ca.pem\"\n", "allow_plain = true\n")).unwrap();
    }

    #[test]
    fn readers_are_checked() {
        let site = format!("[[sites]]\nsite_id = 1\ntoken_sha256 = \"{HASH_A}\"\n");
        let reader = |name: &str, scope: &str, hash: &str| {
            format!(
                "[[readers]]\nname = \"{name}\"\nscope = \"{scope}\"\ntoken_sha256 = \"{hash}\"\n"
            )
        };
        let ok = config(&format!("{site}{}", reader("team", "patients", HASH_B))).unwrap();
        assert_eq!(ok.readers[0].scope, ReaderScope::Patients);
        let shared = config(&format!("{site}{}", reader("team", "aggregate", HASH_A))).unwrap_err();
        assert!(shared.contains("also another"), "{shared}");
        let scope = config(&format!("{site}{}", reader("team", "all", HASH_B))).unwrap_err();
        assert!(
            scope.contains("scope") || scope.contains("variant"),
            "{scope}"
        );
        let unnamed = config(&format!("{site}{}", reader(" ", "patients", HASH_B))).unwrap_err();
        assert!(unnamed.contains("readers.name"), "{unnamed}");
    }
}
