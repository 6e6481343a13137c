//! PostgreSQL's COPY text format, written straight from wire values: a field per value,
//! tab-separated, `\N` for NULL, and backslash, tab, newline and carriage return escaped; which
//! wire values a column's type can hold (the others travel in `_overflow`); and an upsert's
//! line of the staging table.

use std::borrow::Cow;
use std::io::Write;

use base64::Engine;
use serde_json::Value;

use super::{Layout, PlannedRow, Split, Table};

/// Appends `v` as one COPY text field: numbers as written, booleans as `t`/`f`, strings
/// escaped, objects and arrays as their JSON text.
pub(super) fn field(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => text(out, s),
        other => text(out, &other.to_string()),
    }
}

/// Appends an upsert's line for the staging table: its group, site, position, the values of
/// the columns `split` names and `_overflow` (the columns the table lacks, and the values their
/// column's type cannot hold: zero dates, bytes in a text column, whose columns stay NULL).
pub(super) fn upsert(
    out: &mut Vec<u8>,
    group: usize,
    site_id: i64,
    row: &PlannedRow,
    layout: &Layout,
    split: &Split,
    table: &Table,
) {
    let mut overflow = split.overflow(layout, row).unwrap_or_default();
    let _ = write!(out, "{group}\t{site_id}\t{}", row.lsn);
    for &(p, i) in &split.known {
        out.push(b'\t');
        let (name, pg_type) = &table.columns[p];
        let v = &row.values[i];
        match pg_value(v, pg_type) {
            Ok(Cow::Borrowed(v)) => field(out, v),
            Ok(Cow::Owned(v)) => field(out, &v),
            Err(()) => {
                field(out, &Value::Null);
                overflow.insert(name.clone(), v.clone());
            }
        }
    }
    out.push(b'\t');
    if overflow.is_empty() {
        field(out, &Value::Null);
    } else {
        text(out, &Value::Object(overflow).to_string());
    }
    out.push(b'\n');
}

/// Appends `s` escaped for the COPY text format.
pub(super) fn text(out: &mut Vec<u8>, s: &str) {
    // the runs between bytes to escape copied whole
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        out.extend_from_slice(escaped);
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// A wire value for a column of PostgreSQL type `pg_type` (bytes decoded to bytea's hex
/// form); `Err` when the type cannot hold it.
pub(super) fn pg_value<'a>(v: &'a Value, pg_type: &str) -> Result<Cow<'a, Value>, ()> {
    match v {
        Value::Object(o) => match (o.get("$b64").and_then(Value::as_str), pg_type) {
            (Some(b), "bytea") => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| ())?;
                Ok(Cow::Owned(Value::String(format!(
                    "\\x{}",
                    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ))))
            }
            _ => Err(()),
        },
        Value::String(s) if pg_type.starts_with("date") || pg_type.starts_with("timestamp") => {
            if s.starts_with("0000") || s.get(5..7) == Some("00") || s.get(8..10) == Some("00") {
                Err(())
            } else {
                Ok(Cow::Borrowed(v))
            }
        }
        Value::String(s) if s.contains('\0') => Err(()),
        _ => Ok(Cow::Borrowed(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_a_column_cannot_hold_go_to_overflow() {
        let ok = |v: Value, t: &str| pg_value(&v, t).map(Cow::into_owned);
        assert_eq!(ok(json!("0000-00-00"), "date"), Err(()));
        assert_eq!(
            ok(json!("2026-01-02 10:00:00"), "timestamp without time zone"),
            Ok(json!("2026-01-02 10:00:00"))
        );
        assert_eq!(ok(json!({"$b64": "AAE="}), "bytea"), Ok(json!("\\x0001")));
        assert!(ok(json!({"$b64": "AAE="}), "text").is_err());
        assert_eq!(ok(json!(5), "integer"), Ok(json!(5)));
    }

    fn one(v: Value) -> String {
        let mut out = Vec::new();
        field(&mut out, &v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fields_escape_what_copy_reads_as_structure() {
        assert_eq!(one(Value::Null), "\\N");
        assert_eq!(one(json!(12)), "12");
        assert_eq!(one(json!(-1.5)), "-1.5");
        assert_eq!(one(json!(true)), "t");
        assert_eq!(one(json!("Zoë\tA\\B\nC\rD")), "Zoë\\tA\\\\B\\nC\\rD");
        // the text \N is data, not NULL
        assert_eq!(one(json!("\\N")), "\\\\N");
        // (JSON's own escape of the tab is a backslash, which COPY's escaping doubles)
        assert_eq!(one(json!({"a": "x\ty"})), "{\"a\":\"x\\\\ty\"}");
    }
}
