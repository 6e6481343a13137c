//! Decode throughput of the tailer's binlog adapter next to a plain mysql_async read of the
//! same binlog range. Run by scripts/bench-decode.sh:
//!
//!     bench_decode MYSQL_URL DATABASE FROM_FILE:POS TO_FILE:POS
//!
//! "plain" reads the events with mysql_async and lets it decode every row to `BinlogRow`
//! values (what any client of the crate pays); "tailer" runs `BinlogReader`: the same read,
//! its row images decoded straight to their wire JSON (names, charsets, ENUM/SET labels).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use emr_stream::tailer::binlog::{BinlogPosition, BinlogReader, Step};
use futures_util::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::{BinlogStreamRequest, Opts, Pool};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

async fn plain(
    opts: Opts,
    from: &BinlogPosition,
    want_rows: u64,
    database: &str,
) -> (u64, Duration) {
    let started = Instant::now();
    let conn = mysql_async::Conn::new(opts).await.unwrap();
    let request = BinlogStreamRequest::new(61_001)
        .with_filename(from.file.as_bytes())
        .with_pos(from.pos);
    let mut stream = conn.get_binlog_stream(request).await.unwrap();
    let mut rows = 0u64;
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if let Some(EventData::RowsEvent(e)) = event.read_data().unwrap() {
            let tme = stream.get_tme(e.table_id()).unwrap();
            if tme.database_name() == database {
                for row in e.rows(tme) {
                    std::hint::black_box(row.unwrap());
                    rows += 1;
                }
            }
        }
        if rows >= want_rows {
            break;
        }
    }
    (rows, started.elapsed())
}

async fn tailer(
    opts: Opts,
    from: &BinlogPosition,
    to: &BinlogPosition,
    database: &str,
) -> (u64, Duration) {
    let started = Instant::now();
    let mapped: HashMap<String, Vec<String>> =
        [("obs".to_owned(), vec!["obs_id".to_owned()])].into();
    let mut reader = BinlogReader::connect(
        opts.clone(),
        Pool::new(opts),
        61_002,
        from,
        database,
        mapped,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut rows = 0u64;
    loop {
        match reader.next().await.unwrap().unwrap() {
            Step::Rows(r) => {
                rows += r.len() as u64;
                std::hint::black_box(r);
            }
            Step::Commit { position, .. } if position >= *to => break,
            _ => {}
        }
    }
    (rows, started.elapsed())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(
        args.len() == 5,
        "usage: bench_decode MYSQL_URL DATABASE FROM_FILE:POS TO_FILE:POS"
    );
    let opts = Opts::from_url(&args[1]).unwrap();
    let from = BinlogPosition::parse(&args[3]).unwrap();
    let to = BinlogPosition::parse(&args[4]).unwrap();
    let (m, u) = tailer(opts.clone(), &from, &to, &args[2]).await;
    let (n, t) = plain(opts, &from, m, &args[2]).await;
    println!(
        "plain mysql_async: {n} rows in {:.2} s = {:.0} rows/s",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64()
    );
    println!(
        "tailer adapter:    {m} rows in {:.2} s = {:.0} rows/s ({:.0}% of plain)",
        u.as_secs_f64(),
        m as f64 / u.as_secs_f64(),
        100.0 * t.as_secs_f64() / u.as_secs_f64()
    );
    println!("peak RSS: {:.1} MiB", peak_rss_mib());
}
