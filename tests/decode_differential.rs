//! The tailer's direct row-image decoder (`binlog::images::decode`) against mysql_common's
//! rows turned into the same wire JSON (`images::through_mysql_common`), event by event on the
//! real MariaDB's binlog: every type fixture of tests/fixtures/types, and random row images
//! (inserts, updates, deletes; NULLs, extremes, every length class) of a table holding every
//! column type, each against the server that logs FULL row metadata and the one that logs
//! MINIMAL.

mod common;

use emr_stream::tailer::binlog::{columns, images, value};
use futures_util::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, OptsBuilder, Value};

/// Reads the binlog of `db` from `start` to `end` (in the same file) and compares both decoders on every rows
/// event; returns (events, rows) compared and how many the direct path decoded.
async fn compare(
    opts: mysql_async::Opts,
    db: &str,
    start: &emr_stream::position::BinlogPosition,
    end: &emr_stream::position::BinlogPosition,
) -> (usize, usize, usize) {
    let conn = mysql_async::Conn::new(opts).await.unwrap();
    let request = BinlogStreamRequest::new(common::server_id())
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let mut stream = conn.get_binlog_stream(request).await.unwrap();
    let (mut events, mut rows, mut direct) = (0, 0, 0);
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        let at = event.header().log_pos();
        if let Some(EventData::RowsEvent(e)) = event.read_data().unwrap() {
            let tme = stream.get_tme(e.table_id()).unwrap();
            if tme.database_name() == db {
                let reference: std::sync::Arc<[value::ColumnDesc]> = {
                    let sample = e.rows(tme).next().transpose().unwrap();
                    let sample = sample.as_ref().and_then(|(b, a)| a.as_ref().or(b.as_ref()));
                    columns::from_table_map(tme, sample).into()
                };
                let expected = images::through_mysql_common(&e, tme, &reference).unwrap();
                let layout = images::Layout::of(tme).expect("every fixture type has a layout");
                let got = images::decode(&e, &layout, &reference)
                    .expect("the direct path takes every rows event")
                    .unwrap();
                assert_eq!(
                    got,
                    expected,
                    "table {} at {at}: direct (left) vs mysql_common (right)",
                    tme.table_name()
                );
                events += 1;
                rows += got.len();
                direct += got.len();
            }
        }
        // (the test's writes stay in one binlog file)
        if u64::from(at) >= end.pos {
            return (events, rows, direct);
        }
    }
    panic!("the binlog stream ended before {end}: {events} rows events compared")
}

/// The type fixtures' statements, run in `db`.
async fn run_fixtures(conn: &mut mysql_async::Conn) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/types");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        conn.query_drop(v["create"].as_str().unwrap())
            .await
            .unwrap();
        for s in v["statements"].as_array().unwrap() {
            conn.query_drop(s.as_str().unwrap()).await.unwrap();
        }
    }
}

/// xorshift64*: reproducible random values from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64 + 1) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Microseconds, or 0.
    fn micros(&mut self, on: bool) -> u32 {
        if on {
            self.below(1_000_000) as u32
        } else {
            0
        }
    }

    /// A TIME of up to 30 days either side of zero, with microseconds or not.
    fn time(&mut self, micros: bool) -> Value {
        Value::Time(
            self.below(2) == 0,
            self.below(30) as u32,
            self.below(24) as u8,
            self.below(60) as u8,
            self.below(60) as u8,
            self.micros(micros),
        )
    }

    /// A datetime of a year in [from, from + span), with microseconds or not.
    fn datetime(&mut self, from: u16, span: u64, micros: bool) -> Value {
        Value::Date(
            from + self.below(span) as u16,
            1 + self.below(12) as u8,
            1 + self.below(28) as u8,
            self.below(24) as u8,
            self.below(60) as u8,
            self.below(60) as u8,
            self.micros(micros),
        )
    }
    fn text(&mut self, max: usize) -> String {
        let n = self.below(max as u64 + 1) as usize;
        let pool = [
            'a', 'Z', ' ', 'é', 'ü', '€', '中', '\'', '\\', '\t', '0', '😀',
        ];
        (0..n)
            .map(|_| pool[self.below(pool.len() as u64) as usize])
            .collect()
    }
}

/// Every column type, with a generator of a random value (or NULL) for each.
const RANDOM_TABLE: &str = "CREATE TABLE t_random (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, ii INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  fl FLOAT, db DOUBLE, d1 DECIMAL(10,2), d2 DECIMAL(30,10), d3 DECIMAL(5,0),
  dt DATE, tm TIME, tm6 TIME(6), dtm DATETIME, dtm3 DATETIME(3), dtm6 DATETIME(6),
  ts TIMESTAMP NULL DEFAULT NULL, ts6 TIMESTAMP(6) NULL DEFAULT NULL, yr YEAR,
  ch CHAR(10) CHARACTER SET utf8mb4, chl CHAR(10) CHARACTER SET latin1,
  vc VARCHAR(300) CHARACTER SET utf8mb4, vs VARCHAR(20) CHARACTER SET latin1,
  bn BINARY(8), vb VARBINARY(50), tb TINYBLOB, bl BLOB, mt MEDIUMTEXT, lb LONGBLOB,
  en ENUM('a','b','c'), st SET('x','y','z'), b1 BIT(1), b13 BIT(13), js JSON
) CHARACTER SET utf8mb4";

fn random_row(rng: &mut Rng, id: i64) -> Vec<Value> {
    let mut v = vec![Value::Int(id)];
    let null = |rng: &mut Rng| rng.below(6) == 0;
    macro_rules! col {
        ($e:expr) => {{
            let value = if null(rng) { Value::NULL } else { $e };
            v.push(value);
        }};
    }
    let pick = |rng: &mut Rng, xs: &[i64]| xs[rng.below(xs.len() as u64) as usize];
    col!(Value::Int(pick(rng, &[-128, -1, 0, 1, 127])));
    col!(Value::Int(pick(rng, &[0, 1, 128, 255])));
    col!(Value::Int(pick(rng, &[-32768, -2, 0, 7, 32767])));
    col!(Value::Int(pick(rng, &[0, 1, 40000, 65535])));
    col!(Value::Int(pick(rng, &[-8388608, -5, 0, 9, 8388607])));
    col!(Value::Int(pick(rng, &[0, 8388608, 16777215])));
    col!(Value::Int(rng.next() as i32 as i64));
    col!(Value::Int(pick(rng, &[0, 2147483648, 4294967295])));
    col!(Value::Int(rng.next() as i64));
    col!(Value::UInt(
        [0u64, 1, 1 << 53, (1 << 53) + 1, u64::MAX][rng.below(5) as usize]
    ));
    col!(Value::Float(
        [0.1f32, -3.5, 1e30, 1.17e-38, 123456.79][rng.below(5) as usize]
    ));
    col!(Value::Double(
        (rng.next() as i64 as f64) / 1e6 * if rng.below(2) == 0 { 1.0 } else { 1e-300 }
    ));
    col!(Value::Bytes(
        format!(
            "{}.{:02}",
            rng.below(99_999_999) as i64 - 50_000_000,
            rng.below(100)
        )
        .into_bytes()
    ));
    col!(Value::Bytes(
        format!(
            "-{}.{:010}",
            rng.below(u64::MAX / 2),
            rng.below(10_000_000_000)
        )
        .into_bytes()
    ));
    col!(Value::Bytes(
        format!("{}", rng.below(199_999) as i64 - 99_999).into_bytes()
    ));
    col!(Value::Date(
        1000 + rng.below(9000) as u16,
        1 + rng.below(12) as u8,
        1 + rng.below(28) as u8,
        0,
        0,
        0,
        0
    ));
    // TIME, TIME(6)
    for micros in [false, true] {
        col!(rng.time(micros));
    }
    // DATETIME, DATETIME(3), DATETIME(6) from year 1000; TIMESTAMP, TIMESTAMP(6) from 1971
    for (from, span, micros) in [
        (1000, 9000, false),
        (1000, 9000, true),
        (1000, 9000, true),
        (1971, 60, false),
        (1971, 60, true),
    ] {
        col!(rng.datetime(from, span, micros));
    }
    col!(Value::Int(1901 + rng.below(254) as i64));
    col!(Value::Bytes(
        rng.text(10)
            .chars()
            .take(10)
            .collect::<String>()
            .into_bytes()
    ));
    col!(Value::Bytes(
        ["", "abc", "été", "   x  "][rng.below(4) as usize]
            .as_bytes()
            .to_vec()
    ));
    col!(Value::Bytes(rng.text(300).into_bytes()));
    col!(Value::Bytes(
        ["", "Zoë", "naïve café", "x"][rng.below(4) as usize]
            .as_bytes()
            .to_vec()
    ));
    // (long values now and then: a 3-byte length, and rows events split by size)
    let long = if rng.below(5) == 0 { 70_000 } else { 100 };
    col!(Value::Bytes(rng.bytes(8)));
    col!(Value::Bytes(rng.bytes(50)));
    col!(Value::Bytes(rng.bytes(255)));
    col!(Value::Bytes(rng.bytes(if long > 100 { 3000 } else { 40 })));
    col!(Value::Bytes(rng.text(long / 4).into_bytes()));
    col!(Value::Bytes(rng.bytes(long)));
    col!(Value::Bytes(
        ["a", "b", "c"][rng.below(3) as usize].as_bytes().to_vec()
    ));
    col!(Value::Bytes(
        ["", "x", "y,z", "x,y,z"][rng.below(4) as usize]
            .as_bytes()
            .to_vec()
    ));
    col!(Value::Int(rng.below(2) as i64));
    col!(Value::Int(rng.below(8192) as i64));
    col!(Value::Bytes(
        format!(
            "{{\"a\": {}, \"b\": [\"{}\", null, true]}}",
            rng.below(1000),
            rng.text(5).replace(['\\', '"', '\t'], "")
        )
        .into_bytes()
    ));
    v
}

/// Random inserts, updates (of every column, with NULLs) and deletes on `t_random`.
async fn run_random(conn: &mut mysql_async::Conn, seed: u64) {
    conn.query_drop(RANDOM_TABLE).await.unwrap();
    let mut rng = Rng(seed | 1);
    let n = 40;
    for id in 0..n {
        // several rows per event now and then: one multi-row statement
        let rows: Vec<Vec<Value>> = (0..1 + rng.below(3))
            .map(|k| random_row(&mut rng, id * 10 + k as i64))
            .collect();
        let marks = vec!["?"; rows[0].len()].join(",");
        let sql = format!(
            "INSERT INTO t_random VALUES {}",
            vec![format!("({marks})"); rows.len()].join(",")
        );
        conn.exec_drop(sql, rows.concat()).await.unwrap();
    }
    let cols = [
        "ti", "tu", "si", "su", "mi", "mu", "ii", "iu", "bi", "bu", "fl", "db", "d1", "d2", "d3",
        "dt", "tm", "tm6", "dtm", "dtm3", "dtm6", "ts", "ts6", "yr", "ch", "chl", "vc", "vs", "bn",
        "vb", "tb", "bl", "mt", "lb", "en", "st", "b1", "b13", "js",
    ];
    for id in 0..n {
        let row = random_row(&mut rng, id * 10);
        let set: Vec<String> = cols.iter().map(|c| format!("{c} = ?")).collect();
        let sql = format!("UPDATE t_random SET {} WHERE id = ?", set.join(", "));
        let mut params = row[1..].to_vec();
        params.push(Value::Int(id * 10));
        conn.exec_drop(sql, params).await.unwrap();
    }
    conn.exec_drop("DELETE FROM t_random WHERE id % 3 = 0", ())
        .await
        .unwrap();
}

async fn check(url: &str, label: &str) {
    let (opts, mut admin, db, start) =
        common::fresh_database(url, &format!("decode_{label}")).await;
    let mut conn =
        mysql_async::Conn::new(OptsBuilder::from_opts(opts.clone()).db_name(Some(db.clone())))
            .await
            .unwrap();
    conn.query_drop("SET time_zone = '+00:00', sql_mode = ''")
        .await
        .unwrap();
    run_fixtures(&mut conn).await;
    let seed = std::env::var("DECODE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_1203);
    eprintln!("{label}: random row images from seed {seed} (DECODE_SEED)");
    run_random(&mut conn, seed).await;
    let end = common::position_of(&mut admin).await;
    let (events, rows, direct) = compare(opts, &db, &start, &end).await;
    eprintln!("{label}: {events} rows events, {rows} rows, {direct} decoded directly, all equal");
    assert!(
        events >= 60 && rows > events,
        "too few events, or no event of several rows"
    );
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn direct_decoding_equals_mysql_common_with_full_metadata() {
    let services = common::Services::get().await;
    check(&services.mysql_url, "full").await;
}

#[tokio::test]
async fn direct_decoding_equals_mysql_common_with_minimal_metadata() {
    let url = common::minimal_mysql_url();
    check(&url, "minimal").await;
}
