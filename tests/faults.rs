//! The faults of a real deployment, each ending with both stores equal to the source: a store
//! lost in the middle of a batch (at its COMMIT), the receiver sent SIGTERM while requests
//! are in flight, the source's connections cut mid-stream, the tailer's state disk full.

mod common;

use std::time::{Duration, Instant};

use common::{assert_every_visit_received, assert_stores_equal_source, CutProxy, Proc, Rig};

/// `host:port` of a `mysql://` or `postgres://` URL.
fn host_port(url: &str) -> String {
    let rest = url.split_once('@').map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// Waits (up to `secs`) until `check` holds; panics naming `what`.
async fn wait_for<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Once the tailer is quiet: both stores equal the source, every visit arrived, nothing waits
/// in the IDS queue and the IDS tables equal their definitions.
async fn assert_converged(rig: &Rig, tailer: &Proc) {
    rig.wait_quiet(tailer, Duration::from_secs(180)).await;
    assert!(assert_stores_equal_source(rig).await > 0);
    assert_every_visit_received(rig).await;
    rig.wait_ids_idle(Duration::from_secs(60)).await;
    common::assert_ids_verify(rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_lost_at_a_batch_commit_answers_503_and_the_stores_converge() {
    // GIVEN a receiver reaching each store through a proxy that can cut it, and a tailer
    // (plain links: the proxy finds the COMMIT in the bytes)
    let mut rig = Rig::new("store_cut").await.plain();
    let my_proxy = CutProxy::start(&host_port(&rig.services.mysql_url)).await;
    let pg_proxy = CutProxy::start(&host_port(&rig.pg_url)).await;
    rig.receiver_urls = Some((
        // (mysql_async moves loopback connections to the server's socket unless told not to)
        format!(
            "{}?prefer_socket=false",
            rig.services
                .mysql_url
                .replace(&host_port(&rig.services.mysql_url), &my_proxy.addr)
        ),
        rig.pg_url.replace(&host_port(&rig.pg_url), &pg_proxy.addr),
    ));
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);

    // WHEN a clinic works, and PostgreSQL, then the MySQL mirror, is lost at the COMMIT of a
    // transaction (the server rolls it back) and stays away until the receiver has answered
    // 503 to a batch
    // (a store that already holds a retried batch answers it with a rollback, not a COMMIT:
    // the clinic goes on until a new batch reaches the store)
    let mut seed = 17;
    for (store, proxy) in [("mysql", &my_proxy), ("postgres", &pg_proxy)] {
        let cuts = proxy.cuts();
        proxy.cut_at_next_commit();
        for _ in 0..10 {
            assert!(rig.simulate(10, 1, seed, 0).wait().unwrap().success());
            seed += 1;
            let deadline = Instant::now() + Duration::from_secs(10);
            while proxy.cuts() == cuts && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if proxy.cuts() > cuts {
                break;
            }
        }
        assert!(proxy.cuts() > cuts, "no COMMIT reached {store}");
        assert!(proxy.is_down());
        let refused =
            common::metric(&receiver, "emr_receiver_requests_total{status=\"503\"}").await;
        wait_for(60, &format!("a 503 while {store} is away"), || async {
            common::metric(&receiver, "emr_receiver_requests_total{status=\"503\"}").await > refused
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.up();
    }

    // THEN the tailer's retries bring both stores to the source, every visit arrives, and the
    // IDS tables equal their definitions: nothing was half-applied anywhere
    assert_converged(&rig, &tailer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_requests_loses_nothing() {
    // GIVEN a receiver and a tailer, a clinic at work
    let rig = Rig::new("sigterm").await;
    let mut receiver = rig.receiver();
    let addr = receiver.addr.clone();
    let tailer = rig.tailer(&addr);
    let mut sim = rig.simulate(60, 6, 23, 15);

    // WHEN the receiver is sent SIGTERM three times while batches arrive, and restarted
    for round in 0..3 {
        let stored = common::metric(&receiver, "emr_receiver_requests_total{status=\"200\"}").await;
        wait_for(60, "a stored batch", || async {
            common::metric(&receiver, "emr_receiver_requests_total{status=\"200\"}").await > stored
        })
        .await;
        // THEN it exits by itself, cleanly, within the grace period
        let status = receiver.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: the receiver did not exit cleanly on SIGTERM: {status:?}\n{}",
            std::fs::read_to_string(&receiver.log).unwrap_or_default()
        );
        receiver = rig.receiver_at(&addr);
    }
    assert!(sim.wait().unwrap().success());

    // AND nothing is lost: the unacknowledged batches came again, the stores equal the source
    assert_converged(&rig, &tailer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_lost_mid_stream_is_followed_again_without_loss_or_duplicates() {
    // GIVEN a tailer reaching the EMR database through a proxy that can cut it
    let mut rig = Rig::new("source_cut").await;
    let proxy = CutProxy::start(&host_port(&rig.services.mysql_url)).await;
    rig.source_url = Some(format!(
        "{}?prefer_socket=false",
        rig.services
            .mysql_url
            .replace(&host_port(&rig.services.mysql_url), &proxy.addr)
    ));
    let receiver = rig.receiver();
    let tailer = rig.tailer(&receiver.addr);

    // WHEN a clinic works while the source goes away three times (every connection of the
    // tailer cut: the binlog stream, the lookups), each time for two seconds
    let mut sim = rig.simulate(40, 4, 29, 10);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.down();
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.up();
    }
    assert!(sim.wait().unwrap().success());

    // THEN the tailer reconnected each time (and said so), and the stores equal the source
    assert_converged(&rig, &tailer).await;
    let log = std::fs::read_to_string(&tailer.log).unwrap();
    assert!(
        log.matches("reconnecting from the checkpoint").count() >= 1,
        "{log}"
    );
}

/// A tmpfs of `mib` MiB mounted on `dir` for the life of the guard.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mib: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {} (the test needs root, as the suite runs)",
            dir.display()
        );
        Self(dir.to_owned())
    }

    fn resize(&self, mib: u64) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_disk_pauses_capture_until_space_returns() {
    // GIVEN a tailer whose state lives on a small disk (a 20 MiB tmpfs) that it keeps 16 MiB
    // of free, and a receiver that is away (the outbox grows; deflated, this clinic's outbox
    // and sled's files take about 7 MiB)
    let rig = Rig::new("disk_full").await;
    let disk = Tmpfs::mount(&rig.dir.join("state"), 20);
    let away = common::free_addr();
    let mut tailer = rig.tailer_with(&away, "min_free_mib = 16", "");

    // WHEN a clinic works until the disk is down to its floor
    let mut sim = rig.simulate(200, 6, 37, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = common::tailer_status(&tailer).await;
        if status["capture_paused"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "capture never paused: {status}\n{}",
            std::fs::read_to_string(&tailer.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sim.wait().unwrap().success());

    // THEN capture pauses with a clear error, the tailer stays up and serves its status
    let log = std::fs::read_to_string(&tailer.log).unwrap();
    assert!(
        log.contains("the state disk is almost full: capture paused"),
        "{log}"
    );
    assert!(
        !log.contains("panicked") && !log.contains("No space left"),
        "{log}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        tailer.child.try_wait().unwrap().is_none(),
        "the tailer exited"
    );
    let status = common::tailer_status(&tailer).await;
    assert_eq!(status["capture_paused"], true, "{status}");
    assert!(status["state_free_mib"].as_u64().unwrap() < 16, "{status}");

    // WHEN space returns (the disk grows) and the receiver is back
    disk.resize(256);
    let _receiver = rig.receiver_at(&away);

    // THEN capture resumes by itself and everything arrives, exact
    rig.wait_quiet(&tailer, Duration::from_secs(240)).await;
    let log = std::fs::read_to_string(&tailer.log).unwrap();
    assert!(log.contains("capture resumes from the checkpoint"), "{log}");
    assert!(assert_stores_equal_source(&rig).await > 0);
    assert_every_visit_received(&rig).await;
    tailer.stop();
    drop(disk);
}
