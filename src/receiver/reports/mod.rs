//! Reports read from the IDS tables, on the national engine's rules
//! (`../shared/reference/art-rules.md` and `moh-reports.md`, implemented in `ids-tables.sql`,
//! `ids-reports.sql` and `queries.rs`): TX_CURR, TX_NEW, visits, missed appointments, TX_ML,
//! TX_RTT, TX_CURR MMD, regimen distribution and the defaulter list.
//!
//! Every answer carries a total, its columns (`fields`), the rows by age group × gender (all
//! PEPFAR M/F groups, zeros included; `U` and `Unknown` only when present; regimen and weight
//! band rows where the report has them) and when its site's data was last applied.
//! `detail=patients` adds the patients counted (`field=NAME`: only those of one column) and
//! `detail=days` the visits per site and day (visits). Parameters are checked here and a bad
//! one is a [`BadParameter`] (HTTP 400) naming it.

use std::collections::BTreeMap;

mod cohort;
mod csv;
mod params;
mod queries;
mod request;
mod vl;

pub use params::{parse_quarter, quarter_start};
use queries::{query_for, Rows};
pub use request::{
    report_names, BadParameter, By, Definition, ReportName, Request, ON_ART, REPORTS,
};

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

/// The PEPFAR age groups (art-rules.md section 4), in order.
pub const AGE_GROUPS: [&str; 20] = [
    "<1", "1-4", "5-9", "10-14", "15-19", "20-24", "25-29", "30-34", "35-39", "40-44", "45-49",
    "50-54", "55-59", "60-64", "65-69", "70-74", "75-79", "80-84", "85-89", "90+",
];

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
    /// Sites whose IDS rebuild has not finished (after new IDS definitions, whose rollout
    /// queues every site, or `emr-stream ids rebuild`): until it has, some of their patients'
    /// rows are still the old definitions' (an outcome may read Unknown), so the figures are
    /// provisional. Normally 0.
    pub rebuilding_sites: i64,
    /// Patients counted (patient-days for visits).
    pub total: i64,
    /// The count columns of each row.
    pub fields: &'static [&'static str],
    /// One object per row: its dimensions (age_group or weight_band, gender, regimen) and a
    /// count per field.
    pub rows: Vec<Value>,
    /// Notes on how the answer differs from the engine's, where it does on purpose.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<&'static str>,
    /// The row dimensions, for CSV.
    #[serde(skip)]
    pub dims: &'static [&'static str],
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

/// Reads a report from the IDS tables.
pub async fn read(pool: &Pool, request: &Request) -> Result<Report, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    // One read-only snapshot for the counts and the detail list (they agree), planned for
    // national scans: the planner cannot estimate how many rows a report's computed filter
    // keeps (an outcome on a date), takes it for a few thousand where a national answer has
    // a million, and then sorts them, on disk, to group them (TX_CURR at 1M: 2.1 s, grouped
    // in memory by hashing: 0.9 s). Custom plans: the dates are constants then, and what
    // depends on them alone is computed once, not per row. No JIT: compiling a report's
    // expressions took longer than it saved (at 1M patients, all sites, the cohort 2.25 s
    // without, 2.4 to 4.7 s with; the defaulter list's count 0.48 s without, 0.77 s with).
    let client = client.transaction().await.map_err(|e| e.to_string())?;
    client
        .batch_execute(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;
             SET LOCAL work_mem = '64MB'; SET LOCAL enable_sort = off;
             SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off",
        )
        .await
        .map_err(|e| e.to_string())?;
    let query = query_for(request.name, request.by);
    if !query.planner.is_empty() {
        client
            .batch_execute(query.planner)
            .await
            .map_err(|e| e.to_string())?;
    }
    let Freshness {
        as_of,
        queued_patients,
        rebuilding_sites,
    } = freshness(&client, request.site_id).await?;
    let params = Params::of(request);
    let dims = query.rows.dims();
    let dim_keys: Vec<String> = dims.iter().map(|d| format!("q.{d}")).collect();
    let dim_keys: Vec<&str> = dim_keys.iter().map(String::as_str).collect();
    let mut counts: BTreeMap<Vec<String>, BTreeMap<String, i64>> = BTreeMap::new();
    // A list of every counted patient (no field picked, no second count of women, not a
    // list of days: the defaulter list, or any report asked with its detail) is counted from
    // the list itself: one national scan instead of two.
    let mut listed = None;
    if request.detail && request.field.is_none() && !query.maternal && query.days.is_none() {
        let columns = query.detail_columns;
        let list = params
            .query(
                &client,
                &format!(
                    "SELECT {}, q.fields, {} FROM ({}) q ORDER BY 1, 2",
                    columns.join(", "),
                    dim_keys.join(", "),
                    query.sql
                ),
            )
            .await?;
        for r in &list {
            let key: Vec<String> = (0..dims.len())
                .map(|i| {
                    r.get::<_, Option<String>>(columns.len() + 1 + i)
                        .unwrap_or_default()
                })
                .collect();
            let fields: Option<Vec<Option<String>>> = r.get(columns.len());
            let row = counts.entry(key).or_default();
            let fields = fields.into_iter().flatten().flatten();
            for field in fields.chain([String::new()]) {
                *row.entry(field).or_insert(0) += 1;
            }
        }
        listed = Some(list);
    } else {
        for r in &params.query(&client, &count_sql(&query, &dim_keys)).await? {
            let key: Vec<String> = (0..dims.len())
                .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                .collect();
            let field: String = r.get(dims.len());
            counts
                .entry(key)
                .or_default()
                .insert(field, r.get(dims.len() + 1));
        }
    }
    // (the maternal rows count women a second time)
    let total = counts
        .iter()
        .filter(|(k, _)| !(query.maternal && k.get(1).is_some_and(|a| a == MATERNAL_AGE)))
        .filter_map(|(_, c)| c.get(""))
        .sum();
    let rows = group_rows(query.rows, query.fields, query.maternal, &counts);
    let mut report = Report {
        report: request.name.as_str(),
        definition: request.definition.as_str(),
        site_id: request.site_id,
        start_date: request.start.to_string(),
        end_date: request.end.to_string(),
        as_of,
        queued_patients,
        rebuilding_sites,
        total,
        fields: query.fields,
        rows,
        notes: Vec::new(),
        dims,
        detail_columns: Vec::new(),
        patients: None,
        days: None,
    };
    if query.rows == Rows::WeightRegimen {
        report.notes.push(
            "the engine's weight bands skip 5-5.9 kg (those patients vanish from its answer): \
             they are counted here in a band 5-5.9 of their own",
        );
    }
    if request.detail {
        let (sql, columns) = match query.days {
            Some(days) => (days, query.detail_columns),
            None => (query.sql, query.detail_columns),
        };
        let filter = if query.days.is_some() {
            ""
        } else {
            "WHERE $5::text IS NULL OR $5::text = ANY (q.fields)"
        };
        let list = match listed {
            Some(list) => list,
            None => {
                params
                    .query(
                        &client,
                        &format!(
                            "SELECT {} FROM ({sql}) q {filter} ORDER BY 1, 2",
                            columns.join(", ")
                        ),
                    )
                    .await?
            }
        };
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
    client.commit().await.map_err(|e| e.to_string())?;
    Ok(report)
}

/// The SQL that counts an answer in the database, one row per dimensions and field with its
/// number of patients (`dim_keys`: the dimensions as columns of `q`, the report's rows).
fn count_sql(query: &queries::Query, dim_keys: &[&str]) -> String {
    // One pass: each patient counts once per field it is in, and once in '' (the row total).
    // Patients are grouped by their dimensions and fields first (a national cohort's million
    // rows fall into a few hundred groups), and only the groups' fields are unnested.
    // OFFSET 0 keeps the report's own filter below the grouping: without it the planner
    // sorted every status row by gender and age group (computing the age group of each) before
    // filtering (TX_CURR today at 100k, all sites: 250-400 ms, fenced 25-35 ms).
    // Women counted again by maternal status, in rows (FP|FBf|FNP, All): the report's rows
    // are read once (MATERIALIZED, which fences them as OFFSET 0 does) and grouped twice.
    let (sql, count) = match query.counted {
        Some(counted) => (counted, "sum(q.n)"),
        None => (query.sql, "count(*)"),
    };
    let per_field = |keys: &[&str], filter: &str| {
        let named: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS k{i}"))
            .collect();
        let ks: Vec<String> = (0..keys.len()).map(|i| format!("k{i}")).collect();
        format!(
            "SELECT {ks}, f, sum(g.n)::bigint FROM (
               SELECT {named}, q.fields, {count} AS n FROM q {filter} GROUP BY {ks}, q.fields) g
             CROSS JOIN LATERAL unnest(g.fields || ARRAY['']) f GROUP BY {ks}, f",
            ks = ks.join(", "),
            named = named.join(", "),
        )
    };
    if query.maternal {
        let maternal_age = format!("'{MATERNAL_AGE}'");
        format!(
            "WITH q AS MATERIALIZED (SELECT * FROM ({sql}) s)
             {by_dims}
             UNION ALL
             {by_maternal}",
            by_dims = per_field(dim_keys, ""),
            by_maternal = per_field(
                &["q.maternal", &maternal_age],
                "WHERE q.maternal IS NOT NULL"
            ),
        )
    } else {
        format!(
            "WITH q AS (SELECT * FROM ({sql}) s OFFSET 0) {by_dims}",
            by_dims = per_field(dim_keys, ""),
        )
    }
}

/// The age group of the rows that count women by maternal status.
const MATERNAL_AGE: &str = "All";
/// Maternal status of women: pregnant, breastfeeding, neither.
const MATERNAL: [&str; 3] = ["FP", "FBf", "FNP"];

/// The rows of an answer: by age group, all M/F × age rows (zeros included) then U and
/// Unknown rows that have patients, then (`maternal`) the FP, FBf and FNP rows of all ages;
/// by regimen or weight band, the rows that have patients. Each row has every field (0 when
/// none).
fn group_rows(
    rows: Rows,
    fields: &[&str],
    maternal: bool,
    counts: &BTreeMap<Vec<String>, BTreeMap<String, i64>>,
) -> Vec<Value> {
    let dims = rows.dims();
    let row = |key: &[String], c: Option<&BTreeMap<String, i64>>| {
        let mut object = serde_json::Map::new();
        for (d, v) in dims.iter().zip(key) {
            object.insert((*d).to_owned(), json!(v));
        }
        for f in fields {
            let n = c.and_then(|c| c.get(*f)).copied().unwrap_or(0);
            object.insert((*f).to_owned(), json!(n));
        }
        Value::Object(object)
    };
    if rows == Rows::Total {
        let key = vec!["all".to_owned()];
        return vec![row(&key, counts.get(&key))];
    }
    if rows != Rows::Age {
        return counts.iter().map(|(k, c)| row(k, Some(c))).collect();
    }
    let mut out = Vec::new();
    for gender in ["F", "M", "U"] {
        for age in AGE_GROUPS.iter().copied().chain(["Unknown"]) {
            let key = vec![gender.to_owned(), age.to_owned()];
            let c = counts.get(&key);
            if c.is_some() || (gender != "U" && age != "Unknown") {
                out.push(row(&key, c));
            }
        }
    }
    if maternal {
        for status in MATERNAL {
            let key = vec![status.to_owned(), MATERNAL_AGE.to_owned()];
            out.push(row(&key, counts.get(&key)));
        }
    }
    out
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
    } else if *ty == Type::FLOAT8 {
        json!(row.get::<_, Option<f64>>(i))
    } else if *ty == Type::TEXT_ARRAY {
        json!(row.get::<_, Option<Vec<String>>>(i))
    } else {
        json!(row.get::<_, Option<String>>(i))
    }
}

/// How current a report's answer is (of `site`, or of every site when `None`).
pub struct Freshness {
    /// When the data was last applied (for every site, the earliest of their last applies).
    pub as_of: Option<String>,
    /// Patients waiting in the IDS queue.
    pub queued_patients: i64,
    /// Sites whose IDS rebuild has not finished.
    pub rebuilding_sites: i64,
}

/// When `site`'s data (every site's, when `None`) was last applied, how many of its patients
/// wait in the IDS queue, and how many of the sites are being rebuilt.
pub async fn freshness(
    client: &impl deadpool_postgres::GenericClient,
    site: Option<i32>,
) -> Result<Freshness, String> {
    let row = client
        .query_one(
            "SELECT to_char(min(applied_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    (SELECT count(*) FROM ids.dirty_patient q WHERE $1::int IS NULL OR q.site_id = $1),
                    count(*) FILTER (WHERE rebuild_started IS NOT NULL)
             FROM ids.site_state WHERE $1::int IS NULL OR site_id = $1",
            &[&site],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(Freshness {
        as_of: row.get(0),
        queued_patients: row.get(1),
        rebuilding_sites: row.get(2),
    })
}

/// The bound parameters every query takes: $1 site, $2 start, $3 end, $4 default days, $5
/// the field of a detail list.
struct Params {
    site: Option<i32>,
    start: chrono::NaiveDate,
    end: chrono::NaiveDate,
    days: i32,
    field: Option<&'static str>,
}

impl Params {
    fn of(r: &Request) -> Self {
        Self {
            site: r.site_id,
            start: r.start,
            end: r.end,
            days: r.definition.default_days(),
            field: r.field,
        }
    }

    /// Runs `sql` with the five parameters typed up front (a report need not use them all).
    /// The dates go as DATE values: a text date cast in SQL (`$3::text::date`) is a stable
    /// conversion the planner cannot fold, so it ran once per row (at 1M patients, TX_CURR of
    /// a quarter for all sites took 1.46 s with it and 0.59 s with dates, count alone).
    async fn query(
        &self,
        client: &deadpool_postgres::Transaction<'_>,
        sql: &str,
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        use tokio_postgres::types::Type;
        let statement = client
            .prepare_typed_cached(
                sql,
                &[Type::INT4, Type::DATE, Type::DATE, Type::INT4, Type::TEXT],
            )
            .await
            .map_err(|e| e.to_string())?;
        client
            .query(
                &statement,
                &[&self.site, &self.start, &self.end, &self.days, &self.field],
            )
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_rows_keep_zeros_and_only_present_unknowns() {
        let mut counts = BTreeMap::new();
        let one = |f: &str, n| BTreeMap::from([(f.to_owned(), n), (String::new(), n)]);
        counts.insert(vec!["F".to_owned(), "25-29".to_owned()], one("count", 3));
        counts.insert(vec!["U".to_owned(), "Unknown".to_owned()], one("count", 1));
        let rows = group_rows(Rows::Age, &["count"], false, &counts);
        assert_eq!(
            rows.len(),
            41,
            "20 groups and Unknown for F and M, and U/Unknown"
        );
        assert!(rows
            .iter()
            .any(|r| r["gender"] == "F" && r["age_group"] == "25-29" && r["count"] == 3));
        assert!(rows
            .iter()
            .any(|r| r["gender"] == "M" && r["age_group"] == "90+" && r["count"] == 0));
        assert!(rows
            .iter()
            .any(|r| r["gender"] == "U" && r["age_group"] == "Unknown" && r["count"] == 1));
    }

    #[test]
    fn rows_carry_every_field() {
        let mut counts = BTreeMap::new();
        counts.insert(
            vec!["M".to_owned(), "50+".to_owned(), "13A".to_owned()],
            BTreeMap::from([("died".to_owned(), 2)]),
        );
        let rows = group_rows(
            Rows::AgeRegimen,
            &["died", "transferred_out"],
            false,
            &counts,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["regimen"], "13A");
        assert_eq!(
            (
                rows[0]["died"].as_i64(),
                rows[0]["transferred_out"].as_i64()
            ),
            (Some(2), Some(0))
        );
    }
}
