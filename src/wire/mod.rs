//! The stream contract between a facility's tailer and the central receiver, written once:
//! `POST /api/v1/stream`, a gzipped JSON batch of visit versions, each carrying the rows that
//! changed (DESIGN.md "Wire contract").
//!
//! The tailer encodes with [`visit_json`] and [`batch_json`], which splice rows it stored as
//! JSON (no decode and re-encode); the receiver decodes into [`Batch`]. A test below checks
//! that what the one writes, the other reads.
//!
//! Values are JSON: integers as numbers (u64 beyond 2^53 as strings), DECIMAL as strings,
//! dates `YYYY-MM-DD`, datetimes `YYYY-MM-DD HH:MM:SS[.ffffff]`, TIMESTAMP as UTC RFC 3339,
//! binary as `{"$b64": "..."}`.

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use smol_str::SmolStr;

mod columns;
pub use columns::{Columns, Names};

/// The body's `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;
/// The receiver's stream endpoint.
pub const STREAM_PATH: &str = "/api/v1/stream";
/// The batch id, repeated as a header so that proxies and logs can see it.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// How long the oldest visit of the batch waited at the facility (seconds).
pub const LAG_HEADER: &str = "x-emr-lag-seconds";

/// What a row change does to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Insert or update: the image is the row after.
    Upsert,
    /// Delete: the image is the row before (only its key is shipped).
    Delete,
}

/// One row as shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Source table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// Per-site monotone position of the change (`crate::position`).
    pub lsn: u64,
    /// Primary key columns.
    pub pk: Map<String, Value>,
    /// The other shipped columns (empty for deletes).
    #[serde(default)]
    pub data: Map<String, Value>,
}

/// Writes a row's JSON from its parts' JSON texts, byte for byte what `serde_json::to_vec`
/// writes for the [`Row`] they make (the tailer's ledger compares digests of these bytes with
/// those of rows the sweep serializes): `pk` is the key's object text, names sorted
/// (`{"obs_id":5}`), and `data` the other columns' (name, value text) sorted by name.
pub fn write_row<'a>(
    out: &mut Vec<u8>,
    table: &str,
    op: Op,
    lsn: u64,
    pk: &[u8],
    data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) {
    out.extend_from_slice(b"{\"table\":");
    write_str(out, table);
    out.extend_from_slice(match op {
        Op::Upsert => b",\"op\":\"upsert\",\"lsn\":".as_slice(),
        Op::Delete => b",\"op\":\"delete\",\"lsn\":".as_slice(),
    });
    out.extend_from_slice(lsn.to_string().as_bytes());
    out.extend_from_slice(b",\"pk\":");
    out.extend_from_slice(pk);
    out.extend_from_slice(b",\"data\":");
    write_object(out, data);
    out.push(b'}');
}

/// Writes a JSON object of (name, value text) members in the order given.
pub fn write_object<'a>(out: &mut Vec<u8>, members: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    out.push(b'{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
}

/// Writes a string as a JSON string, escaped as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    // (serde_json writing to a Vec cannot fail)
    let _ = serde_json::to_writer(out, text);
}

/// One row as the receiver reads it: [`Row`]'s fields, with the columns as lists in the order
/// sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReceivedRow {
    /// Source table.
    pub table: SmolStr,
    /// Upsert or delete.
    pub op: Op,
    /// Position of the change.
    pub lsn: u64,
    /// Primary key columns.
    pub pk: Columns,
    /// The other shipped columns (empty for deletes).
    #[serde(default)]
    pub data: Columns,
}

/// One visit version as received.
#[derive(Debug, Deserialize)]
pub struct Visit {
    /// `{site}:{patient}:{program}:{YYYY-MM-DD}` ([`stream_key`]).
    pub stream_key: String,
    /// The patient (`person_id`); 0 for reference data.
    pub patient_id: i64,
    /// The program; 0 for reference data.
    pub program_id: i64,
    /// The visit day.
    pub visit_date: String,
    /// Version number (a later version carries the rows changed since the previous one).
    pub version: u64,
    /// Whether a closing encounter was seen (or the visit holds no clinical rows).
    pub complete: bool,
    /// The rows.
    pub rows: Vec<ReceivedRow>,
}

/// A batch as sent by a tailer.
#[derive(Debug, Deserialize)]
pub struct Batch {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The sending site (must equal its token's).
    pub site_id: i64,
    /// Idempotency key of the batch.
    pub batch_id: String,
    /// The visit versions.
    pub visits: Vec<Visit>,
}

/// `{site}:{patient}:{program}:{date}`, the legacy sender's visit key.
pub fn stream_key(site_id: i64, patient_id: i64, program_id: i64, visit_date: &str) -> String {
    format!("{site_id}:{patient_id}:{program_id}:{visit_date}")
}

/// The head of a visit version as shipped (its rows are spliced in as stored JSON).
#[derive(Debug, Clone, Serialize)]
pub struct VisitHead<'a> {
    /// [`stream_key`].
    pub stream_key: &'a str,
    /// The patient.
    pub patient_id: i64,
    /// The program.
    pub program_id: i64,
    /// The visit day.
    pub visit_date: &'a str,
    /// Version number.
    pub version: u64,
    /// Closed visit or not.
    pub complete: bool,
}

/// One visit version's JSON, `{"stream_key", ..., "rows": [...]}`, with `rows` the stored
/// JSON of each [`Row`] spliced in.
pub fn visit_json(head: &VisitHead<'_>, rows: &[impl AsRef<[u8]>]) -> Vec<u8> {
    let head = serde_json::to_vec(head).expect("visit heads serialize");
    let size: usize = rows.iter().map(|r| r.as_ref().len() + 1).sum();
    let mut out = Vec::with_capacity(head.len() + size + 16);
    out.extend_from_slice(&head[..head.len() - 1]);
    out.extend_from_slice(b",\"rows\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(row.as_ref());
    }
    out.extend_from_slice(b"]}");
    out
}

/// A batch body around visit JSONs from [`visit_json`].
pub fn batch_json(site_id: i64, batch_id: &str, visits: &[&[u8]]) -> Vec<u8> {
    let size: usize = visits.iter().map(|v| v.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 128);
    body.extend_from_slice(
        format!(
            "{{\"schema_version\":{SCHEMA_VERSION},\"site_id\":{site_id},\"batch_id\":{},\"visits\":[",
            Value::String(batch_id.to_owned())
        )
        .as_bytes(),
    );
    for (i, v) in visits.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(v);
    }
    body.extend_from_slice(b"]}");
    body
}

/// Gzips a request body (`Content-Encoding: gzip`).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_tailer_writes_the_receiver_reads() {
        let row = Row {
            table: "obs".into(),
            op: Op::Upsert,
            lsn: 9,
            pk: serde_json::from_str(r#"{"obs_id":1}"#).unwrap(),
            data: serde_json::from_str(r#"{"value_text":"Zoë \"quoted\""}"#).unwrap(),
        };
        let stored = serde_json::to_vec(&row).unwrap();
        let key = stream_key(101, 5, 1, "2026-01-02");
        let head = VisitHead {
            stream_key: &key,
            patient_id: 5,
            program_id: 1,
            visit_date: "2026-01-02",
            version: 3,
            complete: true,
        };
        let visit = visit_json(&head, &[stored.clone(), stored]);
        let empty = visit_json(
            &VisitHead {
                version: 4,
                complete: false,
                ..head
            },
            &[] as &[&[u8]],
        );
        let body = batch_json(101, "t-1-2", &[&visit, &empty]);
        let batch: Batch = serde_json::from_slice(&body).unwrap();
        assert_eq!((batch.schema_version, batch.site_id), (SCHEMA_VERSION, 101));
        assert_eq!(batch.batch_id, "t-1-2");
        assert_eq!(batch.visits[0].stream_key, "101:5:1:2026-01-02");
        assert_eq!(batch.visits[0].version, 3);
        let received = ReceivedRow {
            table: row.table.as_str().into(),
            op: row.op,
            lsn: row.lsn,
            pk: row.pk.clone().into(),
            data: row.data.clone().into(),
        };
        assert_eq!(batch.visits[0].rows, vec![received.clone(), received]);
        assert!(batch.visits[1].rows.is_empty() && !batch.visits[1].complete);
    }

    #[test]
    fn rows_written_from_texts_are_serde_jsons_bytes() {
        let row = Row {
            table: "obs".into(),
            op: Op::Upsert,
            lsn: 12_345_678_901,
            pk: serde_json::from_str(r#"{"a_id":1,"obs_id":"x"}"#).unwrap(),
            data: serde_json::from_str(
                r#"{"n":null,"t":"Zoë \"q\"\n\u0001","v":0.1,"w":{"$b64":"AAE="},"z":-5}"#,
            )
            .unwrap(),
        };
        let texts: Vec<(String, String)> = row
            .data
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let mut pk = Vec::new();
        let pk_texts: Vec<(String, String)> = row
            .pk
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        write_object(
            &mut pk,
            pk_texts.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        let mut out = Vec::new();
        let data = texts.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        write_row(&mut out, &row.table, row.op, row.lsn, &pk, data);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&row).unwrap()
        );
        let gone = Row {
            table: "odd \"table\"".into(),
            op: Op::Delete,
            data: Map::new(),
            ..row
        };
        let mut out = Vec::new();
        write_row(&mut out, &gone.table, gone.op, gone.lsn, &pk, []);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&gone).unwrap()
        );
    }

    #[test]
    fn a_delete_may_omit_data() {
        let json = r#"{"table":"obs","op":"delete","lsn":5,"pk":{"obs_id":1}}"#;
        let row: Row = serde_json::from_str(json).unwrap();
        assert_eq!(row.op, Op::Delete);
        assert!(row.data.is_empty());
        let row: ReceivedRow = serde_json::from_str(json).unwrap();
        assert_eq!(
            (row.op, row.pk.get("obs_id")),
            (Op::Delete, Some(&1.into()))
        );
        assert!(row.data.is_empty());
    }
}
