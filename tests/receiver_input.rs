//! The receiver facing the open internet: every kind of bad input gets its stated answer, the
//! receiver stays up, and no row is written.

mod common;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

fn batch(site: i64, rows: Value) -> Value {
    json!({
        "schema_version": 1, "site_id": site, "batch_id": "bad-1",
        "visits": [{"stream_key": format!("{site}:5:1:2026-01-02"), "patient_id": 5, "program_id": 1,
                    "visit_date": "2026-01-02", "version": 1, "complete": true, "rows": rows}]
    })
}

struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn post(&self, token: Option<&str>, gzip: bool, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = req.body(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

/// Sends only the headers of a request announcing `len` bytes; returns the answer's status.
async fn announce_body(addr: &str, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![b' '; 64 * 1024]).await.ok();
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_stated_answer_and_writes_nothing() {
    let rig = common::Rig::new("badin").await;
    let receiver = rig.receiver();
    let c = Client {
        http: reqwest::Client::new(),
        url: format!("http://{}/api/v1/stream", receiver.addr),
    };
    let token = Some(rig.token.as_str());
    let gz = |v: &Value| emr_stream::wire::gzip(v.to_string().as_bytes());
    let good_row = json!([{"table": "obs", "op": "upsert", "lsn": 5, "pk": {"obs_id": 1}, "data": {"value_numeric": 1.5}}]);

    // GIVEN / WHEN / THEN, one bad input at a time
    assert_eq!(
        c.post(None, true, gz(&batch(101, good_row.clone())))
            .await
            .0,
        401,
        "no token"
    );
    assert_eq!(
        c.post(Some("wrong"), true, gz(&batch(101, good_row.clone())))
            .await
            .0,
        401,
        "wrong token"
    );
    let (s, b) = c.post(token, true, gz(&batch(102, good_row.clone()))).await;
    assert_eq!(
        (s, b["pointer"].as_str()),
        (403, Some("/site_id")),
        "another site"
    );
    let whole = gz(&batch(101, good_row.clone()));
    assert_eq!(
        c.post(token, true, whole[..whole.len() / 2].to_vec())
            .await
            .0,
        422,
        "truncated gzip"
    );
    let bomb = emr_stream::wire::gzip(&vec![b' '; 100 << 20]);
    assert!(bomb.len() < 1 << 20);
    assert_eq!(c.post(token, true, bomb).await.0, 413, "gzip bomb");
    let (s, b) = c
        .post(
            token,
            false,
            b"{\"schema_version\": 1, \"site_id\": ".to_vec(),
        )
        .await;
    assert_eq!(s, 422, "invalid JSON: {b}");
    let bad_type = json!([{"table": "obs", "op": "upsert", "lsn": "five", "pk": {"obs_id": 1}}]);
    let (s, b) = c.post(token, true, gz(&batch(101, bad_type))).await;
    assert_eq!(
        (s, b["pointer"].as_str()),
        (422, Some("/visits/0/rows/0/lsn")),
        "wrong value type: {b}"
    );
    let unknown = json!([{"table": "secrets", "op": "upsert", "lsn": 5, "pk": {"id": 1}}]);
    let (s, b) = c.post(token, true, gz(&batch(101, unknown))).await;
    assert_eq!(
        (s, b["pointer"].as_str()),
        (422, Some("/visits/0/rows/0/table")),
        "unknown table"
    );
    let sql_table = json!([{"table": "obs` ; DROP TABLE obs; --", "op": "upsert", "lsn": 5, "pk": {"obs_id": 1}}]);
    assert_eq!(
        c.post(token, true, gz(&batch(101, sql_table))).await.0,
        422,
        "SQL-looking table"
    );
    let sql_pk =
        json!([{"table": "obs", "op": "upsert", "lsn": 5, "pk": {"obs_id`=1 OR 1=1; --": 1}}]);
    assert_eq!(
        c.post(token, true, gz(&batch(101, sql_pk))).await.0,
        422,
        "SQL-looking pk column"
    );
    let nested = json!([{"table": "obs", "op": "upsert", "lsn": 5, "pk": {"obs_id": 1}, "data": {"value_text": {"a": [1]}}}]);
    assert_eq!(
        c.post(token, true, gz(&batch(101, nested))).await.0,
        422,
        "nested value"
    );
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(
        c.post(token, false, deep.into_bytes()).await.0,
        422,
        "deep JSON"
    );
    // a 100 MB body is refused from its Content-Length, before the receiver reads it
    assert_eq!(
        announce_body(&receiver.addr, &rig.token, 100 << 20).await,
        413,
        "100 MB body"
    );

    // THEN the receiver is still up, and nothing was written
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", receiver.addr))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let mirror = rig.services.mysql_pool(&rig.mirror_db);
    let mut conn = mirror.get_conn().await.unwrap();
    let (obs, batches): (i64, i64) = conn
        .query_first("SELECT (SELECT COUNT(*) FROM obs), (SELECT COUNT(*) FROM _stream_batches)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((obs, batches), (0, 0), "a refused request wrote something");

    // AND an SQL-looking *data* column is no identifier at all: it lands in _overflow
    let odd = json!([{"table": "obs", "op": "upsert", "lsn": 5, "pk": {"obs_id": 1},
                      "data": {"value_numeric": 2.5, "x`; DROP TABLE obs; --": "kept"}}]);
    let (s, b) = c.post(token, true, gz(&batch(101, odd))).await;
    assert_eq!(s, 200, "{b}");
    let overflow: Option<String> = conn
        .query_first("SELECT _overflow FROM obs WHERE site_id = 101 AND obs_id = 1")
        .await
        .unwrap()
        .unwrap();
    let overflow: Value = serde_json::from_str(&overflow.unwrap()).unwrap();
    assert_eq!(overflow["x`; DROP TABLE obs; --"], "kept");
    // a replay of the same batch is 409 and changes nothing
    let odd_again = json!([{"table": "obs", "op": "upsert", "lsn": 5, "pk": {"obs_id": 1}, "data": {"value_numeric": 9.0}}]);
    assert_eq!(c.post(token, true, gz(&batch(101, odd_again))).await.0, 409);
    let v: f64 = conn
        .query_first("SELECT value_numeric FROM obs WHERE site_id = 101 AND obs_id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 2.5);

    // AND a batch carrying two versions of one visit (an outbox drained after an outage) is
    // stored, the newer row image winning
    let visit = |version: u64, lsn: u64, v: f64| {
        json!({"stream_key": "101:5:1:2026-01-02", "patient_id": 5, "program_id": 1, "visit_date": "2026-01-02",
               "version": version, "complete": true,
               "rows": [{"table": "obs", "op": "upsert", "lsn": lsn, "pk": {"obs_id": 2}, "data": {"value_numeric": v}}]})
    };
    let two = json!({"schema_version": 1, "site_id": 101, "batch_id": "two-versions", "visits": [visit(1, 10, 1.0), visit(2, 11, 2.0)]});
    let (s, b) = c.post(token, true, gz(&two)).await;
    assert_eq!(s, 200, "{b}");
    let v: f64 = conn
        .query_first("SELECT value_numeric FROM obs WHERE site_id = 101 AND obs_id = 2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 2.0);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
