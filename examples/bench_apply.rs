//! Receiver apply throughput: 100k obs rows through parse → validate → plan → apply into the
//! MySQL mirror and PostgreSQL cdr (concurrently, as the receiver does), next to a plain
//! 1000-row multi-row upsert of the same rows into the same MySQL. Run by
//! scripts/bench-apply.sh:
//!
//!     bench_apply MYSQL_URL PG_URL ROWS ROWS_PER_BATCH

use std::path::Path;
use std::time::Instant;

use emr_stream::mapping::Mapping;
use emr_stream::receiver::apply::{self, MirrorStore, PgStore};
use emr_stream::receiver::batch;
use mysql_async::prelude::Queryable;
use serde_json::json;

fn batch_json(first: u64, rows: u64, batch_no: u64) -> Vec<u8> {
    let rows: Vec<_> = (first..first + rows)
        .map(|i| {
            json!({"table": "obs", "op": "upsert", "lsn": 1_000_000 + i, "pk": {"obs_id": i}, "data": {
                "person_id": 1 + i % 5000, "concept_id": 5089, "encounter_id": 1 + i % 20000,
                "obs_datetime": "2026-01-05 10:00:00", "location_id": 101, "value_numeric": i as f64 / 10.0,
                "value_text": format!("Zoë {i}"), "creator": 1, "date_created": "2026-01-05 10:00:00",
                "voided": 0, "uuid": format!("bench-{i}")}})
        })
        .collect();
    json!({"schema_version": 1, "site_id": 101, "batch_id": format!("bench-{batch_no}"), "visits": [{
        "stream_key": "101:1:1:2026-01-05", "patient_id": 1, "program_id": 1, "visit_date": "2026-01-05",
        "version": batch_no + 1, "complete": false, "rows": rows}]})
    .to_string()
    .into_bytes()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 5,
        "usage: bench_apply MYSQL_URL PG_URL ROWS ROWS_PER_BATCH"
    );
    let (my_url, pg_url) = (&args[1], &args[2]);
    let total: u64 = args[3].parse().unwrap();
    let per: u64 = args[4].parse().unwrap();
    let mapping = Mapping::load(Path::new("mappings/openmrs.toml")).unwrap();
    let mirror = MirrorStore::connect(my_url, None, "bench_apply_mirror", &mapping)
        .await
        .unwrap();
    let pool = emr_stream::receiver::pg::pool(pg_url, 4).unwrap();
    let pg = PgStore::connect(pool, &mapping, apply::PgOptions::default())
        .await
        .unwrap();
    let caps = batch::Caps {
        max_decompressed: 64 << 20,
        max_visits: 10_000,
        max_rows: 200_000,
    };
    let bodies: Vec<Vec<u8>> = (0..total / per)
        .map(|b| batch_json(b * per, per, b))
        .collect();

    let started = Instant::now();
    for body in &bodies {
        let parsed = batch::parse(body).unwrap();
        batch::validate(&parsed, 101, caps, &mapping).unwrap();
        let plan = apply::plan(&parsed, &mapping);
        let (a, b) = tokio::join!(
            pg.apply(101, &parsed, &plan),
            mirror.apply(101, &parsed.batch_id, &plan)
        );
        a.unwrap();
        b.unwrap();
    }
    let t = started.elapsed().as_secs_f64();
    println!("receiver apply, both stores: {total} rows in {t:.2} s = {:.0} rows/s ({per} rows per batch)", total as f64 / t);

    // The same rows as plain 1000-row multi-row upserts into a copy of the mirror table.
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(my_url).unwrap())
        .db_name(Some("bench_apply_mirror"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("DROP TABLE IF EXISTS plain_obs")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE plain_obs LIKE obs")
        .await
        .unwrap();
    let cols = "site_id, lsn, obs_id, person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, value_text, creator, date_created, voided, uuid";
    let started = Instant::now();
    for chunk in 0..total / 1000 {
        let values: Vec<String> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|i| format!("(101, {}, {i}, {}, 5089, {}, '2026-01-05 10:00:00', 101, {}, 'Zoë {i}', 1, '2026-01-05 10:00:00', 0, 'bench-{i}')", 1_000_000 + i, 1 + i % 5000, 1 + i % 20000, i as f64 / 10.0))
            .collect();
        let sql = format!(
            "INSERT INTO plain_obs ({cols}) VALUES {} ON DUPLICATE KEY UPDATE value_numeric = VALUES(value_numeric), value_text = VALUES(value_text), lsn = VALUES(lsn)",
            values.join(",")
        );
        conn.query_drop(sql).await.unwrap();
    }
    let u = started.elapsed().as_secs_f64();
    println!(
        "plain MySQL 1000-row multi-row upsert: {total} rows in {u:.2} s = {:.0} rows/s",
        total as f64 / u
    );
}
