//! One source transaction of 200,000 rows flows through with the tailer's memory bounded:
//! its rows are written to sled in chunks (the checkpoint stays before the transaction until
//! its commit is read) and the visit ships in parts.

mod common;

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

const ROWS: u64 = 200_000;
const RSS_LIMIT_KIB: u64 = 100 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_rows_in_one_transaction() {
    // GIVEN a receiver and a tailer following a fixture EMR with one encounter
    let rig = common::Rig::new("big").await;
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);
    let pool = rig.services.mysql_pool(&rig.source_db);
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(
        "INSERT INTO encounter (encounter_id, encounter_type, patient_id, encounter_datetime, program_id, date_created, uuid) \
         VALUES (1, 57, 1, '2026-01-05 09:00:00', 1, NOW(), 'big-encounter')",
    )
    .await
    .unwrap();

    // WHEN one transaction inserts 200,000 obs rows (e.g. a lab import)
    let started = Instant::now();
    conn.query_drop(format!(
        "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, value_numeric, value_text, date_created, uuid) \
         SELECT 1, 856, 1, '2026-01-05 10:00:00', seq, CONCAT('result ', seq), '2026-01-05 10:00:00', CONCAT('big-', seq) \
         FROM seq_1_to_{ROWS}"
    ))
    .await
    .unwrap();
    let status = rig.wait_quiet(&tailer, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    let rss = tailer.peak_rss_kib();

    // THEN every row reached both stores and the tailer stayed under 100 MB
    let rows = common::assert_stores_equal_source(&rig).await;
    assert!(rows as u64 >= ROWS, "{rows}");
    eprintln!(
        "big transaction: {ROWS} rows through in {:.1}s; tailer peak RSS {} KiB; {status}",
        elapsed.as_secs_f64(),
        rss
    );
    assert!(
        rss > 0 && rss < RSS_LIMIT_KIB,
        "tailer peak RSS {rss} KiB >= {RSS_LIMIT_KIB} KiB"
    );
}
