//! A report request: the report's name and its parameters, checked; a bad one is a
//! [`BadParameter`] (HTTP 400) naming it.

use std::collections::HashMap;

use chrono::NaiveDate;

use super::params::{date_param, parse_quarter, quarter_start, site_param, truncate};

/// The reports, as named in the URL (matched case-insensitively, as the central front end
/// asks for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportName {
    /// Currently on treatment on the end date.
    TxCurr,
    /// Newly initiated in the period.
    TxNew,
    /// Patient-days with encounters.
    Visits,
    /// Missed appointments in the period, as the engine lists them.
    MissedAppointments,
    /// PEPFAR TX_ML: on ART at the start (or started in the period), not on ART at the end.
    TxMl,
    /// PEPFAR TX_RTT: defaulted or stopped at the start, back on ART at the end.
    TxRtt,
    /// PEPFAR TX_PVLS: viral load coverage and suppression.
    TxPvls,
    /// The MOH quarterly cohort: registration, outcomes, regimens.
    Cohort,
    /// TX_CURR by months dispensed at the last dispensation.
    TxCurrMmd,
    /// TX_CURR by regimen (by=regimen) or by weight band and regimen (by=weight).
    RegimenDistribution,
    /// Defaulters of the period with their contacts, for the facility's tracing team.
    DefaulterList,
}

/// Every report, for error messages and the index.
pub const REPORTS: [ReportName; 11] = [
    ReportName::TxCurr,
    ReportName::TxNew,
    ReportName::Visits,
    ReportName::MissedAppointments,
    ReportName::TxMl,
    ReportName::TxRtt,
    ReportName::TxPvls,
    ReportName::Cohort,
    ReportName::TxCurrMmd,
    ReportName::RegimenDistribution,
    ReportName::DefaulterList,
];

impl ReportName {
    /// From the URL segment, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        REPORTS
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(name))
    }

    /// The URL segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TxCurr => "tx_curr",
            Self::TxNew => "tx_new",
            Self::Visits => "visits",
            Self::MissedAppointments => "missed_appointments",
            Self::TxMl => "tx_ml",
            Self::TxRtt => "tx_rtt",
            Self::TxPvls => "tx_pvls",
            Self::Cohort => "cohort",
            Self::TxCurrMmd => "tx_curr_mmd",
            Self::RegimenDistribution => "regimen_distribution",
            Self::DefaulterList => "defaulter_list",
        }
    }

    /// The detail list this report offers.
    fn detail(self) -> &'static str {
        match self {
            Self::Visits => "days",
            _ => "patients",
        }
    }

    /// The definition a report always uses, whatever is asked (TX_ML, TX_RTT and TX_PVLS are
    /// PEPFAR outcomes: 30 days; the cohort and the regimen distribution by weight are MOH).
    fn fixed_definition(self, by: By) -> Option<Definition> {
        match (self, by) {
            (Self::TxMl | Self::TxRtt | Self::TxPvls, _) => Some(Definition::Pepfar),
            (Self::RegimenDistribution, By::Weight) | (Self::Cohort, _) => Some(Definition::Moh),
            _ => None,
        }
    }

    /// Whether the answer is a list of patients by nature (it always carries it).
    pub fn is_patient_list(self) -> bool {
        self == Self::DefaulterList
    }
}

/// The names of every report, comma-separated.
pub fn report_names() -> String {
    REPORTS.map(|r| r.as_str()).join(", ")
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
    /// The breakdown of regimen_distribution.
    pub by: By,
    /// With `detail=patients`: only the patients counted in this column.
    pub field: Option<&'static str>,
}

impl Request {
    /// Whether the answer names patients (`detail=patients`, the defaulter list): only for
    /// readers with scope `patients`.
    pub fn lists_patients(&self) -> bool {
        self.detail && self.name.detail() == "patients"
    }
}

/// How regimen_distribution breaks TX_CURR down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// Age group × gender × regimen.
    Regimen,
    /// Weight band × gender × regimen.
    Weight,
}

const PARAMETERS: [&str; 10] = [
    "site_id",
    "location",
    "start_date",
    "end_date",
    "name",
    "definition",
    "format",
    "detail",
    "field",
    "by",
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
        let site_id = site_param(params)?;
        let quarter = match params.get("name") {
            None => None,
            Some(q) => Some(parse_quarter(q).ok_or_else(|| {
                BadParameter(format!(
                    "name must be a quarter like \"Q1 2024\" (got {:?})",
                    truncate(q)
                ))
            })?),
        };
        if quarter.is_some()
            && (params.contains_key("start_date") || params.contains_key("end_date"))
        {
            return Err(BadParameter(
                "name (a quarter) cannot be given with start_date or end_date".into(),
            ));
        }
        let (start, end) = match quarter {
            Some(q) => q,
            None => {
                let end = date_param(params, "end_date")?.unwrap_or(today);
                let start = date_param(params, "start_date")?.unwrap_or_else(|| quarter_start(end));
                (start, end)
            }
        };
        if start > end {
            return Err(BadParameter("start_date is after end_date".into()));
        }
        let asked = match params
            .get("definition")
            .map(|d| d.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("moh") => Definition::Moh,
            Some("pepfar") => Definition::Pepfar,
            Some(_) => return Err(BadParameter("definition must be moh or pepfar".into())),
        };
        let by = match (name, params.get("by").map(String::as_str)) {
            (ReportName::RegimenDistribution, None | Some("regimen")) => By::Regimen,
            (ReportName::RegimenDistribution, Some("weight")) => By::Weight,
            (ReportName::RegimenDistribution, Some(_)) => {
                return Err(BadParameter("by must be regimen or weight".into()))
            }
            (_, None) => By::Regimen,
            (_, Some(_)) => {
                return Err(BadParameter(format!(
                    "by applies to regimen_distribution only, not {}",
                    name.as_str()
                )))
            }
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
        let definition = name.fixed_definition(by).unwrap_or(asked);
        let detail = detail || name.is_patient_list();
        let field = match params.get("field") {
            None => None,
            Some(_) if !detail => {
                return Err(BadParameter(
                    "field needs detail=patients (it picks the patients of one column)".into(),
                ))
            }
            Some(f) => {
                let fields = super::queries::fields(name, by);
                Some(fields.iter().copied().find(|c| c == f).ok_or_else(|| {
                    BadParameter(format!(
                        "field must be one of {} for {}",
                        fields.join(", "),
                        name.as_str()
                    ))
                })?)
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
            by,
            field,
        })
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
    fn the_front_end_s_conventions_are_accepted() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        let r = Request::parse(
            ReportName::parse("TX_CURR").unwrap(),
            &params(&[("location", "-1"), ("name", "Q1 2024")]),
            false,
            today(),
        )
        .unwrap();
        assert_eq!(
            (r.site_id, r.start, r.end),
            (None, d(2024, 1, 1), d(2024, 3, 31))
        );
        let r = Request::parse(
            ReportName::TxMl,
            &params(&[
                ("location", "7"),
                ("name", "q4 2023"),
                ("definition", "moh"),
            ]),
            false,
            today(),
        )
        .unwrap();
        assert_eq!(
            (r.site_id, r.start, r.end),
            (Some(7), d(2023, 10, 1), d(2023, 12, 31))
        );
        assert_eq!(r.definition, Definition::Pepfar, "TX_ML is always PEPFAR");
        let r = Request::parse(
            ReportName::parse("TX_PVLS").unwrap(),
            &params(&[("name", "Q1 2025"), ("definition", "moh")]),
            false,
            today(),
        )
        .unwrap();
        assert_eq!(r.definition, Definition::Pepfar, "TX_PVLS is always PEPFAR");
        assert_eq!(
            ReportName::parse("Regimen_Distribution"),
            Some(ReportName::RegimenDistribution)
        );
        assert_eq!(ReportName::parse("tx_cur"), None);
        for (pairs, word) in [
            (&[("name", "Q5 2024")][..], "name"),
            (
                &[("name", "Q1 2024"), ("end_date", "2024-01-01")][..],
                "name",
            ),
            (&[("location", "-2")][..], "location"),
            (&[("location", "1"), ("site_id", "1")][..], "location"),
            (&[("by", "weight")][..], "by"),
            (&[("field", "count")][..], "field"),
        ] {
            let e =
                Request::parse(ReportName::TxCurr, &params(pairs), false, today()).expect_err(word);
            assert!(e.0.contains(word), "{pairs:?}: {}", e.0);
        }
        let e = Request::parse(
            ReportName::TxRtt,
            &params(&[("detail", "patients"), ("field", "nope")]),
            false,
            today(),
        )
        .unwrap_err();
        assert!(e.0.contains("returned_3_5_months"), "{}", e.0);
        let r = Request::parse(ReportName::DefaulterList, &params(&[]), false, today()).unwrap();
        assert!(r.detail, "the defaulter list is a list");
    }

    #[test]
    fn quarters_start_on_their_first_day() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(quarter_start(d(2024, 3, 31)), d(2024, 1, 1));
        assert_eq!(quarter_start(d(2024, 4, 1)), d(2024, 4, 1));
        assert_eq!(quarter_start(d(2024, 12, 31)), d(2024, 10, 1));
    }
}
