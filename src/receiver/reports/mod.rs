//! Reports read from the IDS views: TX_CURR, TX_NEW, visits and missed appointments, on the
//! ART rules (`../shared/reference/art-rules.md`, implemented in `ids-views.sql`).
//!
//! Every answer carries a total, the gender × age-group rows (all 24 M/F groups, zeros
//! included; `U` and `Unknown` only when present) and when its views were last refreshed.
//! `detail=patients` adds the patients counted (tx_curr, tx_new, missed_appointments) and
//! `detail=days` the visits per site and day (visits). Parameters are checked here and a bad
//! one is a [`BadParameter`] (HTTP 400) naming it.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{json, Value};

/// The reports, as named in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportName {
    /// Currently on treatment on the end date.
    TxCurr,
    /// Newly initiated in the period.
    TxNew,
    /// Patient-days with encounters.
    Visits,
    /// Missed appointments and defaulters in the period.
    MissedAppointments,
}

impl ReportName {
    /// From the URL segment.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "tx_curr" => Self::TxCurr,
            "tx_new" => Self::TxNew,
            "visits" => Self::Visits,
            "missed_appointments" => Self::MissedAppointments,
            _ => return None,
        })
    }

    /// The URL segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TxCurr => "tx_curr",
            Self::TxNew => "tx_new",
            Self::Visits => "visits",
            Self::MissedAppointments => "missed_appointments",
        }
    }

    /// The detail list this report offers.
    fn detail(self) -> &'static str {
        match self {
            Self::Visits => "days",
            _ => "patients",
        }
    }
}

/// Whose defaulter threshold applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Definition {
    /// Malawi MOH: defaulted 60 days after the pills ran out.
    Moh,
    /// PEPFAR: 30 days.
    Pepfar,
}

/// The outcome `ids.outcomes` gives a patient on ART: what TX_CURR counts (the tx_curr query
/// below filters on the same text).
pub const ON_ART: &str = "On antiretrovirals";

impl Definition {
    /// Days past expiry after which a patient has defaulted.
    pub fn default_days(self) -> i32 {
        match self {
            Self::Moh => 60,
            Self::Pepfar => 30,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Moh => "moh",
            Self::Pepfar => "pepfar",
        }
    }
}

/// A bad parameter (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadParameter(pub String);

/// A checked report request.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    /// Which report.
    pub name: ReportName,
    /// One site, or all when absent.
    pub site_id: Option<i32>,
    /// First day of the period (TX_CURR ignores it).
    pub start: NaiveDate,
    /// Last day of the period, the day outcomes are taken on.
    pub end: NaiveDate,
    /// MOH or PEPFAR.
    pub definition: Definition,
    /// Add the detail list.
    pub detail: bool,
    /// Answer in CSV.
    pub csv: bool,
}

const PARAMETERS: [&str; 6] = [
    "site_id",
    "start_date",
    "end_date",
    "definition",
    "format",
    "detail",
];

impl Request {
    /// Checks the query parameters. `end_date` defaults to `today`, `start_date` to the first
    /// day of `end_date`'s quarter, `definition` to moh; CSV when `format=csv` or, without
    /// `format`, when `accept_csv`.
    pub fn parse(
        name: ReportName,
        params: &HashMap<String, String>,
        accept_csv: bool,
        today: NaiveDate,
    ) -> Result<Self, BadParameter> {
        if let Some(unknown) = params.keys().find(|k| !PARAMETERS.contains(&k.as_str())) {
            return Err(BadParameter(format!(
                "unknown parameter {unknown:?}; known: {}",
                PARAMETERS.join(", ")
            )));
        }
        let site_id = match params.get("site_id").map(String::as_str) {
            None | Some("") | Some("all") => None,
            Some(v) => Some(
                v.parse::<i32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| BadParameter("site_id must be a positive integer".into()))?,
            ),
        };
        let end = date_param(params, "end_date")?.unwrap_or(today);
        let start = date_param(params, "start_date")?.unwrap_or_else(|| quarter_start(end));
        if start > end {
            return Err(BadParameter("start_date is after end_date".into()));
        }
        let definition = match params.get("definition").map(String::as_str) {
            None | Some("moh") => Definition::Moh,
            Some("pepfar") => Definition::Pepfar,
            Some(_) => return Err(BadParameter("definition must be moh or pepfar".into())),
        };
        let csv = match params.get("format").map(String::as_str) {
            None => accept_csv,
            Some("csv") => true,
            Some("json") => false,
            Some(_) => return Err(BadParameter("format must be json or csv".into())),
        };
        let detail = match params.get("detail").map(String::as_str) {
            None => false,
            Some(d) if d == name.detail() => true,
            Some(_) => {
                return Err(BadParameter(format!(
                    "detail must be {} for {}",
                    name.detail(),
                    name.as_str()
                )))
            }
        };
        Ok(Self {
            name,
            site_id,
            start,
            end,
            definition,
            detail,
            csv,
        })
    }
}

fn date_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<NaiveDate>, BadParameter> {
    let Some(v) = params.get(name) else {
        return Ok(None);
    };
    let bad = || {
        BadParameter(format!(
            "{name} must be a date YYYY-MM-DD between 1900 and 2199"
        ))
    };
    let date = NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad())?;
    if !(1900..2200).contains(&date.year()) {
        return Err(bad());
    }
    Ok(Some(date))
}

/// The first day of `day`'s calendar quarter.
pub fn quarter_start(day: NaiveDate) -> NaiveDate {
    let month = (day.month0() / 3) * 3 + 1;
    NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
}

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
    /// When the views were last refreshed (RFC 3339 UTC), null before the first refresh.
    pub refreshed_at: Option<String>,
    /// Seconds since then.
    pub age_seconds: Option<i64>,
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
    let (refreshed_at, age_seconds) = staleness(&client).await?;
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
        refreshed_at,
        age_seconds,
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

/// When the views were last refreshed and how long ago (the oldest view counts).
async fn staleness(
    client: &deadpool_postgres::Client,
) -> Result<(Option<String>, Option<i64>), String> {
    let row = client
        .query_one(
            "SELECT to_char(min(refreshed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    floor(extract(epoch FROM now() - min(refreshed_at)))::bigint
             FROM ids.refresh_log WHERE view_name = ANY($1)",
            &[&crate::receiver::ids::VIEWS.to_vec()],
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

/// A report's SQL: `patients` yields one row per counted patient (or patient-day) with
/// `gender` and `age_group`; `detail` (when not the same) yields the detail list.
struct Query {
    patients: &'static str,
    detail: Option<&'static str>,
    detail_columns: &'static [&'static str],
}

fn query_for(name: ReportName) -> Query {
    match name {
        ReportName::TxCurr => Query {
            patients: "SELECT site_id, patient_id, gender, age_group,
                        last_dispensation_date::text AS last_dispensation_date,
                        expiry_date::text AS expiry_date
                       FROM ids.outcomes($3::text::date, $4, $1)
                       WHERE outcome = 'On antiretrovirals'",
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "last_dispensation_date",
                "expiry_date",
            ],
        },
        ReportName::TxNew => Query {
            patients: "SELECT site_id, patient_id, gender,
                        ids.age_group(birthdate, $3::text::date) AS age_group,
                        date_enrolled::text AS date_enrolled,
                        earliest_start_date::text AS earliest_start_date
                       FROM ids.art_status
                       WHERE ($1::int IS NULL OR site_id = $1)
                         AND date_enrolled BETWEEN $2::text::date AND $3::text::date
                         AND NOT transfer_in AND earliest_start_date >= $2::text::date",
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "date_enrolled",
                "earliest_start_date",
            ],
        },
        ReportName::Visits => Query {
            patients: "SELECT p.gender, ids.age_group(p.birthdate, $3::text::date) AS age_group
                       FROM ids.patient_visits v
                       JOIN ids.art_status p ON p.site_id = v.site_id AND p.patient_id = v.patient_id
                       WHERE ($1::int IS NULL OR v.site_id = $1)
                         AND v.visit_date BETWEEN $2::text::date AND $3::text::date",
            detail: Some(
                "SELECT site_id, visit_date::text AS visit_date, visits FROM ids.visits_daily
                 WHERE ($1::int IS NULL OR site_id = $1)
                   AND visit_date BETWEEN $2::text::date AND $3::text::date",
            ),
            detail_columns: &["site_id", "visit_date", "visits"],
        },
        ReportName::MissedAppointments => Query {
            patients: MISSED,
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "outcome",
                "appointment_date",
                "missed_appointment",
                "defaulted",
                "defaulted_on",
            ],
        },
    }
}

/// Patients whose latest appointment (recorded by the end date) fell in [start, end) with no
/// visit from that day to the end date, and patients who defaulted in [start, end].
const MISSED: &str = "
    WITH o AS (SELECT * FROM ids.outcomes($3::text::date, $4, $1)),
    latest AS (
      SELECT a.site_id, a.patient_id, max(a.appointment_date) AS appointment_date
      FROM ids.appointments a
      WHERE a.recorded_at < $3::text::date + 1 AND ($1::int IS NULL OR a.site_id = $1)
      GROUP BY 1, 2
    ), missed AS (
      SELECT l.* FROM latest l
      WHERE l.appointment_date >= $2::text::date AND l.appointment_date < $3::text::date
        AND NOT EXISTS (
          SELECT 1 FROM ids.patient_visits v
          WHERE v.site_id = l.site_id AND v.patient_id = l.patient_id
            AND v.visit_date BETWEEN l.appointment_date AND $3::text::date)
    )
    SELECT o.site_id, o.patient_id, o.gender, o.age_group, o.outcome,
           m.appointment_date::text AS appointment_date,
           (m.patient_id IS NOT NULL) AS missed_appointment,
           (o.outcome = 'Defaulted' AND o.defaulted_on >= $2::text::date) AS defaulted,
           CASE WHEN o.outcome = 'Defaulted' THEN o.defaulted_on::text END AS defaulted_on
    FROM o LEFT JOIN missed m ON m.site_id = o.site_id AND m.patient_id = o.patient_id
    WHERE m.patient_id IS NOT NULL OR (o.outcome = 'Defaulted' AND o.defaulted_on >= $2::text::date)";

impl Report {
    /// CSV: a comment line with the report, period and refresh time, a header, then the
    /// detail list when asked for, else the gender × age rows.
    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "# report={} definition={} site_id={} start_date={} end_date={} refreshed_at={} total={}\n",
            self.report,
            self.definition,
            self.site_id.map_or("all".into(), |s| s.to_string()),
            self.start_date,
            self.end_date,
            self.refreshed_at.as_deref().unwrap_or(""),
            self.total
        );
        match self.patients.as_ref().or(self.days.as_ref()) {
            Some(list) => {
                out.push_str(&self.detail_columns.join(","));
                out.push('\n');
                for item in list {
                    let cells: Vec<String> = self
                        .detail_columns
                        .iter()
                        .map(|c| csv_cell(&item[*c]))
                        .collect();
                    out.push_str(&cells.join(","));
                    out.push('\n');
                }
            }
            None => {
                out.push_str("gender,age_group,count\n");
                for r in &self.rows {
                    out.push_str(&format!("{},{},{}\n", r.gender, r.age_group, r.count));
                }
            }
        }
        out
    }
}

/// Detail cells are ids, dates, booleans and fixed outcome names: none holds a comma or a
/// quote, but quote anything that would.
fn csv_cell(v: &Value) -> String {
    let s = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
    }

    #[test]
    fn defaults_are_today_its_quarter_and_moh() {
        let r = Request::parse(ReportName::TxCurr, &params(&[]), false, today()).unwrap();
        assert_eq!(r.end, today());
        assert_eq!(r.start, NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        assert_eq!(r.definition.default_days(), 60);
        assert!(!r.csv && !r.detail && r.site_id.is_none());
    }

    #[test]
    fn accept_header_gives_csv_unless_format_says_otherwise() {
        let r = Request::parse(ReportName::TxNew, &params(&[]), true, today()).unwrap();
        assert!(r.csv);
        let r = Request::parse(
            ReportName::TxNew,
            &params(&[("format", "json")]),
            true,
            today(),
        )
        .unwrap();
        assert!(!r.csv);
    }

    #[test]
    fn bad_parameters_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("site_id", "x")], "site_id"),
            (&[("site_id", "-3")], "site_id"),
            (&[("end_date", "2024-02-30")], "end_date"),
            (&[("start_date", "yesterday")], "start_date"),
            (&[("end_date", "0001-01-01")], "end_date"),
            (
                &[("start_date", "2024-05-01"), ("end_date", "2024-04-01")],
                "after",
            ),
            (&[("definition", "who")], "definition"),
            (&[("format", "xml")], "format"),
            (&[("detail", "days")], "detail"),
            (&[("sitee", "1")], "unknown parameter"),
        ];
        for (pairs, word) in cases {
            let e =
                Request::parse(ReportName::TxCurr, &params(pairs), false, today()).expect_err(word);
            assert!(e.0.contains(word), "{pairs:?}: {}", e.0);
        }
    }

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

    #[test]
    fn quarters_start_on_their_first_day() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(quarter_start(d(2024, 3, 31)), d(2024, 1, 1));
        assert_eq!(quarter_start(d(2024, 4, 1)), d(2024, 4, 1));
        assert_eq!(quarter_start(d(2024, 12, 31)), d(2024, 10, 1));
    }
}
