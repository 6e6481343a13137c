//! Shared harness of the integration tests: the real MariaDB and PostgreSQL that
//! `scripts/services.sh` starts, per-test databases, the real `emr-stream` binary as child
//! processes, and comparisons of the source with the central stores.
//!
//! A test that cannot reach its services fails with a message saying how to start them.
#![allow(dead_code)]

pub mod browser;
pub mod history;
pub mod prometheus;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, Row, Value};

pub const HOWTO: &str =
    "the integration tests need the private MariaDB and PostgreSQL: run `scripts/test.sh`, \
    or `scripts/services.sh start && eval \"$(scripts/services.sh env)\"` before `cargo test`";

/// The URL of the private MariaDB that logs binlog row metadata MINIMAL (fails, never skips,
/// when it is not set).
pub fn minimal_mysql_url() -> String {
    std::env::var("EMR_MYSQL_MINIMAL_URL")
        .unwrap_or_else(|_| panic!("EMR_MYSQL_MINIMAL_URL is not set: {HOWTO}"))
}

/// Connection URLs of the services.
pub struct Services {
    pub mysql_url: String,
    pub pg_url: String,
}

impl Services {
    /// From EMR_MYSQL_URL / EMR_PG_URL; panics with `HOWTO` when unset or unreachable.
    pub async fn get() -> Self {
        let mysql_url = std::env::var("EMR_MYSQL_URL")
            .unwrap_or_else(|_| panic!("EMR_MYSQL_URL is not set: {HOWTO}"));
        let pg_url = std::env::var("EMR_PG_URL")
            .unwrap_or_else(|_| panic!("EMR_PG_URL is not set: {HOWTO}"));
        let mut conn = mysql_async::Conn::new(
            Opts::from_url(&mysql_url).expect("EMR_MYSQL_URL is a mysql url"),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot reach MariaDB at EMR_MYSQL_URL ({e}): {HOWTO}"));
        conn.query_drop("SELECT 1").await.unwrap();
        conn.disconnect().await.ok();
        let (client, connection) = tokio_postgres::connect(&pg_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at EMR_PG_URL ({e}): {HOWTO}"));
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.unwrap();
        Self { mysql_url, pg_url }
    }

    /// A fresh PostgreSQL database for one test; returns its URL.
    pub async fn pg_database(&self, name: &str) -> String {
        let (client, connection) = tokio_postgres::connect(&self.pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .simple_query(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .unwrap();
        client
            .simple_query(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (base, _) = self.pg_url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }

    /// A pool on `database` of the MariaDB server.
    pub fn mysql_pool(&self, database: &str) -> Pool {
        Pool::new(
            OptsBuilder::from_opts(Opts::from_url(&self.mysql_url).unwrap())
                .db_name(Some(database)),
        )
    }

    /// The server's current binlog position `file:pos`.
    pub async fn binlog_position(&self) -> String {
        let mut conn = mysql_async::Conn::new(Opts::from_url(&self.mysql_url).unwrap())
            .await
            .unwrap();
        let row: Row = conn
            .query_first("SHOW MASTER STATUS")
            .await
            .unwrap()
            .unwrap();
        let file: String = row.get(0).unwrap();
        let pos: u64 = row.get(1).unwrap();
        conn.disconnect().await.ok();
        format!("{file}:{pos}")
    }
}

/// A unique lowercase name for this test's databases.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A replica server id unique among concurrently running tests: the process id and a counter
/// of this process (a time-based id let two tests of one binary collide now and then, and the
/// second tailer was then refused as "another replica is connected").
pub fn server_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000;
    // (pid % 4,000,000) * 1000 + 1999 stays below 2^32; the id is never the source's 1.
    1000 + (std::process::id() % 4_000_000) * 1000 + n
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Resident memory now (VmRSS) of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_emr-stream")
}

/// A running `emr-stream` child process whose stderr goes to a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub addr: String,
    /// `https` when the process said it serves TLS (`scheme="https"`), else `http`.
    pub scheme: &'static str,
}

impl Proc {
    /// Starts `emr-stream <args>` and waits for its "listening addr=" log line.
    pub fn start(args: &[&str], log: &Path, marker: &str) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        // Only lines of this process count (a restarted process appends to the same log).
        let offset = std::fs::metadata(log)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let child = Command::new(bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start emr-stream");
        let mut proc = Self {
            child,
            log: log.to_owned(),
            addr: String::new(),
            scheme: "http",
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = std::fs::read_to_string(log).unwrap_or_default();
            let text = all.get(offset..).unwrap_or("");
            if let Some(line) = text.lines().rev().find(|l| l.contains(marker)) {
                proc.addr = line.rsplit("addr=").next().unwrap().trim().to_owned();
                if line.contains("scheme=\"https\"") || line.contains("scheme=https") {
                    proc.scheme = "https";
                }
                return proc;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("emr-stream {args:?} exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "emr-stream {args:?} did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The URL of `path` on this process (`/metrics`, say), over TLS when it serves TLS.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        self.terminate();
    }

    /// SIGTERM; the exit status if the process ended within 20 s (else it is killed: `None`).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe_sigterm(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        None
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_sigterm(pid: u32) {
    Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .ok();
}

/// Sends SIGHUP (the receiver reloads its TLS certificate).
pub fn sighup(proc: &Proc) {
    Command::new("kill")
        .arg("-HUP")
        .arg(proc.child.id().to_string())
        .status()
        .ok();
}

/// The private CA and certificates `scripts/services.sh` made (fails when missing).
pub fn tls_dir() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("EMR_TLS_DIR").unwrap_or_else(|_| panic!("EMR_TLS_DIR is not set: {HOWTO}")),
    );
    assert!(
        dir.join("ca.pem").exists() && dir.join("expired.pem").exists(),
        "no certificates in {}: run scripts/services.sh certs",
        dir.display()
    );
    dir
}

/// Everything a test needs to run the whole system on its own databases.
pub struct Rig {
    pub services: Services,
    pub name: String,
    pub dir: PathBuf,
    pub source_db: String,
    pub mirror_db: String,
    pub pg_url: String,
    pub start: String,
    pub token: String,
    pub server_id: u32,
    /// `postgres.partitions` of the receivers this rig starts (0: plain tables).
    pub partitions: u32,
    /// Appended to the receivers' config (a `[tls]` section, say).
    pub receiver_extra: String,
    /// Tailers ship over HTTPS trusting this CA file (plain HTTP when `None`).
    pub ship_ca: Option<PathBuf>,
    /// Receivers and tailers reach the databases over TLS only, as the `emr_tls` user (which
    /// may not connect in plain), verifying against this CA file.
    pub stores_ca: Option<PathBuf>,
    /// The MySQL server URL (no database) and PostgreSQL URL receivers use instead of the
    /// services' (a proxy in front of them, say).
    pub receiver_urls: Option<(String, String)>,
    /// The source URL tailers use instead of the services' (a proxy in front of it, say).
    pub source_url: Option<String>,
}

pub const SITE: i64 = 101;

/// The token of the tests' reader with scope `patients` (every receiver a rig starts has it).
pub const READER_PATIENTS: &str = "test-reader-patients";
/// The token of the tests' reader with scope `aggregate`.
pub const READER_AGGREGATE: &str = "test-reader-counts";

/// The `[[readers]]` of a test receiver: one of each scope.
pub fn readers_toml() -> String {
    let hash = emr_stream::receiver::auth::hash_token;
    format!(
        "[[readers]]\nname = \"lists\"\nscope = \"patients\"\ntoken_sha256 = \"{}\"\n\
         [[readers]]\nname = \"counts\"\nscope = \"aggregate\"\ntoken_sha256 = \"{}\"\n",
        hash(READER_PATIENTS),
        hash(READER_AGGREGATE),
    )
}

/// An HTTP client that trusts the private CA (for receivers serving TLS).
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

fn client_builder() -> reqwest::ClientBuilder {
    let ca = std::fs::read(tls_dir().join("ca.pem")).unwrap();
    reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
}

/// An HTTP client that reads reports as the `patients` reader (trusting the private CA).
pub fn reader_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {READER_PATIENTS}").parse().unwrap(),
    );
    client_builder().default_headers(headers).build().unwrap()
}

impl Rig {
    /// Creates the test's databases and loads the fixture EMR schema into the source.
    pub async fn new(prefix: &str) -> Self {
        let services = Services::get().await;
        let name = unique(prefix);
        let dir = std::env::temp_dir().join(format!("emr-stream-tests/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let pg_url = services.pg_database(&name).await;
        let start = services.binlog_position().await;
        let source_db = format!("{name}_src");
        emr_stream::simulate::init_schema(&services.mysql_url, &source_db)
            .await
            .expect("load EMR schema");
        // Every link encrypted and verified by default, as in production (`plain()` opts out).
        let tls = tls_dir();
        Self {
            receiver_extra: format!(
                "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                tls.join("server.pem").display(),
                tls.join("server.key").display()
            ),
            ship_ca: Some(tls.join("ca.pem")),
            stores_ca: Some(tls.join("ca.pem")),
            mirror_db: format!("{name}_mirror"),
            source_db,
            pg_url,
            start,
            token: format!("token-{name}"),
            server_id: server_id(),
            partitions: 0,
            receiver_urls: None,
            source_url: None,
            services,
            name,
            dir,
        }
    }

    /// The same rig with every link plain (a test that reads the wire, or drives a browser
    /// or Prometheus that do not trust the private CA).
    pub fn plain(mut self) -> Self {
        self.receiver_extra.clear();
        self.ship_ca = None;
        self.stores_ca = None;
        self
    }

    /// `url` as the processes this rig starts reach it: as `emr_tls` (TLS only) when the rig
    /// encrypts its store links.
    pub fn store_url(&self, url: &str) -> String {
        match self.stores_ca {
            Some(_) => url.replacen("://emr:emr@", "://emr_tls:emr@", 1),
            None => url.to_owned(),
        }
    }

    /// Waits until no patient of any site waits in the IDS queue (a batch too big to
    /// recompute in its transaction, a rebuild).
    pub async fn wait_ids_idle(&self, timeout: Duration) {
        let (client, connection) = tokio_postgres::connect(&self.pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let queued: i64 = client
                .query_one("SELECT count(*) FROM ids.dirty_patient", &[])
                .await
                .unwrap()
                .get(0);
            if queued == 0 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queued} patients still queued for IDS recomputation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes receiver.toml and starts the receiver on a free port.
    pub fn receiver(&self) -> Proc {
        self.receiver_at("127.0.0.1:0")
    }

    /// Starts the receiver on `listen` (to bring it back on the same address).
    pub fn receiver_at(&self, listen: &str) -> Proc {
        self.receiver_with(listen, &mapping_path())
    }

    /// Starts the receiver on `listen` with another mapping file.
    pub fn receiver_with(&self, listen: &str, mapping: &str) -> Proc {
        self.receiver_configured(listen, mapping, &readers_toml())
    }

    /// Starts the receiver on `listen` with another mapping file and these `[[readers]]`.
    pub fn receiver_configured(&self, listen: &str, mapping: &str, readers: &str) -> Proc {
        let hash = emr_stream::receiver::auth::hash_token(&self.token);
        let config = format!(
            "listen = \"{listen}\"\nmapping = \"{mapping}\"\n[mysql]\nurl = \"{my}\"\ndatabase = \"{db}\"\n[postgres]\nurl = \"{pg}\"\npartitions = {partitions}\n\
             [[sites]]\nsite_id = {SITE}\ntoken_sha256 = \"{hash}\"\n{readers}[ids]\nqueue_poll_ms = 100\n{extra}",
            extra = self.receiver_extra,
            partitions = self.partitions,
            my = self
                .receiver_urls
                .as_ref()
                .map(|u| u.0.clone())
                .unwrap_or_else(|| self.store_url(&self.services.mysql_url)),
            db = self.mirror_db,
            pg = self
                .receiver_urls
                .as_ref()
                .map(|u| u.1.clone())
                .unwrap_or_else(|| self.store_url(&self.pg_url)),
        );
        let config = match &self.stores_ca {
            Some(ca) => {
                let ca = format!("ca_file = \"{}\"\n", ca.display());
                config
                    .replace("[mysql]\n", &format!("[mysql]\n{ca}"))
                    .replace("[postgres]\n", &format!("[postgres]\n{ca}"))
            }
            None => config,
        };
        let path = self.dir.join("receiver.toml");
        std::fs::write(&path, config).unwrap();
        Proc::start(
            &["receiver", "--config", path.to_str().unwrap()],
            &self.dir.join("receiver.log"),
            "receiver listening",
        )
    }

    /// A copy of the mapping without `person_attribute`: a receiver using it answers 422 to
    /// every visit carrying such a row (every registration), which makes dead letters.
    pub fn mapping_without_person_attribute(&self) -> String {
        let narrow = self.dir.join("mappings");
        std::fs::create_dir_all(&narrow).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        for f in [
            "mirror-mysql.sql",
            "cdr-postgres.sql",
            "ids-tables.sql",
            "ids-reports.sql",
        ] {
            std::fs::copy(src.join(f), narrow.join(f)).unwrap();
        }
        let full = std::fs::read_to_string(src.join("openmrs.toml")).unwrap();
        let cut = full.replace("[tables.person_attribute]\npk = [\"person_attribute_id\"]\nrole = \"demographics\"\npatient = \"person_id\"\n", "");
        assert_ne!(cut, full, "the mapping's person_attribute entry changed");
        let path = narrow.join("openmrs.toml");
        std::fs::write(&path, cut).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Writes tailer.toml pointing at `receiver_addr` and starts the tailer.
    pub fn tailer(&self, receiver_addr: &str) -> Proc {
        self.tailer_with(receiver_addr, "", "")
    }

    /// Like `tailer`, with extra lines in its `[state]` section and after its `[ship]` one.
    pub fn tailer_with(&self, receiver_addr: &str, state_extra: &str, ship_extra: &str) -> Proc {
        let config = format!(
            "mapping = \"{mapping}\"\n[source]\nurl = \"{my}\"\ndatabase = \"{db}\"\nserver_id = {sid}\nstart = \"{start}\"\nheartbeat_secs = 1\n\
             [state]\ndir = \"{state}\"\n{state_extra}\n[visits]\nsettle_ms = 300\nidle_timeout_secs = 2\nready_check_ms = 100\n\
             [ship]\nurl = \"{scheme}://{receiver_addr}/api/v1/stream\"\ntoken = \"{token}\"\nbackoff_initial_ms = 100\nbackoff_max_secs = 2\n{ca}{ship_extra}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n",
            mapping = mapping_path(),
            my = self
                .source_url
                .clone()
                .unwrap_or_else(|| self.store_url(&self.services.mysql_url)),
            db = self.source_db,
            sid = self.server_id,
            start = self.start,
            state = self.dir.join("state").display(),
            token = self.token,
            scheme = if self.ship_ca.is_some() { "https" } else { "http" },
            ca = self
                .ship_ca
                .as_ref()
                .map(|ca| format!("ca_file = \"{}\"\n", ca.display()))
                .unwrap_or_default(),
        );
        let config = match &self.stores_ca {
            Some(ca) => config.replace(
                "[source]\n",
                &format!("[source]\nca_file = \"{}\"\n", ca.display()),
            ),
            None => config,
        };
        let path = self.dir.join("tailer.toml");
        std::fs::write(&path, config).unwrap();
        Proc::start(
            &["tailer", "--config", path.to_str().unwrap()],
            &self.dir.join("tailer.log"),
            "tailer http listening",
        )
    }

    /// Runs the simulator on the source database.
    /// A simulated clinic whose late paper records are at most 31 days late (the sweep
    /// window a checkpoint reset prints: records typed in later than that during a gap are
    /// beyond what the sweep reads).
    pub fn simulate(&self, patients: u32, days: u32, seed: u64, pace_ms: u64) -> Child {
        self.simulate_with(
            patients,
            days,
            seed,
            pace_ms,
            &["--max-backdate-days", "31"],
        )
    }

    /// A simulated clinic with `extra` arguments (`&[]`: its whole history, returns after
    /// interruptions of months entered with their old dispensation).
    pub fn simulate_with(
        &self,
        patients: u32,
        days: u32,
        seed: u64,
        pace_ms: u64,
        extra: &[&str],
    ) -> Child {
        Command::new(bin())
            .args([
                "simulate",
                "--mysql",
                &self.services.mysql_url,
                "--database",
                &self.source_db,
                "--patients",
                &patients.to_string(),
                "--days",
                &days.to_string(),
                "--seed",
                &seed.to_string(),
                "--pace-ms",
                &pace_ms.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start simulate")
    }

    /// Waits until the tailer has read up to the server's current position and has no open
    /// visit and an empty outbox.
    pub async fn wait_quiet(&self, tailer: &Proc, timeout: Duration) -> serde_json::Value {
        let target = self.services.binlog_position().await;
        let deadline = Instant::now() + timeout;
        let client = reqwest::Client::new();
        loop {
            let status: Option<serde_json::Value> = match client
                .get(format!("http://{}/status", tailer.addr))
                .send()
                .await
            {
                Ok(r) => r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok()),
                Err(_) => None,
            };
            if let Some(s) = &status {
                let at = s["checkpoint"].as_str().unwrap_or("");
                if position_ge(at, &target) && s["open_visits"] == 0 && s["outbox_visits"] == 0 {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "tailer not quiet after {timeout:?} (target {target}): {status:?}\n{}",
                std::fs::read_to_string(&tailer.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sum of a process's metric lines that start with `prefix` (0 when it cannot be read).
pub async fn metric(proc: &Proc, prefix: &str) -> f64 {
    let text = match client().get(proc.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The tailer's `/status` as JSON.
pub async fn tailer_status(tailer: &Proc) -> serde_json::Value {
    let body = reqwest::get(format!("http://{}/status", tailer.addr))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// `emr-stream ids verify` with the rig's receiver config finds the IDS tables equal to
/// their definitions.
pub fn assert_ids_verify(rig: &Rig) {
    let verify = emr(&[
        "ids",
        "verify",
        "--config",
        rig.dir.join("receiver.toml").to_str().unwrap(),
    ]);
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

pub fn position_ge(a: &str, b: &str) -> bool {
    let parse = |p: &str| -> Option<(u64, u64)> {
        let (file, pos) = p.rsplit_once(':')?;
        Some((file.rsplit_once('.')?.1.parse().ok()?, pos.parse().ok()?))
    };
    matches!((parse(a), parse(b)), (Some(x), Some(y)) if x >= y)
}

pub fn mapping_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("mappings/openmrs.toml")
        .display()
        .to_string()
}

/// A fresh PostgreSQL database named after `prefix` with the receiver's schema (cdr and IDS),
/// and a pool of `size` connections to it.
pub async fn pg_store(prefix: &str, size: usize) -> deadpool_postgres::Pool {
    let services = Services::get().await;
    let url = services.pg_database(&unique(prefix)).await;
    let pool = emr_stream::receiver::pg::pool(&url, size).unwrap();
    let mapping = emr_stream::mapping::Mapping::load(Path::new(&mapping_path())).unwrap();
    emr_stream::receiver::apply::PgStore::connect(
        pool.clone(),
        &mapping,
        emr_stream::receiver::apply::PgOptions::default(),
    )
    .await
    .unwrap();
    pool
}

/// Opens a transaction on `client` that holds `site`'s IDS lock, as one of the site's writers
/// (an apply) does until it commits.
pub async fn hold_site_lock(client: &tokio_postgres::Client, site: i64) {
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({}, {site})",
            emr_stream::receiver::ids::SITE_LOCK
        ))
        .await
        .unwrap();
}

/// The mapped tables and their primary keys.
pub fn mapped_tables() -> BTreeMap<String, Vec<String>> {
    let mapping = emr_stream::mapping::Mapping::load(Path::new(&mapping_path())).unwrap();
    mapping.tables.into_iter().map(|(k, v)| (k, v.pk)).collect()
}

/// Columns of `table` in the mirror (the shipped ones, without bookkeeping).
pub async fn mirror_columns(pool: &Pool, db: &str, table: &str) -> Vec<String> {
    let mut conn = pool.get_conn().await.unwrap();
    let cols: Vec<String> = conn
        .exec("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", (db, table))
        .await
        .unwrap();
    cols.into_iter()
        .filter(|c| !["site_id", "lsn", "_overflow"].contains(&c.as_str()))
        .collect()
}

/// A MySQL value as the text PostgreSQL would print for the same column.
pub fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(f) => Some(f.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Date(y, m, d, h, i, s, us) => Some(if *us > 0 {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}.{us:06}")
        } else {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}")
        }),
        Value::Time(neg, d, h, i, s, _) => Some(format!(
            "{}{:02}:{i:02}:{s:02}",
            if *neg { "-" } else { "" },
            *d * 24 + *h as u32
        )),
    }
}

fn same_text(source: Option<String>, pg: Option<String>) -> bool {
    match (source, pg) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a == b
                || (b.len() == 10 && a.starts_with(&b) && a[10..].trim() == "00:00:00")
                || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

/// Proves that for every mapped table the mirror's rows (for `site`) and cdr's rows equal
/// the source's, column by column. Returns the number of rows compared per store.
pub async fn assert_stores_equal_source(rig: &Rig) -> usize {
    let source = rig.services.mysql_pool(&rig.source_db);
    let mirror = rig.services.mysql_pool(&rig.mirror_db);
    let (pg, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut compared = 0;
    for (table, pk) in mapped_tables() {
        let cols = mirror_columns(&mirror, &rig.mirror_db, &table).await;
        let col_list = cols
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(",");
        let order = pk.join(",");
        let src_rows: Vec<Row> = source
            .get_conn()
            .await
            .unwrap()
            .query(format!("SELECT {col_list} FROM `{table}` ORDER BY {order}"))
            .await
            .unwrap();
        let mir_rows: Vec<Row> = mirror
            .get_conn()
            .await
            .unwrap()
            .query(format!(
                "SELECT {col_list} FROM `{table}` WHERE site_id = {SITE} ORDER BY {order}"
            ))
            .await
            .unwrap();
        let src: Vec<Vec<Value>> = src_rows.into_iter().map(Row::unwrap).collect();
        let mir: Vec<Vec<Value>> = mir_rows.into_iter().map(Row::unwrap).collect();
        assert_eq!(
            src.len(),
            mir.len(),
            "table {table}: source has {} rows, mirror {}",
            src.len(),
            mir.len()
        );
        for (a, b) in src.iter().zip(&mir) {
            assert_eq!(
                a, b,
                "table {table}: mirror row differs from source (columns {cols:?})"
            );
        }
        let pg_cols = cols
            .iter()
            .map(|c| format!("\"{c}\"::text"))
            .collect::<Vec<_>>()
            .join(",");
        let pg_order = pk
            .iter()
            .map(|c| format!("t.\"{c}\""))
            .collect::<Vec<_>>()
            .join(",");
        let pg_rows = pg.query(&format!("SELECT {pg_cols} FROM cdr.\"{table}\" AS t WHERE site_id = {SITE} ORDER BY {pg_order}"), &[]).await.unwrap();
        assert_eq!(
            src.len(),
            pg_rows.len(),
            "table {table}: source has {} rows, cdr {}",
            src.len(),
            pg_rows.len()
        );
        for (a, b) in src.iter().zip(&pg_rows) {
            for (i, col) in cols.iter().enumerate() {
                let pg_value: Option<String> = b.get(i);
                assert!(
                    same_text(as_text(&a[i]), pg_value.clone()),
                    "table {table} column {col}: source {:?} cdr {pg_value:?}",
                    as_text(&a[i])
                );
            }
        }
        compared += src.len();
    }
    compared
}

/// Visits per day computed directly on the source: distinct patient-days with non-voided
/// encounters of patients that are not voided (nor their person).
pub async fn source_visits_per_day(rig: &Rig) -> Vec<(String, i64)> {
    let source = rig.services.mysql_pool(&rig.source_db);
    source
        .get_conn()
        .await
        .unwrap()
        .query("SELECT CAST(DATE(e.encounter_datetime) AS CHAR), COUNT(DISTINCT e.patient_id) FROM encounter e \
                JOIN patient p ON p.patient_id = e.patient_id AND p.voided = 0 \
                JOIN person pe ON pe.person_id = e.patient_id AND pe.voided = 0 \
                WHERE e.voided = 0 GROUP BY DATE(e.encounter_datetime) ORDER BY 1")
        .await
        .unwrap()
}

/// The receiver's visits report, retried until it equals `expected` or `timeout` passes.
pub async fn wait_report_equals(
    receiver: &Proc,
    expected: &[(String, i64)],
    timeout: Duration,
) -> serde_json::Value {
    let start = expected
        .first()
        .map(|e| e.0.clone())
        .unwrap_or_else(|| "2000-01-01".into());
    let end = expected
        .last()
        .map(|e| e.0.clone())
        .unwrap_or_else(|| "2000-01-01".into());
    let url = format!(
        "{}/api/v1/reports/visits?site_id={SITE}&start_date={start}&end_date={end}&detail=days",
        receiver.url("")
    );
    let deadline = Instant::now() + timeout;
    loop {
        let report: serde_json::Value = serde_json::from_slice(
            &reader_client()
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap(),
        )
        .unwrap();
        let got: Vec<(String, i64)> = report["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["visit_date"].as_str().unwrap().to_owned(),
                    r["visits"].as_i64().unwrap(),
                )
            })
            .collect();
        if got == expected {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "visits report {got:?} != source {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every visit (patient, program, day of a non-voided or voided encounter) of the source has
/// reached the receiver's ledger of visit versions.
pub async fn assert_every_visit_received(rig: &Rig) {
    let source = rig.services.mysql_pool(&rig.source_db);
    let keys: Vec<String> = source
        .get_conn()
        .await
        .unwrap()
        .query(format!(
            "SELECT DISTINCT CONCAT('{SITE}:', patient_id, ':', COALESCE(program_id, 1), ':', DATE(encounter_datetime)) FROM encounter"
        ))
        .await
        .unwrap();
    let (pg, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let got: std::collections::HashSet<String> = pg
        .query(
            "SELECT stream_key FROM cdr._stream_visits WHERE site_id = $1",
            &[&(SITE as i32)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !got.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} source visits never reached the receiver: {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(5)]
    );
}

/// A TCP proxy between the tailer and the receiver that refuses connections, loses requests,
/// loses answers (after the receiver applied the batch) and delays answers, at random, chunk
/// by chunk (so a keep-alive connection meets faults too). Loopback only; ends when dropped.
pub struct FaultProxy {
    pub addr: String,
    /// Connections accepted and faults injected so far.
    pub stats: Arc<[AtomicU64; 2]>,
    task: tokio::task::JoinHandle<()>,
}

/// One roll of the proxy's dice, 0..100 (xorshift; deterministic sequence).
fn roll(state: &AtomicU64) -> u64 {
    let mut x = state.load(Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Relaxed);
    x % 100
}

impl FaultProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stats: Arc<[AtomicU64; 2]> = Arc::new(Default::default());
        let dice = Arc::new(AtomicU64::new(0x2545_f491_4f6c_dd1d));
        let counters = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                counters[0].fetch_add(1, Relaxed);
                tokio::spawn(proxy_connection(
                    client,
                    upstream.clone(),
                    dice.clone(),
                    counters.clone(),
                ));
            }
        });
        Self { addr, stats, task }
    }
}

async fn proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: String,
    dice: Arc<AtomicU64>,
    stats: Arc<[AtomicU64; 2]>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fault = || stats[1].fetch_add(1, Relaxed);
    if roll(&dice) < 10 {
        fault();
        return; // connection refused
    }
    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if roll(&dice) < 5 {
                fault();
                return; // the request is lost on the way
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let r = roll(&dice);
            tokio::time::sleep(Duration::from_millis(r * 4)).await;
            if r < 15 {
                fault();
                return; // the receiver answered, the answer is lost
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `emr-stream <args>` to completion.
/// Runs the `emr-stream sweep ...` line a `checkpoint reset` printed in `said`; its summary.
pub fn run_printed_sweep(said: &str) -> serde_json::Value {
    let line = said
        .lines()
        .find(|l| l.trim_start().starts_with("emr-stream sweep"))
        .unwrap_or_else(|| panic!("the reset printed no sweep: {said}"));
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let sweep = emr(&args);
    assert!(
        sweep.status.success(),
        "{}",
        String::from_utf8_lossy(&sweep.stderr)
    );
    serde_json::from_slice(&sweep.stdout).unwrap()
}

pub fn emr(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run emr-stream")
}

/// The server's current binlog position.
pub async fn position_of(conn: &mut mysql_async::Conn) -> emr_stream::position::BinlogPosition {
    let row: Row = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap();
    emr_stream::position::BinlogPosition {
        file: row.get(0).unwrap(),
        pos: row.get(1).unwrap(),
    }
}

/// Reads `reader` until it has passed `end`, collecting (table, op, image) of every row.
pub async fn read_until(
    reader: &mut emr_stream::tailer::binlog::BinlogReader,
    end: &emr_stream::position::BinlogPosition,
    out: &mut Vec<(String, &'static str, serde_json::Value)>,
) {
    use emr_stream::tailer::binlog::Step;
    use emr_stream::wire::Op;
    loop {
        let step = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("binlog read timed out")
            .unwrap()
            .unwrap();
        match step {
            Step::Rows(rows) => {
                for r in rows {
                    out.push((
                        r.table,
                        if r.op == Op::Upsert {
                            "upsert"
                        } else {
                            "delete"
                        },
                        serde_json::Value::Object(r.image.to_map()),
                    ));
                }
            }
            Step::Commit { position, .. } if position >= *end => return,
            _ => {}
        }
    }
}

/// A new database on the server at `url`: its connection options, an admin connection, its
/// name, and the binlog position just before it was created.
pub async fn fresh_database(
    url: &str,
    prefix: &str,
) -> (
    Opts,
    mysql_async::Conn,
    String,
    emr_stream::position::BinlogPosition,
) {
    let db = unique(prefix);
    let opts = Opts::from_url(url).unwrap();
    let mut admin = mysql_async::Conn::new(opts.clone())
        .await
        .unwrap_or_else(|e| panic!("cannot reach {url} ({e}): {HOWTO}"));
    admin
        .query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let start = position_of(&mut admin).await;
    (opts, admin, db, start)
}

/// A TCP proxy in front of a database server that can be taken down (new connections are
/// dropped, open ones cut) and brought back, or armed to cut the connection that sends the
/// next `COMMIT` (the server never sees it: it rolls the transaction back) and then stay down,
/// as a server that dies in the middle of a batch. Loopback only; ends when dropped.
pub struct CutProxy {
    pub addr: String,
    state: Arc<CutState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct CutState {
    down: std::sync::atomic::AtomicBool,
    armed: std::sync::atomic::AtomicBool,
    cuts: AtomicU64,
    open: std::sync::Mutex<Vec<tokio::task::AbortHandle>>,
}

impl CutState {
    fn go_down(&self) {
        self.down.store(true, Relaxed);
        for conn in self.open.lock().unwrap().drain(..) {
            conn.abort();
        }
    }
}

impl CutProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state: Arc<CutState> = Arc::default();
        let (shared, upstream) = (state.clone(), upstream.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if shared.down.load(Relaxed) {
                    drop(client);
                    continue;
                }
                let conn = tokio::spawn(cut_proxy_connection(
                    client,
                    upstream.clone(),
                    shared.clone(),
                ));
                let mut open = shared.open.lock().unwrap();
                open.retain(|c| !c.is_finished());
                open.push(conn.abort_handle());
            }
        });
        Self { addr, state, task }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        self.state.go_down();
    }

    /// Forwards again.
    pub fn up(&self) {
        self.state.armed.store(false, Relaxed);
        self.state.down.store(false, Relaxed);
    }

    /// The next `COMMIT` sent through is lost with its connection, and the proxy goes down.
    pub fn cut_at_next_commit(&self) {
        self.state.armed.store(true, Relaxed);
    }

    /// Whether the proxy refuses connections (after `down`, or a cut COMMIT).
    pub fn is_down(&self) -> bool {
        self.state.down.load(Relaxed)
    }

    /// How many COMMITs were cut.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Relaxed)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.go_down();
    }
}

async fn cut_proxy_connection(
    mut client: tokio::net::TcpStream,
    upstream: String,
    state: Arc<CutState>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if state.armed.load(Relaxed) && buf[..n].windows(6).any(|w| w == b"COMMIT") {
                state.armed.store(false, Relaxed);
                state.cuts.fetch_add(1, Relaxed);
                state.go_down();
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
