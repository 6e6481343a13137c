//! Type fidelity: for each fixture in tests/fixtures/types ("SQL statements → expected JSON
//! rows"), run the statements on the real MariaDB and read them back through the tailer's
//! binlog adapter; every row must equal the expected JSON exactly. Run once against the server
//! that logs FULL row metadata and once against the one that logs MINIMAL (names and ENUM/SET
//! labels then come from information_schema).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use emr_stream::tailer::binlog::BinlogReader;
use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool};
use serde_json::Value;

struct Fixture {
    name: String,
    table: String,
    create: String,
    statements: Vec<String>,
    expected: Vec<(String, Value)>,
}

fn fixtures() -> Vec<Fixture> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/types");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "fixtures missing in {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            Fixture {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                table: v["table"].as_str().unwrap().to_owned(),
                create: v["create"].as_str().unwrap().to_owned(),
                statements: v["statements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect(),
                expected: v["expected"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| (e["op"].as_str().unwrap().to_owned(), e["row"].clone()))
                    .collect(),
            }
        })
        .collect()
}

use common::position_of as position;

/// Runs every fixture against the server at `url`; returns the number of rows checked.
async fn check_all(url: &str, label: &str) -> usize {
    let fixtures = fixtures();
    let (opts, mut admin, db, start) = common::fresh_database(url, &format!("types_{label}")).await;
    let mut conn =
        mysql_async::Conn::new(OptsBuilder::from_opts(opts.clone()).db_name(Some(db.clone())))
            .await
            .unwrap();
    for f in &fixtures {
        conn.query_drop(&f.create)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        for s in &f.statements {
            conn.query_drop(s)
                .await
                .unwrap_or_else(|e| panic!("{}: {s}: {e}", f.name));
        }
    }
    let end = position(&mut admin).await;
    let mapped: HashMap<String, Vec<String>> = fixtures
        .iter()
        .map(|f| (f.table.clone(), vec!["id".to_owned()]))
        .collect();
    let lookup = Pool::new(opts.clone());
    let mut reader = BinlogReader::connect(
        opts,
        lookup,
        common::server_id(),
        &start,
        &db,
        mapped,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let mut rows = Vec::new();
    common::read_until(&mut reader, &end, &mut rows).await;
    let mut got: HashMap<String, Vec<(String, Value)>> = HashMap::new();
    for (table, op, image) in rows {
        got.entry(table).or_default().push((op.to_owned(), image));
    }
    let mut checked = 0;
    for f in &fixtures {
        let rows = got.remove(&f.table).unwrap_or_default();
        assert_eq!(
            rows.len(),
            f.expected.len(),
            "{label} {}: {} rows read, {} expected: {rows:?}",
            f.name,
            rows.len(),
            f.expected.len()
        );
        for (i, (g, e)) in rows.iter().zip(&f.expected).enumerate() {
            assert_eq!(
                g, e,
                "{label} {} row {i}: got (left) vs expected (right)",
                f.name
            );
        }
        checked += rows.len();
    }
    admin
        .query_drop(format!("DROP DATABASE {db}"))
        .await
        .unwrap();
    checked
}

#[tokio::test]
async fn every_type_decodes_exactly_with_full_metadata() {
    let services = common::Services::get().await;
    let n = check_all(&services.mysql_url, "full").await;
    assert!(n >= 20);
}

#[tokio::test]
async fn every_type_decodes_exactly_with_minimal_metadata() {
    let url = common::minimal_mysql_url();
    let n = check_all(&url, "minimal").await;
    assert!(n >= 20);
}
