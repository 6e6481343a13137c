//! Delivery through outages and faults, with real processes: the receiver down for a while,
//! the receiver killed in the middle of applies, and a proxy that drops connections and loses
//! answers. Every time the mirror and cdr converge to the source.

mod common;

use std::time::{Duration, Instant};

use common::{assert_every_visit_received, assert_stores_equal_source, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_outage_fills_the_outbox_then_drains_it() {
    // GIVEN a tailer whose receiver is down
    let rig = Rig::new("outage").await;
    let addr = common::free_addr();
    let mut receiver = rig.receiver_at(&addr);
    // (a page cache well under the outbox's growth, so a growing outbox would show in RSS)
    let tailer = rig.tailer_with(&addr, "cache_mib = 8", "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.kill9();

    // WHEN the clinic writes more than 500 visits, in six waves
    let mut outbox_rss = Vec::new();
    for (wave, seed) in (1..=6).zip(21u64..) {
        let patients = 640;
        let sim = rig
            .simulate(patients, 6, seed, 0)
            .wait_with_output()
            .unwrap();
        assert!(sim.status.success());
        let counts: serde_json::Value = serde_json::from_slice(&sim.stdout).unwrap();
        assert!(counts["visits"].as_u64().unwrap() >= 500, "{counts}");
        // THEN the tailer keeps capturing: every visit waits in the outbox
        let target = rig.services.binlog_position().await;
        let deadline = Instant::now() + Duration::from_secs(120);
        let s = loop {
            let s = common::tailer_status(&tailer).await;
            let caught_up = s["checkpoint"]
                .as_str()
                .is_some_and(|c| common::position_ge(c, &target));
            if caught_up
                && s["open_visits"] == 0
                && s["outbox_visits"].as_u64().unwrap_or(0) >= 500 * wave as u64
            {
                break s;
            }
            assert!(Instant::now() < deadline, "outbox did not fill: {s}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(s["ship_failures"].as_u64().unwrap() > 0, "{s}");
        let rss = common::rss_kib(tailer.child.id());
        eprintln!(
            "outage wave {wave}: outbox {} visits / {} bytes; tailer RSS {rss} KiB",
            s["outbox_visits"], s["outbox_bytes"]
        );
        outbox_rss.push((s["outbox_bytes"].as_u64().unwrap(), rss));
    }
    // AND the outbox is not held in memory: once warm (sled's working set and the allocator
    // fill up over the first waves), the tailer's RSS stays flat while the outbox grows by
    // 80 MB more: it grows by less than half the bytes added, and stays bounded (over four
    // waves, not two: the allocator's warm-up varies by 10-20 MB from run to run, which two
    // waves' 40 MB could not tell from growth)
    let (bytes2, rss2) = outbox_rss[1];
    let (last_bytes, last_rss) = outbox_rss[outbox_rss.len() - 1];
    let added_kib = (last_bytes - bytes2) / 1024;
    assert!(
        added_kib > 60 * 1024,
        "the outbox did not grow: {outbox_rss:?}"
    );
    assert!(
        last_rss < rss2 + added_kib / 2 && last_rss < 150 * 1024,
        "tailer RSS grew with the outbox: {outbox_rss:?}"
    );

    // WHEN the receiver comes back on the same address
    let receiver = rig.receiver_at(&addr);
    // THEN the outbox drains to 0 and the stores converge to the source
    let s = rig.wait_quiet(&tailer, Duration::from_secs(240)).await;
    assert_eq!(s["outbox_visits"], 0);
    assert_stores_equal_source(&rig).await;
    assert_every_visit_received(&rig).await;
    drop(receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_killed_during_applies_still_converges() {
    // GIVEN a receiver, a tailer, and a clinic writing
    let rig = Rig::new("rkill").await;
    let addr = common::free_addr();
    let mut receiver = rig.receiver_at(&addr);
    let tailer = rig.tailer(&addr);
    let mut sim = rig.simulate(80, 4, 5, 5);
    // WHEN the receiver is killed with SIGKILL in the middle of applies, three times
    for i in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(400 + 250 * i)).await;
        receiver.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        receiver = rig.receiver_at(&addr);
    }
    assert!(sim.wait().unwrap().success());
    // THEN after the restarts everything converges
    rig.wait_quiet(&tailer, Duration::from_secs(180)).await;
    assert_stores_equal_source(&rig).await;
    assert_every_visit_received(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_network_still_delivers_everything() {
    // GIVEN a proxy between tailer and receiver that refuses connections, loses requests,
    // delays answers and loses answers after the receiver applied the batch
    let rig = Rig::new("faults").await;
    let receiver = rig.receiver();
    let proxy = common::FaultProxy::start(receiver.addr.clone()).await;
    // small batches: many requests, so the faults meet many of them
    let tailer = rig.tailer_with(&proxy.addr, "", "max_batch_bytes = 4096");
    // WHEN a clinic works through it
    assert!(rig.simulate(60, 4, 9, 0).wait().unwrap().success());
    // THEN the mirror still equals the source
    let s = rig.wait_quiet(&tailer, Duration::from_secs(240)).await;
    // ship_failures in /status counts consecutive failures; the counter counts them all
    let metrics = reqwest::get(format!("http://{}/metrics", tailer.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retries: f64 = metrics
        .lines()
        .find(|l| l.starts_with("emr_ship_requests_total{outcome=\"retry\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let connections = proxy.stats[0].load(std::sync::atomic::Ordering::Relaxed);
    let faults = proxy.stats[1].load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("fault proxy: {connections} connections, {faults} faults injected, {retries} shipper retries");
    assert!(
        faults > 0 && retries > 0.0,
        "no fault reached the shipper: {faults} injected, {retries} retries; {s}"
    );
    assert_stores_equal_source(&rig).await;
    assert_every_visit_received(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_visits_become_dead_letters_and_can_be_retried() {
    // GIVEN a receiver whose mapping does not know person_attribute (so it answers 422 for
    // every visit carrying such a row)
    let rig = Rig::new("dead").await;
    let addr = common::free_addr();
    let mut receiver = rig.receiver_with(&addr, &rig.mapping_without_person_attribute());
    let mut tailer = rig.tailer(&addr);

    // WHEN a clinic registers patients (each registration writes a person_attribute row)
    assert!(rig.simulate(20, 2, 3, 0).wait().unwrap().success());
    // THEN those visits go to dead letters, and the rest of the queue keeps flowing
    let s = rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert!(s["dead_letters"].as_u64().unwrap() >= 1, "{s}");
    tailer.stop();
    let config = rig.dir.join("tailer.toml");
    let config = config.to_str().unwrap();
    let list = common::emr(&["dead", "list", "--config", config]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success()
            && listed.contains("\"status\":422")
            && listed.contains("unknown table"),
        "{listed}"
    );
    assert!(
        !listed.contains("stream_key")
            && !listed.contains("given_name")
            && !listed.contains("+265"),
        "list shows patient data: {listed}"
    );
    let mirror = rig.services.mysql_pool(&rig.mirror_db);
    let encounters: i64 = mysql_async::prelude::Queryable::query_first(
        &mut mirror.get_conn().await.unwrap(),
        "SELECT COUNT(*) FROM encounter",
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        encounters > 0,
        "the queue stopped behind the refused visits"
    );

    // WHEN the receiver knows the table again and the dead letters are retried
    receiver.kill9();
    let receiver = rig.receiver_at(&addr);
    let retry = common::emr(&["dead", "retry", "--all", "--config", config]);
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    let tailer = rig.tailer(&addr);
    // THEN everything arrives and no dead letter is left
    let s = rig.wait_quiet(&tailer, Duration::from_secs(120)).await;
    assert_eq!(s["dead_letters"], 0, "{s}");
    assert_stores_equal_source(&rig).await;
    drop(receiver);
}
