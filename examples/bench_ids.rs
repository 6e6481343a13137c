//! IDS view refresh and report times at national scale: fills `cdr` with PATIENTS patients over
//! 100 sites, VISITS_PER_PATIENT visits each (4 encounters, 1–2 ARV orders, pills brought back
//! and an appointment per visit, 10% with an outcome, 15% transfer-ins), then times the
//! receiver's refresh of all views (first fill, an unchanged refresh, and after 1% of visits
//! changed) and the reports for all sites. Run by scripts/bench-ids.sh:
//!
//!     bench_ids PG_URL PATIENTS VISITS_PER_PATIENT

use std::path::Path;
use std::time::Instant;

use emr_stream::mapping::Mapping;
use emr_stream::receiver::apply::{self, PgStore};
use emr_stream::receiver::{ids, reports};

/// The synthetic national CDR, generated inside PostgreSQL. `{P}` patients, `{V}` visits each.
const FILL: &str = "
INSERT INTO cdr.drug (site_id, lsn, drug_id, concept_id, name)
  SELECT s, 1, d.id, d.concept, d.name FROM generate_series(1, 100) s,
  (VALUES (983, 2833, 'TDF/3TC/DTG'), (982, 9662, 'DTG'), (297, 916, 'Cotrimoxazole')) d(id, concept, name);
INSERT INTO cdr.concept_set (site_id, lsn, concept_set_id, concept_id, concept_set)
  SELECT s, 1, c.id, c.concept, 1085 FROM generate_series(1, 100) s, (VALUES (1, 2833), (2, 9662)) c(id, concept);
INSERT INTO cdr.person (site_id, lsn, person_id, gender, birthdate, voided)
  SELECT 1 + (p - 1) % 100, 1, p, CASE WHEN p % 5 < 3 THEN 'F' ELSE 'M' END,
         date '1950-01-01' + (p * 37) % 25000, (p % 500 = 0)::int
  FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient (site_id, lsn, patient_id, voided)
  SELECT 1 + (p - 1) % 100, 1, p, 0 FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient_program (site_id, lsn, patient_program_id, patient_id, program_id, date_enrolled, voided)
  SELECT 1 + (p - 1) % 100, 1, p, p, 1, date '2023-01-01' + p % 90, 0 FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient_state (site_id, lsn, patient_state_id, patient_program_id, state, start_date, date_created, voided)
  SELECT 1 + (p - 1) % 100, 1, p, p, 7, date '2023-01-01' + p % 90, timestamp '2023-01-01', 0
  FROM generate_series(1, {P}) p
  UNION ALL
  SELECT 1 + (p - 1) % 100, 1, {P} + p, p, (ARRAY[2, 3, 6])[1 + p % 3], date '2023-06-01' + p % 400,
         timestamp '2023-06-01', 0
  FROM generate_series(1, {P}) p WHERE p % 10 = 0;
INSERT INTO cdr.encounter (site_id, lsn, encounter_id, encounter_type, patient_id, encounter_datetime, voided)
  SELECT 1 + (p - 1) % 100, 1, ((p - 1) * {V} + k) * 4 + j, (ARRAY[51, 53, 25, 7])[j + 1], p,
         timestamp '2023-01-01 08:00' + ((p % 90) + k * 30) * interval '1 day' + j * interval '10 min', 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 3) j;
INSERT INTO cdr.orders (site_id, lsn, order_id, order_type_id, patient_id, encounter_id, start_date, voided)
  SELECT 1 + (p - 1) % 100, 1, ((p - 1) * {V} + k) * 2 + d, 1, p, ((p - 1) * {V} + k) * 4 + 2,
         timestamp '2023-01-01 08:20' + ((p % 90) + k * 30) * interval '1 day', 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 1) d
  WHERE d = 0 OR p % 3 = 0;
INSERT INTO cdr.drug_order (site_id, lsn, order_id, drug_inventory_id, equivalent_daily_dose, quantity)
  SELECT o.site_id, 1, o.order_id, CASE o.order_id % 2 WHEN 0 THEN 983 ELSE 982 END, 1,
         30 * (1 + (o.order_id / 2) % 3)
  FROM cdr.orders o;
INSERT INTO cdr.obs (site_id, lsn, obs_id, person_id, concept_id, encounter_id, obs_datetime,
                     value_drug, value_numeric, value_datetime, value_coded, voided)
  SELECT 1 + (p - 1) % 100, 1, ((p - 1) * {V} + k) * 2 + j, p, CASE j WHEN 0 THEN 2540 ELSE 5096 END,
         ((p - 1) * {V} + k) * 4 + CASE j WHEN 0 THEN 1 ELSE 3 END,
         timestamp '2023-01-01 08:10' + ((p % 90) + k * 30) * interval '1 day',
         CASE j WHEN 0 THEN 983 END, CASE j WHEN 0 THEN (p + k) % 7 END,
         CASE j WHEN 1 THEN timestamp '2023-01-01' + ((p % 90) + k * 30 + 30) * interval '1 day' END,
         NULL, 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 1) j
  UNION ALL
  SELECT 1 + (p - 1) % 100, 1, 2 * {P} * {V} + p, p, 3289, (p - 1) * {V} * 4,
         timestamp '2023-01-01 08:00' + (p % 90) * interval '1 day', NULL, NULL, NULL,
         CASE WHEN p % 100 < 15 THEN 7572 ELSE 7571 END, 0
  FROM generate_series(1, {P}) p;
ANALYZE;
";

/// 1% of visits change: their encounters are voided.
const CHANGE: &str = "UPDATE cdr.encounter SET voided = 1 WHERE encounter_id % 400 = 0";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 4,
        "usage: bench_ids PG_URL PATIENTS VISITS_PER_PATIENT"
    );
    let patients: u64 = args[2].parse().expect("PATIENTS");
    let visits: u64 = args[3].parse().expect("VISITS_PER_PATIENT");
    let mapping = Mapping::load(Path::new("mappings/openmrs.toml")).unwrap();
    let pool = apply::postgres_pool(&args[1], 4).unwrap();
    PgStore::connect(pool.clone(), &mapping).await.unwrap();
    let client = pool.get().await.unwrap();

    let started = Instant::now();
    client
        .batch_execute(
            &FILL
                .replace("{P}", &patients.to_string())
                .replace("{V}", &visits.to_string()),
        )
        .await
        .unwrap();
    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM cdr.encounter), (SELECT count(*) FROM cdr.obs), (SELECT count(*) FROM cdr.orders)",
            &[],
        )
        .await
        .unwrap();
    let (encounters, obs, orders): (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    println!(
        "filled cdr: {patients} patients, {} visits ({encounters} encounters, {obs} obs, {orders} orders) in {:.1}s",
        patients * visits,
        started.elapsed().as_secs_f64()
    );

    for (label, change) in [
        ("first refresh (views empty before)", None),
        ("refresh, nothing changed", None),
        ("refresh after 1% of visits changed", Some(CHANGE)),
    ] {
        if let Some(sql) = change {
            client.batch_execute(sql).await.unwrap();
        }
        let started = Instant::now();
        assert!(ids::refresh(&pool).await.unwrap(), "refresh lock busy");
        let took = started.elapsed();
        let per_view = client
            .query(
                "SELECT view_name, duration_ms FROM ids.refresh_log ORDER BY view_name",
                &[],
            )
            .await
            .unwrap();
        let per_view: Vec<String> = per_view
            .iter()
            .map(|r| format!("{} {} ms", r.get::<_, String>(0), r.get::<_, i64>(1)))
            .collect();
        println!(
            "{label}: {:.1}s ({})",
            took.as_secs_f64(),
            per_view.join(", ")
        );
    }

    let today = chrono::NaiveDate::from_ymd_opt(2024, 6, 30).unwrap();
    for (name, query) in [
        (reports::ReportName::TxCurr, "end_date=2023-12-31"),
        (
            reports::ReportName::TxCurr,
            "end_date=2023-12-31&definition=pepfar",
        ),
        (reports::ReportName::TxCurr, "end_date=2023-12-31&site_id=7"),
        (
            reports::ReportName::TxNew,
            "start_date=2023-01-01&end_date=2023-03-31",
        ),
        (
            reports::ReportName::Visits,
            "start_date=2023-10-01&end_date=2023-12-31",
        ),
        (
            reports::ReportName::MissedAppointments,
            "start_date=2023-10-01&end_date=2023-12-31",
        ),
    ] {
        let params = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let request = reports::Request::parse(name, &params, false, today).unwrap();
        let started = Instant::now();
        let report = reports::read(&pool, &request).await.unwrap();
        println!(
            "report {} ({query}), all sites unless site_id: total {} in {} ms",
            name.as_str(),
            report.total,
            started.elapsed().as_millis()
        );
    }
}
