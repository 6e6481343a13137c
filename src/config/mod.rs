//! Configuration files of the tailer and the receiver (TOML), with defaults chosen so that the
//! demo needs no edits. Secrets (site tokens, database URLs with passwords) can come from the
//! environment instead of the file and never reach `Debug` output or logs.
//!
//! Invariant: a config that `validate()` accepted names real, non-empty values for everything
//! the process needs; errors name the bad field.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

fn load<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ConfigError> {
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
fn from_env(value: &mut Secret, var: &str) {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            *value = Secret(v);
        }
    }
}

/// Default mapping file.
pub const DEFAULT_MAPPING: &str = "mappings/openmrs.toml";

fn default_mapping() -> PathBuf {
    PathBuf::from(DEFAULT_MAPPING)
}

// ------------------------------------------------------------------------------------ tailer

/// `tailer.toml`: the facility sidecar.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailerConfig {
    /// The EMR database and how to follow its binlog.
    pub source: SourceConfig,
    /// Where the tailer keeps its state.
    #[serde(default)]
    pub state: StateConfig,
    /// The mapping file (tables, keys, visit lookups, excluded columns).
    #[serde(default = "default_mapping")]
    pub mapping: PathBuf,
    /// When a visit is ready to ship.
    #[serde(default)]
    pub visits: VisitConfig,
    /// Where and how visits are shipped.
    pub ship: ShipConfig,
    /// The tailer's own HTTP endpoint (`/metrics`, `/healthz`, `/status`).
    #[serde(default)]
    pub http: HttpConfig,
    /// The nightly missed-visit sweep.
    #[serde(default)]
    pub sweep: SweepConfig,
}

/// Local time of the nightly sweep.
pub const DEFAULT_SWEEP_AT: &str = "01:00";
/// Days the nightly sweep looks back (today included).
pub const DEFAULT_SWEEP_DAYS: u32 = 7;
/// Most source rows a sweep reads per second.
pub const DEFAULT_SWEEP_ROWS_PER_SEC: u32 = 5_000;

/// `[sweep]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Run the sweep every night.
    #[serde(default = "yes")]
    pub nightly: bool,
    /// Local time `HH:MM` (or `HH:MM:SS`) of the nightly sweep.
    #[serde(default = "default_sweep_at")]
    pub at: String,
    /// Days it looks back, today included.
    #[serde(default = "default_sweep_days")]
    pub days: u32,
    /// Most source rows read per second (the sweep is gentle with the EMR).
    #[serde(default = "default_sweep_rows_per_sec")]
    pub rows_per_sec: u32,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            nightly: true,
            at: default_sweep_at(),
            days: DEFAULT_SWEEP_DAYS,
            rows_per_sec: DEFAULT_SWEEP_ROWS_PER_SEC,
        }
    }
}

impl SweepConfig {
    /// The nightly time.
    pub fn time(&self) -> Option<chrono::NaiveTime> {
        chrono::NaiveTime::parse_from_str(&self.at, "%H:%M")
            .or_else(|_| chrono::NaiveTime::parse_from_str(&self.at, "%H:%M:%S"))
            .ok()
    }
}

fn yes() -> bool {
    true
}

fn default_sweep_at() -> String {
    DEFAULT_SWEEP_AT.into()
}

fn default_sweep_days() -> u32 {
    DEFAULT_SWEEP_DAYS
}

fn default_sweep_rows_per_sec() -> u32 {
    DEFAULT_SWEEP_ROWS_PER_SEC
}

/// Where a tailer without a checkpoint starts reading.
pub const DEFAULT_START: &str = "current";
/// Replica server id the tailer registers with (must be unique among the source's replicas).
pub const DEFAULT_SERVER_ID: u32 = 4242;
/// Seconds between heartbeats the source sends on an idle binlog.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 5;

/// `[source]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user:password@host:port`; env `EMR_SOURCE_URL` overrides. The user needs
    /// REPLICATION SLAVE, REPLICATION CLIENT and SELECT on the EMR database.
    #[serde(default)]
    pub url: Secret,
    /// The EMR database (schema) whose tables are replicated.
    pub database: String,
    /// Replica server id; must differ from the source's and its other replicas'.
    #[serde(default = "default_server_id")]
    pub server_id: u32,
    /// Without a checkpoint: `current` (the source's current position), `earliest` (its first
    /// binlog) or `FILE:POS`.
    #[serde(default = "default_start")]
    pub start: String,
    /// The facility's site id; when absent it is read from the EMR's global property
    /// `current_health_center_id`.
    #[serde(default)]
    pub site_id: Option<i64>,
    /// Heartbeat period (seconds), so that lag is known on an idle source.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u64,
}

fn default_server_id() -> u32 {
    DEFAULT_SERVER_ID
}
fn default_start() -> String {
    DEFAULT_START.into()
}
fn default_heartbeat() -> u64 {
    DEFAULT_HEARTBEAT_SECS
}

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "state/tailer";

/// `[state]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the sled database (checkpoint, visit buffers, outbox, ledger, dead letters).
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// sled's page cache (MiB): bounds the tailer's memory for state.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            cache_mib: DEFAULT_CACHE_MIB,
        }
    }
}

/// Default sled page cache.
pub const DEFAULT_CACHE_MIB: u64 = 32;

fn default_cache_mib() -> u64 {
    DEFAULT_CACHE_MIB
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// Default settle delay after a closing encounter (ms).
pub const DEFAULT_SETTLE_MS: u64 = 5_000;
/// Default idle timeout of an open visit (s).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 1_800;
/// Default period of the readiness check (ms).
pub const DEFAULT_READY_CHECK_MS: u64 = 500;

/// `[visits]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct VisitConfig {
    /// After a closing encounter type commits, wait this long for more rows (ms).
    #[serde(default = "default_settle")]
    pub settle_ms: u64,
    /// A visit with no change for this long is ready whatever its encounters (s).
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: u64,
    /// How often open visits are checked for readiness (ms).
    #[serde(default = "default_ready_check")]
    pub ready_check_ms: u64,
}

impl Default for VisitConfig {
    fn default() -> Self {
        Self {
            settle_ms: DEFAULT_SETTLE_MS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            ready_check_ms: DEFAULT_READY_CHECK_MS,
        }
    }
}

fn default_settle() -> u64 {
    DEFAULT_SETTLE_MS
}
fn default_idle() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}
fn default_ready_check() -> u64 {
    DEFAULT_READY_CHECK_MS
}

/// Default upper bound of one request body before compression.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1 << 20;

/// `[ship]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ShipConfig {
    /// The receiver's stream endpoint, e.g. `https://cdr.example.org/api/v1/stream`.
    pub url: String,
    /// This site's bearer token; env `EMR_SHIP_TOKEN` overrides.
    #[serde(default)]
    pub token: Secret,
    /// A PEM bundle of extra CA certificates to trust (TLS verification is always on).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` is refused for anything but loopback unless this is true.
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Upper bound of one request's JSON before gzip (bytes); a larger single visit goes alone.
    #[serde(default = "default_batch_bytes")]
    pub max_batch_bytes: usize,
    /// TCP + TLS connect timeout (s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Whole-request timeout (s).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// First retry delay (ms); doubles per failure, with full jitter.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay (s).
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: u64,
}

fn default_batch_bytes() -> usize {
    DEFAULT_MAX_BATCH_BYTES
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_backoff_initial() -> u64 {
    500
}
fn default_backoff_max() -> u64 {
    300
}

/// Default listen address of the tailer's HTTP endpoint.
pub const DEFAULT_TAILER_LISTEN: &str = "127.0.0.1:9187";

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/status`; port 0 picks a free port.
    #[serde(default = "default_tailer_listen")]
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_tailer_listen(),
        }
    }
}

fn default_tailer_listen() -> SocketAddr {
    DEFAULT_TAILER_LISTEN
        .parse()
        .expect("valid default address")
}

impl TailerConfig {
    /// Reads, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = load(path)?;
        from_env(&mut config.source.url, "EMR_SOURCE_URL");
        from_env(&mut config.ship.token, "EMR_SHIP_TOKEN");
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sweep.time().is_none() {
            return Err(ConfigError::Invalid {
                field: "sweep.at",
                problem: "must be a local time HH:MM".into(),
            });
        }
        if self.sweep.days == 0 || self.sweep.rows_per_sec == 0 {
            return Err(ConfigError::Invalid {
                field: "sweep.days / sweep.rows_per_sec",
                problem: "must be at least 1".into(),
            });
        }
        if self.source.url.is_empty() {
            return invalid("source.url", "is empty: set it or EMR_SOURCE_URL");
        }
        if !self.source.url.expose().starts_with("mysql://") {
            return invalid("source.url", "must start with mysql://");
        }
        if !is_identifier(&self.source.database) {
            return invalid(
                "source.database",
                "must be a plain database name (letters, digits, _)",
            );
        }
        if self.source.server_id == 0 {
            return invalid("source.server_id", "must not be 0");
        }
        let start = self.source.start.as_str();
        if start != "current"
            && start != "earliest"
            && crate::position::BinlogPosition::parse(start).is_none()
        {
            return invalid("source.start", "must be current, earliest or FILE:POS");
        }
        if self.ship.token.is_empty() {
            return invalid("ship.token", "is empty: set it or EMR_SHIP_TOKEN");
        }
        check_ship_url(&self.ship)?;
        if self.ship.max_batch_bytes < 1024 {
            return invalid("ship.max_batch_bytes", "must be at least 1024");
        }
        if self.visits.ready_check_ms == 0 {
            return invalid("visits.ready_check_ms", "must be positive");
        }
        Ok(())
    }
}

fn check_ship_url(ship: &ShipConfig) -> Result<(), ConfigError> {
    let url = reqwest::Url::parse(&ship.url).map_err(|e| ConfigError::Invalid {
        field: "ship.url",
        problem: format!("is not a URL: {e}"),
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback || ship.allow_plain_http {
                Ok(())
            } else {
                invalid(
                    "ship.url",
                    "uses plain http to a remote host: use https (or set ship.allow_plain_http = true)",
                )
            }
        }
        other => invalid("ship.url", &format!("has unsupported scheme {other}")),
    }
}

fn invalid<T>(field: &'static str, problem: &str) -> Result<T, ConfigError> {
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

// ---------------------------------------------------------------------------------- receiver

/// `receiver.toml`: the central service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Listen address of the API, `/metrics` and `/healthz`; port 0 picks a free port.
    #[serde(default = "default_receiver_listen")]
    pub listen: SocketAddr,
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
    /// Input limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Materialized view refresh.
    #[serde(default)]
    pub views: ViewsConfig,
}

/// Default listen address of the receiver.
pub const DEFAULT_RECEIVER_LISTEN: &str = "127.0.0.1:8080";

fn default_receiver_listen() -> SocketAddr {
    DEFAULT_RECEIVER_LISTEN
        .parse()
        .expect("valid default address")
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
    /// Hex SHA-256 of the site's bearer token (`emr-stream hash-token` prints it).
    pub token_sha256: String,
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

/// `[views]`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// Wait this long after an apply before refreshing, so bursts refresh once (ms).
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        Self {
            debounce_ms: default_debounce(),
        }
    }
}

fn default_debounce() -> u64 {
    2_000
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
        if !self.mysql.url.expose().starts_with("mysql://") {
            return invalid(
                "mysql.url",
                "must be mysql://user:pass@host:port (or set EMR_RECEIVER_MYSQL_URL)",
            );
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
        for site in &self.sites {
            if site.token_sha256.len() != 64
                || !site.token_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return invalid(
                    "sites.token_sha256",
                    &format!(
                        "of site {} must be 64 hex digits (emr-stream hash-token)",
                        site.site_id
                    ),
                );
            }
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

    #[test]
    fn plain_http_only_to_loopback() {
        let mut ship: ShipConfig =
            toml::from_str("url = 'http://10.0.0.5/api/v1/stream'\ntoken = 't'").unwrap();
        assert!(check_ship_url(&ship).is_err());
        ship.url = "http://127.0.0.1:8080/api/v1/stream".into();
        assert!(check_ship_url(&ship).is_ok());
        ship.url = "https://cdr.example.org/api/v1/stream".into();
        assert!(check_ship_url(&ship).is_ok());
    }
}
