//! Grouping row changes into visits: the visit key, the buffer's bookkeeping, readiness, and
//! the envelope that goes on the wire.
//!
//! A visit is one patient's activity in one program on one day at one facility:
//! `stream_key = "{site_id}:{patient_id}:{program_id}:{YYYY-MM-DD}"`. Each version of a visit
//! carries the rows that changed since the previous version (the receiver's `lsn` guard makes
//! the union converge to the source's state).

mod ready;
mod resolve;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::binlog::RowOp;
pub use ready::{is_ready, Readiness};
pub use resolve::{ResolveError, Resolver};

/// Which visit a row belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VisitKey {
    /// The patient (`person_id`); 0 for reference data.
    pub patient_id: i64,
    /// The program; 0 for reference data.
    pub program_id: i64,
    /// The visit day, `YYYY-MM-DD`.
    pub visit_date: String,
}

impl VisitKey {
    /// `{site}:{patient}:{program}:{date}`, the legacy sender's key.
    pub fn stream_key(&self, site_id: i64) -> String {
        format!(
            "{site_id}:{}:{}:{}",
            self.patient_id, self.program_id, self.visit_date
        )
    }
}

/// Bookkeeping of an open visit buffer (its rows are stored beside it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitMeta {
    /// The visit.
    pub key: VisitKey,
    /// First change recorded (unix ms).
    pub first_change_ms: u64,
    /// Last change recorded (unix ms).
    pub last_change_ms: u64,
    /// When a closing encounter type committed (unix ms), if one did.
    pub closing_at_ms: Option<u64>,
    /// Row changes recorded (including repeats of one row).
    pub changes: u64,
    /// Whether any clinical row (role `visit`) is in it; without one there is no closing
    /// encounter to wait for.
    #[serde(default)]
    pub clinical: bool,
}

impl VisitMeta {
    /// A new buffer.
    pub fn new(key: VisitKey, now: u64) -> Self {
        Self {
            key,
            first_change_ms: now,
            last_change_ms: now,
            closing_at_ms: None,
            changes: 0,
            clinical: false,
        }
    }

    /// Records `rows` more changes at `now`; `closing` when a closing encounter committed,
    /// `clinical` when some row is clinical.
    pub fn touch(&mut self, now: u64, closing: bool, clinical: bool, rows: u64) {
        self.last_change_ms = now;
        self.changes += rows;
        self.clinical |= clinical;
        if closing {
            self.closing_at_ms = Some(now);
        }
    }
}

/// One row as shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRow {
    /// Source table.
    pub table: String,
    /// Upsert or delete.
    pub op: RowOp,
    /// Per-site monotone position of the change.
    pub lsn: u64,
    /// Primary key columns.
    pub pk: Map<String, Value>,
    /// The other shipped columns (empty for deletes).
    pub data: Map<String, Value>,
}

/// The head of a visit version as shipped (its rows are spliced in as stored JSON).
#[derive(Debug, Clone, Serialize)]
struct VisitHead<'a> {
    stream_key: &'a str,
    patient_id: i64,
    program_id: i64,
    visit_date: &'a str,
    version: u64,
    complete: bool,
}

/// The wire envelope of one visit version: `{"stream_key", ..., "rows": [...]}`, with `rows`
/// the stored JSON of each row (no decode and re-encode).
pub fn envelope(
    stream_key: &str,
    key: &VisitKey,
    version: u64,
    complete: bool,
    rows: &[impl AsRef<[u8]>],
) -> Vec<u8> {
    let head = serde_json::to_vec(&VisitHead {
        stream_key,
        patient_id: key.patient_id,
        program_id: key.program_id,
        visit_date: &key.visit_date,
        version,
        complete,
    })
    .expect("visit heads serialize");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_is_the_visit_json() {
        let key = VisitKey {
            patient_id: 5,
            program_id: 1,
            visit_date: "2026-01-02".into(),
        };
        let row = WireRow {
            table: "obs".into(),
            op: RowOp::Upsert,
            lsn: 9,
            pk: serde_json::from_str(r#"{"obs_id":1}"#).unwrap(),
            data: serde_json::from_str(r#"{"value_text":"Zoë \"quoted\""}"#).unwrap(),
        };
        let stored = serde_json::to_vec(&row).unwrap();
        let bytes = envelope(
            "101:5:1:2026-01-02",
            &key,
            3,
            true,
            &[stored.clone(), stored],
        );
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(v["rows"].as_array().unwrap().len(), 2);
        assert_eq!(v["rows"][1]["data"]["value_text"], "Zoë \"quoted\"");
        let empty = envelope("k", &key, 1, false, &[] as &[&[u8]]);
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).unwrap()["rows"],
            serde_json::json!([])
        );
    }
}
