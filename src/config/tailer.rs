//! `tailer.toml`: the facility sidecar's configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{default_mapping, from_env, invalid, is_identifier, load, ConfigError, Secret};

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
    /// For an EMR database on another host: the CA (PEM) that signed its certificate; the
    /// connection is then TLS only, verified against this CA and the URL's host name.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
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
    /// Capture pauses while the state disk has less free space than this (MiB), and resumes
    /// by itself when it has it again; the binlog waits on the source meanwhile.
    #[serde(default = "default_min_free_mib")]
    pub min_free_mib: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: default_state_dir(),
            cache_mib: DEFAULT_CACHE_MIB,
            min_free_mib: DEFAULT_MIN_FREE_MIB,
        }
    }
}

/// Default free space the state disk keeps before capture pauses.
pub const DEFAULT_MIN_FREE_MIB: u64 = 256;

fn default_min_free_mib() -> u64 {
    DEFAULT_MIN_FREE_MIB
}

/// Default sled page cache: with 8 MiB a 169k-row backlog's peak RSS was 104.6–113 MiB, against
/// 117–126 MiB with 32, capture and CPU per row within the noise (scripts/bench-e2e.sh; README).
pub const DEFAULT_CACHE_MIB: u64 = 8;

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
    /// After a closing encounter type commits, wait this long for more rows (ms). This and
    /// the idle timeout count on the tailer's clock and on the binlog's, whichever shows
    /// more (`visit::is_ready`).
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
pub const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;

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
    /// Batches posted before the first is answered (1 to 4): the receiver parses and applies
    /// the next while it finishes the one before.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
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
fn default_in_flight() -> usize {
    2
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
        if !(1..=4).contains(&self.ship.in_flight) {
            return invalid("ship.in_flight", "must be 1 to 4");
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

#[cfg(test)]
mod tests {
    use super::*;

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
