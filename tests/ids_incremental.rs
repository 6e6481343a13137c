//! The incremental IDS against its own definitions: generated histories of several sites
//! (inserts, amendments, voids and unvoids, hard deletes, rows moving to another patient or
//! day, drug_order before its order, an ARV drug entering and leaving set 1085, resyncs) go
//! through real receivers into real stores, and the tables are checked against a full
//! recomputation (`ids.verify_site`, symmetric EXCEPT ALL):
//!
//! - one writer: after every batch;
//! - three receivers on the same stores, batches of every site in a random interleaving
//!   (same-site batches out of order too): after quiescence, on plain and partitioned stores;
//! - `emr-stream ids verify` names a corrupted row and exits non-zero, `ids rebuild` repairs
//!   it, and the background verifier finds and repairs one by itself;
//! - a queue worker waits for a busy site whose queue has waited long (a catch-up).

mod common;

use std::time::{Duration, Instant};

use common::history::{Cases, History, Rng};
use common::{Proc, Rig};
use deadpool_postgres::Pool;

const SITES: [i64; 3] = [201, 202, 203];

fn token(site: i64) -> String {
    format!("ids-test-token-{site}")
}

/// Starts a receiver of `rig`'s stores for SITES; `ids` is its `[ids]` section.
fn receiver(rig: &Rig, name: &str, ids: &str) -> Proc {
    let mut config = format!(
        "listen = \"127.0.0.1:0\"\nmapping = \"{mapping}\"\n[mysql]\nurl = \"{my}\"\ndatabase = \"{db}\"\n\
         [postgres]\nurl = \"{pg}\"\npartitions = {partitions}\n[ids]\n{ids}\n{readers}",
        readers = common::readers_toml(),
        mapping = common::mapping_path(),
        my = rig.services.mysql_url,
        db = rig.mirror_db,
        pg = rig.pg_url,
        partitions = rig.partitions,
    );
    for site in SITES {
        config.push_str(&format!(
            "[[sites]]\nsite_id = {site}\ntoken_sha256 = \"{}\"\n",
            emr_stream::receiver::auth::hash_token(&token(site))
        ));
    }
    let path = rig.dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    Proc::start(
        &["receiver", "--config", path.to_str().unwrap()],
        &rig.dir.join(format!("{name}.log")),
        "receiver listening",
    )
}

/// Posts a batch until the receiver takes it (200, or 409 for a repeat).
async fn post(client: &reqwest::Client, addr: &str, site: i64, id: &str, body: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .post(format!("http://{addr}/api/v1/stream"))
            .bearer_auth(token(site))
            .header("content-encoding", "gzip")
            .header("content-type", "application/json")
            .header("idempotency-key", id)
            .body(emr_stream::wire::gzip(body))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 200 || status == 409 {
            return;
        }
        let text = r.text().await.unwrap_or_default();
        assert!(
            status == 503 && Instant::now() < deadline,
            "batch {id}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_queue_empty(pool: &Pool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = pool.get().await.unwrap();
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM ids.dirty_patient", &[])
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{n} patients stay queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails naming the differing rows when a site's tables differ from their definitions.
async fn assert_site_equal(pool: &Pool, site: i64, when: &str) -> u64 {
    let check = loop {
        if let Some(c) = emr_stream::receiver::ids::verify::check_site(pool, site as i32)
            .await
            .unwrap()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        check.differences.is_empty(),
        "site {site} {when}: {} rows differ, e.g. {:?}",
        check.differences.len(),
        &check.differences[..check.differences.len().min(10)]
    );
    check.took_ms
}

/// Rows of the derived tables of a site, so a check that passes is seen to compare something.
async fn derived_rows(pool: &Pool, site: i64) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT (SELECT count(*) FROM ids.arv_dispensations WHERE site_id = $1)
                  + (SELECT count(*) FROM ids.program_states WHERE site_id = $1)
                  + (SELECT count(*) FROM ids.appointments WHERE site_id = $1)
                  + (SELECT count(*) FROM ids.patient_visits WHERE site_id = $1)
                  + (SELECT count(*) FROM ids.art_status WHERE site_id = $1)",
            &[&(site as i32)],
        )
        .await
        .unwrap()
        .get(0)
}

fn assert_every_case(cases: &Cases) {
    for (what, n) in [
        ("visits", cases.visits),
        ("amendments", cases.amendments),
        ("voids", cases.voids),
        ("unvoids", cases.unvoids),
        ("hard deletes", cases.deletes),
        ("rows moving to another patient", cases.moves),
        ("rows moving to another day", cases.day_moves),
        ("drug_order before its order", cases.early_drug_orders),
        ("ARV set changes", cases.arv_set_changes),
        ("resyncs", cases.resyncs),
        ("outcomes", cases.outcomes),
    ] {
        assert!(n > 0, "the histories held no {what}: {cases:?}");
    }
}

fn add(total: &mut Cases, c: &Cases) {
    total.visits += c.visits;
    total.amendments += c.amendments;
    total.voids += c.voids;
    total.unvoids += c.unvoids;
    total.deletes += c.deletes;
    total.moves += c.moves;
    total.day_moves += c.day_moves;
    total.early_drug_orders += c.early_drug_orders;
    total.arv_set_changes += c.arv_set_changes;
    total.resyncs += c.resyncs;
    total.outcomes += c.outcomes;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_tables_equal_their_definitions_after_every_batch() {
    // GIVEN one receiver that recomputes at most 6 patients in a batch's transaction (bigger
    // batches, the resyncs, go through the queue), without its background verifier
    let rig = Rig::new("ids_one").await;
    let r = receiver(
        &rig,
        "receiver",
        "inline_max_patients = 6\nverify = false\nqueue_poll_ms = 50",
    );
    let pool = emr_stream::receiver::pg::pool(&rig.pg_url, 4).unwrap();
    let client = reqwest::Client::new();
    let mut histories: Vec<History> = SITES.iter().map(|&s| History::new(s, s as u64)).collect();

    // WHEN each site's history is applied batch by batch (a resync midway and at the end)
    let (mut batches, mut checked_ms) = (0, 0);
    for step in 0..45u64 {
        for h in histories.iter_mut() {
            let (id, body) = if step == 20 || step == 44 {
                h.resync()
            } else {
                h.batch(step)
            };
            post(&client, &r.addr, h.site, &id, &body).await;
            batches += 1;
            wait_queue_empty(&pool).await;
            // THEN after every batch the site's tables equal a full recomputation
            checked_ms += assert_site_equal(&pool, h.site, &format!("after batch {id}")).await;
        }
    }
    let mut cases = Cases::default();
    for h in &histories {
        add(&mut cases, &h.cases);
        assert!(
            derived_rows(&pool, h.site).await > 50,
            "site {} has few rows",
            h.site
        );
    }
    assert_every_case(&cases);
    eprintln!("one writer: {batches} batches, each followed by a check ({checked_ms} ms of checks); {cases:?}");

    // WHEN a derived row is corrupted behind the receiver's back
    let pg = pool.get().await.unwrap();
    let corrupted = pg
        .execute(
            "UPDATE ids.art_status SET gender = 'X' WHERE site_id = 201 AND patient_id =
               (SELECT min(patient_id) FROM ids.art_status WHERE site_id = 201)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(corrupted, 1);
    let config = rig.dir.join("receiver.toml");
    let config = config.to_str().unwrap();
    // THEN `ids verify` names it and fails
    let verify = common::emr(&["ids", "verify", "--config", config]);
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(!verify.status.success(), "{out}");
    assert!(
        out.contains("\"table\":\"art_status\"") && out.contains("\"site_id\":201"),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        2,
        "the changed row missing and extra: {out}"
    );
    // AND `ids rebuild --site 201` repairs it
    let rebuild = common::emr(&["ids", "rebuild", "--config", config, "--site", "201"]);
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    let verify = common::emr(&["ids", "verify", "--config", config]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // WHEN a row is corrupted again, with a receiver whose background verifier runs
    pg.execute(
        "UPDATE ids.arv_dispensations SET quantity = quantity + 1 WHERE site_id = 202 AND
           (patient_id, dispensation_date, drug_id) IN (SELECT patient_id, dispensation_date, drug_id
            FROM ids.arv_dispensations WHERE site_id = 202 LIMIT 1)",
        &[],
    )
    .await
    .unwrap();
    let mut checker = receiver(
        &rig,
        "checker",
        "verify = true\nverify_duty_percent = 100\nqueue_poll_ms = 50",
    );
    // THEN it finds the difference, logs it and queues a rebuild, which repairs the site
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(rig.dir.join("checker.log")).unwrap_or_default();
        if log.contains("IDS tables differ from their definitions") {
            assert!(log.contains("arv_dispensations"), "{log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the verifier found nothing: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        wait_queue_empty(&pool).await;
        let check = emr_stream::receiver::ids::verify::check_site(&pool, 202)
            .await
            .unwrap();
        if check.is_some_and(|c| c.differences.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queued rebuild did not repair site 202"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    checker.stop();
    check_migrations(&rig, &pool).await;
}

/// A receiver started on a copy of the mapping whose IDS file `edited` has a line more, with
/// the config of `receiver.toml`; returns its log.
fn restart_with_edited(rig: &Rig, name: &str, edited: &str) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let dir = rig.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let file = dir.join(edited);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}\n-- edited by {name}\n")).unwrap();
    let config = std::fs::read_to_string(rig.dir.join("receiver.toml"))
        .unwrap()
        .replace(
            &common::mapping_path(),
            dir.join("openmrs.toml").to_str().unwrap(),
        );
    let path = rig.dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = rig.dir.join(format!("{name}.log"));
    let mut r = Proc::start(
        &["receiver", "--config", path.to_str().unwrap()],
        &log,
        "receiver listening",
    );
    r.stop();
    std::fs::read_to_string(&log).unwrap()
}

/// A changed ids-reports.sql makes the report functions again (dropping those the definitions
/// do not make) and queues nothing; a changed ids-tables.sql queues every patient.
async fn check_migrations(rig: &Rig, pool: &Pool) {
    let pg = pool.get().await.unwrap();
    let queued_log = "every patient queued for recomputation";
    // GIVEN a report function an earlier release made, which this one no longer does
    pg.batch_execute("CREATE FUNCTION ids.retired_report() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .await
        .unwrap();
    // WHEN a receiver starts with an edited ids-reports.sql
    let log = restart_with_edited(rig, "reports-edited", "ids-reports.sql");
    // THEN it makes the report functions again and queues nobody
    assert!(
        log.contains("IDS report functions are new or changed"),
        "{log}"
    );
    assert!(!log.contains(queued_log), "{log}");
    let retired: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE proname = 'retired_report'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(retired, 0, "the retired report function stays");
    // (and every function the file makes is there: none was dropped after being made)
    let reports = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/ids-reports.sql"),
    )
    .unwrap();
    let mut made: Vec<String> = reports
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE OR REPLACE FUNCTION ids."))
        .map(|rest| rest.split('(').next().unwrap().to_owned())
        .collect();
    // (an overloaded name is made twice and counted once below)
    made.sort();
    made.dedup();
    assert!(
        made.len() >= 10 && made.contains(&"cohort".to_owned()),
        "{made:?}"
    );
    let present: i64 = pg
        .query_one(
            "SELECT count(DISTINCT proname) FROM pg_proc p JOIN pg_namespace n
               ON n.oid = p.pronamespace WHERE n.nspname = 'ids' AND proname = ANY($1)",
            &[&made],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        present as usize,
        made.len(),
        "report functions missing: {made:?}"
    );
    // WHEN one starts with an edited ids-tables.sql
    let log = restart_with_edited(rig, "tables-edited", "ids-tables.sql");
    // THEN every patient is queued, and the tables equal their definitions once drained
    assert!(log.contains(queued_log), "{log}");
    let mut r = receiver(rig, "drainer", "verify = false\nqueue_poll_ms = 50");
    wait_queue_empty(pool).await;
    for site in SITES {
        assert_site_equal(pool, site, "after the migration").await;
    }
    r.stop();
}

/// Sends every site's history through three receivers in a random interleaving (six
/// requests at a time), then checks every site after quiescence.
async fn many_writers_converge(rig: Rig) {
    let receivers: Vec<Proc> = (0..3)
        .map(|i| {
            receiver(
                &rig,
                &format!("receiver{i}"),
                "inline_max_patients = 6\nverify = false\nqueue_poll_ms = 50",
            )
        })
        .collect();
    let pool = emr_stream::receiver::pg::pool(&rig.pg_url, 4).unwrap();
    let mut histories: Vec<History> = SITES
        .iter()
        .map(|&s| History::new(s, 7 * s as u64))
        .collect();
    let mut all = Vec::new();
    for step in 0..40u64 {
        for h in histories.iter_mut() {
            let (id, body) = if step == 25 {
                h.resync()
            } else {
                h.batch(step)
            };
            all.push((h.site, id, body));
        }
    }
    let mut rng = Rng::new(99);
    for i in (1..all.len()).rev() {
        all.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let total = all.len();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(all));
    let addrs: Vec<String> = receivers.iter().map(|r| r.addr.clone()).collect();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (queue, addr) = (queue.clone(), addrs[w % 3].clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let next = queue.lock().await.pop();
                let Some((site, id, body)) = next else { return };
                post(&client, &addr, site, &id, &body).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_queue_empty(&pool).await;
    let mut cases = Cases::default();
    for h in &histories {
        assert_site_equal(&pool, h.site, "after quiescence").await;
        assert!(
            derived_rows(&pool, h.site).await > 50,
            "site {} has few rows",
            h.site
        );
        add(&mut cases, &h.cases);
    }
    assert_every_case(&cases);
    // AND every key of cdr and ids leads with site_id (what hash partitioning and Citus need)
    let client = pool.get().await.unwrap();
    let other: Vec<String> = client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_class t ON t.oid = i.indrelid
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE n.nspname IN ('cdr', 'ids') AND a.attname <> 'site_id' AND NOT t.relispartition
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        other,
        ["ids.definitions_pkey"],
        "indexes not led by site_id"
    );
    eprintln!(
        "many writers: {total} batches through 3 receivers, partitions {}; {cases:?}",
        rig.partitions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_in_random_interleavings_converge() {
    many_writers_converge(Rig::new("ids_many").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_converge_on_stores_partitioned_by_site() {
    let mut rig = Rig::new("ids_part").await;
    rig.partitions = 4;
    let pool = emr_stream::receiver::pg::pool(&rig.pg_url, 2).unwrap();
    many_writers_converge(rig).await;
    // the tables really are partitioned by site, and every key of cdr and ids leads with it
    let client = pool.get().await.unwrap();
    let partitioned: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('cdr', 'ids')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitioned >= 30, "{partitioned} partitioned tables");
}

/// A site catching up on a backlog holds its lock almost all the time (its tailer sends two
/// batches at a time). A queue worker that finds every queued site busy skips a fresh queue,
/// but waits for the lock of a site whose oldest change has waited `ids::queue::STARVED`, and
/// recomputes a chunk of it as soon as the batch before commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_a_busy_site_whose_queue_has_waited_long() {
    use emr_stream::receiver::ids;

    let pool = common::pg_store("starved", 4).await;
    let other = pool.get().await.unwrap();
    other
        .batch_execute("SELECT ids.enqueue(301, '{7}')")
        .await
        .unwrap();
    // GIVEN a batch of site 301 holding the site's lock
    let holder = pool.get().await.unwrap();
    common::hold_site_lock(&holder, 301).await;
    // WHEN its queued patient has waited a moment THEN a worker skips the site
    assert_eq!(ids::queue::drain_one(&pool).await.unwrap(), None);
    // WHEN it has waited a minute
    other
        .batch_execute(
            "UPDATE ids.site_state SET queued_since = now() - interval '1 minute' WHERE site_id = 301",
        )
        .await
        .unwrap();
    let worker = {
        let pool = pool.clone();
        tokio::spawn(async move { ids::queue::drain_one(&pool).await })
    };
    // THEN the worker waits for the lock
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!worker.is_finished(), "the worker gave up a starved site");
    // AND recomputes the patient as soon as the batch commits
    holder.batch_execute("COMMIT").await.unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker still waits after the batch committed")
        .unwrap()
        .unwrap();
    assert_eq!(drained, Some((301, 1)));
    let (queued, since): (i64, Option<f64>) = {
        let r = other
            .query_one(
                "SELECT (SELECT count(*) FROM ids.dirty_patient),
                        (SELECT extract(epoch FROM queued_since)::float8 FROM ids.site_state WHERE site_id = 301)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((queued, since), (0, None));
}
