//! A private Prometheus (Debian's package, `scripts/services.sh prometheus`) for the ops
//! tests: the example scrape config with its targets pointed at the processes under test and
//! its intervals shortened, the example alert rules loaded, queried over its HTTP API. A test
//! fails, never skips, when the binary is missing.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// The shipped ops examples.
pub fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ops")
}

pub fn require(exe: &str) {
    assert!(
        Path::new(exe).exists(),
        "{exe} is missing: run `scripts/services.sh prometheus` (installs Debian's prometheus, with promtool)"
    );
}

/// `scripts/ops/prometheus.yml` with the receiver job scraping `receiver` and the tailer job
/// scraping `tailer`, every `interval` seconds.
pub fn scrape_config(receiver: &str, tailer: &str, interval: u32) -> String {
    let text = std::fs::read_to_string(ops_dir().join("prometheus.yml")).unwrap();
    let mut job = String::new();
    let mut out = Vec::new();
    let mut rewritten = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- job_name:") {
            job = name.trim().to_owned();
        }
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("scrape_interval:") {
            out.push(format!("{indent}scrape_interval: {interval}s"));
        } else if let Some(rest) = trimmed.strip_prefix("- targets:") {
            let target = match job.as_str() {
                "emr-receiver" => receiver,
                "emr-tailer" => tailer,
                other => panic!("unknown job {other} in the example scrape config"),
            };
            let tail = rest.split_once(']').map_or("", |(_, t)| t);
            out.push(format!("{indent}- targets: [\"{target}\"]{tail}"));
            rewritten += 1;
        } else {
            out.push(line.to_owned());
        }
    }
    assert_eq!(
        rewritten, 2,
        "the example names a receiver and a tailer job"
    );
    // rules are evaluated as often as targets are scraped
    out.join("\n").replacen(
        "global:\n",
        &format!("global:\n  evaluation_interval: {interval}s\n"),
        1,
    )
}

/// A running Prometheus.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config` (written into `dir` beside a copy of the alert rules).
    pub async fn start(dir: &Path, config: &str) -> Self {
        require(PROMETHEUS);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        std::fs::copy(
            ops_dir().join("emr-stream-alerts.yml"),
            dir.join("emr-stream-alerts.yml"),
        )
        .unwrap();
        let addr = super::free_addr();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self {
            child,
            addr,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = prometheus
                .client
                .get(format!("http://{}/-/ready", prometheus.addr))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not become ready: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        prometheus
    }

    /// `GET /api/v1/{path}`'s `data`, failing on an error answer.
    pub async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = self
            .client
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(query)
            .send()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The result vector of an instant query.
    pub async fn query(&self, promql: &str) -> Vec<Value> {
        self.api("query", &[("query", promql)]).await["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
