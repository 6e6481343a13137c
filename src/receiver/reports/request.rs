//! A report request: the report's name and its parameters, checked; a bad one is a
//! [`BadParameter`] (HTTP 400) naming it.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};

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

    pub fn as_str(self) -> &'static str {
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
    fn quarters_start_on_their_first_day() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(quarter_start(d(2024, 3, 31)), d(2024, 1, 1));
        assert_eq!(quarter_start(d(2024, 4, 1)), d(2024, 4, 1));
        assert_eq!(quarter_start(d(2024, 12, 31)), d(2024, 10, 1));
    }
}
