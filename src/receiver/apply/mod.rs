//! Applying a validated batch to the MySQL operational mirror and to PostgreSQL `cdr`.
//!
//! Contract (both stores, each in one transaction):
//! - a batch id already recorded in a store changes nothing there (replay → same result);
//! - a row image never overwrites a newer one (`lsn` guard), and a delete leaves a tombstone
//!   with its `lsn` so that an older upsert cannot resurrect the row;
//! - column names reach SQL only from the store's own catalog (which the mapping's schema
//!   files created); data columns the store does not know go to `_overflow` (JSON);
//! - a store that is unreachable makes the whole answer 503 and nothing half-applied in it.

mod copy;
mod migrate;
mod mysql;
mod postgres;
mod schema;

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::mapping::Mapping;
use crate::wire::{Batch, Op};
pub use mysql::MirrorStore;
pub use postgres::{PgOptions, PgStore};
pub use schema::Catalog;

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store is unreachable or failed transiently (retry: 503).
    #[error("{store} unavailable: {message}")]
    Unavailable {
        /// mysql or postgres.
        store: &'static str,
        /// What happened (no values).
        message: String,
    },
    /// The store refused a value (a data error: 422).
    #[error("{store} refused a value in table {table}: {message}")]
    Rejected {
        /// mysql or postgres.
        store: &'static str,
        /// The table.
        table: String,
        /// The store's error code and text (no values are quoted by us).
        message: String,
    },
    /// Setup failed (migrations).
    #[error("{store} setup: {message}")]
    Setup {
        /// mysql or postgres.
        store: &'static str,
        /// What happened.
        message: String,
    },
}

impl ApplyError {
    /// Whether the tailer should retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApplyError::Unavailable { .. })
    }
}

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now: rows written (upserts that won + deletes).
    Stored(u64),
    /// The store had this batch already.
    Duplicate,
}

/// One row after collapsing a batch: the newest image per primary key.
#[derive(Debug, Clone)]
pub struct PlannedRow {
    /// Upsert or delete.
    pub op: Op,
    /// Position.
    pub lsn: i64,
    /// Primary key values, in the mapping's pk order.
    pub pk: Vec<Value>,
    /// pk as canonical JSON (tombstone key).
    pub pk_json: String,
    /// All shipped columns (pk included) for upserts.
    pub columns: Map<String, Value>,
}

/// A batch grouped by table, newest image per key.
#[derive(Debug, Default)]
pub struct Plan {
    /// table → rows.
    pub tables: BTreeMap<String, Vec<PlannedRow>>,
    /// Number of rows in the batch.
    pub rows_in: usize,
}

/// Groups a validated batch by table, keeping the newest image of each row.
pub fn plan(batch: &Batch, mapping: &Mapping) -> Plan {
    let mut by_table: BTreeMap<String, HashMap<String, PlannedRow>> = BTreeMap::new();
    let mut rows_in = 0;
    for visit in &batch.visits {
        for row in &visit.rows {
            rows_in += 1;
            let Some(spec) = mapping.table(&row.table) else {
                continue;
            };
            let pk: Vec<Value> = spec
                .pk
                .iter()
                .map(|c| row.pk.get(c).cloned().unwrap_or(Value::Null))
                .collect();
            let pk_json = serde_json::to_string(&pk).unwrap_or_default();
            let lsn = row.lsn as i64;
            let slot = by_table.entry(row.table.clone()).or_default();
            if slot.get(&pk_json).is_some_and(|old| old.lsn >= lsn) {
                continue;
            }
            let mut columns = row.data.clone();
            for (c, v) in &row.pk {
                columns.insert(c.clone(), v.clone());
            }
            slot.insert(
                pk_json.clone(),
                PlannedRow {
                    op: row.op,
                    lsn,
                    pk,
                    pk_json,
                    columns,
                },
            );
        }
    }
    Plan {
        tables: by_table
            .into_iter()
            .map(|(t, rows)| {
                // in key order: the stores' indexes are filled in order, and two batches
                // touching the same rows take their locks in the same order
                let mut rows: Vec<PlannedRow> = rows.into_values().collect();
                rows.sort_by(|a, b| compare_keys(&a.pk, &b.pk));
                (t, rows)
            })
            .collect(),
        rows_in,
    }
}

/// Primary keys in order: numbers by value, before strings; strings by their bytes.
fn compare_keys(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    let rank = |v: &Value| match v {
        Value::Number(n) => (0, n.as_f64().unwrap_or(0.0), None),
        Value::String(s) => (1, 0.0, Some(s.clone())),
        other => (2, 0.0, Some(other.to_string())),
    };
    a.iter()
        .map(rank)
        .zip(b.iter().map(rank))
        .map(|(x, y)| {
            x.0.cmp(&y.0)
                .then(x.1.total_cmp(&y.1))
                .then_with(|| x.2.cmp(&y.2))
        })
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

/// The position of the oldest upsert among `rows` (none without upserts): a tombstone older
/// than it cannot hide any of them.
pub fn oldest_upsert(rows: &[PlannedRow]) -> Option<i64> {
    rows.iter()
        .filter(|r| r.op == Op::Upsert)
        .map(|r| r.lsn)
        .min()
}

/// Splits a row's columns into those the store knows (in catalog order) and the overflow.
pub fn split_columns<'a>(
    row: &'a PlannedRow,
    known: &[String],
) -> (Vec<&'a str>, Option<Map<String, Value>>) {
    let mut cols = Vec::new();
    let mut overflow = Map::new();
    for (c, v) in &row.columns {
        if known.iter().any(|k| k == c) {
            cols.push(c.as_str());
        } else {
            overflow.insert(c.clone(), v.clone());
        }
    }
    cols.sort_by_key(|c| known.iter().position(|k| k == c));
    (cols, (!overflow.is_empty()).then_some(overflow))
}
