//! Receiver apply throughput: 100k obs rows through parse → validate → plan → apply into the
//! MySQL mirror and PostgreSQL cdr (concurrently, as the receiver does; with the IDS
//! maintenance off and on), next to the baseline: plain upserts of as many rows into copies
//! of the same tables in both stores at once (1000-row multi-row upserts into MySQL, COPY into
//! a staging table then INSERT … ON CONFLICT into PostgreSQL). Run by scripts/bench-apply.sh:
//!
//!     bench_apply MYSQL_URL PG_URL ROWS ROWS_PER_BATCH

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use emr_stream::mapping::Mapping;
use emr_stream::receiver::apply::{self, MirrorStore, PgStore};
use emr_stream::receiver::batch;
use futures_util::SinkExt;
use mysql_async::prelude::Queryable;
use serde_json::json;

async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let t = Instant::now();
    let r = f.await;
    (r, t.elapsed().as_secs_f64())
}

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

    let apply_all = |pg: PgStore, bodies: Vec<Vec<u8>>| {
        let pg = Arc::new(pg);
        let (mirror, mapping) = (&mirror, &mapping);
        async move {
            let started = Instant::now();
            let (mut t_plan, mut t_pg, mut t_my) = (0.0, 0.0, 0.0);
            for body in &bodies {
                let t = Instant::now();
                let parsed = batch::parse(body).unwrap();
                batch::validate(&parsed, 101, caps, mapping).unwrap();
                let plan = apply::plan(&parsed, mapping);
                t_plan += t.elapsed().as_secs_f64();
                // (as the receiver does: PostgreSQL on its own task)
                let (parsed, plan) = (Arc::new(parsed), Arc::new(plan));
                let pg_task = tokio::spawn({
                    let (pg, parsed, plan) = (pg.clone(), parsed.clone(), plan.clone());
                    async move { timed(pg.apply(101, &parsed, &plan)).await }
                });
                let (b, my_s) = timed(mirror.apply(101, &parsed.batch_id, &plan)).await;
                let (a, pg_s) = pg_task.await.unwrap();
                a.unwrap();
                b.unwrap();
                (t_pg, t_my) = (t_pg + pg_s, t_my + my_s);
            }
            let t = started.elapsed().as_secs_f64();
            println!("  (parse, validate and plan {t_plan:.2} s; PostgreSQL {t_pg:.2} s and MySQL {t_my:.2} s, side by side)");
            t
        }
    };
    let bodies_off: Vec<Vec<u8>> = (0..total / per)
        .map(|b| batch_json(total + b * per, per, total / per + b))
        .collect();
    let pg_off = PgStore::connect(
        emr_stream::receiver::pg::pool(pg_url, 4).unwrap(),
        &mapping,
        apply::PgOptions::default(),
    )
    .await
    .unwrap()
    .without_maintenance();
    let t_off = apply_all(pg_off, bodies_off).await;
    let t_on = apply_all(pg, bodies).await;

    // The baseline: the same rows (fresh keys) as plain upserts into copies of the tables
    // (same indexes), both stores at once: 1000-row multi-row upserts into MySQL, and into
    // PostgreSQL a COPY into a staging table and one INSERT … ON CONFLICT per batch.
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(my_url).unwrap())
        .db_name(Some("bench_apply_mirror"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("DROP TABLE IF EXISTS plain_obs")
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE plain_obs LIKE obs")
        .await
        .unwrap();
    let pool = emr_stream::receiver::pg::pool(pg_url, 2).unwrap();
    let mut pg_conn = pool.get().await.unwrap();
    pg_conn
        .batch_execute(
            "DROP TABLE IF EXISTS public.plain_obs;
             CREATE TABLE public.plain_obs (LIKE cdr.obs INCLUDING ALL)",
        )
        .await
        .unwrap();
    let cols = "site_id, lsn, obs_id, person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, value_text, creator, date_created, voided, uuid";
    let first = 2 * total;
    let mysql_plain = async {
        let started = Instant::now();
        for chunk in 0..total / 1000 {
            let values: Vec<String> = (first + chunk * 1000..first + chunk * 1000 + 1000)
                .map(|i| format!("(101, {}, {i}, {}, 5089, {}, '2026-01-05 10:00:00', 101, {}, 'Zoë {i}', 1, '2026-01-05 10:00:00', 0, 'bench-{i}')", 1_000_000 + i, 1 + i % 5000, 1 + i % 20000, i as f64 / 10.0))
                .collect();
            let sql = format!(
                "INSERT INTO plain_obs ({cols}) VALUES {} ON DUPLICATE KEY UPDATE value_numeric = VALUES(value_numeric), value_text = VALUES(value_text), lsn = VALUES(lsn)",
                values.join(",")
            );
            conn.query_drop(sql).await.unwrap();
        }
        started.elapsed().as_secs_f64()
    };
    let pg_plain = async {
        let started = Instant::now();
        for b in 0..total / per {
            let tx = pg_conn.transaction().await.unwrap();
            tx.batch_execute(
                "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT * FROM public.plain_obs WITH NO DATA",
            )
            .await
            .unwrap();
            let mut buf = String::new();
            for i in first + b * per..first + (b + 1) * per {
                buf.push_str(&format!(
                    "101\t{}\t{i}\t{}\t5089\t{}\t2026-01-05 10:00:00\t101\t{}\tZoë {i}\t1\t2026-01-05 10:00:00\t0\tbench-{i}\n",
                    1_000_000 + i, 1 + i % 5000, 1 + i % 20000, i as f64 / 10.0
                ));
            }
            let sink = tx
                .copy_in(&format!("COPY stage ({cols}) FROM STDIN"))
                .await
                .unwrap();
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from(buf)).await.unwrap();
            sink.finish().await.unwrap();
            tx.batch_execute(&format!(
                "INSERT INTO public.plain_obs AS t ({cols}) SELECT {cols} FROM stage \
                 ON CONFLICT (site_id, obs_id) DO UPDATE SET value_numeric = EXCLUDED.value_numeric, \
                 value_text = EXCLUDED.value_text, lsn = EXCLUDED.lsn WHERE t.lsn < EXCLUDED.lsn"
            ))
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        started.elapsed().as_secs_f64()
    };
    let started = Instant::now();
    let (t_my, t_pg) = tokio::join!(mysql_plain, pg_plain);
    let t_base = started.elapsed().as_secs_f64();
    let rate = |t: f64| total as f64 / t;
    println!("baseline, plain upserts into both stores at once: {total} rows in {t_base:.2} s = {:.0} rows/s (MySQL 1000-row multi-row upserts alone {:.0} rows/s, PostgreSQL COPY upserts of {per} rows alone {:.0} rows/s)", rate(t_base), rate(t_my), rate(t_pg));
    println!(
        "receiver apply, both stores, IDS maintenance off: {total} rows in {t_off:.2} s = {:.0} rows/s = {:.2}x the baseline",
        rate(t_off),
        t_base / t_off
    );
    println!(
        "receiver apply, both stores, IDS maintenance on:  {total} rows in {t_on:.2} s = {:.0} rows/s = {:.2}x the baseline",
        rate(t_on),
        t_base / t_on
    );
}
