//! What the people who run it see: every metric of the list in a scrape after an end-to-end
//! run, and in a real Prometheus scraping both processes with the example config; the alert
//! rules checked and unit-tested by promtool; readiness; and both status pages rendered in
//! headless Chromium (screenshots saved under `target/screenshots/`), including a dead letter
//! retried with the page's button.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::prometheus::{self as prom, Prometheus};
use common::{Proc, Rig, SITE};

/// `(name, labels) -> value` of a Prometheus text scrape.
async fn scrape(addr: &str) -> BTreeMap<(String, String), f64> {
    let text = get(&format!("http://{addr}/metrics")).await.1;
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        out.insert((name.to_owned(), labels.to_owned()), value);
    }
    out
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The values of `name` whose labels contain every `want` (e.g. `table="obs"`).
fn values(m: &BTreeMap<(String, String), f64>, name: &str, want: &[&str]) -> Vec<f64> {
    m.iter()
        .filter(|((n, l), _)| n == name && want.iter().all(|w| l.contains(w)))
        .map(|(_, v)| *v)
        .collect()
}

/// The one value of `name` with `want` labels; fails naming the metric when it is missing.
fn one(m: &BTreeMap<(String, String), f64>, name: &str, want: &[&str]) -> f64 {
    let v = values(m, name, want);
    assert!(
        !v.is_empty(),
        "metric {name}{want:?} is missing from the scrape: {:?}",
        m.keys()
            .map(|k| &k.0)
            .collect::<std::collections::BTreeSet<_>>()
    );
    v.iter().sum()
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_metric_is_in_a_scrape_after_an_end_to_end_run() {
    // GIVEN a receiver and a tailer whose nightly sweep is due in 20 s
    // (plain: the example scrape config and Prometheus speak HTTP to the test's processes)
    let rig = Rig::new("metrics").await.plain();
    let receiver = rig.receiver();
    let at = (chrono::Local::now() + chrono::Duration::seconds(20)).format("%H:%M:%S");
    let tailer = rig.tailer_with(
        &receiver.addr,
        "",
        &format!("\n[sweep]\nat = \"{at}\"\ndays = 3\nrows_per_sec = 20000\n"),
    );
    // WHEN a clinic works for two days and everything has shipped, and the sweep has run
    assert!(rig.simulate(30, 2, 11, 0).wait().unwrap().success());
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    wait_for("the nightly sweep", Duration::from_secs(60), async || {
        values(&scrape(&tailer.addr).await, "emr_sweep_runs_total", &[]) == [1.0]
    })
    .await;
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;

    // THEN the tailer's scrape carries every listed series, with plausible values
    let t = scrape(&tailer.addr).await;
    assert!(one(&t, "emr_tailer_binlog_events_total", &[]) > 100.0);
    for op in ["insert", "update"] {
        let rows = one(
            &t,
            "emr_tailer_binlog_rows_total",
            &[&format!("op=\"{op}\"")],
        );
        assert!(rows > 0.0, "{op} rows: {rows}");
    }
    assert!(
        one(
            &t,
            "emr_tailer_binlog_rows_total",
            &["table=\"encounter\"", "op=\"insert\""]
        ) > 0.0
    );
    assert!(one(&t, "emr_tailer_binlog_rows_total", &["table=\"obs\""]) > 50.0);
    let lag = one(&t, "emr_tailer_lag_seconds", &[]);
    assert!((0.0..120.0).contains(&lag), "lag {lag}");
    assert!(one(&t, "emr_tailer_checkpoint_file_sequence", &[]) >= 1.0);
    assert!(one(&t, "emr_tailer_checkpoint_position_bytes", &[]) > 4.0);
    assert_eq!(one(&t, "emr_tailer_open_visits", &[]), 0.0);
    assert_eq!(one(&t, "emr_outbox_visits", &[]), 0.0);
    assert_eq!(one(&t, "emr_outbox_bytes", &[]), 0.0);
    assert_eq!(one(&t, "emr_outbox_oldest_age_seconds", &[]), 0.0);
    let stored = one(&t, "emr_ship_requests_total", &["outcome=\"stored\""]);
    assert!(stored >= 1.0);
    for outcome in ["retry", "rejected", "duplicate"] {
        one(
            &t,
            "emr_ship_requests_total",
            &[&format!("outcome=\"{outcome}\"")],
        );
    }
    let shipped = one(&t, "emr_ship_request_duration_seconds_count", &[]);
    assert!(
        shipped >= stored,
        "{shipped} durations for {stored} requests"
    );
    assert!(one(&t, "emr_ship_request_duration_seconds_sum", &[]) > 0.0);
    assert!(
        values(
            &t,
            "emr_ship_request_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ) == [shipped]
    );
    let (raw, gz) = (
        one(&t, "emr_ship_bytes_raw_total", &[]),
        one(&t, "emr_ship_bytes_compressed_total", &[]),
    );
    assert!(raw > gz && gz > 0.0, "raw {raw} compressed {gz}");
    assert!(one(&t, "emr_ship_visits_total", &[]) >= 30.0);
    assert_eq!(one(&t, "emr_dead_letters", &[]), 0.0);
    assert_eq!(one(&t, "emr_tailer_capture_paused", &[]), 0.0);
    assert!(one(&t, "emr_tailer_state_free_bytes", &[]) > 1e6);
    assert_eq!(one(&t, "emr_sweep_runs_total", &[]), 1.0);
    assert!(one(&t, "emr_sweep_visits_checked_total", &[]) >= 30.0);
    let resent = one(&t, "emr_sweep_visits_resent_total", &[]);
    assert!(resent < one(&t, "emr_sweep_visits_checked_total", &[]));

    // AND so does the receiver's
    let r = scrape(&receiver.addr).await;
    assert!(one(&r, "emr_receiver_requests_total", &["status=\"200\""]) >= stored);
    for store in ["postgres", "mysql"] {
        let s = format!("store=\"{store}\"");
        assert!(
            one(
                &r,
                "emr_receiver_rows_applied_total",
                &["table=\"obs\"", &s]
            ) > 50.0
        );
        assert!(one(&r, "emr_receiver_apply_duration_seconds_count", &[&s]) >= 1.0);
    }
    // the IDS tables were maintained in the apply transactions, nothing waits in the queue,
    // and the background verifier found them equal to their definitions
    assert!(
        one(
            &r,
            "emr_ids_maintain_duration_seconds_count",
            &["path=\"inline\""]
        ) >= 1.0
    );
    assert!(one(&r, "emr_ids_dirty_patients_total", &["path=\"inline\""]) >= 30.0);
    let site = format!("site=\"{SITE}\"");
    assert_eq!(one(&r, "emr_ids_queue_patients", &[&site]), 0.0);
    assert_eq!(one(&r, "emr_ids_queue_oldest_age_seconds", &[&site]), 0.0);
    wait_for(
        "a verification of the site",
        Duration::from_secs(60),
        async || {
            !values(
                &scrape(&receiver.addr).await,
                "emr_ids_verify_age_seconds",
                &[&site],
            )
            .is_empty()
        },
    )
    .await;
    let r = scrape(&receiver.addr).await;
    assert_eq!(one(&r, "emr_ids_verify_diff_rows", &[&site]), 0.0);
    let checked = one(&r, "emr_ids_verify_age_seconds", &[&site]);
    assert!((0.0..600.0).contains(&checked), "verified {checked} s ago");
    let seen = one(
        &r,
        "emr_receiver_site_last_seen_timestamp_seconds",
        &[&site],
    );
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 600.0..=now + 5.0).contains(&seen),
        "last seen {seen}, now {now}"
    );
    let site_lag = one(&r, "emr_receiver_site_lag_seconds", &[&site]);
    assert!((0.0..600.0).contains(&site_lag), "site lag {site_lag}");

    // AND both are alive and ready
    for addr in [&tailer.addr, &receiver.addr] {
        assert_eq!(get(&format!("http://{addr}/healthz")).await.0, 200);
        let (code, body) = get(&format!("http://{addr}/readyz")).await;
        assert_eq!(code, 200, "{addr}: {body}");
    }

    // WHEN a real Prometheus scrapes both with the example config (targets and intervals
    // rewritten) and loads the example alert rules
    let prometheus = Prometheus::start(
        &rig.dir.join("prometheus"),
        &prom::scrape_config(&receiver.addr, &tailer.addr, 1),
    )
    .await;
    // THEN after two scrapes of each job
    wait_for(
        "two scrapes of each job",
        Duration::from_secs(30),
        async || {
            let scrapes = prometheus.query("count_over_time(up[1m])").await;
            scrapes.len() == 2
                && scrapes.iter().all(|s| {
                    s["value"][1]
                        .as_str()
                        .unwrap_or("0")
                        .parse::<f64>()
                        .unwrap_or(0.0)
                        >= 2.0
                })
        },
    )
    .await;
    for up in prometheus.query("up").await {
        assert_eq!(up["value"][1], "1", "target down: {up}");
    }
    // the rules loaded healthy
    let groups = prometheus.api("rules", &[]).await;
    let rules: Vec<&serde_json::Value> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(rules.len(), alert_names().len(), "{groups}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // AND every series an alert or a dashboard panel names is in Prometheus, with the job
    // that exports it
    let mut missing = Vec::new();
    for file in ["emr-stream-alerts.yml", "emr-stream-dashboard.json"] {
        for name in named_metrics(file) {
            let found = prometheus
                .query(&format!("count by (job) ({{__name__=\"{name}\"}})"))
                .await;
            if found.is_empty() {
                missing.push(format!("{name} ({file})"));
            }
        }
    }
    assert!(missing.is_empty(), "not in Prometheus: {missing:?}");
}

/// The `emr_*` metric names `file` (in scripts/ops) uses.
fn named_metrics(file: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(prom::ops_dir().join(file)).unwrap();
    text.match_indices("emr_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|n| n != "emr_" && !n.starts_with("emr_stream"))
        .collect()
}

/// The alerts of the example rules.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(prom::ops_dir().join("emr-stream-alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|a| a.trim().to_owned())
        .collect()
}

fn promtool(args: &[&str]) -> String {
    prom::require(prom::PROMTOOL);
    let out = std::process::Command::new(prom::PROMTOOL)
        .args(args)
        .current_dir(prom::ops_dir())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_unit_tested_both_ways() {
    // GIVEN the example alert rules and their unit tests
    let alerts = alert_names();
    assert!(alerts.len() >= 6, "{alerts:?}");
    // WHEN promtool checks the rules and runs the unit tests
    let check = promtool(&["check", "rules", "emr-stream-alerts.yml"]);
    assert!(
        check.contains(&format!("{} rules found", alerts.len())),
        "{check}"
    );
    let tests = promtool(&["test", "rules", "emr-stream-alerts.test.yml"]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    // THEN every alert has a case where it fires and one where it stays silent
    let file = std::fs::read_to_string(prom::ops_dir().join("emr-stream-alerts.test.yml")).unwrap();
    let lines: Vec<&str> = file.lines().map(str::trim).collect();
    for alert in &alerts {
        let cases: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {alert}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{alert}: no case where it stays silent"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "{alert}: no case where it fires"
        );
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_render_in_headless_chromium_and_retry_a_dead_letter() {
    // GIVEN dead letters: a receiver that does not know person_attribute refused visits
    // (plain: Chromium does not trust the private CA)
    let rig = Rig::new("pages").await.plain();
    let addr = common::free_addr();
    let mut receiver = rig.receiver_with(&addr, &rig.mapping_without_person_attribute());
    let tailer = rig.tailer(&addr);
    assert!(rig.simulate(20, 2, 3, 0).wait().unwrap().success());
    let s = rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    let dead = s["dead_letters"].as_u64().unwrap();
    assert!(dead >= 2, "{s}");
    // AND the receiver is back with the full mapping
    receiver.kill9();
    let receiver: Proc = rig.receiver_at(&addr);

    // WHEN the facility's admin opens the tailer's status page
    let browser = Browser::start(&rig.dir.join("chromium")).await;
    let page = format!("http://{}/status", tailer.addr);
    browser.open(&page).await;
    // THEN it shows the source, lag, outbox, last shipment and the dead letters, each with
    // a retry button
    let kv = browser.text("table.kv").await;
    for field in [
        "Checkpoint",
        "Lag",
        "Outbox",
        "Last shipment",
        "Dead letters",
    ] {
        assert!(kv.contains(field), "{field} missing: {kv}");
    }
    assert!(kv.contains("following the binlog"), "{kv}");
    assert_eq!(browser.text("#dead-count").await, dead.to_string());
    assert_eq!(browser.count("#dead button").await, dead as usize);
    assert!(browser.text("#dead").await.contains("422"));
    let png = browser
        .screenshot(&screenshot_path("tailer-status.png"))
        .await;
    assert!(png > 10_000, "screenshot of {png} bytes");

    // WHEN they press the first Retry
    browser.click("#dead button").await;
    // THEN the page comes back with one dead letter fewer, and the visit ships
    assert!(browser.url().await.ends_with("/status"));
    browser
        .wait_text("#dead-count", &(dead - 1).to_string())
        .await;
    let s = rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    assert_eq!(s["dead_letters"].as_u64(), Some(dead - 1), "{s}");

    // AND pressing Retry on each of the others empties the list
    for left in (0..dead - 1).rev() {
        browser.click("#dead button").await;
        browser.wait_text("#dead-count", &left.to_string()).await;
    }
    assert_eq!(browser.count("#dead").await, 0);
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;

    // AND a retry without the page's token is refused
    let form = "token=guess&id=1";
    let forged = reqwest::Client::new()
        .post(format!("http://{}/dead/retry", tailer.addr))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);

    // WHEN the central team opens the receiver's status page
    // THEN it lists the site, seen seconds ago, with its visits today and TX_CURR as the
    // report computes it
    let report_url = format!(
        "http://{}/api/v1/reports/tx_curr?site_id={SITE}",
        receiver.addr
    );
    assert_eq!(
        get(&format!("http://{}/status", receiver.addr)).await.0,
        401,
        "the receiver's status page needs a reader"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = format!("#site-{SITE}");
    let tx_curr = loop {
        browser
            .open(&format!(
                "http://reader:{}@{}/status",
                common::READER_AGGREGATE,
                receiver.addr
            ))
            .await;
        let cell = browser.text(&format!("{row} td.txcurr")).await;
        let report = common::reader_client()
            .get(&report_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
        let tx_curr = report["total"].as_i64().unwrap();
        if tx_curr > 0 && cell == tx_curr.to_string() {
            break tx_curr;
        }
        assert!(
            Instant::now() < deadline,
            "TX_CURR cell {cell:?} never matched the report: {report}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let text = browser.text(&row).await;
    assert!(text.contains("s ago") && !text.contains("never"), "{text}");
    let today: i64 = browser
        .text(&format!("{row} td.today"))
        .await
        .parse()
        .unwrap();
    assert!(
        today >= 20,
        "visits today {today} in {text:?} (TX_CURR {tx_curr})"
    );
    // AND when its reports were applied, an empty IDS queue and the verifier's last word
    assert!(browser
        .text(&format!("{row} td.asof"))
        .await
        .ends_with("ago"));
    assert_eq!(browser.text(&format!("{row} td.queue")).await, "empty");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let verified = browser.text(&format!("{row} td.verified")).await;
        if verified.ends_with("equal") {
            break;
        }
        assert!(Instant::now() < deadline, "never verified: {verified:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser
            .open(&format!(
                "http://reader:{}@{}/status",
                common::READER_AGGREGATE,
                receiver.addr
            ))
            .await;
    }
    let png = browser
        .screenshot(&screenshot_path("receiver-status.png"))
        .await;
    assert!(png > 10_000, "screenshot of {png} bytes");
    browser.close().await;
}

/// Every `emr_*` name in the shipped Prometheus alert rules and Grafana dashboard is a metric
/// the code exports (so a renamed metric cannot leave a silent alert or an empty panel).
#[test]
fn alert_rules_and_dashboard_name_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
    let exported: std::collections::BTreeSet<String> = source
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains("&str = \"emr_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect();
    assert!(exported.len() >= 25, "{exported:?}");
    let dashboard = root.join("scripts/ops/emr-stream-dashboard.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    assert!(json["panels"].as_array().unwrap().len() > 10);
    for file in ["emr-stream-alerts.yml", "emr-stream-dashboard.json"] {
        let names = named_metrics(file);
        for name in &names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| exported.contains(*b))
                .unwrap_or(name);
            assert!(
                exported.contains(base),
                "{file} names {name}, which is not exported"
            );
        }
        assert!(names.len() > 5, "{file}: {} metric names", names.len());
    }
}
