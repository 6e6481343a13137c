//! A real `PURGE BINARY LOGS` past the tailer's checkpoint. It lives in a test binary of its own:
//! cargo runs test binaries one after another, so no other test is reading the binlogs it
//! removes (each test starts from the position current when it begins).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_every_visit_received, assert_stores_equal_source, emr, Rig};
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlogs_stop_the_tailer_until_the_printed_reset_and_sweep() {
    // GIVEN a clinic streamed to the centre, then the tailer stopped
    let rig = Rig::new("purge").await;
    let receiver = rig.receiver();
    let mut tailer = rig.tailer(&receiver.addr);
    assert!(rig.simulate(20, 3, 31, 0).wait().unwrap().success());
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    tailer.stop();

    // AND while it is down the clinic goes on, and the binlogs holding that work are purged
    assert!(rig.simulate(15, 3, 32, 0).wait().unwrap().success());
    let pool = rig.services.mysql_pool(&rig.source_db);
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
    let current: String = conn
        .query_first::<mysql_async::Row, _>("SHOW MASTER STATUS")
        .await
        .unwrap()
        .unwrap()
        .get(0)
        .unwrap();
    // (a dump thread of a client that just left can hold its file for a moment: try again)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        conn.query_drop(format!("PURGE BINARY LOGS TO '{current}'"))
            .await
            .unwrap();
        let first: String = conn
            .query_first::<mysql_async::Row, _>("SHOW BINARY LOGS")
            .await
            .unwrap()
            .unwrap()
            .get(0)
            .unwrap();
        if first == current {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purge left {first} (wanted {current} first)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(conn);

    // WHEN the tailer starts
    let config_path = rig.dir.join("tailer.toml");
    let config = config_path.to_str().unwrap();
    let run = Command::new("timeout")
        .args(["60", common::bin(), "tailer", "--config", config])
        .output()
        .unwrap();
    // THEN it refuses, saying the checkpoint's binlog was purged and naming the remedy
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        !run.status.success() && run.status.code() != Some(124),
        "the tailer did not refuse: {err}"
    );
    assert!(err.contains("was purged"), "{err}");
    let remedy = err
        .split('`')
        .find(|s| s.starts_with("emr-stream checkpoint reset"))
        .unwrap_or_else(|| panic!("no remedy named: {err}"))
        .replace("<tailer.toml>", config);

    // WHEN the remedy is run: the reset, then the sweep the reset prints
    let args: Vec<&str> = remedy.split_whitespace().skip(1).collect();
    let reset = emr(&args);
    let said = String::from_utf8_lossy(&reset.stdout).into_owned();
    assert!(
        reset.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&reset.stderr)
    );
    let summary = common::run_printed_sweep(&said);
    assert!(summary["visits_resent"].as_u64().unwrap() > 0, "{summary}");

    // THEN the tailer runs again, and the mirror and cdr equal the source, every visit received
    let tailer = rig.tailer(&receiver.addr);
    rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert_stores_equal_source(&rig).await;
    assert_every_visit_received(&rig).await;
    eprintln!("purge gap sweep: {summary}");
}
