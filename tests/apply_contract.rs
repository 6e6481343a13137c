//! The apply contract (DESIGN.md "Wire contract"; `receiver::apply`) against the real stores,
//! through the library: a replayed batch changes nothing; an older image never overwrites a
//! newer one; a delete leaves a tombstone that an older upsert cannot get past, while a newer
//! one can; values that need escaping (tabs, newlines, backslashes, quotes, `\N` as text,
//! accents) arrive exactly in both stores; a value PostgreSQL's column cannot hold travels in
//! `_overflow`; a site's batches wait for each other in each store.

mod common;

use std::path::Path;

use emr_stream::mapping::Mapping;
use emr_stream::receiver::apply::{self, Applied, MirrorStore, PgStore};
use emr_stream::receiver::{batch, pg};
use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

const SITE: i64 = 101;

fn obs(op: &str, lsn: u64, id: i64, text: &str, when: &str) -> Value {
    json!({"table": "obs", "op": op, "lsn": lsn, "pk": {"obs_id": id}, "data": {
        "person_id": 7, "concept_id": 5089, "encounter_id": 3, "obs_datetime": when,
        "location_id": 101, "value_text": text, "creator": 1,
        "date_created": "2026-01-05 10:00:00", "voided": 0, "uuid": format!("u-{id}")}})
}

fn body(batch_id: &str, rows: Vec<Value>) -> Vec<u8> {
    json!({"schema_version": 1, "site_id": SITE, "batch_id": batch_id, "visits": [{
        "stream_key": "101:7:1:2026-01-05", "patient_id": 7, "program_id": 1,
        "visit_date": "2026-01-05", "version": 1, "complete": false, "rows": rows}]})
    .to_string()
    .into_bytes()
}

struct Stores {
    mapping: Mapping,
    mirror: MirrorStore,
    pg: PgStore,
    pg_url: String,
    mysql: mysql_async::Pool,
}

impl Stores {
    async fn apply(&self, batch_id: &str, rows: Vec<Value>) -> (Applied, Applied) {
        let raw = body(batch_id, rows);
        let mut parsed = batch::parse(&raw).unwrap();
        let caps = batch::Caps {
            max_decompressed: 1 << 20,
            max_visits: 10,
            max_rows: 100,
        };
        batch::validate(&parsed, SITE, caps, &self.mapping).unwrap();
        let plan = apply::plan(&mut parsed, &self.mapping);
        let (a, b) = tokio::join!(
            self.pg.apply(SITE, &parsed, &plan, Some(7)),
            self.mirror.apply(SITE, &parsed.batch_id, &plan)
        );
        (a.unwrap(), b.unwrap())
    }

    /// obs_id → (value_text, lsn) in each store.
    async fn rows(
        &self,
    ) -> (
        Vec<(i32, Option<String>, i64)>,
        Vec<(i32, Option<String>, i64)>,
    ) {
        let (client, connection) = tokio_postgres::connect(&self.pg_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let pg: Vec<(i32, Option<String>, i64)> = client
            .query(
                "SELECT obs_id, value_text, lsn FROM cdr.obs WHERE site_id = $1 ORDER BY obs_id",
                &[&(SITE as i32)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let mut conn = self.mysql.get_conn().await.unwrap();
        let my: Vec<(i32, Option<String>, i64)> = conn
            .exec(
                "SELECT obs_id, value_text, lsn FROM obs WHERE site_id = ? ORDER BY obs_id",
                (SITE,),
            )
            .await
            .unwrap();
        (pg, my)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_keep_the_apply_contract() {
    let services = common::Services::get().await;
    let name = common::unique("apply");
    let pg_url = services.pg_database(&name).await;
    let mapping = Mapping::load(Path::new(&common::mapping_path())).unwrap();
    let mirror = MirrorStore::connect(&services.mysql_url, None, &name, &mapping)
        .await
        .unwrap();
    let pg = PgStore::connect(
        pg::pool(&pg_url, 2).unwrap(),
        &mapping,
        apply::PgOptions::default(),
    )
    .await
    .unwrap()
    .without_maintenance();
    let stores = Stores {
        mapping,
        mirror,
        pg,
        pg_url,
        mysql: services.mysql_pool(&name),
    };
    let awkward = "Zoë\ttab\nline\\back 'quote' \"dq\"\r\\N";
    let day = "2026-01-05 10:00:00";

    // GIVEN three rows, one with text that needs escaping in both stores' bulk paths and one
    // with a zero date PostgreSQL's timestamp cannot hold
    let applied = stores
        .apply(
            "a",
            vec![
                obs("upsert", 10, 1, awkward, day),
                obs("upsert", 10, 2, "two", day),
                obs("upsert", 10, 3, "three", "0000-00-00 00:00:00"),
            ],
        )
        .await;
    assert_eq!(applied, (Applied::Stored(3), Applied::Stored(3)));
    // WHEN the batch comes again THEN neither store applies it
    let again = stores
        .apply("a", vec![obs("upsert", 11, 1, "x", day)])
        .await;
    assert_eq!(again, (Applied::Duplicate, Applied::Duplicate));
    // WHEN an older image of row 1 comes THEN it does not overwrite the newer one
    stores
        .apply("b", vec![obs("upsert", 5, 1, "older", day)])
        .await;
    // WHEN row 2 is deleted, then an image older than the delete comes
    stores.apply("c", vec![obs("delete", 20, 2, "", day)]).await;
    stores
        .apply("d", vec![obs("upsert", 15, 2, "resurrected", day)])
        .await;
    let (pg_rows, my_rows) = stores.rows().await;
    // THEN row 2 stays deleted in both stores, row 1 keeps its newer value, exactly
    let expected = vec![
        (1, Some(awkward.to_owned()), 10),
        (3, Some("three".to_owned()), 10),
    ];
    assert_eq!(pg_rows, expected, "postgres");
    assert_eq!(my_rows, expected, "mysql");
    // WHEN an image newer than the delete comes THEN the row is back
    stores
        .apply("e", vec![obs("upsert", 25, 2, "back", day)])
        .await;
    let (pg_rows, my_rows) = stores.rows().await;
    assert_eq!(pg_rows[1], (2, Some("back".to_owned()), 25), "postgres");
    assert_eq!(my_rows[1], (2, Some("back".to_owned()), 25), "mysql");
    // WHEN one batch carries rows of one table with different column sets (an image without
    // value_text, a full one), twice, so that a session's staging table is reused
    for (batch_id, lsn) in [("f", 30), ("g", 31)] {
        let mut partial = obs("upsert", lsn, 1, "", day);
        partial["data"]
            .as_object_mut()
            .unwrap()
            .remove("value_text");
        let applied = stores
            .apply(batch_id, vec![partial, obs("upsert", lsn, 4, "four", day)])
            .await;
        assert_eq!(applied, (Applied::Stored(2), Applied::Stored(2)));
    }
    // THEN each row takes what it carries and keeps what it does not
    let (pg_rows, my_rows) = stores.rows().await;
    let expected = vec![
        (1, Some(awkward.to_owned()), 31),
        (2, Some("back".to_owned()), 25),
        (3, Some("three".to_owned()), 10),
        (4, Some("four".to_owned()), 31),
    ];
    assert_eq!(pg_rows, expected, "postgres");
    assert_eq!(my_rows, expected, "mysql");

    // AND PostgreSQL keeps the zero date in _overflow, its column NULL
    let (client, connection) = tokio_postgres::connect(&stores.pg_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT obs_datetime IS NULL, _overflow->>'obs_datetime' FROM cdr.obs WHERE site_id = $1 AND obs_id = 3",
            &[&(SITE as i32)],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("0000-00-00 00:00:00")
    );
    // WHEN another writer of the site (a batch sent beside this one, a retry meeting its first
    // attempt) holds the site's lock in both stores, and deletes row 4 while a batch with an
    // older image of it comes
    let mut holder = stores.mysql.get_conn().await.unwrap();
    holder
        .query_drop(format!("START TRANSACTION; INSERT INTO _stream_sites (site_id, batches) VALUES ({SITE}, 1) ON DUPLICATE KEY UPDATE batches = batches + 1"))
        .await
        .unwrap();
    common::hold_site_lock(&client, SITE).await;
    let stale = stores.apply("h", vec![obs("upsert", 40, 4, "stale", day)]);
    tokio::pin!(stale);
    // THEN the batch waits in both stores
    let waited = tokio::time::timeout(std::time::Duration::from_millis(700), &mut stale).await;
    assert!(
        waited.is_err(),
        "a batch ran beside the site's other writer"
    );
    for sql in [
        "DELETE FROM obs WHERE site_id = 101 AND obs_id = 4",
        "INSERT INTO _stream_tombstones (site_id, table_name, pk_json, lsn) VALUES (101, 'obs', '[4]', 50)",
        "COMMIT",
    ] {
        holder.query_drop(sql).await.unwrap();
    }
    client
        .batch_execute(
            "DELETE FROM cdr.obs WHERE site_id = 101 AND obs_id = 4;
             INSERT INTO cdr._stream_tombstones (site_id, table_name, pk_json, lsn) VALUES (101, 'obs', '[4]', 50);
             COMMIT",
        )
        .await
        .unwrap();
    // AND once the other writer committed, it reads that writer's tombstone: row 4 stays
    // deleted in both stores
    assert_eq!(stale.await, (Applied::Stored(0), Applied::Stored(0)));
    let (pg_rows, my_rows) = stores.rows().await;
    assert_eq!(pg_rows, expected[..3], "postgres");
    assert_eq!(my_rows, expected[..3], "mysql");
    drop(holder);
    // AND each store counted the site's batches applied (not the duplicate): PostgreSQL with
    // their visits and the lag sent, the mirror with the other writer's one
    let row = client
        .query_one(
            "SELECT batches, lag_seconds, visits_today FROM cdr._stream_sites WHERE site_id = $1",
            &[&(SITE as i32)],
        )
        .await
        .unwrap();
    let seen: (i64, Option<i32>, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(seen, (8, Some(7), 8));
    let mut conn = stores.mysql.get_conn().await.unwrap();
    let batches: Option<i64> = conn
        .exec_first(
            "SELECT batches FROM _stream_sites WHERE site_id = ?",
            (SITE,),
        )
        .await
        .unwrap();
    assert_eq!(batches, Some(9));

    let mut conn = services.mysql_pool("mysql").get_conn().await.unwrap();
    conn.query_drop(format!("DROP DATABASE `{name}`"))
        .await
        .unwrap();
}
