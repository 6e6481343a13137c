//! PostgreSQL's COPY text format, written straight from wire values: a field per value,
//! tab-separated, `\N` for NULL, and backslash, tab, newline and carriage return escaped.

use std::io::Write;

use serde_json::Value;

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

/// Appends `s` escaped for the COPY text format.
pub(super) fn text(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
