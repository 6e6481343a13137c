//! Receiver apply throughput: 100k obs rows through parse → validate → plan → apply into the
//! MySQL mirror and PostgreSQL cdr (concurrently, as the receiver does; with the IDS
//! maintenance off and on; a site's batches two at a time, as its tailer sends them, and once
//! one at a time), next to the baseline: plain upserts of as many rows (of a site of their
//! own) into the same tables in both stores at once (1000-row multi-row upserts into MySQL,
//! COPY into a staging table then INSERT … ON CONFLICT into PostgreSQL). Three rounds of the baseline and
//! the five runs; each figure is the median of its three. Run by scripts/bench-apply.sh:
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

// the receiver's allocator
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The baseline's site: its rows are no patient's of the receiver's sites (101–104), whose
/// IDS recompute would read them.
const BASELINE_SITE: u64 = 900;

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // (fields after the command: state is 0, utime 11, stime 12; 100 ticks a second)
    (ticks(11) + ticks(12)) / 100.0
}

fn batch_json(site: u64, first: u64, rows: u64, batch_no: u64) -> Vec<u8> {
    let rows: Vec<_> = (first..first + rows)
        .map(|i| {
            json!({"table": "obs", "op": "upsert", "lsn": 1_000_000 + i, "pk": {"obs_id": i}, "data": {
                "person_id": 1 + i % 5000, "concept_id": 5089, "encounter_id": 1 + i % 20000,
                "obs_datetime": "2026-01-05 10:00:00", "location_id": 101, "value_numeric": i as f64 / 10.0,
                "value_text": format!("Zoë {i}"), "creator": 1, "date_created": "2026-01-05 10:00:00",
                "voided": 0, "uuid": format!("bench-{i}")}})
        })
        .collect();
    json!({"schema_version": 1, "site_id": site, "batch_id": format!("bench-{batch_no}"), "visits": [{
        "stream_key": format!("{site}:1:1:2026-01-05"), "patient_id": 1, "program_id": 1, "visit_date": "2026-01-05",
        "version": batch_no + 1, "complete": false, "rows": rows}]})
    .to_string()
    .into_bytes()
}

/// Where each phase's time went, summed over batches.
#[derive(Default)]
struct Phases {
    plan: f64,
    pg: f64,
    mysql: f64,
}

impl Phases {
    fn add(&mut self, other: &Phases) {
        self.plan += other.plan;
        self.pg += other.pg;
        self.mysql += other.mysql;
    }
}

/// Applies one site's batches as the receiver does for one tailer, with up to `in_flight` of
/// them at once (the tailer sends two): each parsed, validated and planned, then applied to
/// both stores at once (`apply::both`, PostgreSQL on its own task), each store taking the
/// site's batches one after the other.
async fn apply_site(
    site: u64,
    bodies: Vec<Vec<u8>>,
    in_flight: usize,
    pg: Arc<PgStore>,
    mirror: Arc<MirrorStore>,
    mapping: Arc<Mapping>,
) -> Phases {
    let caps = batch::Caps {
        max_decompressed: 64 << 20,
        max_visits: 10_000,
        max_rows: 200_000,
    };
    let site = site as i64;
    let mut phases = Phases::default();
    let mut flying = std::collections::VecDeque::new();
    for body in bodies {
        let (pg, mirror, mapping) = (pg.clone(), mirror.clone(), mapping.clone());
        flying.push_back(tokio::spawn(async move {
            let t = Instant::now();
            let mut parsed = batch::parse(&body).unwrap();
            batch::validate(&parsed, site, caps, &mapping).unwrap();
            let plan = apply::plan(&mut parsed, &mapping);
            let plan_s = t.elapsed().as_secs_f64();
            let both = apply::both(pg, &mirror, site, Arc::new(parsed), Arc::new(plan), None).await;
            both.pg.unwrap();
            both.mysql.unwrap();
            Phases {
                plan: plan_s,
                pg: both.pg_seconds,
                mysql: both.mysql_seconds,
            }
        }));
        while flying.len() >= in_flight {
            phases.add(&flying.pop_front().unwrap().await.unwrap());
        }
    }
    for task in flying {
        phases.add(&task.await.unwrap());
    }
    phases
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
    let mapping = Arc::new(Mapping::load(Path::new("mappings/openmrs.toml")).unwrap());
    let mirror = Arc::new(
        MirrorStore::connect(my_url, None, "bench_apply_mirror", &mapping)
            .await
            .unwrap(),
    );
    let store = |maintained: bool| {
        let mapping = mapping.clone();
        async move {
            let pg = PgStore::connect(
                emr_stream::receiver::pg::pool(pg_url, 8).unwrap(),
                &mapping,
                // every batch's patients recomputed in its transaction (the bench's batches
                // hold 1000 patients each: the receiver's default would queue them)
                apply::PgOptions {
                    inline_max_patients: i32::MAX,
                    ..apply::PgOptions::default()
                },
            )
            .await
            .unwrap();
            Arc::new(if maintained {
                pg
            } else {
                pg.without_maintenance()
            })
        }
    };
    let (pg_on, pg_off) = (store(true).await, store(false).await);

    // Runs of `total` rows on fresh keys: one site's stream, then four sites at once (each a
    // quarter of the rows, as a receiver serves many facilities), each with the IDS
    // maintenance off and on, a site's batches two at a time as its tailer sends them; then
    // one site's batches one at a time (what the second in flight is worth).
    let mut run_no = 0;
    let mut run = |sites: u64, in_flight: usize, pg: Arc<PgStore>| {
        run_no += 1;
        let first = run_no * total;
        let batches = total / per / sites;
        let work: Vec<(u64, Vec<Vec<u8>>)> = (0..sites)
            .map(|s| {
                let bodies = (0..batches)
                    .map(|b| {
                        let n = s * batches + b;
                        batch_json(101 + s, first + n * per, per, first + n)
                    })
                    .collect();
                (101 + s, bodies)
            })
            .collect();
        let (mirror, mapping) = (mirror.clone(), mapping.clone());
        async move {
            let started = Instant::now();
            let cpu = cpu_seconds();
            let tasks: Vec<_> = work
                .into_iter()
                .map(|(site, bodies)| {
                    tokio::spawn(apply_site(
                        site,
                        bodies,
                        in_flight,
                        pg.clone(),
                        mirror.clone(),
                        mapping.clone(),
                    ))
                })
                .collect();
            let mut phases = Phases::default();
            for t in tasks {
                phases.add(&t.await.unwrap());
            }
            let t = started.elapsed().as_secs_f64();
            (t, phases, cpu_seconds() - cpu)
        }
    };
    // The baseline: the same rows (fresh keys, a site of their own) as plain upserts into the
    // same tables the receiver writes, both stores at once: 1000-row multi-row upserts into
    // MySQL, and into PostgreSQL a COPY into a staging table and one INSERT … ON CONFLICT per
    // batch. (Into copies of the tables, the baseline wrote a table a fifth the size of the
    // receiver's by the last round: 300k rows against 1.5M.) One run of it varied by a third
    // from run to run (the stores' background flushing after the runs before it), so it runs
    // once per round, below.
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(my_url).unwrap())
        .db_name(Some("bench_apply_mirror"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let pool = emr_stream::receiver::pg::pool(pg_url, 2).unwrap();
    let mut pg_conn = pool.get().await.unwrap();
    // Three rounds, each the baseline then the five receiver runs: the tables grow and the
    // machine's speed drifts over a run, and single runs of either side varied by a fifth, so
    // each figure is the median of its three and the ratios are of medians.
    let labels = [
        "one site, IDS maintenance off",
        "one site, IDS maintenance on",
        "four sites at once, IDS maintenance off",
        "four sites at once, IDS maintenance on",
        "one site, one batch at a time, IDS maintenance off",
    ];
    let mut baselines = Vec::new();
    let mut runs: Vec<Vec<(f64, Phases, f64)>> = labels.iter().map(|_| Vec::new()).collect();
    for round in 0..3 {
        baselines.push(baseline(&mut conn, &mut pg_conn, (100 + round) * total, total, per).await);
        runs[0].push(run(1, 2, pg_off.clone()).await);
        runs[1].push(run(1, 2, pg_on.clone()).await);
        runs[2].push(run(4, 2, pg_off.clone()).await);
        runs[3].push(run(4, 2, pg_on.clone()).await);
        runs[4].push(run(1, 1, pg_off.clone()).await);
    }

    let rate = |t: f64| total as f64 / t;
    for (i, b) in baselines.iter().enumerate() {
        println!("baseline run {}, plain upserts into both stores at once: {total} rows in {:.2} s = {:.0} rows/s (MySQL 1000-row multi-row upserts alone {:.0} rows/s, PostgreSQL COPY upserts of {per} rows alone {:.0} rows/s; the client's CPU {:.2} s)", i + 1, b.both, rate(b.both), rate(b.mysql), rate(b.pg), b.cpu);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let t_base = median(baselines.iter().map(|b| b.both).collect());
    println!(
        "baseline: the median of the three, {t_base:.2} s = {:.0} rows/s",
        rate(t_base)
    );
    for (label, runs) in labels.iter().zip(runs) {
        let t = median(runs.iter().map(|r| r.0).collect());
        let each: Vec<String> = runs
            .iter()
            .zip(&baselines)
            .map(|(r, b)| format!("{:.2}x", b.both / r.0))
            .collect();
        println!(
            "receiver apply, both stores, {label}: {total} rows in {t:.2} s (median of three) = {:.0} rows/s = {:.2}x the baseline (each round against its own baseline: {})",
            rate(t),
            t_base / t,
            each.join(", ")
        );
        let of = |f: &dyn Fn(&(f64, Phases, f64)) -> f64| median(runs.iter().map(f).collect());
        println!(
            "  (medians, summed over batches: parse, validate and plan {:.2} s; PostgreSQL {:.2} s and MySQL {:.2} s, side by side; the receiver's own CPU {:.2} s)",
            of(&|r| r.1.plan),
            of(&|r| r.1.pg),
            of(&|r| r.1.mysql),
            of(&|r| r.2)
        );
    }
}

/// One baseline run's seconds: both stores at once, each store's part, and the client's CPU.
struct Baseline {
    both: f64,
    mysql: f64,
    pg: f64,
    cpu: f64,
}

/// Plain upserts of `total` rows of site [`BASELINE_SITE`] with keys from `first` into `obs`
/// of both stores at once.
async fn baseline(
    conn: &mut mysql_async::Conn,
    pg_conn: &mut deadpool_postgres::Client,
    first: u64,
    total: u64,
    per: u64,
) -> Baseline {
    let cols = "site_id, lsn, obs_id, person_id, concept_id, encounter_id, obs_datetime, location_id, value_numeric, value_text, creator, date_created, voided, uuid";
    let mysql_plain = async {
        let started = Instant::now();
        for chunk in 0..total / 1000 {
            let values: Vec<String> = (first + chunk * 1000..first + chunk * 1000 + 1000)
                .map(|i| format!("({BASELINE_SITE}, {}, {i}, {}, 5089, {}, '2026-01-05 10:00:00', 101, {}, 'Zoë {i}', 1, '2026-01-05 10:00:00', 0, 'bench-{i}')", 1_000_000 + i, 1 + i % 5000, 1 + i % 20000, i as f64 / 10.0))
                .collect();
            let sql = format!(
                "INSERT INTO obs ({cols}) VALUES {} ON DUPLICATE KEY UPDATE value_numeric = VALUES(value_numeric), value_text = VALUES(value_text), lsn = VALUES(lsn)",
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
                "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT * FROM cdr.obs WITH NO DATA",
            )
            .await
            .unwrap();
            let mut buf = String::new();
            for i in first + b * per..first + (b + 1) * per {
                buf.push_str(&format!(
                    "{BASELINE_SITE}\t{}\t{i}\t{}\t5089\t{}\t2026-01-05 10:00:00\t101\t{}\tZoë {i}\t1\t2026-01-05 10:00:00\t0\tbench-{i}\n",
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
                "INSERT INTO cdr.obs AS t ({cols}) SELECT {cols} FROM stage \
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
    let cpu = cpu_seconds();
    let (mysql, pg) = tokio::join!(mysql_plain, pg_plain);
    Baseline {
        both: started.elapsed().as_secs_f64(),
        mysql,
        pg,
        cpu: cpu_seconds() - cpu,
    }
}
