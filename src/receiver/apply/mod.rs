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
pub use schema::{Catalog, Table};

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

/// Groups a validated batch by table, keeping the newest image of each row; the rows move
/// out of the batch (what stays is its id and visits, for the stores' ledgers).
pub fn plan(batch: &mut Batch, mapping: &Mapping) -> Plan {
    let mut by_table: BTreeMap<String, HashMap<String, PlannedRow>> = BTreeMap::new();
    let mut rows_in = 0;
    for visit in &mut batch.visits {
        for row in std::mem::take(&mut visit.rows) {
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
            let slot = by_table.entry(row.table).or_default();
            if slot.get(&pk_json).is_some_and(|old| old.lsn >= lsn) {
                continue;
            }
            let mut columns = row.data;
            columns.extend(row.pk);
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
    use std::cmp::Ordering;
    let rank = |v: &Value| match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        _ => 2,
    };
    for (x, y) in a.iter().zip(b) {
        let order = rank(x).cmp(&rank(y)).then_with(|| match (x, y) {
            (Value::Number(m), Value::Number(n)) => match (m.as_i64(), n.as_i64()) {
                (Some(m), Some(n)) => m.cmp(&n),
                _ => m
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&n.as_f64().unwrap_or(0.0)),
            },
            (Value::String(s), Value::String(t)) => s.cmp(t),
            _ => x.to_string().cmp(&y.to_string()),
        });
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// The position of the oldest upsert among `rows` (none without upserts): a tombstone older
/// than it cannot hide any of them.
pub fn oldest_upsert(rows: &[PlannedRow]) -> Option<i64> {
    rows.iter()
        .filter(|r| r.op == Op::Upsert)
        .map(|r| r.lsn)
        .min()
}

/// A row's values in the columns the store knows: (position in table order, value), in
/// table order.
pub type Known<'a> = Vec<(usize, &'a Value)>;

/// Splits a row's columns into those the store knows and the overflow; both lists are sorted
/// by name, so one merge pass does it.
pub fn split_columns<'a>(
    row: &'a PlannedRow,
    known: &Table,
) -> (Known<'a>, Option<Map<String, Value>>) {
    let mut cols = Vec::with_capacity(row.columns.len());
    let mut overflow = Map::new();
    let mut names = known.by_name.iter().peekable();
    for (c, v) in &row.columns {
        while names.next_if(|(n, _)| n.as_str() < c.as_str()).is_some() {}
        match names.peek() {
            Some((n, i)) if n == c => cols.push((*i, v)),
            _ => {
                overflow.insert(c.clone(), v.clone());
            }
        }
    }
    cols.sort_unstable_by_key(|(i, _)| *i);
    (cols, (!overflow.is_empty()).then_some(overflow))
}

/// The positions of a row's known columns: the key rows are grouped by.
pub fn positions(cols: &Known<'_>) -> Vec<usize> {
    cols.iter().map(|(i, _)| *i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_order_numbers_by_value_before_strings() {
        let mut keys = vec![
            vec![json!("b")],
            vec![json!(10)],
            vec![json!(9007199254740993u64)],
            vec![json!("a")],
            vec![json!(9)],
            vec![json!(9007199254740992u64)],
        ];
        keys.sort_by(|a, b| compare_keys(a, b));
        assert_eq!(
            keys,
            [
                vec![json!(9)],
                vec![json!(10)],
                vec![json!(9007199254740992u64)],
                vec![json!(9007199254740993u64)],
                vec![json!("a")],
                vec![json!("b")],
            ]
        );
    }

    #[test]
    fn columns_split_by_one_merge_pass_into_table_order_and_overflow() {
        let mut catalog = Catalog::default();
        let cols = ["obs_id", "value_text", "concept_id", "person_id"];
        catalog.insert(
            "obs".into(),
            cols.iter()
                .map(|c| (c.to_string(), "text".into()))
                .collect(),
        );
        let row = PlannedRow {
            op: Op::Upsert,
            lsn: 1,
            pk: vec![json!(1)],
            pk_json: "[1]".into(),
            columns: json!({"person_id": 7, "obs_id": 1, "zzz": true, "aaa": 2, "value_text": "x"})
                .as_object()
                .unwrap()
                .clone(),
        };
        let (known, overflow) = split_columns(&row, catalog.table("obs"));
        assert_eq!(positions(&known), vec![0, 1, 3]);
        assert_eq!(known[2].1, &json!(7));
        assert_eq!(
            Value::Object(overflow.unwrap()),
            json!({"aaa": 2, "zzz": true})
        );
        let (known, overflow) = split_columns(&row, catalog.table("missing"));
        assert!(known.is_empty());
        assert_eq!(overflow.unwrap().len(), 5);
    }
}
