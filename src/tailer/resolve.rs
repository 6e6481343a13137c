//! Finding a row's visit: its own patient / program / date columns, or a lookup through
//! another table (`obs.encounter_id → encounter`), answered from the rows of the current
//! transaction, then the tailer's lookup index, then the source database.
//!
//! Invariant: a row always gets a visit. When its patient cannot be found anywhere (the
//! parent row is gone from the source) it goes to the reference visit of its commit day, so
//! its data still reaches the mirror; that is logged with table and key ids only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row, Value as MyValue};
use serde_json::{Map, Value};

use crate::mapping::{DateFrom, Mapping, Role, TableMapping};
use crate::tailer::state::{LookupId, LookupKey, State, StateError};
use crate::tailer::visit::VisitKey;

/// Errors while resolving.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup index failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The source query failed (retryable).
    #[error("source lookup of {table}: {source}")]
    Source {
        /// The table looked up.
        table: String,
        /// Driver error.
        #[source]
        source: mysql_async::Error,
    },
}

/// Resolves visit keys; holds the lookup entries of the transaction being recorded.
pub struct Resolver {
    /// (shared, so that a table's mapping can be borrowed while the resolver changes: it used
    /// to be cloned, twice for a row found through another table)
    mapping: Arc<Mapping>,
    state: State,
    source: Pool,
    database: String,
    targets: HashSet<String>,
    pending: HashMap<LookupKey, VisitKey>,
}

const MAX_DEPTH: usize = 4;

/// A row's column values by name (`None`: the row has no such column).
pub type Values<'a> = dyn Fn(&str) -> Option<Value> + Sync + 'a;

impl Resolver {
    /// A resolver over `mapping`, the tailer's `state` and the `source` database.
    pub fn new(mapping: Mapping, state: State, source: Pool, database: String) -> Self {
        let targets = mapping
            .tables
            .values()
            .filter_map(|t| t.via.as_ref().map(|v| v.table.clone()))
            .collect();
        Self {
            mapping: Arc::new(mapping),
            state,
            source,
            database,
            targets,
            pending: HashMap::new(),
        }
    }

    /// Takes the lookup entries recorded since the last call (to commit them).
    pub fn take_pending(&mut self) -> HashMap<LookupKey, VisitKey> {
        std::mem::take(&mut self.pending)
    }

    /// The visit of a row of `table` whose key is `pk` (its canonical text, `canonical_pk`)
    /// and whose columns' values `values` gives by name, committed on `commit_date`. Rows of
    /// tables that others look up through are remembered for the rest of the transaction.
    pub async fn resolve(
        &mut self,
        table: &str,
        pk: &str,
        values: &Values<'_>,
        commit_date: &str,
    ) -> Result<VisitKey, ResolveError> {
        let mapping = Arc::clone(&self.mapping);
        let Some(spec) = mapping.table(table) else {
            return Ok(reference(commit_date));
        };
        let key = self.resolve_with(spec, values, commit_date, 0).await?;
        if self.targets.contains(table) {
            let id = LookupId::of_row(&spec.pk, pk, values);
            self.pending.insert(
                LookupKey {
                    table: table.into(),
                    id,
                },
                key.clone(),
            );
        }
        Ok(key)
    }

    async fn resolve_with(
        &mut self,
        spec: &TableMapping,
        values: &Values<'_>,
        commit_date: &str,
        depth: usize,
    ) -> Result<VisitKey, ResolveError> {
        if spec.role == Role::Reference {
            return Ok(reference(commit_date));
        }
        let own_date = spec.date.as_ref().and_then(|c| day_of(values(c).as_ref()));
        if let Some(via) = &spec.via {
            if let Some(id) = values(&via.column).filter(|v| !v.is_null()) {
                if let Some(mut key) =
                    Box::pin(self.lookup(&via.table, &id, commit_date, depth)).await?
                {
                    if spec.date_from == DateFrom::Own {
                        if let Some(d) = own_date.clone() {
                            key.visit_date = d;
                        }
                    }
                    return Ok(key);
                }
            }
        }
        let patient_id = spec
            .patient
            .as_ref()
            .and_then(|c| as_i64(values(c).as_ref()));
        let Some(patient_id) = patient_id else {
            return Ok(reference(commit_date));
        };
        let program_id = spec
            .program
            .as_ref()
            .and_then(|c| as_i64(values(c).as_ref()))
            .unwrap_or(self.mapping.default_program_id);
        let visit_date = match spec.role {
            Role::Demographics => commit_date.to_owned(),
            _ => own_date.unwrap_or_else(|| commit_date.to_owned()),
        };
        Ok(VisitKey {
            patient_id,
            program_id,
            visit_date,
        })
    }

    /// The visit of the row of `table` whose single-column key is `id`.
    async fn lookup(
        &mut self,
        table: &str,
        id: &Value,
        commit_date: &str,
        depth: usize,
    ) -> Result<Option<VisitKey>, ResolveError> {
        let mapping = Arc::clone(&self.mapping);
        let Some(spec) = mapping.table(table) else {
            return Ok(None);
        };
        let column = &spec.pk[0];
        let entry = LookupKey {
            table: table.into(),
            id: LookupId::of(column, id),
        };
        if let Some(k) = self.pending.get(&entry) {
            return Ok(Some(k.clone()));
        }
        if let Some(k) = self.state.lookup(table, column, &entry.id)? {
            return Ok(Some(k));
        }
        if depth >= MAX_DEPTH {
            return Ok(None);
        }
        let Some(image) = self.fetch(table, spec, id).await? else {
            tracing::warn!(
                table,
                "lookup row not found in the source; row kept under the reference visit"
            );
            return Ok(None);
        };
        let values = |c: &str| image.get(c).cloned();
        let key = Box::pin(self.resolve_with(spec, &values, commit_date, depth + 1)).await?;
        self.pending.insert(entry, key.clone());
        Ok(Some(key))
    }

    /// Reads the columns that place a row of `table` from the source.
    async fn fetch(
        &self,
        table: &str,
        spec: &TableMapping,
        id: &Value,
    ) -> Result<Option<Map<String, Value>>, ResolveError> {
        let mut cols: Vec<&String> = spec
            .patient
            .iter()
            .chain(&spec.program)
            .chain(&spec.date)
            .collect();
        if let Some(via) = &spec.via {
            cols.push(&via.column);
        }
        if cols.is_empty() {
            return Ok(None);
        }
        // Names come from the validated mapping (plain identifiers), never from row data.
        let sql = format!(
            "SELECT {} FROM `{}`.`{}` WHERE `{}` = ?",
            cols.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.database,
            table,
            spec.pk[0]
        );
        let param = match id {
            Value::Number(n) => n
                .as_i64()
                .map(MyValue::Int)
                .unwrap_or_else(|| MyValue::Bytes(n.to_string().into_bytes())),
            Value::String(s) => MyValue::Bytes(s.clone().into_bytes()),
            other => MyValue::Bytes(other.to_string().into_bytes()),
        };
        let err = |source| ResolveError::Source {
            table: table.to_owned(),
            source,
        };
        let mut conn = self.source.get_conn().await.map_err(err)?;
        let row: Option<Row> = conn.exec_first(sql, (param,)).await.map_err(err)?;
        Ok(row.map(|row| {
            let mut image = Map::new();
            for (i, c) in cols.iter().enumerate() {
                let v = row.as_ref(i).cloned().unwrap_or(MyValue::NULL);
                image.insert((*c).clone(), plain_json(v));
            }
            image
        }))
    }
}

fn reference(commit_date: &str) -> VisitKey {
    VisitKey {
        patient_id: 0,
        program_id: 0,
        visit_date: commit_date.to_owned(),
    }
}

fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// `YYYY-MM-DD` of a DATE / DATETIME wire value (zero dates have no day).
fn day_of(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    let day = s.get(..10)?;
    (day.as_bytes()[4] == b'-' && !day.starts_with("0000")).then(|| day.to_owned())
}

/// Source query values → JSON, for the few columns that place a row.
fn plain_json(v: MyValue) -> Value {
    match v {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => Value::from(i),
        MyValue::UInt(u) => Value::from(u),
        MyValue::Float(f) => Value::from(f as f64),
        MyValue::Double(f) => Value::from(f),
        MyValue::Bytes(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        MyValue::Date(y, m, d, h, i, s, _) => {
            Value::String(format!("{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}"))
        }
        MyValue::Time(..) => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn day_of_dates_and_datetimes() {
        assert_eq!(
            day_of(Some(&json!("2026-01-02 10:00:00"))),
            Some("2026-01-02".into())
        );
        assert_eq!(
            day_of(Some(&json!("2026-01-02"))),
            Some("2026-01-02".into())
        );
        assert_eq!(day_of(Some(&json!("0000-00-00"))), None);
        assert_eq!(day_of(Some(&json!(5))), None);
        assert_eq!(day_of(Some(&json!("short"))), None);
    }
}
