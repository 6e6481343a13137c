//! Grouping row changes into visits: the visit key, the buffer's bookkeeping, readiness, and
//! the envelope that goes on the wire.
//!
//! A visit is one patient's activity in one program on one day at one facility:
//! `stream_key = "{site_id}:{patient_id}:{program_id}:{YYYY-MM-DD}"`. Each version of a visit
//! carries the rows that changed since the previous version (the receiver's `lsn` guard makes
//! the union converge to the source's state).

mod ready;

use serde::{Deserialize, Serialize};

use crate::wire::{visit_json, VisitHead};
pub use ready::{is_ready, Readiness};

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
        crate::wire::stream_key(site_id, self.patient_id, self.program_id, &self.visit_date)
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
    /// Last change in the source's time: the binlog timestamp of the last transaction that
    /// changed it (unix ms, whole seconds; 0 in buffers of an earlier version).
    #[serde(default)]
    pub last_event_ms: u64,
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
            last_event_ms: 0,
        }
    }

    /// Records `rows` more changes at `now`, made by a source transaction at `event_ms`
    /// (its binlog timestamp); `closing` when a closing encounter committed, `clinical` when
    /// some row is clinical.
    pub fn touch(&mut self, now: u64, event_ms: u64, closing: bool, clinical: bool, rows: u64) {
        self.last_change_ms = now;
        self.last_event_ms = self.last_event_ms.max(event_ms);
        self.changes += rows;
        self.clinical |= clinical;
        if closing {
            self.closing_at_ms = Some(now);
        }
    }
}

/// The wire envelope of one visit version (`wire::visit_json`), with `rows` the stored JSON
/// of each row (no decode and re-encode).
pub fn envelope(
    stream_key: &str,
    key: &VisitKey,
    version: u64,
    complete: bool,
    rows: &[impl AsRef<[u8]>],
) -> Vec<u8> {
    let head = VisitHead {
        stream_key,
        patient_id: key.patient_id,
        program_id: key.program_id,
        visit_date: &key.visit_date,
        version,
        complete,
    };
    visit_json(&head, rows)
}
