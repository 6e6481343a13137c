//! Reports read from the IDS views. Every answer says when its views were last refreshed.

use chrono::NaiveDate;
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};

/// Query parameters shared by the reports.
#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    /// One site, or all when absent.
    pub site_id: Option<i64>,
    /// First day, `YYYY-MM-DD`.
    pub start_date: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A bad parameter (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadParameter(pub String);

/// Validated report period.
#[derive(Debug, Clone, Copy)]
pub struct Period {
    /// Site filter.
    pub site_id: Option<i64>,
    /// First day.
    pub start: NaiveDate,
    /// Last day.
    pub end: NaiveDate,
}

impl ReportQuery {
    /// Checks the parameters; both dates are required, start ≤ end.
    pub fn period(&self) -> Result<Period, BadParameter> {
        let date = |name: &str, v: &Option<String>| -> Result<NaiveDate, BadParameter> {
            let v = v
                .as_deref()
                .ok_or_else(|| BadParameter(format!("{name} is required (YYYY-MM-DD)")))?;
            NaiveDate::parse_from_str(v, "%Y-%m-%d")
                .map_err(|_| BadParameter(format!("{name} must be a date YYYY-MM-DD")))
        };
        let start = date("start_date", &self.start_date)?;
        let end = date("end_date", &self.end_date)?;
        if start > end {
            return Err(BadParameter("start_date is after end_date".into()));
        }
        Ok(Period {
            site_id: self.site_id,
            start,
            end,
        })
    }
}

/// One row of the visits report.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VisitsRow {
    /// Site.
    pub site_id: i64,
    /// Day.
    pub visit_date: String,
    /// Distinct patients with a non-voided encounter that day.
    pub visits: i64,
}

/// The visits report.
#[derive(Debug, Serialize, Deserialize)]
pub struct VisitsReport {
    /// "visits".
    pub report: String,
    /// Site filter.
    pub site_id: Option<i64>,
    /// First day.
    pub start_date: String,
    /// Last day.
    pub end_date: String,
    /// When the views were last refreshed (RFC 3339), null before the first refresh.
    pub refreshed_at: Option<String>,
    /// Sum of visits.
    pub total: i64,
    /// Per site and day.
    pub rows: Vec<VisitsRow>,
}

/// Reads the visits report.
pub async fn visits(pool: &Pool, period: Period) -> Result<VisitsReport, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let start = period.start.to_string();
    let end = period.end.to_string();
    let rows = client
        .query(
            "SELECT site_id::bigint, visit_date::text, visits FROM ids.visits_daily
             WHERE ($1::bigint IS NULL OR site_id = $1) AND visit_date BETWEEN $2::text::date AND $3::text::date
             ORDER BY site_id, visit_date",
            &[&period.site_id, &start, &end],
        )
        .await
        .map_err(|e| e.to_string())?;
    let rows: Vec<VisitsRow> = rows
        .iter()
        .map(|r| VisitsRow {
            site_id: r.get(0),
            visit_date: r.get(1),
            visits: r.get(2),
        })
        .collect();
    let refreshed_at: Option<String> = client
        .query_opt("SELECT to_char(min(refreshed_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM ids.refresh_log", &[])
        .await
        .map_err(|e| e.to_string())?
        .and_then(|r| r.get(0));
    Ok(VisitsReport {
        report: "visits".into(),
        site_id: period.site_id,
        start_date: start,
        end_date: end,
        refreshed_at,
        total: rows.iter().map(|r| r.visits).sum(),
        rows,
    })
}

impl VisitsReport {
    /// CSV: a header, one line per site and day; the refresh time in a leading comment.
    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "# refreshed_at={}\nsite_id,visit_date,visits\n",
            self.refreshed_at.as_deref().unwrap_or("")
        );
        for r in &self.rows {
            out.push_str(&format!("{},{},{}\n", r.site_id, r.visit_date, r.visits));
        }
        out
    }
}
