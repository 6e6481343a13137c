//! The tailer's exactness on the real MariaDB: schema changes mid-stream (FULL and MINIMAL
//! row metadata), lookups answered from the source, heartbeats, preflight refusals, and a
//! checkpoint whose binlog is gone.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use emr_stream::mapping::Mapping;
use emr_stream::tailer::binlog::{self, BinlogPosition, BinlogReader, Step};
use emr_stream::tailer::resolve::Resolver;
use emr_stream::tailer::state::{Checkpoint, State};
use emr_stream::tailer::visit::VisitKey;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool};
use serde_json::{json, Value};

use common::{emr, position_of as position, read_until};

/// GIVEN a table followed live, WHEN it is altered (add, drop, modify), renamed, and another
/// table is created after start, THEN every row before and after each change decodes with the
/// columns it was written with.
async fn schema_changes(url: &str, label: &str) {
    let (opts, mut admin, db, start) = common::fresh_database(url, &format!("ddl_{label}")).await;
    let mapped: HashMap<String, Vec<String>> = ["s1", "s2", "s3"]
        .iter()
        .map(|t| (t.to_string(), vec!["id".to_owned()]))
        .collect();
    let mut reader = BinlogReader::connect(
        opts.clone(),
        Pool::new(opts.clone()),
        common::server_id(),
        &start,
        &db,
        mapped,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let mut conn = mysql_async::Conn::new(OptsBuilder::from_opts(opts).db_name(Some(db.clone())))
        .await
        .unwrap();
    let steps = [
        "CREATE TABLE s1 (id INT PRIMARY KEY, a VARCHAR(10))",
        "INSERT INTO s1 VALUES (1, 'x')",
        "ALTER TABLE s1 ADD COLUMN b INT",
        "INSERT INTO s1 VALUES (2, 'y', 5)",
        "ALTER TABLE s1 DROP COLUMN a",
        "INSERT INTO s1 VALUES (3, 6)",
        "ALTER TABLE s1 MODIFY COLUMN b BIGINT UNSIGNED",
        "INSERT INTO s1 VALUES (4, 18446744073709551615)",
        "RENAME TABLE s1 TO s2",
        "INSERT INTO s2 VALUES (5, 7)",
        "CREATE TABLE s3 (id INT PRIMARY KEY, note TEXT)",
        "INSERT INTO s3 VALUES (1, 'late table')",
        "UPDATE s2 SET b = 8 WHERE id = 5",
    ];
    let mut got = Vec::new();
    for sql in steps {
        conn.query_drop(sql).await.unwrap();
        // followed live: the tailer reads each change before the next DDL
        let end = position(&mut admin).await;
        read_until(&mut reader, &end, &mut got).await;
    }
    let expected = vec![
        ("s1".to_owned(), "upsert", json!({"id": 1, "a": "x"})),
        (
            "s1".to_owned(),
            "upsert",
            json!({"id": 2, "a": "y", "b": 5}),
        ),
        ("s1".to_owned(), "upsert", json!({"id": 3, "b": 6})),
        (
            "s1".to_owned(),
            "upsert",
            json!({"id": 4, "b": "18446744073709551615"}),
        ),
        ("s2".to_owned(), "upsert", json!({"id": 5, "b": 7})),
        (
            "s3".to_owned(),
            "upsert",
            json!({"id": 1, "note": "late table"}),
        ),
        ("s2".to_owned(), "upsert", json!({"id": 5, "b": 8})),
    ];
    assert_eq!(got, expected, "{label}");
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn schema_changes_mid_stream_full_metadata() {
    let services = common::Services::get().await;
    schema_changes(&services.mysql_url, "full").await;
}

#[tokio::test]
async fn schema_changes_mid_stream_minimal_metadata() {
    let url = common::minimal_mysql_url();
    schema_changes(&url, "minimal").await;
}

/// GIVEN encounters and orders the tailer never saw (its index is empty), WHEN obs and
/// drug_order rows pointing at them are resolved, THEN their visit comes from the source: the
/// encounter's patient, program and day, not the obs' own date.
#[tokio::test]
async fn lookups_the_tailer_never_saw_are_answered_by_the_source() {
    let services = common::Services::get().await;
    let db = common::unique("resolve");
    emr_stream::simulate::init_schema(&services.mysql_url, &db)
        .await
        .unwrap();
    let pool = services.mysql_pool(&db);
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(
        "INSERT INTO encounter (encounter_id, encounter_type, patient_id, encounter_datetime, program_id, date_created, uuid) \
         VALUES (900, 25, 77, '2026-01-05 09:30:00', 1, NOW(), 'e-900')",
    )
    .await
    .unwrap();
    conn.query_drop(
        "INSERT INTO orders (order_id, order_type_id, concept_id, start_date, patient_id, encounter_id, date_created, uuid) \
         VALUES (500, 1, 2833, '2026-01-05 09:40:00', 77, 900, NOW(), 'o-500')",
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("emr-stream-tests/{db}-state"));
    let _ = std::fs::remove_dir_all(&dir);
    let state = State::open(&dir).unwrap();
    let mapping = Mapping::load(Path::new(&common::mapping_path())).unwrap();
    let mut resolver = Resolver::new(mapping, state, pool.clone(), db.clone());
    let key = |patient_id, visit_date: &str| VisitKey {
        patient_id,
        program_id: 1,
        visit_date: visit_date.into(),
    };
    let visit = key(77, "2026-01-05");

    let obs = json!({"obs_id": 1, "person_id": 77, "encounter_id": 900, "obs_datetime": "2026-02-20 08:00:00"});
    assert_eq!(
        resolve(&mut resolver, "obs", "obs_id", obs).await,
        visit,
        "a late lab result belongs to its encounter's visit"
    );
    let drug_order = json!({"order_id": 500, "quantity": 60});
    assert_eq!(
        resolve(&mut resolver, "drug_order", "order_id", drug_order).await,
        visit,
        "drug_order -> orders -> encounter"
    );
    let loose = json!({"obs_id": 2, "person_id": 78, "encounter_id": null, "obs_datetime": "2026-03-01 10:00:00"});
    assert_eq!(
        resolve(&mut resolver, "obs", "obs_id", loose).await,
        key(78, "2026-03-01"),
        "no encounter: own columns"
    );
    let orphan = json!({"obs_id": 3, "person_id": 79, "encounter_id": 123456, "obs_datetime": "2026-03-01 10:00:00"});
    assert_eq!(
        resolve(&mut resolver, "obs", "obs_id", orphan).await,
        key(79, "2026-03-01"),
        "parent gone: own columns"
    );
    conn.query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

/// The visit of a row of `table` whose primary key column is `pk_col`, committed today.
async fn resolve(resolver: &mut Resolver, table: &str, pk_col: &str, image: Value) -> VisitKey {
    let image = image.as_object().unwrap().clone();
    let pk = serde_json::Map::from_iter([(pk_col.to_owned(), image[pk_col].clone())]);
    resolver
        .resolve(
            table,
            &emr_stream::tailer::state::canonical_pk(&pk),
            &|c| image.get(c).cloned(),
            "2026-11-26",
        )
        .await
        .unwrap()
}

/// An idle source still says it is alive: heartbeats arrive at the configured period.
#[tokio::test]
async fn heartbeats_arrive_on_an_idle_stream() {
    let url = common::minimal_mysql_url();
    let opts = Opts::from_url(&url).unwrap();
    let mut admin = mysql_async::Conn::new(opts.clone()).await.unwrap();
    let start = position(&mut admin).await;
    let mut reader = BinlogReader::connect(
        opts.clone(),
        Pool::new(opts),
        common::server_id(),
        &start,
        "nothing_here",
        HashMap::new(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut heartbeats = 0;
    while tokio::time::Instant::now() < deadline && heartbeats < 2 {
        if let Ok(step) = tokio::time::timeout_at(deadline, reader.next()).await {
            if matches!(step.unwrap(), Some(Step::Heartbeat)) {
                heartbeats += 1;
            }
        }
    }
    assert!(
        heartbeats >= 2,
        "expected heartbeats every second, got {heartbeats} in 6 s"
    );
}

/// The tailer refuses a replica id equal to the source's own server_id, naming the fix.
#[tokio::test]
async fn preflight_refuses_the_sources_own_server_id() {
    let services = common::Services::get().await;
    let mut conn = mysql_async::Conn::new(Opts::from_url(&services.mysql_url).unwrap())
        .await
        .unwrap();
    let own: u32 = conn
        .query_first("SELECT @@server_id")
        .await
        .unwrap()
        .unwrap();
    let err = binlog::preflight(&mut conn, own)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server_id") && err.contains("another id"),
        "{err}"
    );
    assert!(binlog::preflight(&mut conn, common::server_id())
        .await
        .is_ok());
}

/// GIVEN a tailer whose checkpoint names a binlog file the source no longer has, WHEN it
/// starts, THEN it refuses and names the remedy; `checkpoint reset --to-current` without --yes
/// changes nothing, with --yes it moves the checkpoint and reports the gap, and the tailer
/// then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_checkpoint_stops_the_tailer_until_reset() {
    let rig = common::Rig::new("purged").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    tailer.stop();
    let state = State::open(&rig.dir.join("state")).unwrap();
    let mut cp: Checkpoint = state.checkpoint().unwrap().unwrap();
    cp.position = BinlogPosition {
        file: "binlog.000000".into(),
        pos: 4,
    };
    state.set_checkpoint(&cp).unwrap();
    drop(state);

    let config_path = rig.dir.join("tailer.toml");
    let config = config_path.to_str().unwrap();
    let run = emr(&["tailer", "--config", config]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success(),
        "the tailer started from a purged checkpoint"
    );
    assert!(
        err.contains("binlog.000000") && err.contains("checkpoint reset"),
        "{err}"
    );

    let dry = emr(&["checkpoint", "reset", "--config", config, "--to-current"]);
    assert!(!dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stderr).contains("--yes"));
    let reset = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config,
        "--to-current",
        "--yes",
    ]);
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(
        said.contains("will not be read") && said.contains("epoch 0"),
        "{said}"
    );
    // moving back (here: to where the test began) bumps the lsn epoch, so that the rows read
    // again still order after everything shipped before
    let back = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config,
        "--to",
        &rig.start,
        "--yes",
    ]);
    let said = String::from_utf8_lossy(&back.stdout);
    assert!(
        back.status.success() && said.contains("epoch 1"),
        "{said} {}",
        String::from_utf8_lossy(&back.stderr)
    );

    let show = emr(&["checkpoint", "show", "--config", config]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["resumable"], "yes", "{shown}");
    let tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    common::assert_stores_equal_source(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_a_gtid_resumes_right_after_that_transaction() {
    // GIVEN a stopped tailer and a transaction whose GTID the admin knows
    let rig = common::Rig::new("gtid").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(60)).await;
    tailer.stop();
    let pool = rig.services.mysql_pool(&rig.source_db);
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop("INSERT INTO location (name, creator, date_created, uuid) VALUES ('gtid test', 1, NOW(), UUID())")
        .await
        .unwrap();
    let gtid: String = conn
        .query_first("SELECT @@last_gtid")
        .await
        .unwrap()
        .unwrap();
    // WHEN the checkpoint is reset to it
    let config_path = rig.dir.join("tailer.toml");
    let config = config_path.to_str().unwrap();
    let reset = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config,
        "--gtid",
        &gtid,
        "--yes",
    ]);
    assert!(
        reset.status.success(),
        "{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    // THEN the checkpoint names the GTID, and the source's GTID state at its position ends
    // with that transaction
    let show = emr(&["checkpoint", "show", "--config", config]);
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["gtid"], gtid.as_str(), "{shown}");
    let at = BinlogPosition::parse(shown["checkpoint"].as_str().unwrap()).unwrap();
    let state: String = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (at.file.clone(), at.pos))
        .await
        .unwrap()
        .unwrap();
    assert!(
        state.split(',').any(|g| g == gtid),
        "state at {at}: {state}, expected {gtid}"
    );
    // AND a GTID the source never wrote is refused, naming it
    let domain = gtid.split('-').next().unwrap();
    let bogus = format!("{domain}-1-999999999");
    let refused = emr(&[
        "checkpoint",
        "reset",
        "--config",
        config,
        "--gtid",
        &bogus,
        "--yes",
    ]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains(&bogus), "{err}");
}
