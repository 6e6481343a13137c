//! The whole system on the real parts: a simulated ART clinic written into MariaDB, the
//! tailer and the receiver as real processes, MySQL mirror and PostgreSQL compared with the
//! source column by column, and the visits report compared with a count on the source.

mod common;

use std::time::{Duration, Instant};

use common::{assert_stores_equal_source, source_visits_per_day, wait_report_equals, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_clinic_reaches_mirror_cdr_and_report() {
    simulated_clinic(Rig::new("e2e").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_clinic_reaches_stores_partitioned_by_site() {
    let mut rig = Rig::new("e2e_part").await;
    rig.partitions = 8;
    simulated_clinic(rig).await;
}

async fn simulated_clinic(rig: Rig) {
    // GIVEN a fixture EMR, a receiver and a tailer following the EMR's binlog (on stores
    // partitioned by site when the rig says so)
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);

    // WHEN a clinic of 60 patients works for 5 days
    let started = Instant::now();
    let sim = rig.simulate(60, 5, 7, 0).wait_with_output().unwrap();
    assert!(sim.status.success(), "simulate failed");
    let counts: serde_json::Value = serde_json::from_slice(&sim.stdout).unwrap();
    assert!(counts["patients"].as_u64().unwrap() >= 50, "{counts}");
    let status = rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();

    // THEN every mapped table of the mirror and of cdr equals the source, column by column
    let rows = assert_stores_equal_source(&rig).await;
    // AND the visits report equals the count computed on the source
    let expected = source_visits_per_day(&rig).await;
    assert!(
        expected.len() >= 5,
        "expected visits on every simulated day: {expected:?}"
    );
    let report = wait_report_equals(&receiver, &expected, Duration::from_secs(30)).await;
    assert!(report["as_of"].is_string(), "{report}");
    // AND the IDS tables equal their definitions
    common::assert_ids_verify(&rig);
    eprintln!(
        "e2e: {rows} rows per store, {} transactions, caught up in {:.1}s; tailer peak RSS {} KiB",
        status["transactions"],
        elapsed.as_secs_f64(),
        tailer.peak_rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailer_killed_at_twenty_random_moments_loses_nothing() {
    // GIVEN a receiver and a tailer, and a clinic writing for a while
    let rig = Rig::new("kill").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    let mut sim = rig.simulate(60, 5, 11, 25);

    // WHEN the tailer is killed with SIGKILL at 20 random moments and restarted each time
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut during_workload = 0;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(100 + seed % 600)).await;
        tailer.kill9();
        if sim.try_wait().unwrap().is_none() {
            during_workload += 1;
        }
        tailer = rig.tailer(&receiver.addr);
    }
    assert!(sim.wait().unwrap().success(), "simulate failed");
    assert!(
        during_workload >= 10,
        "only {during_workload} kills happened while the clinic was writing"
    );
    rig.wait_quiet(&tailer, Duration::from_secs(180)).await;

    // THEN the mirror and cdr still equal the source, no row missing, and every visit of the
    // source reached the receiver
    assert_stores_equal_source(&rig).await;
    common::assert_every_visit_received(&rig).await;
    let expected = source_visits_per_day(&rig).await;
    wait_report_equals(&receiver, &expected, Duration::from_secs(30)).await;
}
