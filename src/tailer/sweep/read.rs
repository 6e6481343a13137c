//! Reading one day of the source: the per-table queries (following each table's `via` chain
//! to its patient, program and day) and the rows they return, as wire rows grouped by visit.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde_json::Map;

use super::{SweepError, Sweeper, TableQuery};
use crate::mapping::{DateFrom, Role, TableMapping};
use crate::tailer::binlog::value::{to_json, ColumnDesc};
use crate::tailer::visit::VisitKey;
use crate::wire::{self, Op};

impl Sweeper {
    /// Reads every swept table's rows of visits dated `day`.
    pub(super) async fn read_day(
        &self,
        conn: &mut Conn,
        queries: &[TableQuery<'_>],
        day: NaiveDate,
        lsn: u64,
        visits: &mut BTreeMap<String, (VisitKey, Vec<wire::Row>)>,
    ) -> Result<u64, SweepError> {
        let mut rows_read = 0;
        let next = day + chrono::Duration::days(1);
        for TableQuery {
            table,
            spec: t,
            rows: sql,
            ..
        } in queries
        {
            let result: Vec<mysql_async::Row> = conn
                .exec(sql.as_str(), (day.to_string(), next.to_string()))
                .await?;
            for row in result {
                rows_read += 1;
                let columns = row.columns();
                let n = columns.len() - 3;
                let mut values = row.unwrap();
                let day_value = values.pop();
                let program = values.pop();
                let patient = values.pop();
                let (Some(patient), Some(visit_day)) = (
                    patient.and_then(|v| mysql_async::from_value_opt::<i64>(v).ok()),
                    day_value.and_then(|v| mysql_async::from_value_opt::<String>(v).ok()),
                ) else {
                    continue;
                };
                let program = program
                    .and_then(|v| mysql_async::from_value_opt::<Option<i64>>(v).ok())
                    .flatten()
                    .unwrap_or(self.mapping.default_program_id);
                let mut pk = Map::new();
                let mut data = Map::new();
                for (i, value) in values.into_iter().enumerate().take(n) {
                    let c = &columns[i];
                    let desc = ColumnDesc {
                        name: c.name_str().into_owned(),
                        column_type: c.column_type(),
                        unsigned: c
                            .flags()
                            .contains(mysql_async::consts::ColumnFlags::UNSIGNED_FLAG),
                        charset: c.character_set(),
                        fsp: c.decimals(),
                        labels: None,
                        fixed_len: None,
                    };
                    let json = to_json(value, &desc);
                    if t.pk.contains(&desc.name) {
                        pk.insert(desc.name, json);
                    } else {
                        data.insert(desc.name, json);
                    }
                }
                let key = VisitKey {
                    patient_id: patient,
                    program_id: program,
                    visit_date: visit_day,
                };
                let stream_key = key.stream_key(self.site_id);
                visits
                    .entry(stream_key)
                    .or_insert_with(|| (key, Vec::new()))
                    .1
                    .push(wire::Row {
                        table: (*table).to_owned(),
                        op: Op::Upsert,
                        lsn,
                        pk,
                        data,
                    });
            }
        }
        Ok(rows_read)
    }

    /// The rows and days queries of a table (see `TableQuery`), following the `via` chain;
    /// None for tables the sweep does not read.
    pub(super) async fn select_for(
        &self,
        conn: &mut Conn,
        table: &str,
        t: &TableMapping,
    ) -> Result<Option<(String, String)>, SweepError> {
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&self.database, table),
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let select: Vec<String> = columns
            .iter()
            .filter(|c| t.ships_column(c))
            .map(|c| format!("t0.`{c}`"))
            .collect();
        if t.role == Role::Reference {
            // Reference rows (locations, concepts, users...) belong to the reference visit
            // (patient 0, program 0) of the day they were created, changed or retired.
            let Some(day) = audit_day(&columns) else {
                return Ok(None);
            };
            let tail = format!(
                "CAST(DATE({day}) AS CHAR) FROM `{table}` t0 WHERE {day} >= ? AND {day} < ?"
            );
            return Ok(Some(queries(&select, "0, 0", &tail)));
        }
        // Walk the via chain: t0 → t1 → ... (at most 3 hops).
        let mut joins = String::new();
        let mut alias = 0;
        let mut current = t;
        let mut patient = t.patient.as_ref().map(|c| format!("t0.`{c}`"));
        let mut program = t.program.as_ref().map(|c| format!("t0.`{c}`"));
        let own_date = t.date.as_ref().map(|c| format!("t0.`{c}`"));
        let mut date = own_date.clone();
        while let Some(via) = &current.via {
            let Some(parent) = self.mapping.table(&via.table) else {
                break;
            };
            let parent_pk = parent.pk.first().ok_or_else(|| {
                SweepError::Setup(format!("table {} has no primary key", via.table))
            })?;
            alias += 1;
            joins.push_str(&format!(
                " LEFT JOIN `{}` t{alias} ON t{alias}.`{parent_pk}` = t{}.`{}`",
                via.table,
                alias - 1,
                via.column
            ));
            let up = |c: &Option<String>| c.as_ref().map(|c| format!("t{alias}.`{c}`"));
            patient = coalesce(up(&parent.patient), patient);
            program = coalesce(up(&parent.program), program);
            date = coalesce(up(&parent.date), date);
            current = parent;
            if alias == 3 {
                break;
            }
        }
        if t.date_from == DateFrom::Own {
            date = own_date.or(date);
        }
        let Some(patient) = patient else {
            return Ok(None);
        };
        let day_expr = match (t.role, date) {
            (Role::Demographics, _) => match audit_day(&columns) {
                Some(day) => day,
                None => return Ok(None),
            },
            (_, Some(date)) => date,
            (_, None) => return Ok(None),
        };
        let program = if t.role == Role::Demographics {
            "NULL".to_owned()
        } else {
            program.unwrap_or_else(|| "NULL".into())
        };
        let tail = format!(
            "CAST(DATE({day_expr}) AS CHAR) FROM `{table}` t0{joins} WHERE {day_expr} >= ? AND {day_expr} < ?"
        );
        Ok(Some(queries(
            &select,
            &format!("{patient}, {program}"),
            &tail,
        )))
    }
}

/// The rows query (`SELECT <select>, <patient_program>, <tail>`) and the days query
/// (`SELECT DISTINCT <tail>`), where `tail` is `<day> FROM ... WHERE ...`.
fn queries(select: &[String], patient_program: &str, tail: &str) -> (String, String) {
    (
        format!("SELECT {}, {patient_program}, {tail}", select.join(", ")),
        format!("SELECT DISTINCT {tail}"),
    )
}

/// The latest of a row's audit dates (created, changed, voided, retired) that its table has,
/// as SQL over alias `t0`; `None` when it has none.
fn audit_day(columns: &[String]) -> Option<String> {
    let audit: Vec<String> = [
        "date_created",
        "date_changed",
        "date_voided",
        "date_retired",
    ]
    .iter()
    .filter(|c| columns.iter().any(|x| x == *c))
    .map(|c| format!("t0.`{c}`"))
    .collect();
    match audit.len() {
        0 => None,
        1 => Some(audit[0].clone()),
        _ => Some(format!(
            "GREATEST({})",
            audit
                .iter()
                .map(|a| format!("COALESCE({a}, {})", audit[0]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn coalesce(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("COALESCE({a}, {b})")),
        (a, b) => a.or(b),
    }
}
