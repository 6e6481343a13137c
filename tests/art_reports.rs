//! The national report set against the engine's rules: a simulated clinic streams to the
//! receiver, and every report (TX_CURR under both definitions, TX_NEW, missed appointments,
//! TX_ML, TX_RTT, TX_PVLS, TX_CURR MMD, regimen distribution by regimen and by weight, the
//! defaulter list) is computed again on the source MariaDB by an independent implementation of
//! `reference/art-rules.md` and `moh-reports.md` — SQL on the source plus the report logic
//! here in Rust, sharing nothing with the receiver's `ids-tables.sql` — and compared patient
//! by patient and cell by cell, over several periods. Then the site is rebuilt while readers
//! read.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use common::{Proc, Rig, SITE};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row};
use serde_json::Value;

/// Every cohort patient (art-rules.md section 1) on `@end` with their outcome under a `@days`
/// threshold, written for MariaDB from the rules: correlated subqueries instead of tables,
/// DATE_ADD over DECIMAL for the halves-up rounding, TIMESTAMPDIFF for ages, concepts by name.
const SOURCE_COHORT: &str = "
WITH arv_drug AS (
  SELECT drug_id FROM drug WHERE concept_id IN (SELECT concept_id FROM concept_set WHERE concept_set = 1085)
), disp AS (
  SELECT o.patient_id, DATE(o.start_date) AS day, x.drug_inventory_id AS drug_id,
         x.quantity, x.equivalent_daily_dose AS dose
  FROM orders o JOIN drug_order x ON x.order_id = o.order_id
  WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
    AND x.drug_inventory_id IN (SELECT drug_id FROM arv_drug) AND DATE(o.start_date) <= @end
), days AS (
  SELECT patient_id, MAX(day) AS last_day, MIN(day) AS first_day FROM disp GROUP BY patient_id
), per_drug AS (
  SELECT d.patient_id, d.day, d.drug_id, SUM(d.quantity) AS qty,
         IFNULL(MAX(IF(d.dose > 0, d.dose, NULL)), 1) AS dose
  FROM disp d JOIN days l ON l.patient_id = d.patient_id AND l.last_day = d.day
  GROUP BY d.patient_id, d.day, d.drug_id
), with_pills AS (
  SELECT pd.*,
    IFNULL((SELECT SUM(IFNULL(b.value_numeric, 0)
                       + IF(b.value_text REGEXP '^[[:space:]]*[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)[[:space:]]*$',
                            CAST(b.value_text AS DECIMAL(30,6)), 0))
            FROM obs b JOIN drug_order bo ON bo.order_id = b.order_id
            WHERE b.concept_id = 2540 AND b.voided = 0 AND b.person_id = pd.patient_id
              AND DATE(b.obs_datetime) = pd.day AND bo.drug_inventory_id = pd.drug_id), 0)
    + IFNULL((SELECT SUM(IFNULL(b.value_numeric, 0)) FROM obs b
              WHERE b.concept_id = (SELECT concept_id FROM drug WHERE drug_id = pd.drug_id)
                AND b.voided = 0 AND b.person_id = pd.patient_id AND DATE(b.obs_datetime) = pd.day), 0)
    + IFNULL((SELECT SUM(IFNULL(b.value_numeric, 0)) FROM obs b
              WHERE b.concept_id = 2540 AND b.value_drug = pd.drug_id AND b.voided = 0
                AND b.person_id = pd.patient_id AND DATE(b.obs_datetime) = pd.day), 0) AS pills
  FROM per_drug pd
), each_expiry AS (
  SELECT w.*, DATE_ADD(w.day, INTERVAL ROUND(CAST(w.qty + w.pills AS DECIMAL(30,6)) / CAST(w.dose AS DECIMAL(30,6))) DAY) AS expiry
  FROM with_pills w
), expiry AS (
  SELECT patient_id,
    COALESCE(MIN(IF(qty < 6000, expiry, NULL)), DATE_SUB(MIN(expiry), INTERVAL 2 DAY)) AS expiry,
    MIN(qty) >= 6000 AS legacy,
    COUNT(DISTINCT IF(qty < 6000, expiry, NULL)) AS expiries,
    SUM(pills > 0) AS drugs_with_pills,
    GROUP_CONCAT(IF(qty < 6000, drug_id, NULL) ORDER BY drug_id) AS drugs
  FROM each_expiry GROUP BY patient_id
), gate AS (
  SELECT p.patient_id,
    (SELECT MIN(DATE(t.obs_datetime)) FROM obs t WHERE t.person_id = p.patient_id AND t.concept_id = 3289
       AND t.voided = 0 AND t.obs_datetime < @end + INTERVAL 1 DAY
       AND t.value_coded IN (SELECT concept_id FROM concept_name WHERE name IN ('Drug refill', 'External consultation') AND voided = 0)) AS refill_on,
    (SELECT MIN(DATE(t.obs_datetime)) FROM obs t WHERE t.person_id = p.patient_id AND t.concept_id = 3289
       AND t.voided = 0 AND t.obs_datetime < @end + INTERVAL 1 DAY
       AND t.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'New patient' AND voided = 0)) AS new_patient_on,
    EXISTS (SELECT 1 FROM encounter r WHERE r.patient_id = p.patient_id AND r.encounter_type = 9
            AND r.voided = 0 AND r.encounter_datetime < @end) AS registered
  FROM patient p
), cohort AS (
  SELECT p.patient_id, pe.gender, pe.birthdate, d.last_day, g.refill_on,
    CASE WHEN g.refill_on IS NULL THEN d.first_day
         WHEN g.new_patient_on IS NOT NULL THEN
           (SELECT MIN(x.day) FROM disp x WHERE x.patient_id = p.patient_id AND x.day >= g.new_patient_on)
         WHEN g.registered THEN d.first_day END AS enrolled
  FROM patient p JOIN person pe ON pe.person_id = p.patient_id
  JOIN days d ON d.patient_id = p.patient_id
  JOIN gate g ON g.patient_id = p.patient_id
  WHERE p.voided = 0 AND pe.voided = 0
    AND EXISTS (SELECT 1 FROM patient_program pp JOIN patient_state s ON s.patient_program_id = pp.patient_program_id
                WHERE pp.patient_id = p.patient_id AND pp.program_id = 1 AND pp.voided = 0
                  AND s.voided = 0 AND s.state = 7 AND s.start_date IS NOT NULL)
    AND EXISTS (SELECT 1 FROM obs r WHERE r.person_id = p.patient_id AND r.concept_id = 7563
                AND r.voided = 0 AND r.obs_datetime < @end + INTERVAL 1 DAY)
), judged AS (
  SELECT c.*, e.expiry, e.legacy, e.expiries, e.drugs_with_pills, e.drugs,
    IF(e.legacy, 61, @days) AS threshold,
    (SELECT MIN(s.start_date) FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
      WHERE pp.patient_id = c.patient_id AND s.voided = 0 AND pp.voided = 0
        AND s.state IN (3, 127) AND s.start_date <= @end) AS died_on,
    (SELECT CONCAT(s.state, ' ', s.start_date) FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
      WHERE pp.patient_id = c.patient_id AND pp.program_id = 1 AND s.voided = 0 AND pp.voided = 0
        AND s.start_date <= @end
      ORDER BY s.start_date DESC, s.date_created DESC, s.patient_state_id DESC LIMIT 1) AS current_state,
    COALESCE((SELECT MIN(DATE(s.value_datetime)) FROM obs s JOIN encounter en ON en.encounter_id = s.encounter_id
              WHERE s.person_id = c.patient_id AND s.concept_id = 2516 AND s.voided = 0
                AND en.voided = 0 AND en.encounter_type = 9), c.enrolled) AS earliest_start,
    EXISTS (SELECT 1 FROM obs t WHERE t.person_id = c.patient_id AND t.concept_id = 3289 AND t.voided = 0
            AND t.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Transfer in' AND voided = 0)) AS transfer_in
  FROM cohort c JOIN expiry e ON e.patient_id = c.patient_id
  WHERE c.enrolled IS NOT NULL
)
SELECT j.patient_id, UPPER(LEFT(j.gender, 1)), TIMESTAMPDIFF(YEAR, j.birthdate, @end),
  CASE
    WHEN j.died_on IS NOT NULL THEN 'died'
    WHEN SUBSTRING_INDEX(j.current_state, ' ', 1) = '2' THEN 'transferred_out'
    WHEN SUBSTRING_INDEX(j.current_state, ' ', 1) = '6' THEN 'stopped'
    WHEN DATEDIFF(@end, j.expiry) >= j.threshold THEN 'defaulted'
    ELSE 'on_art' END AS outcome,
  CAST(CASE
    WHEN j.died_on IS NOT NULL THEN j.died_on
    WHEN SUBSTRING_INDEX(j.current_state, ' ', 1) IN ('2', '6') THEN SUBSTRING_INDEX(j.current_state, ' ', -1)
    WHEN DATEDIFF(@end, j.expiry) >= j.threshold THEN DATE_ADD(j.expiry, INTERVAL j.threshold DAY)
    ELSE COALESCE(SUBSTRING_INDEX(j.current_state, ' ', -1), j.last_day) END AS CHAR) AS outcome_date,
  CAST(j.expiry AS CHAR), CAST(DATE_ADD(j.expiry, INTERVAL j.threshold DAY) AS CHAR),
  CAST(j.last_day AS CHAR), CAST(j.enrolled AS CHAR), CAST(j.earliest_start AS CHAR),
  j.transfer_in, IFNULL(j.drugs, ''), j.expiries, j.drugs_with_pills, j.legacy,
  j.refill_on IS NOT NULL
FROM judged j";

/// One cohort patient as the source gives them on an end date.
#[derive(Debug, Clone)]
struct Patient {
    gender: String,
    age_group: String,
    outcome: String,
    outcome_date: Option<NaiveDate>,
    expiry: Option<String>,
    defaulted_on: Option<NaiveDate>,
    last_day: Option<NaiveDate>,
    enrolled: Option<NaiveDate>,
    earliest_start: Option<NaiveDate>,
    transfer_in: bool,
    drugs: String,
    expiries: i64,
    drugs_with_pills: i64,
    legacy: bool,
    refill_client: bool,
}

/// The PEPFAR age groups of the rules, from whole years.
fn age_group(age: Option<i64>) -> String {
    match age {
        None => "Unknown".into(),
        Some(a) if a < 1 => "<1".into(),
        Some(a) if a < 5 => "1-4".into(),
        Some(a) if a < 90 => format!("{}-{}", a / 5 * 5, a / 5 * 5 + 4),
        Some(_) => "90+".into(),
    }
}

fn gender(g: Option<String>) -> String {
    match g.as_deref() {
        Some("M") => "M".into(),
        Some("F") => "F".into(),
        _ => "U".into(),
    }
}

fn date(s: Option<String>) -> Option<NaiveDate> {
    s.and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok())
}

/// MySQL's TIMESTAMPDIFF(MONTH, a, b) for dates.
fn months(a: NaiveDate, b: NaiveDate) -> i64 {
    let (lo, hi, sign) = if b >= a { (a, b, 1) } else { (b, a, -1) };
    let mut m = (hi.year() - lo.year()) as i64 * 12 + hi.month() as i64 - lo.month() as i64;
    if hi.day() < lo.day() {
        m -= 1;
    }
    sign * m
}

async fn set_period(conn: &mut mysql_async::Conn, start: NaiveDate, end: NaiveDate, days: i64) {
    conn.exec_drop(
        "SET @start = CAST(? AS DATE), @end = CAST(? AS DATE), @days = ?",
        (start.to_string(), end.to_string(), days),
    )
    .await
    .unwrap();
}

async fn source_cohort(pool: &Pool, end: NaiveDate, days: i64) -> BTreeMap<i64, Patient> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, days).await;
    let rows: Vec<Row> = conn.query(SOURCE_COHORT).await.unwrap();
    rows.into_iter()
        .map(|r| {
            let id: i64 = r.get(0).unwrap();
            let p = Patient {
                gender: gender(r.get(1).unwrap()),
                age_group: age_group(r.get(2).unwrap()),
                outcome: r.get(3).unwrap(),
                outcome_date: date(r.get(4).unwrap()),
                expiry: r.get(5).unwrap(),
                defaulted_on: date(r.get(6).unwrap()),
                last_day: date(r.get(7).unwrap()),
                enrolled: date(r.get(8).unwrap()),
                earliest_start: date(r.get(9).unwrap()),
                transfer_in: r.get::<i64, _>(10).unwrap() != 0,
                drugs: r.get(11).unwrap(),
                expiries: r.get(12).unwrap(),
                drugs_with_pills: r.get::<Option<i64>, _>(13).unwrap().unwrap_or(0),
                legacy: r.get::<Option<i64>, _>(14).unwrap().unwrap_or(0) != 0,
                refill_client: r.get::<i64, _>(15).unwrap() != 0,
            };
            (id, p)
        })
        .collect()
}

/// The MOH regimen table of moh-reports.md, as written there.
const REGIMEN_TABLE: &str = "0A {22,969} | 0P {733,968} {22,733} {968,969} {968,1044} {22,1044} | 2A {731} {39,731} | \
2P {732} {732,736} {39,732} {731,736} | 4A {11,39} {39,1213} | 4PA {30,39} | 4PP {30,736} | 5A {735} {1217} | \
6A {22,734} | 7A {734,932} | 8A {39,932} | 9A {73,969} | 9PA {74,969} | 9PP {74,1044} | 10A {73,734} | 11A {39,73} | \
11PA {39,74} | 11PP {74,736} | 12A {976,977,982} {976,977,983} {976,977,982,984} {734,976,977,982} | \
12PA {982,1214,1215} | 12PP {980,1214,1215} {736,980,1214,1215} | 13A {983} {734,982} {982,983} | \
14A {39,982} {982,984} | 14PA {736,982} | 14PP {736,980} | 15A {969,982} | 15PA {982,1044} | 15PP {980,1044} | \
16A {954,969} | 16P {1043,1044} {954,1044} {733,954} | 17A {11,969} {969,1213} | 17PA {30,969} | 17PP {30,1044}";

/// The regimen of a sorted, comma-separated drug set.
fn regimen(drugs: &str) -> String {
    for entry in REGIMEN_TABLE.split(" | ") {
        let (name, sets) = entry.split_once(' ').unwrap();
        for set in sets.split_whitespace() {
            let mut ids: Vec<i64> = set
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .map(|d| d.parse().unwrap())
                .collect();
            ids.sort_unstable();
            let key: Vec<String> = ids.iter().map(|d| d.to_string()).collect();
            if key.join(",") == drugs {
                return name.to_owned();
            }
        }
    }
    "unknown".into()
}

fn weight_band(kg: Option<f64>) -> String {
    let Some(kg) = kg.filter(|k| *k >= 3.0) else {
        return "Unknown".into();
    };
    let bands = [
        (4.0, "3-3.9"),
        (5.0, "4-4.9"),
        (6.0, "5-5.9"),
        (10.0, "6-9.9"),
        (14.0, "10-13.9"),
        (20.0, "14-19.9"),
        (25.0, "20-24.9"),
        (30.0, "25-29.9"),
        (35.0, "30-34.9"),
        (40.0, "35-39.9"),
        (50.0, "40-49.9"),
    ];
    bands
        .iter()
        .find(|(below, _)| kg < *below)
        .map_or("50+", |b| b.1)
        .to_owned()
}

/// Per patient: the latest numeric obs of a concept named `name` on or before @end (value,
/// modifier).
async fn source_latest(
    pool: &Pool,
    end: NaiveDate,
    name: &str,
) -> BTreeMap<i64, (f64, Option<String>)> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, 0).await;
    let rows: Vec<(i64, f64, Option<String>)> = conn
        .exec(
            "SELECT o.person_id, o.value_numeric, o.value_modifier FROM obs o
             WHERE o.obs_id = (SELECT x.obs_id FROM obs x WHERE x.person_id = o.person_id
                                 AND x.concept_id IN (SELECT concept_id FROM concept_name WHERE name = ? AND voided = 0)
                                 AND x.voided = 0 AND x.value_numeric IS NOT NULL
                                 AND x.obs_datetime < @end + INTERVAL 1 DAY
                               ORDER BY x.obs_datetime DESC, x.obs_id DESC LIMIT 1)",
            (name,),
        )
        .await
        .unwrap();
    rows.into_iter().map(|(p, v, m)| (p, (v, m))).collect()
}

/// Per patient: the first ARV dispensation day in [@start, @end].
async fn source_first_dispensation(
    pool: &Pool,
    start: NaiveDate,
    end: NaiveDate,
) -> BTreeMap<i64, NaiveDate> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, start, end, 0).await;
    let rows: Vec<(i64, String)> = conn
        .query(
            "SELECT o.patient_id, CAST(MIN(DATE(o.start_date)) AS CHAR) FROM orders o
             JOIN drug_order x ON x.order_id = o.order_id
             WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
               AND x.drug_inventory_id IN (SELECT drug_id FROM drug WHERE concept_id IN
                     (SELECT concept_id FROM concept_set WHERE concept_set = 1085))
               AND DATE(o.start_date) BETWEEN @start AND @end
             GROUP BY o.patient_id",
        )
        .await
        .unwrap();
    rows.into_iter()
        .map(|(p, d)| (p, date(Some(d)).unwrap()))
        .collect()
}

/// Missed appointments as the engine lists them: the latest appointment date in [@start,
/// @end] (APPOINTMENT encounters of program 1), no ARV dispensation from the day after it was
/// set to 14 days after it, not died, transferred out or stopped by then; refill clients who
/// had not registered by @end left out.
const SOURCE_MISSED: &str = "
WITH appt AS (
  SELECT o.person_id AS patient_id, DATE(o.value_datetime) AS appointment, DATE(o.obs_datetime) AS set_on,
         ROW_NUMBER() OVER (PARTITION BY o.person_id ORDER BY DATE(o.value_datetime) DESC, o.obs_datetime DESC) AS n
  FROM obs o JOIN encounter e ON e.encounter_id = o.encounter_id
  WHERE o.concept_id = 5096 AND o.voided = 0 AND o.value_datetime IS NOT NULL
    AND e.encounter_type = 7 AND e.program_id = 1
    AND DATE(o.value_datetime) BETWEEN @start AND @end
)
SELECT a.patient_id FROM appt a
JOIN patient p ON p.patient_id = a.patient_id AND p.voided = 0
JOIN person pe ON pe.person_id = a.patient_id AND pe.voided = 0
WHERE a.n = 1
  AND NOT EXISTS (SELECT 1 FROM orders r JOIN drug_order x ON x.order_id = r.order_id
                  JOIN encounter te ON te.encounter_id = r.encounter_id AND te.encounter_type = 25
                  WHERE r.patient_id = a.patient_id AND r.voided = 0 AND r.order_type_id = 1 AND x.quantity > 0
                    AND x.drug_inventory_id IN (SELECT drug_id FROM drug WHERE concept_id IN
                          (SELECT concept_id FROM concept_set WHERE concept_set = 1085))
                    AND DATE(r.start_date) BETWEEN a.set_on + INTERVAL 1 DAY AND a.appointment + INTERVAL 14 DAY)
  AND NOT EXISTS (SELECT 1 FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
                  WHERE pp.patient_id = a.patient_id AND s.voided = 0 AND pp.voided = 0 AND s.state IN (3, 127)
                    AND s.start_date <= a.appointment + INTERVAL 14 DAY)
  AND IFNULL((SELECT s.state FROM patient_state s JOIN patient_program pp ON pp.patient_program_id = s.patient_program_id
              WHERE pp.patient_id = a.patient_id AND pp.program_id = 1 AND s.voided = 0 AND pp.voided = 0
                AND s.start_date <= a.appointment + INTERVAL 14 DAY
              ORDER BY s.start_date DESC, s.date_created DESC, s.patient_state_id DESC LIMIT 1), 0) NOT IN (2, 6)
  AND NOT (EXISTS (SELECT 1 FROM obs t WHERE t.person_id = a.patient_id AND t.concept_id = 3289 AND t.voided = 0
                   AND t.obs_datetime < @end + INTERVAL 1 DAY
                   AND t.value_coded IN (SELECT concept_id FROM concept_name WHERE name IN ('Drug refill', 'External consultation')))
           AND NOT EXISTS (SELECT 1 FROM obs t WHERE t.person_id = a.patient_id AND t.concept_id = 3289 AND t.voided = 0
                   AND t.obs_datetime < @end + INTERVAL 1 DAY
                   AND t.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'New patient'))
           AND NOT EXISTS (SELECT 1 FROM encounter r WHERE r.patient_id = a.patient_id AND r.encounter_type = 9
                   AND r.voided = 0 AND r.encounter_datetime < @end))";

/// Patients with an appointment obs recorded by @end, and the latest one's date.
async fn source_appointments(pool: &Pool, end: NaiveDate) -> BTreeMap<i64, String> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, 0).await;
    conn.query(
        "SELECT o.person_id, CAST(DATE(o.value_datetime) AS CHAR) FROM obs o
         WHERE o.obs_id = (SELECT x.obs_id FROM obs x JOIN encounter e ON e.encounter_id = x.encounter_id
                           WHERE x.person_id = o.person_id AND x.concept_id = 5096 AND x.voided = 0
                             AND x.value_datetime IS NOT NULL AND e.encounter_type = 7 AND e.program_id = 1
                             AND x.obs_datetime < @end + INTERVAL 1 DAY
                           ORDER BY x.obs_datetime DESC, x.obs_id DESC LIMIT 1)",
    )
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Per patient: the latest VL order on or before @end (lab order of a VL specimen, found by
/// name), its day, whether its latest 'Reason for test' says Routine (None: no reason), and its
/// latest 'HIV viral load' result as `text|number|modifier`.
const SOURCE_VL: &str = "
SELECT o.patient_id, CAST(DATE(o.start_date) AS CHAR),
  (SELECT r.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Routine' AND voided = 0)
     FROM obs r WHERE r.order_id = o.order_id AND r.voided = 0
       AND r.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Reason for test' AND voided = 0)
     ORDER BY r.obs_datetime DESC, r.obs_id DESC LIMIT 1) AS routine,
  (SELECT CONCAT(IFNULL(v.value_text, ''), '|', IFNULL(v.value_numeric, ''), '|', IFNULL(v.value_modifier, ''))
     FROM obs v WHERE v.order_id = o.order_id AND v.voided = 0 AND v.concept_id = 856
     ORDER BY v.obs_datetime DESC, v.obs_id DESC LIMIT 1) AS result
FROM orders o
WHERE o.order_id = (
  SELECT x.order_id FROM orders x
  WHERE x.patient_id = o.patient_id AND x.order_type_id = 4 AND x.voided = 0
    AND x.start_date < @end + INTERVAL 1 DAY
    AND x.concept_id IN (SELECT concept_id FROM concept_name WHERE voided = 0 AND name IN
          ('Blood', 'DBS (Free drop to DBS card)', 'DBS (Using capillary tube)', 'Plasma'))
  ORDER BY x.start_date DESC, x.order_id DESC LIMIT 1)";

/// Per woman: whether her latest answer in [@start, @end] to 'Is patient pregnant?' and to
/// 'Breast feeding?' is Yes (None: not asked).
const SOURCE_MATERNAL: &str = "
SELECT p.person_id,
  (SELECT o.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Yes' AND voided = 0)
     FROM obs o WHERE o.person_id = p.person_id AND o.voided = 0
       AND o.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Is patient pregnant?' AND voided = 0)
       AND o.obs_datetime >= @start AND o.obs_datetime < @end + INTERVAL 1 DAY
     ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1),
  (SELECT o.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Yes' AND voided = 0)
     FROM obs o WHERE o.person_id = p.person_id AND o.voided = 0
       AND o.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Breast feeding?' AND voided = 0)
       AND o.obs_datetime >= @start AND o.obs_datetime < @end + INTERVAL 1 DAY
     ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1)
FROM person p WHERE UPPER(LEFT(p.gender, 1)) = 'F'";

/// A patient's latest VL order as the source gives it.
struct VlOrder {
    day: NaiveDate,
    routine: bool,
    /// "low" or "high"; None without a result.
    result: Option<&'static str>,
}

/// A result `text|number|modifier` as suppressed (low) or not: LDL is low; a number under
/// 1000 is low; a number with `<` is below it, so low when it is 1000 or less.
fn vl_result(result: &str) -> Option<&'static str> {
    let mut parts = result.split('|');
    let (text, number, modifier) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
    if text.trim().eq_ignore_ascii_case("LDL") {
        return Some("low");
    }
    let n: f64 = number.parse().ok()?;
    let low = if modifier == "<" {
        n <= 1000.0
    } else {
        n < 1000.0
    };
    Some(if low { "low" } else { "high" })
}

async fn source_vl(pool: &Pool, end: NaiveDate) -> BTreeMap<i64, VlOrder> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, 0).await;
    let rows: Vec<(i64, String, Option<i64>, Option<String>)> =
        conn.query(SOURCE_VL).await.unwrap();
    rows.into_iter()
        .map(|(p, day, routine, result)| {
            let order = VlOrder {
                day: date(Some(day)).unwrap(),
                routine: routine.is_none_or(|r| r != 0),
                result: result.as_deref().and_then(vl_result),
            };
            (p, order)
        })
        .collect()
}

/// Per woman: FP, FBf or FNP in [start, end].
async fn source_maternal(
    pool: &Pool,
    start: NaiveDate,
    end: NaiveDate,
) -> BTreeMap<i64, &'static str> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, start, end, 0).await;
    let rows: Vec<(i64, Option<i64>, Option<i64>)> = conn.query(SOURCE_MATERNAL).await.unwrap();
    rows.into_iter()
        .map(|(p, pregnant, breastfeeding)| {
            let status = if pregnant == Some(1) {
                "FP"
            } else if breastfeeding == Some(1) {
                "FBf"
            } else {
                "FNP"
            };
            (p, status)
        })
        .collect()
}

/// TX_PVLS from the PEPFAR cohort on `end` (moh-reports.md): each candidate's fields.
fn expected_pvls(
    cohort: &BTreeMap<i64, Patient>,
    vl: &BTreeMap<i64, VlOrder>,
    maternal: &BTreeMap<i64, &'static str>,
    start: NaiveDate,
    end: NaiveDate,
) -> Counted {
    let months = |d: NaiveDate, n: u32| d.checked_sub_months(chrono::Months::new(n)).unwrap();
    let mut out = Counted::new();
    for (id, p) in cohort {
        let on_art = p.outcome == "on_art";
        let candidate = on_art
            || p.outcome_date
                .is_some_and(|d| d > months(end, 12) && d <= end);
        if !candidate {
            continue;
        }
        let mother = p.gender == "F" && matches!(maternal.get(id), Some(&"FP" | &"FBf"));
        let paediatric = regimen(&p.drugs).ends_with('P');
        let order = vl.get(id);
        let left_care_due = || {
            let base = order.map(|o| o.day).or(p.earliest_start).unwrap();
            let after = if mother || paediatric { 6 } else { 12 };
            let until = base.checked_add_months(chrono::Months::new(after)).unwrap();
            p.outcome_date.is_some_and(|d| until < d)
        };
        let due = p.earliest_start.is_some_and(|d| d <= months(end, 6))
            && !(p.outcome == "defaulted" && p.defaulted_on.is_some_and(|d| d < months(end, 12)))
            && (on_art || left_care_due());
        if on_art {
            out.insert(key(*id, p, "tx_curr"));
        }
        if !due {
            continue;
        }
        out.insert(key(*id, p, "due_for_vl"));
        if let Some(o) = order.filter(|o| o.day >= months(start, 12)) {
            let kind = if o.routine { "routine" } else { "targeted" };
            out.insert(key(*id, p, &format!("drawn_{kind}")));
            if let Some(result) = o.result {
                out.insert(key(*id, p, &format!("{result}_vl_{kind}")));
            }
        }
    }
    out
}

/// Per patient: birthdate, whether registered (an HIV CLINIC REGISTRATION encounter) by @end,
/// and whether re-initiated: the earliest obs 7937 answered Yes sits in a registration
/// encounter holding an obs 7751 more than 14 days before it.
const SOURCE_REGISTRATION: &str = "
SELECT p.patient_id, CAST(pe.birthdate AS CHAR),
  EXISTS (SELECT 1 FROM encounter r WHERE r.patient_id = p.patient_id AND r.encounter_type = 9
          AND r.voided = 0 AND r.encounter_datetime < @end + INTERVAL 1 DAY) AS registered,
  EXISTS (SELECT 1 FROM obs e
          JOIN encounter en ON en.encounter_id = e.encounter_id AND en.encounter_type = 9 AND en.voided = 0
          JOIN obs l ON l.encounter_id = e.encounter_id AND l.concept_id = 7751 AND l.voided = 0
                    AND l.value_datetime < e.obs_datetime - INTERVAL 14 DAY
          WHERE e.obs_id = (SELECT x.obs_id FROM obs x WHERE x.person_id = p.patient_id
                              AND x.concept_id = 7937 AND x.voided = 0
                              AND x.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Yes' AND voided = 0)
                            ORDER BY x.obs_datetime, x.obs_id LIMIT 1)) AS reinitiation
FROM patient p JOIN person pe ON pe.person_id = p.patient_id";

/// A patient's registration facts: birthdate, registered by the end date, re-initiation.
type Registration = (Option<NaiveDate>, bool, bool);

async fn source_registration(pool: &Pool, end: NaiveDate) -> BTreeMap<i64, Registration> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, 0).await;
    let rows: Vec<(i64, Option<String>, i64, i64)> = conn.query(SOURCE_REGISTRATION).await.unwrap();
    rows.into_iter()
        .map(|(p, birthdate, registered, reinit)| {
            (p, (date(birthdate), registered != 0, reinit != 0))
        })
        .collect()
}

/// Per patient, the facts the cohort's other blocks read (names lower-cased), by @end: the
/// answer names of their earliest reason for starting; the days 'Is patient pregnant?' was
/// answered Yes; each 'Who stages criteria present' obs as `day|answer`; the answer name of
/// the latest TB status; the adherence numbers ('x': none) of the last day with an obs 6987
/// tied to an ARV order; every pregnancy / breastfeeding answer as `day|question|yes`, oldest
/// first.
const SOURCE_COHORT_FACTS: &str = "
SELECT p.patient_id,
  (SELECT GROUP_CONCAT(LOWER(n.name) SEPARATOR ',') FROM concept_name n WHERE n.voided = 0 AND n.concept_id =
     (SELECT r.value_coded FROM obs r WHERE r.person_id = p.patient_id AND r.concept_id = 7563 AND r.voided = 0
        AND r.obs_datetime < @end + INTERVAL 1 DAY ORDER BY r.obs_datetime, r.obs_id LIMIT 1)) AS reason,
  (SELECT GROUP_CONCAT(DATE(o.obs_datetime)) FROM obs o WHERE o.person_id = p.patient_id AND o.voided = 0
     AND o.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Is patient pregnant?' AND voided = 0)
     AND o.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Yes' AND voided = 0)
     AND o.obs_datetime < @end + INTERVAL 1 DAY) AS pregnant_days,
  (SELECT GROUP_CONCAT(CONCAT(DATE(o.obs_datetime), '|', LOWER(n.name)) SEPARATOR ',') FROM obs o
     JOIN concept_name n ON n.concept_id = o.value_coded AND n.voided = 0
     WHERE o.person_id = p.patient_id AND o.voided = 0
       AND o.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Who stages criteria present' AND voided = 0)) AS criteria,
  (SELECT GROUP_CONCAT(LOWER(n.name) SEPARATOR ',') FROM concept_name n WHERE n.voided = 0 AND n.concept_id =
     (SELECT t.value_coded FROM obs t WHERE t.person_id = p.patient_id AND t.concept_id = 7459 AND t.voided = 0
        AND t.obs_datetime < @end + INTERVAL 1 DAY ORDER BY t.obs_datetime DESC, t.obs_id DESC LIMIT 1)) AS tb,
  (SELECT GROUP_CONCAT(IFNULL(a.value_numeric, 'x')) FROM adherence a WHERE a.person_id = p.patient_id
     AND DATE(a.obs_datetime) = (SELECT MAX(DATE(b.obs_datetime)) FROM adherence b WHERE b.person_id = p.patient_id)) AS adherence,
  (SELECT GROUP_CONCAT(CONCAT(DATE(o.obs_datetime), '|', IF(o.concept_id IN (SELECT concept_id FROM concept_name WHERE name = 'Is patient pregnant?'), 'p', 'b'),
                              '|', IFNULL(o.value_coded IN (SELECT concept_id FROM concept_name WHERE name = 'Yes' AND voided = 0), 0))
                       ORDER BY o.obs_datetime, o.obs_id SEPARATOR ',')
     FROM obs o WHERE o.person_id = p.patient_id AND o.voided = 0 AND o.obs_datetime < @end + INTERVAL 1 DAY
       AND o.concept_id IN (SELECT concept_id FROM concept_name WHERE name IN ('Is patient pregnant?', 'Breast feeding?') AND voided = 0)) AS maternal
FROM patient p";

/// The source's adherence obs (6987 tied to a non-voided ARV order, by @end), as a view of
/// the facts query.
const SOURCE_ADHERENCE: &str = "
CREATE TEMPORARY TABLE adherence AS
SELECT a.person_id, a.obs_datetime, a.value_numeric FROM obs a
JOIN orders od ON od.order_id = a.order_id AND od.voided = 0 AND od.order_type_id = 1
JOIN drug_order d ON d.order_id = a.order_id
WHERE a.concept_id = 6987 AND a.voided = 0 AND a.obs_datetime < @end + INTERVAL 1 DAY
  AND d.drug_inventory_id IN (SELECT drug_id FROM drug WHERE concept_id IN (SELECT concept_id FROM concept_set WHERE concept_set = 1085))";

/// A patient's cohort facts beyond registration and outcome.
#[derive(Default)]
struct CohortFacts {
    reason: Vec<String>,
    pregnant_days: Vec<NaiveDate>,
    criteria: Vec<(NaiveDate, String)>,
    tb: Vec<String>,
    adherence: Vec<Option<f64>>,
    /// (day, 'p' or 'b', answered Yes), oldest first.
    maternal: Vec<(NaiveDate, String, bool)>,
}

async fn source_cohort_facts(pool: &Pool, end: NaiveDate) -> BTreeMap<i64, CohortFacts> {
    let mut conn = pool.get_conn().await.unwrap();
    set_period(&mut conn, end, end, 0).await;
    conn.query_drop("DROP TEMPORARY TABLE IF EXISTS adherence")
        .await
        .unwrap();
    conn.query_drop(SOURCE_ADHERENCE).await.unwrap();
    let rows: Vec<Row> = conn.query(SOURCE_COHORT_FACTS).await.unwrap();
    let list = |r: &Row, i: usize| -> Vec<String> {
        r.get::<Option<String>, _>(i)
            .unwrap()
            .map(|s| s.split(',').map(String::from).collect())
            .unwrap_or_default()
    };
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    rows.into_iter()
        .map(|r| {
            let facts = CohortFacts {
                reason: list(&r, 1),
                pregnant_days: list(&r, 2).iter().map(|d| day(d)).collect(),
                criteria: list(&r, 3)
                    .iter()
                    .map(|c| {
                        let (d, name) = c.split_once('|').unwrap();
                        (day(d), name.to_owned())
                    })
                    .collect(),
                tb: list(&r, 4),
                adherence: list(&r, 5).iter().map(|v| v.parse().ok()).collect(),
                maternal: list(&r, 6)
                    .iter()
                    .map(|m| {
                        let mut parts = m.split('|');
                        let d = day(parts.next().unwrap());
                        let q = parts.next().unwrap().to_owned();
                        (d, q, parts.next() == Some("1"))
                    })
                    .collect(),
            };
            (r.get(0).unwrap(), facts)
        })
        .collect()
}

/// The cohort field an answer name counts in (moh-reports.md), by group.
fn answer_field(group: &str, names: &[String]) -> Option<&'static str> {
    names.iter().find_map(|name| {
        Some(match (group, name.as_str()) {
            ("reason", "presumed severe hiv") => "presumed_severe_hiv_disease_in_infants",
            ("reason", "hiv pcr") => "confirmed_hiv_infection_in_infants_pcr",
            ("reason", n) if n == "asymptomatic" || n.starts_with("cd4 count less than") => {
                "asymptomatic"
            }
            ("reason", n) if n.starts_with("who stage iii ") => "who_stage_three",
            ("reason", n) if n.starts_with("who stage iv ") => "who_stage_four",
            ("reason", "patient pregnant") => "pregnant_women",
            ("reason", "breastfeeding") => "breastfeeding_mothers",
            ("criteria", "pulmonary tuberculosis (current)")
            | ("criteria", "extrapulmonary tuberculosis (eptb)") => "current_episode_of_tb",
            ("criteria", "pulmonary tuberculosis within the last 2 years") => {
                "tb_within_the_last_two_years"
            }
            ("criteria", "kaposis sarcoma") => "kaposis_sarcoma",
            ("tb", "tb suspected") => "tb_suspected",
            ("tb", "tb not suspected") => "tb_not_suspected",
            ("tb", "confirmed tb on treatment") => "tb_confirmed_on_treatment",
            ("tb", "confirmed tb not on treatment") => "tb_confirmed_not_on_treatment",
            _ => return None,
        })
    })
}

/// The MOH cohort of [start, end] from the MOH cohort on `end` (moh-reports.md): each
/// patient's fields.
fn expected_moh_cohort(
    cohort: &BTreeMap<i64, Patient>,
    registration: &BTreeMap<i64, Registration>,
    facts: &BTreeMap<i64, CohortFacts>,
    start: NaiveDate,
    end: NaiveDate,
) -> Counted {
    let mut out = Counted::new();
    for (id, p) in cohort {
        let (enrolled, earliest) = (p.enrolled.unwrap(), p.earliest_start.unwrap());
        let (birthdate, registered, reinit) = registration[id];
        let reinitiated = enrolled != earliest && reinit;
        let mut reg = vec!["total_registered"];
        if enrolled == earliest {
            reg.push("initiated_on_art_first_time");
        }
        if reinitiated {
            reg.push("re_initiated_on_art");
        }
        if enrolled != earliest && !reinitiated && registered {
            reg.push("transfer_in");
        }
        let f = &facts[id];
        let reason =
            answer_field("reason", &f.reason).unwrap_or("unknown_other_reason_outside_guidelines");
        let asked_pregnant = f
            .pregnant_days
            .iter()
            .any(|d| *d >= enrolled && (*d - enrolled).num_days() <= 30);
        reg.push(match p.gender.as_str() {
            "M" => "all_males",
            "F" if asked_pregnant || reason == "pregnant_women" => "pregnant_females_all_ages",
            "F" => "non_pregnant_females",
            _ => "unknown_gender",
        });
        reg.push(match birthdate.map(|b| months(b, earliest)) {
            None => "unknown_age",
            Some(m) if m < 24 => "children_below_24_months",
            Some(m) if m / 12 <= 14 => "children_24_months_14_years",
            Some(_) => "adults",
        });
        reg.push(reason);
        let criteria: Vec<&str> = f
            .criteria
            .iter()
            .filter(|(d, _)| *d <= enrolled)
            .filter_map(|(_, name)| answer_field("criteria", std::slice::from_ref(name)))
            .collect();
        reg.push(if criteria.contains(&"current_episode_of_tb") {
            "current_episode_of_tb"
        } else if criteria.contains(&"tb_within_the_last_two_years") {
            "tb_within_the_last_two_years"
        } else {
            "no_tb"
        });
        if criteria.contains(&"kaposis_sarcoma") {
            reg.push("kaposis_sarcoma");
        }
        for f in reg {
            if enrolled >= start && enrolled <= end {
                out.insert(key(*id, p, f));
            }
            out.insert(key(*id, p, &format!("cum_{f}")));
        }
        let outcome: Vec<String> = match p.outcome.as_str() {
            "on_art" => {
                let r = regimen(&p.drugs);
                let r = if r == "unknown" {
                    "unknown_regimen".into()
                } else {
                    r
                };
                let tb = answer_field("tb", &f.tb).unwrap_or("unknown_tb_status");
                let numbers: Vec<f64> = f.adherence.iter().flatten().copied().collect();
                let adherence = if numbers.is_empty() {
                    "unknown_adherence"
                } else if numbers.iter().all(|v| (95.0..=105.0).contains(v)) {
                    "adherent_95_105"
                } else {
                    "not_adherent"
                };
                let mut fields = vec![
                    "total_alive_and_on_art".into(),
                    r,
                    tb.into(),
                    adherence.into(),
                ];
                // the latest answer of each question on the last dispensation day
                let latest = |q: &str| {
                    f.maternal
                        .iter()
                        .rev()
                        .find(|(d, question, _)| Some(*d) == p.last_day && question == q)
                        .map(|m| m.2)
                };
                if p.gender == "F" {
                    if latest("p") == Some(true) {
                        fields.push("total_pregnant_women".into());
                    } else if latest("b") == Some(true) {
                        fields.push("total_breastfeeding_women".into());
                    }
                }
                fields
            }
            "died" => {
                let days = p.outcome_date.map(|d| (d - earliest).num_days());
                let month = match days {
                    Some(d) if d <= 30 => "died_within_month_1",
                    Some(d) if d <= 60 => "died_within_month_2",
                    Some(d) if d <= 91 => "died_within_month_3",
                    _ => "died_after_month_3",
                };
                vec!["died_total".into(), month.into()]
            }
            "defaulted" => vec!["defaulted".into()],
            "stopped" => vec!["stopped_art".into()],
            "transferred_out" => vec!["transferred_out".into()],
            other => panic!("outcome {other}"),
        };
        for f in outcome {
            out.insert(key(*id, p, &f));
        }
    }
    out
}

/// A GET as the tests' `patients` reader.
async fn get(url: &str) -> reqwest::Response {
    common::reader_client().get(url).send().await.unwrap()
}

/// The receiver's report with `detail=patients`. Its rows are counted from the list; the
/// same report without the list counts them in SQL: both must agree.
async fn report(receiver: &Proc, name: &str, query: &str) -> Value {
    let fetch = |url: String| async move {
        let response = get(&url).await;
        assert_eq!(response.status(), 200, "{url}");
        serde_json::from_slice::<Value>(&response.bytes().await.unwrap()).unwrap()
    };
    let base = format!("{}/api/v1/reports/{name}?site_id={SITE}", receiver.url(""));
    let listed = fetch(format!("{base}&detail=patients&{query}")).await;
    let counted = fetch(format!("{base}&{query}")).await;
    assert_eq!(
        listed["rows"], counted["rows"],
        "{name}?{query}: rows with and without the list"
    );
    assert_eq!(listed["total"], counted["total"], "{name}?{query}: totals");
    listed
}

/// (patient, gender, age group, field) quadruples.
type Counted = BTreeSet<(i64, String, String, String)>;

/// A report's patients, each with the fields it counts in (`count` for one-column reports).
fn counted(report: &Value) -> Counted {
    let mut out = Counted::new();
    for p in report["patients"].as_array().unwrap() {
        let key = |f: &str| {
            (
                p["patient_id"].as_i64().unwrap(),
                p["gender"].as_str().unwrap().to_owned(),
                p["age_group"].as_str().unwrap().to_owned(),
                f.to_owned(),
            )
        };
        match p["fields"].as_array() {
            Some(fields) => {
                for f in fields {
                    out.insert(key(f.as_str().unwrap()));
                }
            }
            None => {
                out.insert(key("count"));
            }
        }
    }
    out
}

fn assert_same(what: &str, receiver: &Counted, source: &Counted) {
    let only_receiver: Vec<_> = receiver.difference(source).take(10).collect();
    let only_source: Vec<_> = source.difference(receiver).take(10).collect();
    assert!(
        only_receiver.is_empty() && only_source.is_empty(),
        "{what}: receiver {} cells, source {}; only in the receiver {only_receiver:?}, only on the source {only_source:?}",
        receiver.len(),
        source.len()
    );
}

/// The cells of the answer's rows agree with its patients, and add up to its total.
fn assert_rows_match_patients(what: &str, got: &Value, dims: &[&str]) {
    let mut from_patients: BTreeMap<(Vec<String>, String), i64> = BTreeMap::new();
    for p in got["patients"].as_array().unwrap() {
        let key: Vec<String> = dims
            .iter()
            .map(|d| p[*d].as_str().unwrap_or("").to_owned())
            .collect();
        let fields: Vec<String> = match p["fields"].as_array() {
            Some(f) => f.iter().map(|f| f.as_str().unwrap().to_owned()).collect(),
            None => vec!["count".into()],
        };
        for f in fields {
            *from_patients.entry((key.clone(), f)).or_default() += 1;
        }
    }
    let mut from_rows = BTreeMap::new();
    for r in got["rows"].as_array().unwrap() {
        let key: Vec<String> = dims
            .iter()
            .map(|d| r[*d].as_str().unwrap().to_owned())
            .collect();
        for f in got["fields"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let n = r[f].as_i64().unwrap();
            if n > 0 {
                from_rows.insert((key.clone(), f.to_owned()), n);
            }
        }
    }
    assert_eq!(
        from_rows, from_patients,
        "{what}: rows against the patient list"
    );
    assert_eq!(
        got["total"].as_u64().unwrap() as usize,
        got["patients"].as_array().unwrap().len(),
        "{what}: total"
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
        .simulate_with(patients, days, seed, 0, &[])
        .wait_with_output()
        .unwrap();
    assert!(sim.status.success(), "simulate failed");
    rig.wait_quiet(&tailer, Duration::from_secs(180)).await;
    rig.wait_ids_idle(Duration::from_secs(60)).await;
    let today = chrono::Local::now().date_naive();
    (rig, receiver, tailer, today)
}

fn key(id: i64, p: &Patient, field: &str) -> (i64, String, String, String) {
    (id, p.gender.clone(), p.age_group.clone(), field.to_owned())
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

    let mut seen = BTreeMap::<String, usize>::new();
    let mut see = |what: &str, n: usize| *seen.entry(what.to_owned()).or_default() += n;
    for &end in &end_dates {
        // WHEN TX_CURR and TX_CURR MMD are asked for on this end date, under both definitions
        let mut by_definition = BTreeMap::new();
        for (definition, days) in [("moh", 60), ("pepfar", 30)] {
            let cohort = source_cohort(&source, end, days).await;
            let on_art: Vec<(&i64, &Patient)> = cohort
                .iter()
                .filter(|(_, p)| p.outcome == "on_art")
                .collect();
            let expected: Counted = on_art.iter().map(|(id, p)| key(**id, p, "count")).collect();
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
            assert_rows_match_patients("TX_CURR", &got, &["gender", "age_group"]);
            // AND each patient's pills run out on the same day, and the outcome dates agree
            for p in got["patients"].as_array().unwrap() {
                let id = p["patient_id"].as_i64().unwrap();
                assert_eq!(
                    p["expiry_date"].as_str(),
                    cohort[&id].expiry.as_deref(),
                    "expiry of {id} on {end} ({definition})"
                );
                assert_eq!(
                    p["outcome_date"].as_str().map(|d| d.to_owned()),
                    cohort[&id].outcome_date.map(|d| d.to_string()),
                    "outcome date of {id} on {end} ({definition})"
                );
            }
            let mmd: Counted = on_art
                .iter()
                .map(|(id, p)| {
                    let days = (date(p.expiry.clone()).unwrap() - p.last_day.unwrap()).num_days();
                    let f = if days < 90 {
                        "lt_3_months"
                    } else if days <= 150 {
                        "3_5_months"
                    } else {
                        "6_plus_months"
                    };
                    key(**id, p, f)
                })
                .collect();
            let got = report(
                &receiver,
                "tx_curr_mmd",
                &format!("end_date={end}&definition={definition}"),
            )
            .await;
            assert_same(
                &format!("TX_CURR MMD {definition} on {end}"),
                &counted(&got),
                &mmd,
            );
            // AND the regimen distribution by regimen
            let by_regimen: BTreeSet<(i64, String)> = on_art
                .iter()
                .map(|(id, p)| (**id, regimen(&p.drugs)))
                .collect();
            let got = report(
                &receiver,
                "regimen_distribution",
                &format!("end_date={end}&definition={definition}&by=regimen"),
            )
            .await;
            let got_regimens: BTreeSet<(i64, String)> = got["patients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["patient_id"].as_i64().unwrap(),
                        p["regimen"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(got_regimens, by_regimen, "regimens {definition} on {end}");
            assert_rows_match_patients(
                "regimen distribution",
                &got,
                &["gender", "age_group", "regimen"],
            );
            for p in cohort.values() {
                see(&format!("outcome {}", p.outcome), 1);
                see("two expiries", usize::from(p.expiries > 1));
                see("pills back", usize::from(p.drugs_with_pills > 0));
                see("legacy expiry", usize::from(p.legacy));
                see("refill client in the cohort", usize::from(p.refill_client));
            }
            see("tx_curr", on_art.len());
            by_definition.insert(definition, cohort);
        }
        see(
            "PEPFAR-only defaulters",
            by_definition["pepfar"]
                .iter()
                .filter(|(id, p)| {
                    p.outcome == "defaulted" && by_definition["moh"][*id].outcome == "on_art"
                })
                .count(),
        );
        // AND by weight (MOH TX_CURR), 5-5.9 kg in a band of its own
        let weights = source_latest(&source, end, "Weight (kg)").await;
        let by_weight: BTreeSet<(i64, String, String)> = by_definition["moh"]
            .iter()
            .filter(|(_, p)| p.outcome == "on_art")
            .map(|(id, p)| {
                (
                    *id,
                    weight_band(weights.get(id).map(|w| w.0)),
                    regimen(&p.drugs),
                )
            })
            .collect();
        let got = report(
            &receiver,
            "regimen_distribution",
            &format!("end_date={end}&by=weight"),
        )
        .await;
        let got_weights: BTreeSet<(i64, String, String)> = got["patients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["patient_id"].as_i64().unwrap(),
                    p["weight_band"].as_str().unwrap().to_owned(),
                    p["regimen"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(got_weights, by_weight, "by weight on {end}");
        assert!(
            got["notes"][0].as_str().unwrap().contains("5-5.9"),
            "{}",
            got["notes"]
        );
        for (_, band, _) in &by_weight {
            see(&format!("weight {band}"), 1);
        }

        // AND the period reports over periods ending then: the clinic's whole span, the last
        // two weeks, the month and the quarter of the end date, and a year
        let appointments = source_appointments(&source, end).await;
        let month_start = end.with_day(1).unwrap();
        let quarter = emr_stream::receiver::reports::quarter_start(end);
        for start in [
            first_day,
            end - chrono::Duration::days(14),
            month_start,
            quarter,
            end - chrono::Duration::days(364),
        ] {
            if start > end {
                continue;
            }
            let before = start - chrono::Duration::days(1);
            // TX_NEW (cohort on the end date, enrolled in the period, new)
            let cohort = &by_definition["moh"];
            let expected: Counted = cohort
                .iter()
                .filter(|(_, p)| {
                    p.enrolled.is_some_and(|d| d >= start && d <= end)
                        && !p.transfer_in
                        && p.earliest_start.is_some_and(|d| d >= start)
                })
                .map(|(id, p)| key(*id, p, "count"))
                .collect();
            let got = report(
                &receiver,
                "tx_new",
                &format!("start_date={start}&end_date={end}"),
            )
            .await;
            assert_same(&format!("TX_NEW {start}..{end}"), &counted(&got), &expected);
            see("tx_new", expected.len());

            // TX_ML and TX_RTT (PEPFAR outcomes at the start and at the end)
            let at_end = &by_definition["pepfar"];
            let at_start = source_cohort(&source, before, 30).await;
            let expected: Counted = at_end
                .iter()
                .filter(|(id, p)| {
                    ["defaulted", "died", "stopped", "transferred_out"]
                        .contains(&p.outcome.as_str())
                        && ((at_start.get(id).is_some_and(|s| s.outcome == "on_art")
                            && p.earliest_start.is_some_and(|d| d < start))
                            || p.earliest_start.is_some_and(|d| d >= start && d <= end))
                })
                .map(|(id, p)| {
                    let f = match p.outcome.as_str() {
                        "died" => "died".to_owned(),
                        "transferred_out" => "transferred_out".to_owned(),
                        "stopped" => "refused_stopped".to_owned(),
                        _ => match months(p.earliest_start.unwrap(), p.defaulted_on.unwrap()) {
                            m if m < 3 => "iit_lt_3_months".to_owned(),
                            m if m <= 5 => "iit_3_5_months".to_owned(),
                            _ => "iit_6_plus_months".to_owned(),
                        },
                    };
                    key(*id, p, &f)
                })
                .collect();
            let got = report(
                &receiver,
                "tx_ml",
                &format!("start_date={start}&end_date={end}"),
            )
            .await;
            assert_same(&format!("TX_ML {start}..{end}"), &counted(&got), &expected);
            assert_rows_match_patients("TX_ML", &got, &["gender", "age_group"]);
            for c in &expected {
                see(&format!("tx_ml {}", c.3), 1);
            }
            let returns = source_first_dispensation(&source, start, end).await;
            let cd4 = source_latest(&source, end, "CD4 count").await;
            let mut expected = Counted::new();
            for (id, p) in at_end {
                let Some(s) = at_start.get(id) else { continue };
                let Some(back) = returns.get(id) else {
                    continue;
                };
                if !(["defaulted", "stopped"].contains(&s.outcome.as_str())
                    && p.outcome == "on_art")
                {
                    continue;
                }
                let m = s.outcome_date.map(|d| months(d, *back));
                let returned = match m {
                    None => "returned_lt_3_months",
                    Some(m) if m < 3 => "returned_lt_3_months",
                    Some(m) if m <= 5 => "returned_3_5_months",
                    Some(_) => "returned_6_plus_months",
                };
                let cd4_field = match cd4.get(id) {
                    None if m.is_none_or(|m| m <= 2) => "not_eligible_for_cd4",
                    None => "cd4_unknown",
                    Some((v, modifier))
                        if *v < 200.0 || (*v == 200.0 && modifier.as_deref() == Some("<")) =>
                    {
                        "cd4_lt_200"
                    }
                    Some(_) => "cd4_gte_200",
                };
                expected.insert(key(*id, p, returned));
                expected.insert(key(*id, p, cd4_field));
            }
            let got = report(
                &receiver,
                "tx_rtt",
                &format!("start_date={start}&end_date={end}"),
            )
            .await;
            assert_same(&format!("TX_RTT {start}..{end}"), &counted(&got), &expected);
            for c in &expected {
                see(&format!("tx_rtt {}", c.3), 1);
            }

            for (definition, days) in [("moh", 60), ("pepfar", 30)] {
                // missed appointments
                let mut conn = source.get_conn().await.unwrap();
                set_period(&mut conn, start, end, days).await;
                let missed: BTreeSet<i64> = conn
                    .query::<i64, _>(SOURCE_MISSED)
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                drop(conn);
                let got = report(
                    &receiver,
                    "missed_appointments",
                    &format!("start_date={start}&end_date={end}&definition={definition}"),
                )
                .await;
                let got_missed: BTreeSet<i64> = got["patients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["patient_id"].as_i64().unwrap())
                    .collect();
                assert_eq!(got_missed, missed, "missed appointments {definition} {start}..{end}: receiver (left) vs source (right)");
                see("missed", missed.len());
                // the defaulter list: defaulted at the end, defaulter date in the period, with an appointment
                let cohort = &by_definition[definition];
                let expected: BTreeSet<(i64, String, String)> = cohort
                    .iter()
                    .filter(|(id, p)| {
                        p.outcome == "defaulted"
                            && p.defaulted_on.is_some_and(|d| d >= start && d <= end)
                            && appointments.contains_key(id)
                    })
                    .map(|(id, p)| {
                        (
                            *id,
                            p.defaulted_on.unwrap().to_string(),
                            appointments[id].clone(),
                        )
                    })
                    .collect();
                let got = report(
                    &receiver,
                    "defaulter_list",
                    &format!("start_date={start}&end_date={end}&definition={definition}"),
                )
                .await;
                let got_list: BTreeSet<(i64, String, String)> = got["patients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        assert!(
                            p["arv_number"].as_str().unwrap().starts_with("A25-ARV-"),
                            "{p}"
                        );
                        assert!(
                            p["given_name"].is_string() && p["landmark"].is_string(),
                            "{p}"
                        );
                        (
                            p["patient_id"].as_i64().unwrap(),
                            p["defaulter_date"].as_str().unwrap().to_owned(),
                            p["appointment_date"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(
                    got_list, expected,
                    "defaulter list {definition} {start}..{end}"
                );
                see("defaulter list", expected.len());
            }

            // the MOH quarterly cohort (MOH outcomes): registration in the period and
            // cumulatively, outcomes, regimens of the alive
            let registration = source_registration(&source, end).await;
            let facts = source_cohort_facts(&source, end).await;
            let expected =
                expected_moh_cohort(&by_definition["moh"], &registration, &facts, start, end);
            let got = report(
                &receiver,
                "cohort",
                &format!("start_date={start}&end_date={end}&definition=pepfar"),
            )
            .await;
            assert_eq!(got["definition"], "moh", "the cohort is always MOH");
            assert_same(&format!("cohort {start}..{end}"), &counted(&got), &expected);
            let rows = got["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 1, "one row");
            for f in got["fields"].as_array().unwrap() {
                let f = f.as_str().unwrap();
                let n = expected
                    .iter()
                    .filter(|(_, _, _, field)| field == f)
                    .count();
                assert_eq!(rows[0][f].as_u64().unwrap() as usize, n, "cohort {f}");
                see(&format!("cohort {f}"), n);
            }
            // TX_PVLS (PEPFAR TX_CURR, due, drawn and results, women by maternal status)
            let cohort = &by_definition["pepfar"];
            let vl = source_vl(&source, end).await;
            let maternal = source_maternal(&source, start, end).await;
            let expected = expected_pvls(cohort, &vl, &maternal, start, end);
            let got = report(
                &receiver,
                "tx_pvls",
                &format!("start_date={start}&end_date={end}"),
            )
            .await;
            assert_same(
                &format!("TX_PVLS {start}..{end}"),
                &counted(&got),
                &expected,
            );
            let mut by_age = got.clone();
            by_age["rows"] = Value::Array(
                got["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["age_group"] != "All")
                    .cloned()
                    .collect(),
            );
            assert_rows_match_patients("TX_PVLS", &by_age, &["gender", "age_group"]);
            // the women again by maternal status, each row equal to her patients
            for row in got["rows"].as_array().unwrap() {
                if row["age_group"] != "All" {
                    continue;
                }
                let status = row["gender"].as_str().unwrap();
                for f in got["fields"].as_array().unwrap() {
                    let f = f.as_str().unwrap();
                    let women = expected
                        .iter()
                        .filter(|(id, g, _, field)| {
                            g == "F" && field == f && maternal.get(id).copied() == Some(status)
                        })
                        .count();
                    assert_eq!(
                        row[f].as_u64().unwrap() as usize,
                        women,
                        "TX_PVLS {start}..{end}: {status} {f}"
                    );
                }
            }
            for (_, _, _, f) in &expected {
                see(&format!("tx_pvls {f}"), 1);
            }
            for (id, status) in &maternal {
                if expected
                    .iter()
                    .any(|(p, _, _, f)| p == id && f == "due_for_vl")
                {
                    see(&format!("tx_pvls due {status}"), 1);
                }
            }
        }
    }

    // AND the clinic produced every case the reports tell apart, so the comparison meant something
    let mut wanted: Vec<String> = ["on_art", "died", "transferred_out", "stopped", "defaulted"]
        .iter()
        .map(|o| format!("outcome {o}"))
        .collect();
    wanted.extend(
        [
            "PEPFAR-only defaulters",
            "two expiries",
            "pills back",
            "legacy expiry",
            "refill client in the cohort",
            "tx_curr",
            "tx_new",
            "missed",
            "defaulter list",
            "tx_ml died",
            "tx_ml iit_lt_3_months",
            "tx_ml transferred_out",
            "tx_ml refused_stopped",
            "tx_rtt returned_lt_3_months",
            "tx_rtt returned_3_5_months",
            "tx_rtt returned_6_plus_months",
            "regimen unknown",
            "weight 5-5.9",
            "weight Unknown",
            "tx_pvls tx_curr",
            "tx_pvls due_for_vl",
            "tx_pvls drawn_routine",
            "tx_pvls drawn_targeted",
            "tx_pvls low_vl_routine",
            "tx_pvls high_vl_routine",
            "tx_pvls low_vl_targeted",
            "tx_pvls high_vl_targeted",
            "tx_pvls due FP",
            "tx_pvls due FBf",
            "tx_pvls due FNP",
            "cohort total_registered",
            "cohort initiated_on_art_first_time",
            "cohort re_initiated_on_art",
            "cohort transfer_in",
            "cohort cum_re_initiated_on_art",
            "cohort cum_transfer_in",
            "cohort all_males",
            "cohort pregnant_females_all_ages",
            "cohort non_pregnant_females",
            "cohort adults",
            "cohort children_24_months_14_years",
            "cohort presumed_severe_hiv_disease_in_infants",
            "cohort confirmed_hiv_infection_in_infants_pcr",
            "cohort asymptomatic",
            "cohort who_stage_three",
            "cohort who_stage_four",
            "cohort pregnant_women",
            "cohort breastfeeding_mothers",
            "cohort unknown_other_reason_outside_guidelines",
            "cohort current_episode_of_tb",
            "cohort tb_within_the_last_two_years",
            "cohort no_tb",
            "cohort kaposis_sarcoma",
            "cohort died_within_month_1",
            "cohort died_within_month_2",
            "cohort died_within_month_3",
            "cohort died_after_month_3",
            "cohort tb_suspected",
            "cohort tb_not_suspected",
            "cohort tb_confirmed_on_treatment",
            "cohort tb_confirmed_not_on_treatment",
            "cohort unknown_tb_status",
            "cohort adherent_95_105",
            "cohort not_adherent",
            "cohort unknown_adherence",
            "cohort total_pregnant_women",
            "cohort total_breastfeeding_women",
            "cohort total_alive_and_on_art",
            "cohort died_total",
            "cohort defaulted",
            "cohort stopped_art",
            "cohort transferred_out",
            "cohort unknown_regimen",
        ]
        .map(String::from),
    );
    for entry in REGIMEN_TABLE.split(" | ") {
        wanted.push(format!("regimen {}", entry.split_once(' ').unwrap().0));
    }
    // (every regimen occurs in the data: the drug set of some patient's dispensation day)
    let mut conn = source.get_conn().await.unwrap();
    let day_sets: Vec<String> = conn
        .query(
            "SELECT GROUP_CONCAT(drug_id ORDER BY drug_id) FROM (
               SELECT o.patient_id, DATE(o.start_date) AS day, x.drug_inventory_id AS drug_id
               FROM orders o JOIN drug_order x ON x.order_id = o.order_id
               WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
                 AND x.drug_inventory_id IN (SELECT drug_id FROM drug WHERE concept_id IN
                       (SELECT concept_id FROM concept_set WHERE concept_set = 1085))
               GROUP BY 1, 2, 3 HAVING SUM(x.quantity) < 6000) t
             GROUP BY patient_id, day",
        )
        .await
        .unwrap();
    drop(conn);
    for set in &day_sets {
        see(&format!("regimen {}", regimen(set)), 1);
    }
    for w in &wanted {
        assert!(
            seen.get(w).copied().unwrap_or(0) > 0,
            "no {w:?} in {seen:?}"
        );
    }
    let mut conn = source.get_conn().await.unwrap();
    let checks = [
        ("transfer-in", "SELECT COUNT(*) FROM obs WHERE concept_id = 3289 AND value_coded = 7572"),
        ("no reason for starting", "SELECT COUNT(*) FROM patient p WHERE NOT EXISTS (SELECT 1 FROM obs o WHERE o.person_id = p.patient_id AND o.concept_id = 7563)"),
        ("drug-refill client", "SELECT COUNT(*) FROM obs WHERE concept_id = 3289 AND value_coded = 9685"),
        ("external client", "SELECT COUNT(*) FROM obs WHERE concept_id = 3289 AND value_coded = 9684"),
        (
            "refill client registered later",
            "SELECT COUNT(*) FROM obs a JOIN obs b ON b.person_id = a.person_id AND b.concept_id = 3289 AND b.value_coded = 7571 \
             WHERE a.concept_id = 3289 AND a.value_coded IN (9684, 9685) AND b.obs_datetime > a.obs_datetime",
        ),
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
        ("pills tied to an order and naming the drug", "SELECT COUNT(*) FROM obs WHERE concept_id = 2540 AND order_id IS NOT NULL AND value_drug IS NOT NULL"),
        ("pills as text", "SELECT COUNT(*) FROM obs WHERE concept_id = 2540 AND value_text IS NOT NULL"),
        ("pills by the drug's concept", "SELECT COUNT(*) FROM obs WHERE concept_id IN (SELECT concept_id FROM drug)"),
        ("CD4 below 200", "SELECT COUNT(*) FROM obs WHERE concept_id = 5497 AND value_numeric < 200"),
        ("CD4 <200", "SELECT COUNT(*) FROM obs WHERE concept_id = 5497 AND value_numeric = 200 AND value_modifier = '<'"),
        ("CD4 200 and above", "SELECT COUNT(*) FROM obs WHERE concept_id = 5497 AND value_numeric >= 200 AND value_modifier IS NULL"),
        ("state 127", "SELECT COUNT(*) FROM patient_state WHERE state = 127"),
        (
            "ART last taken exactly 14 days before (not a re-initiation)",
            "SELECT COUNT(*) FROM obs e JOIN obs l ON l.encounter_id = e.encounter_id AND l.concept_id = 7751 \
             WHERE e.concept_id = 7937 AND l.value_datetime = e.obs_datetime - INTERVAL 14 DAY",
        ),
        ("VL on every specimen", "SELECT COUNT(DISTINCT concept_id) = 5 FROM orders WHERE order_type_id = 4"),
        ("VL order without a reason", "SELECT COUNT(*) FROM orders o WHERE o.order_type_id = 4 AND NOT EXISTS (SELECT 1 FROM obs r WHERE r.order_id = o.order_id AND r.concept_id = 9610)"),
        ("VL order without a result", "SELECT COUNT(*) FROM orders o WHERE o.order_type_id = 4 AND NOT EXISTS (SELECT 1 FROM obs r WHERE r.order_id = o.order_id AND r.concept_id = 856)"),
        ("VL LDL", "SELECT COUNT(*) FROM obs WHERE concept_id = 856 AND value_text = 'LDL'"),
        ("VL <1000", "SELECT COUNT(*) FROM obs WHERE concept_id = 856 AND value_numeric = 1000 AND value_modifier = '<'"),
        ("VL 1000 and above", "SELECT COUNT(*) FROM obs WHERE concept_id = 856 AND value_numeric >= 1000 AND value_modifier IS NULL"),
    ];
    for (case, sql) in checks {
        let n: Option<i64> = conn.query_first(sql).await.unwrap();
        assert!(n.unwrap_or(0) > 0, "the simulator wrote no {case} case");
    }
    eprintln!(
        "art reports: {} end dates; cases seen {seen:?}",
        end_dates.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_never_blocks_readers_nor_empties_the_site() {
    // GIVEN a streamed clinic and its TX_CURR
    let (rig, receiver, _tailer, _) = streamed_clinic("rebuild", 50, 10, 4).await;
    let url = format!("{}/api/v1/reports/tx_curr?site_id={SITE}", receiver.url(""));
    let expected: Value = serde_json::from_slice(&get(&url).await.bytes().await.unwrap()).unwrap();
    let expected_total = expected["total"].as_i64().unwrap();
    assert!(expected_total > 0, "{expected}");
    // (the answer says when the site's data was applied, and that nothing waits)
    assert!(
        expected["as_of"].as_str().unwrap().starts_with("20"),
        "{expected}"
    );
    assert_eq!(expected["queued_patients"], 0, "{expected}");
    assert_eq!(expected["rebuilding_sites"], 0, "{expected}");
    // (and the endpoint's edges: CSV by Accept, a clear 400 per bad parameter, 404 for a name)
    let client = common::reader_client();
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
        .get(receiver.url("/api/v1/reports/tx_cur"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // AND while the site's rebuild is unfinished (held so: its lock taken, as a rebuild's
    // chunk takes it, so that no worker ends it), the answer says its figures are provisional
    let (pg, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (holder, connection) = tokio_postgres::connect(&rig.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    common::hold_site_lock(&holder, SITE).await;
    pg.execute(
        "UPDATE ids.site_state SET rebuild_started = now() WHERE site_id = $1",
        &[&(SITE as i32)],
    )
    .await
    .unwrap();
    let during: Value = serde_json::from_slice(&get(&url).await.bytes().await.unwrap()).unwrap();
    assert_eq!(during["rebuilding_sites"], 1, "{during}");
    let csv = client
        .get(&url)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains(" rebuilding_sites=1 "), "{csv}");
    pg.execute(
        "UPDATE ids.site_state SET rebuild_started = NULL WHERE site_id = $1",
        &[&(SITE as i32)],
    )
    .await
    .unwrap();
    holder.batch_execute("ROLLBACK").await.unwrap();

    // WHEN readers read continuously while the site is rebuilt three times over (the command
    // and the receiver's queue worker draining together), then verified
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (url, stop) = (url.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let client = common::reader_client();
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
