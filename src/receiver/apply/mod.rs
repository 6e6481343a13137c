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
    /// All shipped columns (pk included) for upserts.
    pub columns: Map<String, Value>,
}

impl PlannedRow {
    /// The primary key as canonical JSON: a tombstone's key. Written only where a tombstone
    /// is read or written (deletes, and tables with tombstones in the batch's range).
    pub fn pk_json(&self) -> String {
        serde_json::to_string(&self.pk).unwrap_or_default()
    }

    /// Whether a tombstone at or after this image hides it (`tombstones`: pk_json → lsn).
    pub fn hidden_by(&self, tombstones: &HashMap<String, i64>) -> bool {
        !tombstones.is_empty()
            && tombstones
                .get(&self.pk_json())
                .is_some_and(|t| self.lsn <= *t)
    }
}

/// A batch grouped by table, newest image per key.
#[derive(Debug, Default)]
pub struct Plan {
    /// table → rows.
    pub tables: BTreeMap<String, Vec<PlannedRow>>,
    /// Number of rows in the batch.
    pub rows_in: usize,
}

/// Groups a validated batch by table, keeping the newest image of each row (of images at the
/// same position, the first); the rows move out of the batch (what stays is its id and visits,
/// for the stores' ledgers).
///
/// The rows are sorted by key, newest first within a key, and the rest of each key's run
/// dropped: the stores' indexes are filled in key order, and two batches touching the same
/// rows take their locks in the same order. (Collapsing through a map keyed by each row's
/// key as JSON wrote that JSON for every row: bench-apply's parse, validate and plan took
/// 0.27–0.36 s with it, 0.21–0.34 s without.)
pub fn plan(batch: &mut Batch, mapping: &Mapping) -> Plan {
    let mut by_table: BTreeMap<String, Vec<PlannedRow>> = BTreeMap::new();
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
            let mut columns = row.data;
            columns.extend(row.pk);
            by_table.entry(row.table).or_default().push(PlannedRow {
                op: row.op,
                lsn: row.lsn as i64,
                pk,
                columns,
            });
        }
    }
    for rows in by_table.values_mut() {
        // (stable: of images at the same position, the first stays first)
        rows.sort_by(|a, b| same_keys_adjacent(a, b).then(b.lsn.cmp(&a.lsn)));
        rows.dedup_by(|later, first| later.pk == first.pk);
    }
    Plan {
        tables: by_table,
        rows_in,
    }
}

/// Key order (`compare_keys`), with keys it finds equal but that differ as values (`1` and
/// `1.0`) told apart by their JSON, so that equal keys are always next to each other.
fn same_keys_adjacent(a: &PlannedRow, b: &PlannedRow) -> std::cmp::Ordering {
    compare_keys(&a.pk, &b.pk).then_with(|| {
        if a.pk == b.pk {
            std::cmp::Ordering::Equal
        } else {
            a.pk_json().cmp(&b.pk_json())
        }
    })
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
    fn a_plan_keeps_the_newest_image_of_each_key_in_key_order() {
        let mapping = Mapping::load(std::path::Path::new("mappings/openmrs.toml")).unwrap();
        // (key, lsn, value_text): key 3 twice (the later image older), key 1 three times
        // (two images at the same position: the first stays), 1.0 a different key as JSON
        let images = [
            (json!(3), 20, "3 new"),
            (json!(1), 5, "1 old"),
            (json!(3), 10, "3 old"),
            (json!(1), 7, "1 first at 7"),
            (json!(1.0), 8, "1.0"),
            (json!(1), 7, "1 second at 7"),
            (json!(2), 1, "2"),
        ];
        let rows: Vec<Value> = images
            .iter()
            .map(|(k, lsn, text)| json!({"table": "obs", "op": "upsert", "lsn": lsn, "pk": {"obs_id": k}, "data": {"value_text": text}}))
            .collect();
        let mut batch: Batch = serde_json::from_value(json!({"schema_version": 1, "site_id": 101, "batch_id": "b",
            "visits": [{"stream_key": "101:1:1:2026-01-05", "patient_id": 1, "program_id": 1, "visit_date": "2026-01-05",
                        "version": 1, "complete": true, "rows": rows}]}))
        .unwrap();
        let plan = plan(&mut batch, &mapping);
        assert_eq!(plan.rows_in, 7);
        let kept: Vec<(String, i64, &Value)> = plan.tables["obs"]
            .iter()
            .map(|r| (r.pk_json(), r.lsn, &r.columns["value_text"]))
            .collect();
        let (one, one_f, two, three) = (
            json!("1 first at 7"),
            json!("1.0"),
            json!("2"),
            json!("3 new"),
        );
        // (1 and 1.0 are equal keys to compare_keys: between them, their JSON's order)
        let expected = vec![
            ("[1.0]".to_owned(), 8, &one_f),
            ("[1]".to_owned(), 7, &one),
            ("[2]".to_owned(), 1, &two),
            ("[3]".to_owned(), 20, &three),
        ];
        assert_eq!(kept, expected);
        assert!(batch.visits[0].rows.is_empty());
    }

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
