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
    // (plain: a raw TCP request announces an oversized body)
    let rig = common::Rig::new("badin").await.plain();
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

/// The status of a GET with this `Authorization` header value (none when `None`).
async fn get_as(url: &str, authorization: Option<&str>) -> reqwest::Response {
    let mut req = common::client().get(url);
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_answer_readers_by_scope_and_tokens_rotate() {
    use common::{READER_AGGREGATE, READER_PATIENTS};
    use emr_stream::receiver::auth::hash_token;
    // GIVEN a receiver with a `patients` reader, an `aggregate` reader, and a reader whose
    // token is being rotated (its old and new hash both configured)
    let rig = common::Rig::new("readers").await;
    let rotating = |hashes: &str| {
        format!(
            "{}[[readers]]\nname = \"rotating\"\nscope = \"aggregate\"\ntoken_sha256 = {hashes}\n",
            common::readers_toml()
        )
    };
    let both = format!(
        "[\"{}\", \"{}\"]",
        hash_token("old-reader"),
        hash_token("new-reader")
    );
    let mut receiver =
        rig.receiver_configured("127.0.0.1:0", &common::mapping_path(), &rotating(&both));
    let base = receiver.url("");
    let tx_curr = format!("{base}/api/v1/reports/tx_curr?site_id={}", common::SITE);
    let patients = format!("{tx_curr}&detail=patients");
    let defaulters = format!(
        "{base}/api/v1/reports/defaulter_list?site_id={}",
        common::SITE
    );
    let status = format!("{base}/status?format=json");
    let bearer = |t: &str| format!("Bearer {t}");

    // THEN without a token: 401, with the challenges a program and a browser can answer,
    // before anything about the request is looked at (an unknown report is a 401 too)
    for url in [
        &tx_curr,
        &patients,
        &defaulters,
        &status,
        &format!("{base}/api/v1/reports/nope"),
    ] {
        let r = get_as(url, None).await;
        assert_eq!(r.status(), 401, "{url}");
        let challenge: Vec<&str> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let challenge = challenge.join(" | ");
        assert!(
            challenge.contains("Bearer") && challenge.contains("Basic"),
            "{challenge}"
        );
        let r = get_as(url, Some(&bearer("guess"))).await;
        assert_eq!(r.status(), 401, "{url} with an unknown token");
    }
    // AND a site token sends batches but reads nothing
    for url in [&tx_curr, &patients, &status] {
        let r = get_as(url, Some(&bearer(&rig.token))).await;
        assert_eq!(r.status(), 403, "{url} with the site's token");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(body["error"].as_str().unwrap().contains("reader"), "{body}");
    }
    // AND an aggregate reader gets counts and the status page, not patient lists
    for (url, want) in [
        (&tx_curr, 200),
        (&status, 200),
        (&patients, 403),
        (&defaulters, 403),
    ] {
        let r = get_as(url, Some(&bearer(READER_AGGREGATE))).await;
        assert_eq!(r.status(), want, "{url} as the aggregate reader");
    }
    // AND a patients reader gets everything, by bearer or as a browser's Basic password
    let basic = {
        use base64::Engine;
        let pair = format!("anyone:{READER_PATIENTS}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    for url in [&tx_curr, &patients, &defaulters, &status] {
        assert_eq!(
            get_as(url, Some(&bearer(READER_PATIENTS))).await.status(),
            200,
            "{url}"
        );
        assert_eq!(
            get_as(url, Some(&basic)).await.status(),
            200,
            "{url} by Basic"
        );
    }
    // AND a reader's token cannot send batches
    let post = common::client()
        .post(format!("{base}/api/v1/stream"))
        .bearer_auth(READER_PATIENTS)
        .header("content-type", "application/json")
        .body(batch(common::SITE, json!([])).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403, "a reader posting a batch");
    // AND while rotated, the old and the new token both read
    for token in ["old-reader", "new-reader"] {
        assert_eq!(
            get_as(&tx_curr, Some(&bearer(token))).await.status(),
            200,
            "{token}"
        );
    }

    // WHEN the old hash is removed and the receiver restarted on the same address
    let addr = receiver.addr.clone();
    receiver.stop();
    let only_new = format!("\"{}\"", hash_token("new-reader"));
    let _receiver = rig.receiver_configured(&addr, &common::mapping_path(), &rotating(&only_new));

    // THEN the old token is refused and the new one reads
    assert_eq!(
        get_as(&tx_curr, Some(&bearer("old-reader"))).await.status(),
        401
    );
    assert_eq!(
        get_as(&tx_curr, Some(&bearer("new-reader"))).await.status(),
        200
    );
}
