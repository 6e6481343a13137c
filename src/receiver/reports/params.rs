//! The period and site parameters of a report request: dates, the front end's quarter
//! names (`Q1 2024`) and `location` alias.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};

use super::BadParameter;

/// At most 40 characters of a caller's value, for an error message.
pub(super) fn truncate(v: &str) -> String {
    v.chars().take(40).collect()
}

/// `site_id`, or the front end's `location` (-1: all sites); absent, empty or `all`: all.
pub(super) fn site_param(params: &HashMap<String, String>) -> Result<Option<i32>, BadParameter> {
    let (name, value) = match (params.get("site_id"), params.get("location")) {
        (Some(_), Some(_)) => {
            return Err(BadParameter(
                "give site_id or location, not both (location is its alias)".into(),
            ))
        }
        (Some(v), None) => ("site_id", v.as_str()),
        (None, Some(v)) => ("location", v.as_str()),
        (None, None) => return Ok(None),
    };
    match value {
        "" | "all" => Ok(None),
        "-1" if name == "location" => Ok(None),
        v => v
            .parse::<i32>()
            .ok()
            .filter(|s| *s > 0)
            .map(Some)
            .ok_or_else(|| {
                BadParameter(if name == "location" {
                    "location must be a positive site id, or -1 for all sites".into()
                } else {
                    "site_id must be a positive integer".into()
                })
            }),
    }
}

/// "Q1 2024" (any case, spaces or a dash between): its first and last day.
pub fn parse_quarter(v: &str) -> Option<(NaiveDate, NaiveDate)> {
    let v = v.trim().to_ascii_uppercase();
    let rest = v.strip_prefix('Q')?;
    let (q, year) = rest.split_once([' ', '-', '+'])?;
    let q: u32 = q.parse().ok().filter(|q| (1..=4).contains(q))?;
    let year: i32 = year
        .trim()
        .parse()
        .ok()
        .filter(|y| (1900..2200).contains(y))?;
    let start = NaiveDate::from_ymd_opt(year, (q - 1) * 3 + 1, 1)?;
    let next = if q == 4 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(year, q * 3 + 1, 1)?
    };
    Some((start, next.pred_opt()?))
}

pub(super) fn date_param(
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
