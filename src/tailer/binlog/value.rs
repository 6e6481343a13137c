//! Binlog column values → wire JSON values (DESIGN.md, "Wire contract").
//!
//! Integers as numbers (u64 beyond 2^53 as strings), DECIMAL as strings, dates `YYYY-MM-DD`,
//! datetimes `YYYY-MM-DD HH:MM:SS[.ffffff]`, TIMESTAMP as UTC RFC 3339, TIME as
//! `[-]HHH:MM:SS[.ffffff]`, text decoded with the column's charset, binary as
//! `{"$b64": "..."}`. Zero dates are carried as the stated text (`0000-00-00`).
//!
//! Invariant: decoding never panics and never drops a value; bytes that do not decode in the
//! column's charset travel as base64.

use base64::Engine;
use mysql_async::consts::ColumnType;
use mysql_async::Value;
use serde_json::{json, Value as Json};

/// What the decoder needs to know of a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDesc {
    /// Column name.
    pub name: String,
    /// The real type (ENUM/SET resolved from the STRING type's metadata).
    pub column_type: ColumnType,
    /// UNSIGNED numeric.
    pub unsigned: bool,
    /// Collation id (63 = binary); 0 when unknown.
    pub charset: u16,
    /// Fractional seconds digits of temporal types.
    pub fsp: u8,
    /// ENUM / SET labels, when the source logs them or information_schema gave them.
    pub labels: Option<Vec<String>>,
    /// Declared byte length of fixed-length CHAR/BINARY columns.
    pub fixed_len: Option<usize>,
}

const MAX_SAFE_INT: u64 = (1 << 53) - 1;
/// Collation id of the binary charset.
pub const BINARY_CHARSET: u16 = 63;

/// Converts one value of `col` to its wire JSON.
pub fn to_json(value: Value, col: &ColumnDesc) -> Json {
    use ColumnType::*;
    match value {
        Value::NULL => Json::Null,
        Value::Int(i) => int_to_json(i, col),
        Value::UInt(u) => uint_to_json(u),
        // The shortest text that reads back as the same f32 (0.1, not 0.10000000149011612).
        Value::Float(f) => float_to_json(f.to_string().parse().unwrap_or(f as f64)),
        Value::Double(f) => float_to_json(f),
        Value::Date(y, m, d, h, i, s, us) => match col.column_type {
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Json::String(format!("{y:04}-{m:02}-{d:02}")),
            _ => Json::String(format!(
                "{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}{}",
                fraction(us, col.fsp)
            )),
        },
        Value::Time(neg, days, h, i, s, us) => {
            let hours = days as u64 * 24 + h as u64;
            let sign = if neg { "-" } else { "" };
            Json::String(format!(
                "{sign}{hours:02}:{i:02}:{s:02}{}",
                fraction(us, col.fsp)
            ))
        }
        Value::Bytes(bytes) => bytes_to_json(bytes, col),
    }
}

/// Writes one value of `col` as its wire JSON text: the same text as `to_json`'s value
/// serialized by serde_json, without building the value for the common types (integers,
/// dates and datetimes, text in a UTF-8 or ASCII charset). The others go through `to_json`.
pub fn write_json(value: Value, col: &ColumnDesc, out: &mut Vec<u8>) {
    use std::io::Write;
    use ColumnType::*;
    match value {
        Value::NULL => out.extend_from_slice(b"null"),
        Value::Date(y, m, d, h, i, s, us) => {
            // (writing to a Vec cannot fail)
            let _ = match col.column_type {
                MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => write!(out, "\"{y:04}-{m:02}-{d:02}\""),
                _ if us == 0 && col.fsp == 0 => {
                    write!(out, "\"{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}\"")
                }
                _ => write!(
                    out,
                    "\"{y:04}-{m:02}-{d:02} {h:02}:{i:02}:{s:02}{}\"",
                    fraction(us, col.fsp)
                ),
            };
        }
        Value::Bytes(bytes) if is_plain_text(col) => match std::str::from_utf8(&bytes) {
            Ok(text) => crate::wire::write_str(out, text),
            Err(_) => write_value(&bytes_to_json(bytes, col), out),
        },
        other => write_value(&to_json(other, col), out),
    }
}

/// Whether `col`'s bytes are text in a UTF-8 or ASCII charset that `to_json` passes through
/// unchanged (`decode_text`).
fn is_plain_text(col: &ColumnDesc) -> bool {
    use ColumnType::*;
    matches!(
        col.column_type,
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_STRING
    ) && matches!(charset_kind(col.charset), Charset::Ascii | Charset::Utf8)
}

/// Writes a JSON value as serde_json writes it.
pub fn write_value(json: &Json, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, json);
}

fn int_to_json(i: i64, col: &ColumnDesc) -> Json {
    use ColumnType::*;
    let v = match col.column_type {
        // MEDIUMINT: the binlog carries 24 bits; make sure the sign is right.
        MYSQL_TYPE_INT24 if !col.unsigned && (1 << 23..1 << 24).contains(&i) => i - (1 << 24),
        MYSQL_TYPE_INT24 if col.unsigned && i < 0 => i + (1 << 24),
        MYSQL_TYPE_TINY if col.unsigned && i < 0 => i + (1 << 8),
        MYSQL_TYPE_SHORT if col.unsigned && i < 0 => i + (1 << 16),
        MYSQL_TYPE_LONG if col.unsigned && i < 0 => i + (1 << 32),
        MYSQL_TYPE_LONGLONG if col.unsigned => return uint_to_json(i as u64),
        // TIMESTAMP (old format) arrives as epoch seconds.
        MYSQL_TYPE_TIMESTAMP => return epoch_to_rfc3339(i, 0, 0),
        // ENUM arrives as its 1-based index; 0 is MySQL's '' error value.
        MYSQL_TYPE_ENUM => {
            return match (&col.labels, i) {
                (_, 0) => Json::String(String::new()),
                (Some(labels), i) => labels
                    .get(i as usize - 1)
                    .map(|l| Json::String(l.clone()))
                    .unwrap_or_else(|| json!(i)),
                (None, i) => json!(i),
            }
        }
        _ => i,
    };
    json!(v)
}

fn uint_to_json(u: u64) -> Json {
    if u > MAX_SAFE_INT {
        Json::String(u.to_string())
    } else {
        json!(u)
    }
}

fn float_to_json(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(f.to_string()))
}

fn fraction(us: u32, fsp: u8) -> String {
    if fsp == 0 && us == 0 {
        return String::new();
    }
    let digits = if fsp == 0 { 6 } else { fsp.min(6) as usize };
    let full = format!("{us:06}");
    format!(".{}", &full[..digits])
}

fn epoch_to_rfc3339(secs: i64, micros: u32, fsp: u8) -> Json {
    if secs == 0 && micros == 0 {
        // MySQL's zero TIMESTAMP
        return Json::String("0000-00-00 00:00:00".into());
    }
    match chrono::DateTime::from_timestamp(secs, micros * 1000) {
        Some(t) => Json::String(format!(
            "{}{}Z",
            t.format("%Y-%m-%dT%H:%M:%S"),
            fraction(micros, fsp)
        )),
        None => Json::String(secs.to_string()),
    }
}

fn bytes_to_json(bytes: Vec<u8>, col: &ColumnDesc) -> Json {
    use ColumnType::*;
    match col.column_type {
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => {
            let text = String::from_utf8_lossy(&bytes);
            let (secs, micros) = match text.split_once('.') {
                Some((s, f)) => (s.parse().unwrap_or(0), f.parse().unwrap_or(0)),
                None => (text.parse().unwrap_or(0), 0),
            };
            epoch_to_rfc3339(secs, micros, col.fsp)
        }
        MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
            Json::String(String::from_utf8_lossy(&bytes).into_owned())
        }
        MYSQL_TYPE_YEAR => String::from_utf8_lossy(&bytes)
            .parse::<i64>()
            .map(|y| json!(y))
            .unwrap_or_else(|_| b64(&bytes)),
        MYSQL_TYPE_BIT => {
            let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | *b as u64);
            uint_to_json(v)
        }
        // SET arrives as a little-endian bitmask of its members.
        MYSQL_TYPE_SET => {
            let mask = bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | *b as u64);
            match &col.labels {
                Some(labels) => Json::String(
                    labels
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i < 64 && mask & (1 << i) != 0)
                        .map(|(_, l)| l.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => uint_to_json(mask),
            }
        }
        // BINARY(n) is padded with zero bytes by the server; the binlog drops the padding.
        MYSQL_TYPE_STRING if col.charset == BINARY_CHARSET => {
            let mut bytes = bytes;
            if let Some(n) = col.fixed_len.filter(|n| *n > bytes.len() && *n <= 255) {
                bytes.resize(n, 0);
            }
            b64(&bytes)
        }
        _ => decode_text(bytes, col.charset),
    }
}

/// Text in the column's charset, or base64 for binary and undecodable bytes.
pub fn decode_text(bytes: Vec<u8>, charset: u16) -> Json {
    match charset_kind(charset) {
        Charset::Binary => b64(&bytes),
        Charset::Latin1 => Json::String(bytes.iter().map(|&b| cp1252(b)).collect()),
        Charset::Ascii | Charset::Utf8 => match String::from_utf8(bytes) {
            Ok(s) => Json::String(s),
            Err(e) => b64(e.as_bytes()),
        },
    }
}

fn b64(bytes: &[u8]) -> Json {
    json!({ "$b64": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

enum Charset {
    Binary,
    Latin1,
    Ascii,
    Utf8,
}

/// Maps a collation id to the charset family we decode; unknown ids are treated as UTF-8
/// (with the base64 fallback), which is what MariaDB/MySQL default to.
fn charset_kind(id: u16) -> Charset {
    match id {
        BINARY_CHARSET => Charset::Binary,
        5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 => Charset::Latin1,
        11 | 65 => Charset::Ascii,
        _ => Charset::Utf8,
    }
}

/// MySQL's `latin1` is Windows-1252.
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9f => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: ColumnType, unsigned: bool, charset: u16, fsp: u8) -> ColumnDesc {
        ColumnDesc {
            name: "c".into(),
            column_type: t,
            unsigned,
            charset,
            fsp,
            labels: None,
            fixed_len: None,
        }
    }

    #[test]
    fn mediumint_sign_and_unsigned_widths() {
        let c = col(ColumnType::MYSQL_TYPE_INT24, false, 0, 0);
        assert_eq!(to_json(Value::Int(0xFFFFFF), &c), json!(-1));
        assert_eq!(to_json(Value::Int(-8388608), &c), json!(-8388608));
        let u = col(ColumnType::MYSQL_TYPE_TINY, true, 0, 0);
        assert_eq!(to_json(Value::Int(-1), &u), json!(255));
        let big = col(ColumnType::MYSQL_TYPE_LONGLONG, true, 0, 0);
        assert_eq!(
            to_json(Value::UInt(u64::MAX), &big),
            json!("18446744073709551615")
        );
    }

    #[test]
    fn temporal_values() {
        let d = col(ColumnType::MYSQL_TYPE_DATE, false, 0, 0);
        assert_eq!(
            to_json(Value::Date(0, 0, 0, 0, 0, 0, 0), &d),
            json!("0000-00-00")
        );
        let dt = col(ColumnType::MYSQL_TYPE_DATETIME2, false, 0, 3);
        assert_eq!(
            to_json(Value::Date(2024, 2, 29, 13, 5, 9, 123000), &dt),
            json!("2024-02-29 13:05:09.123")
        );
        let t = col(ColumnType::MYSQL_TYPE_TIME2, false, 0, 0);
        assert_eq!(
            to_json(Value::Time(true, 1, 2, 3, 4, 0), &t),
            json!("-26:03:04")
        );
        let ts = col(ColumnType::MYSQL_TYPE_TIMESTAMP2, false, 0, 0);
        assert_eq!(
            to_json(Value::Bytes(b"1700000000".to_vec()), &ts),
            json!("2023-11-14T22:13:20Z")
        );
    }

    #[test]
    fn enum_set_labels_and_float() {
        let mut e = col(ColumnType::MYSQL_TYPE_ENUM, false, 0, 0);
        e.labels = Some(vec!["small".into(), "large".into()]);
        assert_eq!(to_json(Value::Int(2), &e), json!("large"));
        assert_eq!(to_json(Value::Int(0), &e), json!(""));
        let mut s = col(ColumnType::MYSQL_TYPE_SET, false, 0, 0);
        s.labels = Some(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(to_json(Value::Bytes(vec![0b101]), &s), json!("a,c"));
        let f = col(ColumnType::MYSQL_TYPE_FLOAT, false, 0, 0);
        assert_eq!(to_json(Value::Float(0.1), &f), json!(0.1));
    }

    #[test]
    fn written_text_equals_the_value_serialized() {
        use ColumnType::*;
        let mut labelled = col(MYSQL_TYPE_ENUM, false, 0, 0);
        labelled.labels = Some(vec!["a".into()]);
        let cases = [
            (Value::NULL, col(MYSQL_TYPE_LONG, false, 0, 0)),
            (Value::Int(-7), col(MYSQL_TYPE_LONG, false, 0, 0)),
            (Value::Int(-1), col(MYSQL_TYPE_LONG, true, 0, 0)),
            (Value::UInt(u64::MAX), col(MYSQL_TYPE_LONGLONG, true, 0, 0)),
            (Value::Int(1), labelled),
            (Value::Double(0.1), col(MYSQL_TYPE_DOUBLE, false, 0, 0)),
            (
                Value::Date(2024, 2, 29, 0, 0, 0, 0),
                col(MYSQL_TYPE_DATE, false, 0, 0),
            ),
            (
                Value::Date(2024, 2, 29, 13, 5, 9, 0),
                col(MYSQL_TYPE_DATETIME2, false, 0, 0),
            ),
            (
                Value::Date(2024, 2, 29, 13, 5, 9, 120),
                col(MYSQL_TYPE_DATETIME2, false, 0, 0),
            ),
            (
                Value::Date(2024, 2, 29, 13, 5, 9, 123000),
                col(MYSQL_TYPE_DATETIME2, false, 0, 3),
            ),
            (
                Value::Time(true, 1, 2, 3, 4, 5),
                col(MYSQL_TYPE_TIME2, false, 0, 6),
            ),
            (
                Value::Bytes(b"say \"hi\"\n\x01\\/".to_vec()),
                col(MYSQL_TYPE_VARCHAR, false, 45, 0),
            ),
            (
                Value::Bytes("Zoë".as_bytes().to_vec()),
                col(MYSQL_TYPE_BLOB, false, 224, 0),
            ),
            (
                Value::Bytes(vec![0xff, 0xfe]),
                col(MYSQL_TYPE_VARCHAR, false, 45, 0),
            ),
            (
                Value::Bytes(b"ab".to_vec()),
                col(MYSQL_TYPE_STRING, false, 11, 0),
            ),
            (
                Value::Bytes(b"ab".to_vec()),
                col(MYSQL_TYPE_STRING, false, BINARY_CHARSET, 0),
            ),
            (
                Value::Bytes(b"Caf\xe9".to_vec()),
                col(MYSQL_TYPE_VARCHAR, false, 8, 0),
            ),
            (
                Value::Bytes(b"12.50".to_vec()),
                col(MYSQL_TYPE_NEWDECIMAL, false, 0, 0),
            ),
            (
                Value::Bytes(b"1700000000".to_vec()),
                col(MYSQL_TYPE_TIMESTAMP2, false, 0, 0),
            ),
        ];
        for (value, c) in cases {
            let mut written = Vec::new();
            write_json(value.clone(), &c, &mut written);
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&to_json(value.clone(), &c)).unwrap(),
                "{value:?} as {:?}",
                c.column_type
            );
        }
    }

    #[test]
    fn text_by_charset() {
        let latin1 = col(ColumnType::MYSQL_TYPE_VARCHAR, false, 8, 0);
        assert_eq!(
            to_json(Value::Bytes(b"Caf\xe9".to_vec()), &latin1),
            json!("Café")
        );
        let utf8 = col(ColumnType::MYSQL_TYPE_VARCHAR, false, 45, 0);
        assert_eq!(
            to_json(Value::Bytes("Zoë".as_bytes().to_vec()), &utf8),
            json!("Zoë")
        );
        assert_eq!(
            to_json(Value::Bytes(vec![0xff, 0xfe]), &utf8),
            json!({"$b64": "//4="})
        );
        let bin = col(ColumnType::MYSQL_TYPE_BLOB, false, 63, 0);
        assert_eq!(
            to_json(Value::Bytes(vec![0, 1]), &bin),
            json!({"$b64": "AAE="})
        );
    }
}
