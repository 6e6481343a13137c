//! The ART reports against the national rules: a simulated clinic streams to the receiver, and
//! TX_CURR (MOH and PEPFAR), TX_NEW and missed appointments are computed again directly on the
//! source MariaDB by an independent SQL implementation of `reference/art-rules.md`, for several
//! end dates, and compared patient by patient. Then the site is rebuilt while readers read.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use common::{Proc, Rig, SITE};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row};
use serde_json::Value;

/// Outcomes on `@end` with a `@days` defaulter threshold, written for MariaDB from the rules,
/// without sharing anything with `ids-tables.sql`: correlated subqueries instead of views,
/// DATE_ADD over DECIMAL for the halves-up rounding, TIMESTAMPDIFF for ages.
const SOURCE_OUTCOMES: &str = "
WITH arv_drug AS (
  SELECT drug_id FROM drug WHERE concept_id IN (SELECT concept_id FROM concept_set WHERE concept_set = 1085)
), disp AS (
  SELECT o.patient_id, DATE(o.start_date) AS day, x.drug_inventory_id AS drug_id,
         x.quantity, x.equivalent_daily_dose AS dose
  FROM orders o JOIN drug_order x ON x.order_id = o.order_id
  WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
    AND x.drug_inventory_id IN (SELECT drug_id FROM arv_drug) AND DATE(o.start_date) <= @end
), last_day AS (
  SELECT patient_id, MAX(day) AS day FROM disp GROUP BY patient_id
), per_drug AS (
  SELECT d.patient_id, d.day, d.drug_id,
         SUM(IF(d.quantity >= 6000, 0, d.quantity)) AS qty,
         IFNULL(MAX(IF(d.dose > 0, d.dose, NULL)), 1) AS dose
  FROM disp d JOIN last_day l ON l.patient_id = d.patient_id AND l.day = d.day
  GROUP BY d.patient_id, d.day, d.drug_id
), with_pills AS (
  SELECT pd.*, IFNULL((
      SELECT SUM(IFNULL(b.value_numeric, 0)) FROM obs b
      LEFT JOIN drug_order bo ON bo.order_id = b.order_id
      WHERE b.concept_id = 2540 AND b.voided = 0 AND b.person_id = pd.patient_id
        AND DATE(b.obs_datetime) = pd.day AND IFNULL(bo.drug_inventory_id, b.value_drug) = pd.drug_id), 0) AS pills
  FROM per_drug pd
), expiry AS (
  SELECT patient_id,
    MIN(DATE_ADD(day, INTERVAL ROUND(CAST(qty + pills AS DECIMAL(30,6)) / CAST(dose AS DECIMAL(30,6))) DAY)) AS expiry,
    COUNT(DISTINCT DATE_ADD(day, INTERVAL ROUND(CAST(qty + pills AS DECIMAL(30,6)) / CAST(dose AS DECIMAL(30,6))) DAY)) AS expiries,
    SUM(pills > 0) AS drugs_with_pills
  FROM with_pills GROUP BY patient_id
)
SELECT p.patient_id, UPPER(LEFT(pe.gender, 1)) AS gender, TIMESTAMPDIFF(YEAR, pe.birthdate, @end) AS age,
  CASE
    WHEN EXISTS (SELECT 1 FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
                 WHERE pp.patient_id = p.patient_id AND s.voided = 0 AND pp.voided = 0
                   AND s.state IN (3, 127) AND s.start_date <= @end) THEN 'died'
    ELSE CASE (SELECT s.state FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
               WHERE pp.patient_id = p.patient_id AND pp.program_id = 1 AND s.voided = 0 AND pp.voided = 0
                 AND s.start_date <= @end
               ORDER BY s.start_date DESC, s.date_created DESC, s.patient_state_id DESC LIMIT 1)
      WHEN 2 THEN 'transferred_out'
      WHEN 6 THEN 'stopped'
      ELSE CASE
        WHEN e.expiry IS NULL THEN 'unknown'
        WHEN DATEDIFF(@end, e.expiry) >= @days THEN 'defaulted'
        ELSE 'on_art' END
    END
  END AS outcome,
  CAST(DATE_ADD(e.expiry, INTERVAL @days DAY) AS CHAR) AS defaulted_on, CAST(e.expiry AS CHAR) AS expiry,
  IFNULL(e.expiries, 0) AS expiries, IFNULL(e.drugs_with_pills, 0) AS drugs_with_pills
FROM patient p JOIN person pe ON pe.person_id = p.patient_id
LEFT JOIN expiry e ON e.patient_id = p.patient_id
WHERE p.voided = 0 AND pe.voided = 0";

/// TX_NEW in [@start, @end]: first ARV dispensation in the period, not a transfer-in (obs 3289
/// answered 7572), no "ART started" (2516, HIV CLINIC REGISTRATION) before the period.
const SOURCE_TX_NEW: &str = "
SELECT p.patient_id, UPPER(LEFT(pe.gender, 1)), TIMESTAMPDIFF(YEAR, pe.birthdate, @end)
FROM patient p JOIN person pe ON pe.person_id = p.patient_id
JOIN (SELECT o.patient_id, MIN(DATE(o.start_date)) AS enrolled
      FROM orders o JOIN drug_order x ON x.order_id = o.order_id
      JOIN drug d ON d.drug_id = x.drug_inventory_id
      JOIN concept_set cs ON cs.concept_id = d.concept_id AND cs.concept_set = 1085
      WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
      GROUP BY o.patient_id) f ON f.patient_id = p.patient_id
WHERE p.voided = 0 AND pe.voided = 0 AND f.enrolled BETWEEN @start AND @end
  AND NOT EXISTS (SELECT 1 FROM obs t WHERE t.person_id = p.patient_id AND t.concept_id = 3289
                  AND t.value_coded = 7572 AND t.voided = 0)
  AND COALESCE((SELECT MIN(DATE(s.value_datetime)) FROM obs s
                JOIN encounter e ON e.encounter_id = s.encounter_id
                WHERE s.person_id = p.patient_id AND s.concept_id = 2516 AND s.voided = 0
                  AND e.voided = 0 AND e.encounter_type = 9), f.enrolled) >= @start";

/// Latest appointment (recorded by @end) in [@start, @end) with no visit from it to @end.
const SOURCE_MISSED: &str = "
SELECT a.patient_id FROM (
  SELECT person_id AS patient_id, MAX(DATE(value_datetime)) AS appointment
  FROM obs WHERE concept_id = 5096 AND voided = 0 AND DATE(obs_datetime) <= @end
    AND value_datetime IS NOT NULL
  GROUP BY person_id) a
JOIN patient p ON p.patient_id = a.patient_id AND p.voided = 0
JOIN person pe ON pe.person_id = a.patient_id AND pe.voided = 0
WHERE a.appointment >= @start AND a.appointment < @end
  AND NOT EXISTS (SELECT 1 FROM encounter e WHERE e.patient_id = a.patient_id AND e.voided = 0
                  AND DATE(e.encounter_datetime) BETWEEN a.appointment AND @end)";

/// One patient's outcome computed on the source.
#[derive(Debug, Clone)]
struct SourceOutcome {
    gender: String,
    age_group: String,
    outcome: String,
    defaulted_on: Option<String>,
    expiry: Option<String>,
    expiries: i64,
    drugs_with_pills: i64,
}

/// The age groups of the rules, from whole years.
fn age_group(age: Option<i64>) -> String {
    match age {
        None => "Unknown".into(),
        Some(a) if a < 1 => "<1".into(),
        Some(a) if a < 5 => "1-4".into(),
        Some(a) if a < 10 => "5-9".into(),
        Some(a) if a < 50 => format!("{}-{}", a / 5 * 5, a / 5 * 5 + 4),
        Some(_) => "50+".into(),
    }
}

fn gender(g: Option<String>) -> String {
    match g.as_deref() {
        Some("M") => "M".into(),
        Some("F") => "F".into(),
        _ => "U".into(),
    }
}

async fn set_period(conn: &mut mysql_async::Conn, start: NaiveDate, end: NaiveDate, days: i64) {
    conn.exec_drop(
        "SET @start = CAST(? AS DATE), @end = CAST(? AS DATE), @days = ?",
        (start.to_string(), end.to_string(), days),
    )
    .await
    .unwrap();
}

async fn source_outcomes(pool: &Pool, end: NaiveDate, days: i64) -> BTreeMap<i64, SourceOutcome> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, days).await;
    let rows: Vec<Row> = conn.query(SOURCE_OUTCOMES).await.unwrap();
    rows.into_iter()
        .map(|r| {
            let (id, g, age, outcome): (i64, Option<String>, Option<i64>, String) = (
                r.get(0).unwrap(),
                r.get(1).unwrap(),
                r.get(2).unwrap(),
                r.get(3).unwrap(),
            );
            let (defaulted_on, expiry, expiries, pills): (
                Option<String>,
                Option<String>,
                i64,
                i64,
            ) = (
                r.get(4).unwrap(),
                r.get(5).unwrap(),
                r.get(6).unwrap(),
                r.get(7).unwrap(),
            );
            (
                id,
                SourceOutcome {
                    gender: gender(g),
                    age_group: age_group(age),
                    outcome,
                    defaulted_on,
                    expiry,
                    expiries,
                    drugs_with_pills: pills,
                },
            )
        })
        .collect()
}

/// (patient, gender, age group) triples.
type Counted = BTreeSet<(i64, String, String)>;

async fn source_tx_new(pool: &Pool, start: NaiveDate, end: NaiveDate) -> Counted {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, start, end, 0).await;
    let rows: Vec<(i64, Option<String>, Option<i64>)> = conn.query(SOURCE_TX_NEW).await.unwrap();
    rows.into_iter()
        .map(|(id, g, age)| (id, gender(g), age_group(age)))
        .collect()
}

/// Missed appointments and defaulters in [start, end]: patient → (missed, defaulted).
async fn source_missed(
    pool: &Pool,
    start: NaiveDate,
    end: NaiveDate,
    days: i64,
) -> BTreeMap<i64, (bool, bool)> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, start, end, days).await;
    let missed: Vec<i64> = conn.query(SOURCE_MISSED).await.unwrap();
    let mut answer: BTreeMap<i64, (bool, bool)> =
        missed.into_iter().map(|id| (id, (true, false))).collect();
    for (id, o) in source_outcomes(pool, end, days).await {
        let defaulted = o.outcome == "defaulted"
            && o.defaulted_on.as_deref().unwrap_or("") >= start.to_string().as_str();
        if defaulted {
            answer.entry(id).or_insert((false, false)).1 = true;
        }
    }
    answer
}

/// The receiver's report with `detail=patients`.
async fn report(receiver: &Proc, name: &str, query: &str) -> Value {
    let url = format!(
        "http://{}/api/v1/reports/{name}?site_id={SITE}&detail=patients&{query}",
        receiver.addr
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

fn counted(report: &Value) -> Counted {
    report["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["patient_id"].as_i64().unwrap(),
                p["gender"].as_str().unwrap().to_owned(),
                p["age_group"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_same(what: &str, receiver: &Counted, source: &Counted) {
    let only_receiver: Vec<_> = receiver.difference(source).take(10).collect();
    let only_source: Vec<_> = source.difference(receiver).take(10).collect();
    assert!(
        only_receiver.is_empty() && only_source.is_empty(),
        "{what}: receiver {} patients, source {}; only in the receiver {only_receiver:?}, only on the source {only_source:?}",
        receiver.len(),
        source.len()
    );
}

/// Streams a clinic and waits until the IDS tables hold all of it.
async fn streamed_clinic(
    prefix: &str,
    patients: u32,
    days: u32,
    seed: u64,
) -> (Rig, Proc, Proc, NaiveDate) {
    let rig = Rig::new(prefix).await;
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);
    let sim = rig
        .simulate(patients, days, seed, 0)
        .wait_with_output()
        .unwrap();
    assert!(sim.status.success(), "simulate failed");
    rig.wait_quiet(&tailer, Duration::from_secs(180)).await;
    rig.wait_ids_idle(Duration::from_secs(60)).await;
    let today = chrono::Local::now().date_naive();
    (rig, receiver, tailer, today)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_equal_an_independent_implementation_on_the_source() {
    // GIVEN a clinic of 90 patients over 45 days streamed to the receiver
    let days = 45;
    let (rig, receiver, _tailer, today) = streamed_clinic("art", 90, days, 21).await;
    let source = rig.services.mysql_pool(&rig.source_db);
    let first_day = today - chrono::Duration::days(days as i64 - 1);
    let end_dates: Vec<NaiveDate> = [-30i64, -12, 0, 20, 45, 70, 100, 150, 400]
        .iter()
        .map(|d| today + chrono::Duration::days(*d))
        .collect();

    let mut seen_outcomes = BTreeMap::<String, usize>::new();
    let mut pepfar_only_defaulters = 0;
    let (mut two_expiries, mut pills_back) = (0, 0);
    let (mut tx_curr_seen, mut tx_new_seen, mut missed_seen, mut defaulted_seen) = (0, 0, 0, 0);
    for &end in &end_dates {
        // WHEN TX_CURR is asked for on this end date, under both definitions
        let mut on_art = BTreeMap::new();
        for (definition, days) in [("moh", 60), ("pepfar", 30)] {
            let outcomes = source_outcomes(&source, end, days).await;
            let expected: Counted = outcomes
                .iter()
                .filter(|(_, o)| o.outcome == "on_art")
                .map(|(id, o)| (*id, o.gender.clone(), o.age_group.clone()))
                .collect();
            let got = report(
                &receiver,
                "tx_curr",
                &format!("end_date={end}&definition={definition}"),
            )
            .await;
            // THEN the receiver counts exactly the patients the rules count on the source
            assert_same(
                &format!("TX_CURR {definition} on {end}"),
                &counted(&got),
                &expected,
            );
            assert_eq!(got["total"].as_u64().unwrap() as usize, expected.len());
            // AND each patient's pills run out on the same day (ROUND halves up, pill counts)
            for p in got["patients"].as_array().unwrap() {
                let id = p["patient_id"].as_i64().unwrap();
                assert_eq!(
                    p["expiry_date"].as_str(),
                    outcomes[&id].expiry.as_deref(),
                    "expiry of patient {id} on {end} ({definition})"
                );
            }
            let rows_sum: i64 = got["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["count"].as_i64().unwrap())
                .sum();
            assert_eq!(
                rows_sum as usize,
                expected.len(),
                "rows add up to the total"
            );
            tx_curr_seen += expected.len();
            for o in outcomes.values() {
                *seen_outcomes.entry(o.outcome.clone()).or_default() += 1;
                two_expiries += usize::from(o.expiries > 1);
                pills_back += usize::from(o.drugs_with_pills > 0);
            }
            on_art.insert(definition, outcomes);
        }
        pepfar_only_defaulters += on_art["pepfar"]
            .iter()
            .filter(|(id, o)| o.outcome == "defaulted" && on_art["moh"][*id].outcome == "on_art")
            .count();

        // AND TX_NEW and missed appointments over periods ending then
        for start in [first_day, end - chrono::Duration::days(14)] {
            if start > end {
                continue;
            }
            let expected = source_tx_new(&source, start, end).await;
            let got = report(
                &receiver,
                "tx_new",
                &format!("start_date={start}&end_date={end}"),
            )
            .await;
            assert_same(&format!("TX_NEW {start}..{end}"), &counted(&got), &expected);
            tx_new_seen += expected.len();
            for (definition, days) in [("moh", 60), ("pepfar", 30)] {
                let expected = source_missed(&source, start, end, days).await;
                let got = report(
                    &receiver,
                    "missed_appointments",
                    &format!("start_date={start}&end_date={end}&definition={definition}"),
                )
                .await;
                let got: BTreeMap<i64, (bool, bool)> = got["patients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        (
                            p["patient_id"].as_i64().unwrap(),
                            (
                                p["missed_appointment"].as_bool().unwrap(),
                                p["defaulted"].as_bool().unwrap(),
                            ),
                        )
                    })
                    .collect();
                assert_eq!(
                    got, expected,
                    "missed appointments {definition} {start}..{end}: receiver (left) vs source (right), patient → (missed, defaulted)"
                );
                missed_seen += expected.values().filter(|v| v.0).count();
                defaulted_seen += expected.values().filter(|v| v.1).count();
            }
        }
    }

    // AND the clinic produced every case the rules tell apart, so the comparison meant something
    for outcome in [
        "on_art",
        "died",
        "transferred_out",
        "stopped",
        "defaulted",
        "unknown",
    ] {
        assert!(
            seen_outcomes.get(outcome).copied().unwrap_or(0) > 0,
            "no {outcome} patient in {seen_outcomes:?}"
        );
    }
    assert!(
        pepfar_only_defaulters > 0,
        "no patient defaulted by PEPFAR but not MOH rules"
    );
    assert!(two_expiries > 0, "no day with two ARVs expiring apart");
    assert!(
        pills_back > 0,
        "no pills brought back on a last dispensation"
    );
    assert!(
        tx_curr_seen > 0 && tx_new_seen > 0,
        "empty TX_CURR or TX_NEW"
    );
    assert!(
        missed_seen > 0 && defaulted_seen > 0,
        "no missed appointment or defaulter"
    );
    let mut conn = source.get_conn().await.unwrap();
    let checks = [
        ("transfer-in", "SELECT COUNT(*) FROM obs WHERE concept_id = 3289 AND value_coded = 7572"),
        (
            "re-initiation",
            "SELECT COUNT(*) FROM patient_state a JOIN patient_state b ON b.patient_program_id = a.patient_program_id \
             WHERE a.state IN (2, 6) AND b.state = 7 AND b.patient_state_id > a.patient_state_id",
        ),
        ("voided patient", "SELECT COUNT(*) FROM patient WHERE voided = 1"),
        ("quantity typo", "SELECT COUNT(*) FROM drug_order WHERE quantity >= 6000"),
        (
            "missing dose",
            "SELECT COUNT(*) FROM drug_order WHERE equivalent_daily_dose IS NULL OR equivalent_daily_dose = 0",
        ),
        ("pills tied to an order", "SELECT COUNT(*) FROM obs WHERE concept_id = 2540 AND order_id IS NOT NULL"),
        ("state 127", "SELECT COUNT(*) FROM patient_state WHERE state = 127"),
    ];
    for (case, sql) in checks {
        let n: Option<i64> = conn.query_first(sql).await.unwrap();
        assert!(n.unwrap_or(0) > 0, "the simulator wrote no {case} case");
    }
    eprintln!(
        "art reports: {} end dates; outcomes seen {seen_outcomes:?}; TX_CURR {tx_curr_seen}, TX_NEW {tx_new_seen}, missed {missed_seen}, defaulted {defaulted_seen}, PEPFAR-only defaulters {pepfar_only_defaulters}",
        end_dates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_never_blocks_readers_nor_empties_the_site() {
    // GIVEN a streamed clinic and its TX_CURR
    let (rig, receiver, _tailer, _) = streamed_clinic("rebuild", 50, 10, 4).await;
    let url = format!(
        "http://{}/api/v1/reports/tx_curr?site_id={SITE}",
        receiver.addr
    );
    let expected: Value =
        serde_json::from_slice(&reqwest::get(&url).await.unwrap().bytes().await.unwrap()).unwrap();
    let expected_total = expected["total"].as_i64().unwrap();
    assert!(expected_total > 0, "{expected}");
    // (the answer says when the site's data was applied, and that nothing waits)
    assert!(
        expected["as_of"].as_str().unwrap().starts_with("20"),
        "{expected}"
    );
    assert_eq!(expected["queued_patients"], 0, "{expected}");
    // (and the endpoint's edges: CSV by Accept, a clear 400 per bad parameter, 404 for a name)
    let client = reqwest::Client::new();
    let csv = client
        .get(&url)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("# report=tx_curr") && csv.contains("as_of=2"),
        "{csv}"
    );
    assert!(csv.contains(&format!("total={expected_total}")), "{csv}");
    assert_eq!(csv.lines().nth(1), Some("gender,age_group,count"));
    for (query, word) in [
        ("end_date=2024-13-01", "end_date"),
        ("definition=who", "definition"),
        ("site_id=abc", "site_id"),
        ("start_date=2024-02-01&end_date=2024-01-01", "after"),
        ("detail=days", "detail"),
        ("format=xml", "format"),
        ("enddate=2024-01-01", "unknown parameter"),
    ] {
        let r = client.get(format!("{url}&{query}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(word),
            "{query}: {body}"
        );
    }
    let r = client
        .get(format!("http://{}/api/v1/reports/tx_cur", receiver.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // WHEN readers read continuously while the site is rebuilt three times over (the command
    // and the receiver's queue worker draining together), then verified
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (url.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut reads = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                reads.push((started.elapsed(), body["total"].as_i64().unwrap()));
            }
            reads
        }));
    }
    let config = rig.dir.join("receiver.toml");
    let config = config.to_str().unwrap().to_owned();
    let mut rebuilds = Vec::new();
    for _ in 0..3 {
        let config = config.clone();
        let out = tokio::task::spawn_blocking(move || {
            common::emr(&[
                "ids",
                "rebuild",
                "--config",
                &config,
                "--site",
                &SITE.to_string(),
            ])
        })
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        rebuilds.push(err);
    }
    let verify = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || common::emr(&["ids", "verify", "--config", &config]))
            .await
            .unwrap()
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await.unwrap());
    }

    // THEN every rebuild said how far it got, and the tables equal their definitions
    for err in &rebuilds {
        assert!(
            err.contains("ids rebuild site 101: ") && err.contains("patients"),
            "{err}"
        );
    }
    assert!(
        verify.status.success() && verify.stdout.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // AND every read was answered quickly with the full answer, never an empty site
    let slowest = reads.iter().map(|r| r.0).max().unwrap();
    let wrong: Vec<i64> = reads
        .iter()
        .map(|r| r.1)
        .filter(|t| *t != expected_total)
        .collect();
    assert!(
        wrong.is_empty(),
        "reads saw totals {wrong:?}, expected {expected_total}"
    );
    assert!(reads.len() > 20, "only {} reads", reads.len());
    assert!(
        slowest < Duration::from_millis(1500),
        "a read waited {slowest:?} behind a rebuild"
    );
    eprintln!(
        "rebuild under reads: {} reads, slowest {slowest:?}",
        reads.len()
    );
}
