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

/// A visit version as shipped.
#[derive(Debug, Clone, Serialize)]
pub struct Visit<'a> {
    /// `{site}:{patient}:{program}:{date}`.
    pub stream_key: &'a str,
    /// The patient.
    pub patient_id: i64,
    /// The program.
    pub program_id: i64,
    /// The day.
    pub visit_date: &'a str,
    /// 1 for the first shipment, +1 for each later one.
    pub version: u64,
    /// Whether the visit was closed (closing encounter, or its day is over).
    pub complete: bool,
    /// The rows changed since the previous version.
    pub rows: &'a [WireRow],
}

/// The wire envelope of one visit version.
pub fn envelope(
    stream_key: &str,
    key: &VisitKey,
    version: u64,
    complete: bool,
    rows: &[WireRow],
) -> Vec<u8> {
    serde_json::to_vec(&Visit {
        stream_key,
        patient_id: key.patient_id,
        program_id: key.program_id,
        visit_date: &key.visit_date,
        version,
        complete,
        rows,
    })
    .expect("visits serialize")
}
