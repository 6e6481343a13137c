//! CSV answers.

use serde_json::Value;

use super::Report;

impl Report {
    /// CSV: a comment line with the report, period, the time its data was applied and how
    /// current its IDS rows are (queued patients, sites being rebuilt), a header, then the
    /// detail list when asked for, else the rows (dimensions, then fields).
    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "# report={} definition={} site_id={} start_date={} end_date={} as_of={} \
             queued_patients={} rebuilding_sites={} total={}\n",
            self.report,
            self.definition,
            self.site_id.map_or("all".into(), |s| s.to_string()),
            self.start_date,
            self.end_date,
            self.as_of.as_deref().unwrap_or(""),
            self.queued_patients,
            self.rebuilding_sites,
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
                let columns: Vec<&str> = self.dims.iter().chain(self.fields).copied().collect();
                out.push_str(&columns.join(","));
                out.push('\n');
                for r in &self.rows {
                    let cells: Vec<String> = columns.iter().map(|c| csv_cell(&r[*c])).collect();
                    out.push_str(&cells.join(","));
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Cells are quoted when they hold a comma, a quote or a newline (names and addresses of the
/// defaulter list may).
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
