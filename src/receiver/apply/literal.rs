//! MySQL values from wire values: as a statement's parameters, and as SQL literals written
//! into a multi-row statement's text (mysql_common's escaping, which a test below holds them to;
//! the session has backslash escapes on: `sql_mode` is set at connect).

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::Engine;
use mysql_async::Value as My;
use serde_json::Value;

/// A wire value as a MySQL parameter; RFC 3339 UTC timestamps become `YYYY-MM-DD HH:MM:SS`
/// (the session is UTC) for datetime/timestamp columns.
pub(super) fn to_mysql(v: &Value, column_type: Option<&str>) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(*b as i64),
        Value::Number(n) => n
            .as_i64()
            .map(My::Int)
            .or_else(|| n.as_u64().map(My::UInt))
            .unwrap_or_else(|| My::Double(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => My::Bytes(session_text(s, column_type).into_owned().into_bytes()),
        Value::Object(o) => match o.get("$b64").and_then(Value::as_str) {
            Some(b) => My::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default(),
            ),
            None => My::Bytes(v.to_string().into_bytes()),
        },
        Value::Array(_) => My::Bytes(v.to_string().into_bytes()),
    }
}

/// A wire string as the session reads it: an RFC 3339 UTC timestamp becomes
/// `YYYY-MM-DD HH:MM:SS` (the session is UTC) for datetime/timestamp columns.
fn session_text<'a>(s: &'a str, column_type: Option<&str>) -> Cow<'a, str> {
    if matches!(column_type, Some("timestamp" | "datetime"))
        && s.len() >= 20
        && s.as_bytes()[10] == b'T'
        && s.ends_with('Z')
    {
        Cow::Owned(s[..s.len() - 1].replacen('T', " ", 1))
    } else {
        Cow::Borrowed(s)
    }
}

/// Appends `v` as the SQL literal `to_mysql(v, column_type).as_sql(false)` gives (mysql_common's
/// escaping, backslash escapes on), without building either in between.
pub(super) fn push_literal(sql: &mut String, v: &Value, column_type: Option<&str>) {
    match v {
        Value::Null => sql.push_str("NULL"),
        Value::Bool(b) => sql.push(if *b { '1' } else { '0' }),
        Value::Number(n) => {
            let _ = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => write!(sql, "{i}"),
                (None, Some(u)) => write!(sql, "{u}"),
                _ => write!(sql, "{}", n.as_f64().unwrap_or(0.0)),
            };
        }
        Value::String(s) => push_escaped(sql, &session_text(s, column_type)),
        Value::Object(_) | Value::Array(_) => sql.push_str(&to_mysql(v, column_type).as_sql(false)),
    }
}

/// Appends `s` quoted and escaped as mysql_common's `Value::as_sql(false)` does.
pub(super) fn push_escaped(sql: &mut String, s: &str) {
    sql.reserve(s.len() + 2);
    sql.push('\'');
    // the runs between characters to escape copied whole (all are ASCII, so every cut is at
    // a character boundary)
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'\0' => "\\0",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\\' => "\\\\",
            b'\'' => "\\'",
            b'"' => "\\\"",
            b'\x1a' => "\\Z",
            _ => continue,
        };
        sql.push_str(&s[run..i]);
        sql.push_str(escaped);
        run = i + 1;
    }
    sql.push_str(&s[run..]);
    sql.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn literals_are_what_mysql_common_writes() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-42),
            json!(u64::MAX),
            json!(0.1),
            json!(-1.5e300),
            json!(1e-7),
            json!("plain"),
            json!("Zoë 'q' \"dq\" back\\slash \u{0} nul \n nl \r cr \u{1a} sub \t tab"),
            json!("2026-01-05T10:00:00Z"),
            json!("2026-01-05T10:00:00.123456Z"),
            json!({"$b64": "AAE="}),
            json!({"$b64": "w6k="}),
            json!({"other": 1}),
            json!([1, "a"]),
        ];
        for v in &values {
            for t in [None, Some("datetime"), Some("timestamp"), Some("varchar")] {
                let mut ours = String::new();
                push_literal(&mut ours, v, t);
                assert_eq!(ours, to_mysql(v, t).as_sql(false), "{v} as {t:?}");
            }
        }
        let mut ours = String::new();
        push_escaped(&mut ours, "{\"a\":\"x'y\"}");
        assert_eq!(ours, My::Bytes(b"{\"a\":\"x'y\"}".to_vec()).as_sql(false));
    }
}
