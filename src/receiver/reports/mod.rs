//! Reports read from the IDS views: TX_CURR, TX_NEW, visits and missed appointments, on the
//! ART rules (`../shared/reference/art-rules.md`, implemented in `ids-tables.sql`).
//!
//! Every answer carries a total, the gender × age-group rows (all 24 M/F groups, zeros
//! included; `U` and `Unknown` only when present) and when its site's data was last applied.
//! `detail=patients` adds the patients counted (tx_curr, tx_new, missed_appointments) and
//! `detail=days` the visits per site and day (visits). Parameters are checked here and a bad
//! one is a [`BadParameter`] (HTTP 400) naming it.

use std::collections::BTreeMap;

mod csv;
mod queries;
mod request;

use queries::query_for;
pub use request::{quarter_start, BadParameter, Definition, ReportName, Request, ON_ART};

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

/// The age groups of the disaggregation, in order.
pub const AGE_GROUPS: [&str; 12] = [
    "<1", "1-4", "5-9", "10-14", "15-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49",
    "50+",
];

/// One gender × age-group count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupRow {
    /// M, F or U (unknown).
    pub gender: String,
    /// One of [`AGE_GROUPS`] or `Unknown`.
    pub age_group: String,
    /// Patients (patient-days for visits).
    pub count: i64,
}

/// A report answer.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The report's name.
    pub report: &'static str,
    /// moh or pepfar.
    pub definition: &'static str,
    /// Site filter, null for all sites.
    pub site_id: Option<i32>,
    /// First day.
    pub start_date: String,
    /// Last day.
    pub end_date: String,
    /// When the site's data was last applied (RFC 3339 UTC; for all sites the earliest of
    /// their last applies), null before any: the answer holds everything applied by then.
    pub as_of: Option<String>,
    /// Patients whose IDS rows still wait in the queue (a resync, a rebuild): until they are
    /// recomputed the answer may not reflect their latest data.
    pub queued_patients: i64,
    /// Patients counted (patient-days for visits).
    pub total: i64,
    /// Gender × age group.
    pub rows: Vec<GroupRow>,
    /// The detail list when asked for: the column names.
    #[serde(skip)]
    pub detail_columns: Vec<&'static str>,
    /// The detail list, one JSON object per patient (or site-day).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patients: Option<Vec<Value>>,
    /// Visits per site and day (visits report with detail=days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<Value>>,
}

/// Reads a report from the views.
pub async fn read(pool: &Pool, request: &Request) -> Result<Report, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let (as_of, queued_patients) = freshness(&client, request.site_id).await?;
    let query = query_for(request.name);
    let params = Params::of(request);
    let counts = params
        .query(
            &client,
            &format!(
                "SELECT gender, age_group, count(*) FROM ({}) q GROUP BY 1, 2",
                query.patients
            ),
        )
        .await?;
    let counts: BTreeMap<(String, String), i64> = counts
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let rows = group_rows(&counts);
    let mut report = Report {
        report: request.name.as_str(),
        definition: request.definition.as_str(),
        site_id: request.site_id,
        start_date: request.start.to_string(),
        end_date: request.end.to_string(),
        as_of,
        queued_patients,
        total: counts.values().sum(),
        rows,
        detail_columns: Vec::new(),
        patients: None,
        days: None,
    };
    if request.detail {
        let (sql, columns) = match query.detail {
            Some(detail) => (detail, query.detail_columns),
            None => (query.patients, query.detail_columns),
        };
        let list = params
            .query(
                &client,
                &format!("SELECT {} FROM ({sql}) q ORDER BY 1, 2", columns.join(", ")),
            )
            .await?;
        let list: Vec<Value> = list
            .iter()
            .map(|r| {
                let mut object = serde_json::Map::new();
                for (i, c) in columns.iter().enumerate() {
                    object.insert((*c).to_owned(), cell(r, i));
                }
                Value::Object(object)
            })
            .collect();
        report.detail_columns = columns.to_vec();
        if request.name == ReportName::Visits {
            report.days = Some(list);
        } else {
            report.patients = Some(list);
        }
    }
    Ok(report)
}

/// All 24 M/F × age rows (zeros included), then U and Unknown rows that have patients.
fn group_rows(counts: &BTreeMap<(String, String), i64>) -> Vec<GroupRow> {
    let mut rows = Vec::new();
    for gender in ["F", "M", "U"] {
        for age in AGE_GROUPS.iter().copied().chain(["Unknown"]) {
            let count = counts
                .get(&(gender.to_owned(), age.to_owned()))
                .copied()
                .unwrap_or(0);
            if count > 0 || (gender != "U" && age != "Unknown") {
                rows.push(GroupRow {
                    gender: gender.into(),
                    age_group: age.into(),
                    count,
                });
            }
        }
    }
    rows
}

/// A detail cell as JSON: integers, booleans, text (dates are cast to text in SQL).
fn cell(row: &tokio_postgres::Row, i: usize) -> Value {
    use tokio_postgres::types::Type;
    let ty = row.columns()[i].type_();
    if *ty == Type::INT4 {
        json!(row.get::<_, Option<i32>>(i))
    } else if *ty == Type::INT8 {
        json!(row.get::<_, Option<i64>>(i))
    } else if *ty == Type::BOOL {
        json!(row.get::<_, Option<bool>>(i))
    } else {
        json!(row.get::<_, Option<String>>(i))
    }
}

/// When `site`'s data (every site's, when `None`) was last applied, and how many of its
/// patients wait in the IDS queue.
pub async fn freshness(
    client: &deadpool_postgres::Client,
    site: Option<i32>,
) -> Result<(Option<String>, i64), String> {
    let row = client
        .query_one(
            "SELECT to_char(min(applied_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    (SELECT count(*) FROM ids.dirty_patient q WHERE $1::int IS NULL OR q.site_id = $1)
             FROM ids.site_state WHERE $1::int IS NULL OR site_id = $1",
            &[&site],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok((row.get(0), row.get(1)))
}

/// The bound parameters every query takes: $1 site, $2 start, $3 end, $4 default days.
struct Params {
    site: Option<i32>,
    start: String,
    end: String,
    days: i32,
}

impl Params {
    fn of(r: &Request) -> Self {
        Self {
            site: r.site_id,
            start: r.start.to_string(),
            end: r.end.to_string(),
            days: r.definition.default_days(),
        }
    }

    /// Runs `sql` with the four parameters typed up front (a report need not use them all).
    async fn query(
        &self,
        client: &deadpool_postgres::Client,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        use tokio_postgres::types::Type;
        let statement = client
            .prepare_typed_cached(sql, &[Type::INT4, Type::TEXT, Type::TEXT, Type::INT4])
            .await
            .map_err(|e| e.to_string())?;
        client
            .query(
                &statement,
                &[&self.site, &self.start, &self.end, &self.days],
            )
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_rows_keep_zeros_and_only_present_unknowns() {
        let mut counts = BTreeMap::new();
        counts.insert(("F".to_owned(), "25-29".to_owned()), 3);
        counts.insert(("U".to_owned(), "Unknown".to_owned()), 1);
        let rows = group_rows(&counts);
        assert_eq!(rows.len(), 25);
        assert!(rows
            .iter()
            .any(|r| r.gender == "F" && r.age_group == "25-29" && r.count == 3));
        assert!(rows
            .iter()
            .any(|r| r.gender == "U" && r.age_group == "Unknown" && r.count == 1));
    }
}
