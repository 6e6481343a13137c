//! The missed-visit sweep on the real parts: visits the binlog path never delivered reach the
//! receiver through the nightly sweep, and through the sweep command that closes the gap a
//! checkpoint reset opens.

mod common;

use std::time::{Duration, Instant};

use common::{assert_stores_equal_source, emr, Rig};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_sweep_ships_a_visit_the_binlog_never_carried() {
    // GIVEN a tailer whose nightly sweep is due in 25 s, and a clinic streamed through it
    let rig = Rig::new("nightly").await;
    let receiver = rig.receiver();
    let at = (chrono::Local::now() + chrono::Duration::seconds(25)).format("%H:%M:%S");
    let tailer = rig.tailer_with(
        &receiver.addr,
        "",
        &format!("\n[sweep]\nat = \"{at}\"\ndays = 3\nrows_per_sec = 20000\n"),
    );
    let sim = rig.simulate(20, 2, 8, 0).wait_with_output().unwrap();
    assert!(sim.status.success());
    // AND a visit written with binary logging off: the binlog path never sees it
    write_without_binlog(&rig, 900001).await;
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;

    // WHEN the night comes
    wait_mirror_obs(&rig, 900001, "the nightly sweep").await;
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;

    // THEN the stores equal the source, and the sweep counted what it did
    assert_stores_equal_source(&rig).await;
    let runs = common::metric(&tailer, "emr_sweep_runs_total").await;
    let checked = common::metric(&tailer, "emr_sweep_visits_checked_total").await;
    let resent = common::metric(&tailer, "emr_sweep_visits_resent_total").await;
    assert!(
        runs >= 1.0 && resent >= 1.0 && checked >= resent,
        "runs {runs} checked {checked} resent {resent}"
    );
    eprintln!("nightly sweep: {checked} visits checked, {resent} re-sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_then_printed_sweep_closes_the_gap() {
    // GIVEN a clinic streamed, then the tailer stopped while the clinic goes on
    let rig = Rig::new("gap").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    let sim = rig.simulate(20, 3, 9, 0).wait_with_output().unwrap();
    assert!(sim.status.success());
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    tailer.kill9();
    let sim = rig.simulate(15, 3, 10, 0).wait_with_output().unwrap();
    assert!(sim.status.success());

    // WHEN the checkpoint is reset past those writes (as after a purge), and the sweep command
    // the reset prints is run
    let config_path = rig.dir.join("tailer.toml");
    let config = config_path.to_str().unwrap();
    let reset = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config,
        "--to-current",
        "--yes",
    ]);
    let said = String::from_utf8_lossy(&reset.stdout).into_owned();
    assert!(reset.status.success(), "{said}");
    let summary = common::run_printed_sweep(&said);
    assert!(summary["visits_resent"].as_u64().unwrap() > 0, "{summary}");
    let tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;

    // THEN the mirror and cdr equal the source
    assert_stores_equal_source(&rig).await;
    eprintln!("gap sweep: {summary}");
}

/// Writes an encounter and an obs (ids `id`) for patient 1 today with binary logging off, so
/// only a sweep can find them.
async fn write_without_binlog(rig: &Rig, id: u32) {
    let source = rig.services.mysql_pool(&rig.source_db);
    let mut conn = source.get_conn().await.unwrap();
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .unwrap();
    conn.query_drop(format!(
        "INSERT INTO encounter (encounter_id, encounter_type, patient_id, provider_id, location_id, encounter_datetime, program_id, date_created, uuid) \
         VALUES ({id}, 6, 1, 1, 101, NOW(), 1, NOW(), 'sweep-test-encounter-{id}')"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "INSERT INTO obs (obs_id, person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, date_created, uuid) \
         VALUES ({id}, 1, 5089, {id}, NOW(), 101, 61.5, NOW(), 'sweep-test-obs-{id}')"
    ))
    .await
    .unwrap();
}

/// Waits until the mirror holds obs `id`.
async fn wait_mirror_obs(rig: &Rig, id: u32, what: &str) {
    let mirror = rig.services.mysql_pool(&rig.mirror_db);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let found: Option<i64> = mirror
            .get_conn()
            .await
            .unwrap()
            .query_first(format!("SELECT COUNT(*) FROM obs WHERE obs_id = {id}"))
            .await
            .unwrap();
        if found == Some(1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not deliver the visit"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_on_demand_goes_through_the_running_tailer() {
    // GIVEN a running tailer (no nightly sweep) and a visit the binlog never carried
    let rig = Rig::new("ondemand").await;
    let receiver = rig.receiver();
    let tailer = rig.tailer_with(&receiver.addr, "", "\n[sweep]\nnightly = false\n");
    assert!(rig.simulate(15, 2, 12, 0).wait().unwrap().success());
    write_without_binlog(&rig, 900002).await;
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;

    // WHEN the admin runs `emr-stream sweep` while the tailer holds the state
    let config = rig.dir.join("tailer.toml");
    let today = chrono::Local::now().date_naive().to_string();
    let sweep = emr(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--since",
        &today,
    ]);
    let err = String::from_utf8_lossy(&sweep.stderr);
    assert!(sweep.status.success(), "{err}");
    // THEN the tailer swept, said so, and the visit reaches the stores
    assert!(err.contains("asking it"), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&sweep.stdout).unwrap();
    assert!(summary["visits_resent"].as_u64().unwrap() >= 1, "{summary}");
    wait_mirror_obs(&rig, 900002, "the on-demand sweep").await;
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    assert_stores_equal_source(&rig).await;
    // AND a sweep cannot be started from a web page (no admin header)
    let forged = reqwest::Client::new()
        .post(format!("http://{}/sweep", tailer.addr))
        .header("content-type", "application/json")
        .body(format!("{{\"since\":\"{today}\",\"until\":\"{today}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_carries_a_facilitys_history_and_reference_data() {
    // GIVEN a facility with history the binlog path never sees (reference data dated 2010, three
    // clinic days), and a tailer that starts after it
    let mut rig = Rig::new("initial").await;
    assert!(rig.simulate(20, 3, 14, 0).wait().unwrap().success());
    rig.start = rig.services.binlog_position().await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    // (global_property has no audit date, so no sweep finds it: it travels by binlog only)
    let source = rig.services.mysql_pool(&rig.source_db);
    source
        .get_conn()
        .await
        .unwrap()
        .query_drop("UPDATE global_property SET description = 'this facility'")
        .await
        .unwrap();
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    tailer.stop();

    // WHEN the initial load runs from the facility's first day, tailer stopped
    let config = rig.dir.join("tailer.toml");
    let load = emr(&[
        "sweep",
        "--config",
        config.to_str().unwrap(),
        "--since",
        "2010-01-01",
    ]);
    let err = String::from_utf8_lossy(&load.stderr);
    assert!(load.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    // THEN it covered every day since, with a progress line, and queued the history
    let today = chrono::Local::now().date_naive();
    let days = (today - chrono::NaiveDate::from_ymd_opt(2010, 1, 1).unwrap()).num_days() + 1;
    assert_eq!(summary["days"].as_i64(), Some(days), "{summary}");
    assert!(err.contains(&format!("{days}/{days} days")), "{err}");
    assert!(
        summary["visits_resent"].as_u64().unwrap() >= 20,
        "{summary}"
    );
    // AND once the tailer ships it, the mirror and cdr equal the source, reference tables too
    let tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert_stores_equal_source(&rig).await;
    eprintln!("initial load: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sweep_resumes_where_it_stopped() {
    // GIVEN a stopped tailer whose state says a sweep of the last three days stopped after two
    let rig = Rig::new("resume").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    tailer.stop();
    let today = chrono::Local::now().date_naive();
    let since = (today - chrono::Duration::days(2)).to_string();
    let state = emr_stream::tailer::state::State::open(&rig.dir.join("state")).unwrap();
    let mark = serde_json::json!({
        "window": { "since": since, "until": today.to_string() },
        "next": today.to_string(),
    });
    state.meta_set("sweep_resume", Some(&mark)).unwrap();
    drop(state);
    let config = rig.dir.join("tailer.toml");
    let sweep = |since: &str| {
        let out = emr(&[
            "sweep",
            "--config",
            config.to_str().unwrap(),
            "--since",
            since,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (summary, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // WHEN the same sweep runs again
    let (summary, err) = sweep(&since);
    // THEN it sweeps only the day left, and says so; progress counts the whole window
    assert_eq!(summary["days"], 1, "{summary}");
    assert!(err.contains("3/3 days"), "{err}");
    // AND the next run of that window, with nothing left to resume, sweeps all of it
    let (summary, _) = sweep(&since);
    assert_eq!(summary["days"], 3, "{summary}");
    // AND another window does not pick up a stale mark (nor leave one)
    let (summary, _) = sweep(&today.to_string());
    assert_eq!(summary["days"], 1, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_deletes_made_while_the_tailer_was_away_are_swept() {
    // GIVEN a clinic streamed, then the tailer stopped
    let rig = Rig::new("hard_del").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    assert!(rig.simulate(20, 3, 41, 0).wait().unwrap().success());
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    tailer.stop();

    // WHEN rows are hard-deleted where the binlog never shows it (as past its retention):
    // three obs of one visit, and the last visit day of one patient whole (its encounters
    // with their obs, orders and drug orders)
    let source = rig.services.mysql_pool(&rig.source_db);
    let mut conn = source.get_conn().await.unwrap();
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .unwrap();
    let (patient, day): (i64, String) = conn
        .query_first(
            "SELECT patient_id, DATE(MAX(encounter_datetime)) FROM encounter WHERE voided = 0
             GROUP BY patient_id HAVING COUNT(DISTINCT DATE(encounter_datetime)) > 1
             ORDER BY patient_id LIMIT 1",
        )
        .await
        .unwrap()
        .expect("a patient with two visit days");
    let day_encounters = format!(
        "SELECT encounter_id FROM encounter WHERE patient_id = {patient} AND DATE(encounter_datetime) = '{day}'"
    );
    for sql in [
        format!("DELETE FROM drug_order WHERE order_id IN (SELECT order_id FROM orders WHERE encounter_id IN ({day_encounters}))"),
        format!("DELETE FROM orders WHERE encounter_id IN ({day_encounters})"),
        format!("DELETE FROM obs WHERE encounter_id IN ({day_encounters})"),
        format!("DELETE FROM encounter WHERE patient_id = {patient} AND DATE(encounter_datetime) = '{day}'"),
    ] {
        conn.query_drop(sql).await.unwrap();
    }
    let gone_obs: Vec<i64> = conn
        .query(format!(
            "SELECT obs_id FROM obs WHERE person_id <> {patient} AND obs_group_id IS NULL
             AND obs_id NOT IN (SELECT obs_group_id FROM obs WHERE obs_group_id IS NOT NULL)
             ORDER BY obs_id LIMIT 3"
        ))
        .await
        .unwrap();
    assert_eq!(gone_obs.len(), 3);
    conn.query_drop(format!(
        "DELETE FROM obs WHERE obs_id IN ({})",
        gone_obs
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ))
    .await
    .unwrap();
    drop(conn);

    // AND the checkpoint is reset to now and the sweep the reset prints is run
    // (right after the stop: the reset waits out the stopped tailer's registration)
    let config_path = rig.dir.join("tailer.toml");
    let reset = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config_path.to_str().unwrap(),
        "--to-current",
        "--yes",
    ]);
    let said = String::from_utf8_lossy(&reset.stdout).into_owned();
    assert!(
        reset.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let summary = common::run_printed_sweep(&said);
    let tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;

    // THEN the sweep shipped a delete for each row the source no longer has, and both stores
    // equal the source again
    assert!(summary["rows_deleted"].as_u64().unwrap() >= 5, "{summary}");
    assert_stores_equal_source(&rig).await;

    // AND a second sweep finds nothing more to delete
    let again = common::run_printed_sweep(&said);
    assert_eq!(again["rows_deleted"], 0, "{again}");
    eprintln!("hard deletes: {summary}");
}
