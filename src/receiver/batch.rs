//! The request body of `POST /api/v1/stream`: gunzip with caps, parse, validate against the
//! mapping. Every refusal carries the JSON pointer of the first bad field; no message quotes
//! a value (values are patient data).
//!
//! Invariant: a `Batch` that `validate` accepted names only mapped tables, exactly the
//! mapping's primary key columns, no data column twice in a row, and scalar (or `{"$b64"}`)
//! values.

use std::collections::hash_map::{Entry, HashMap};
use std::io::Read;

use serde_json::Value;

use crate::mapping::Mapping;
use crate::wire::{Batch, Columns, SCHEMA_VERSION};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status: 413, 422 or 403.
    pub status: u16,
    /// What is wrong (never a value).
    pub error: String,
    /// JSON pointer of the first bad field ("" for the whole body).
    pub pointer: String,
}

impl Refusal {
    fn new(status: u16, error: impl Into<String>, pointer: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            pointer: pointer.into(),
        }
    }
}

/// Caps on one body.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// After gunzip, bytes.
    pub max_decompressed: usize,
    /// Visits per batch.
    pub max_visits: usize,
    /// Rows per batch.
    pub max_rows: usize,
}

/// Gunzips (when `gzip`) without ever holding more than `max_decompressed + 1` bytes.
pub fn gunzip(body: &[u8], gzip: bool, max_decompressed: usize) -> Result<Vec<u8>, Refusal> {
    if !gzip {
        if body.len() > max_decompressed {
            return Err(Refusal::new(413, "body too large", ""));
        }
        return Ok(body.to_vec());
    }
    let mut out = Vec::with_capacity((body.len() * 4).min(max_decompressed));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(max_decompressed as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|_| Refusal::new(422, "body is not valid gzip (truncated or corrupt)", ""))?;
    if out.len() > max_decompressed {
        return Err(Refusal::new(
            413,
            format!("body decompresses to more than {max_decompressed} bytes"),
            "",
        ));
    }
    Ok(out)
}

/// Parses JSON into a `Batch`, naming the first bad field.
pub fn parse(json: &[u8]) -> Result<Batch, Refusal> {
    // The common case at full speed: the body checked as UTF-8 in one pass, then read as text
    // (no check of each string again); a body that fails is read again with its path tracked,
    // for the pointer of the answer.
    if let Some(batch) = std::str::from_utf8(json)
        .ok()
        .and_then(|text| serde_json::from_str::<Batch>(text).ok())
    {
        return Ok(batch);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let batch: Batch = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let pointer = pointer_of(e.path());
        let inner = e.into_inner();
        let what = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "body is not valid JSON"
            }
            _ => "wrong type or missing field",
        };
        // serde's message may quote a value: keep only its shape ("invalid type: string, expected u64").
        let detail = inner.to_string();
        let detail = detail
            .split(" at line")
            .next()
            .unwrap_or("")
            .split('"')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        Refusal::new(422, format!("{what}: {detail}"), pointer)
    })?;
    de.end()
        .map_err(|_| Refusal::new(422, "trailing data after the JSON body", ""))?;
    Ok(batch)
}

fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut p = String::new();
    for seg in path.iter() {
        p.push('/');
        match seg {
            Segment::Seq { index } => p.push_str(&index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                p.push_str(&key.replace('~', "~0").replace('/', "~1"))
            }
            Segment::Unknown => p.push('?'),
        }
    }
    p
}

/// Checks a parsed batch against the site, the caps and the mapping.
pub fn validate(batch: &Batch, site_id: i64, caps: Caps, mapping: &Mapping) -> Result<(), Refusal> {
    if batch.schema_version != SCHEMA_VERSION {
        return Err(Refusal::new(
            422,
            "unsupported schema_version (1 is supported)",
            "/schema_version",
        ));
    }
    if batch.site_id != site_id {
        return Err(Refusal::new(
            403,
            "batch names another site than the token's",
            "/site_id",
        ));
    }
    if batch.batch_id.is_empty()
        || batch.batch_id.len() > 200
        || !batch.batch_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Refusal::new(
            422,
            "batch_id must be 1-200 printable ASCII characters",
            "/batch_id",
        ));
    }
    if batch.visits.len() > caps.max_visits {
        return Err(Refusal::new(
            413,
            format!("more than {} visits in one batch", caps.max_visits),
            "/visits",
        ));
    }
    let rows: usize = batch.visits.iter().map(|v| v.rows.len()).sum();
    if rows > caps.max_rows {
        return Err(Refusal::new(
            413,
            format!("more than {} rows in one batch", caps.max_rows),
            "/visits",
        ));
    }
    // per table, the last column list found free of repeats
    let mut checked: HashMap<&str, &Columns> = HashMap::new();
    for (vi, visit) in batch.visits.iter().enumerate() {
        let at = |field: &str| format!("/visits/{vi}/{field}");
        let prefix = format!("{site_id}:");
        if !visit.stream_key.starts_with(&prefix) || visit.stream_key.len() > 100 {
            return Err(Refusal::new(
                422,
                "stream_key must start with the site id",
                at("stream_key"),
            ));
        }
        if chrono::NaiveDate::parse_from_str(&visit.visit_date, "%Y-%m-%d").is_err() {
            return Err(Refusal::new(
                422,
                "visit_date must be YYYY-MM-DD",
                at("visit_date"),
            ));
        }
        for (ri, row) in visit.rows.iter().enumerate() {
            let at = |field: &str| format!("/visits/{vi}/rows/{ri}/{field}");
            let Some(spec) = mapping.table(&row.table) else {
                return Err(Refusal::new(422, "unknown table", at("table")));
            };
            if row.lsn > i64::MAX as u64 {
                return Err(Refusal::new(422, "lsn out of range", at("lsn")));
            }
            if row.pk.len() != spec.pk.len() || spec.pk.iter().any(|c| row.pk.get(c).is_none()) {
                return Err(Refusal::new(
                    422,
                    format!("pk must have exactly the columns {:?}", spec.pk),
                    at("pk"),
                ));
            }
            for (c, v) in row.pk.iter() {
                if v.is_null() || !is_scalar(v) {
                    return Err(Refusal::new(
                        422,
                        "pk values must be non-null scalars",
                        format!("{}/{}", at("pk"), escape(c)),
                    ));
                }
            }
            if let Some(c) = repeated_column(&row.data, checked.entry(row.table.as_str())) {
                return Err(Refusal::new(
                    422,
                    "a column appears twice",
                    format!("{}/{}", at("data"), escape(c)),
                ));
            }
            for (c, v) in row.data.iter() {
                if !is_scalar(v) {
                    return Err(Refusal::new(
                        422,
                        "values must be scalars or {\"$b64\": string}",
                        format!("{}/{}", at("data"), escape(c)),
                    ));
                }
                if c.len() > 128 {
                    return Err(Refusal::new(422, "column name too long", at("data")));
                }
            }
        }
    }
    Ok(())
}

/// The first name `columns` repeats, unless it has the names of the list last checked for its
/// table (`last`, which a list found free of repeats replaces): a row's names are checked
/// once per batch and table, not row by row.
fn repeated_column<'a>(
    columns: &'a Columns,
    last: Entry<'_, &'a str, &'a Columns>,
) -> Option<&'a str> {
    if let Entry::Occupied(seen) = &last {
        if seen.get().named_like(columns) {
            return None;
        }
    }
    let mut names: Vec<&str> = columns.names().iter().map(|n| n.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Some(pair[0]);
    }
    last.insert_entry(columns);
    None
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A scalar, or binary as `{"$b64": "..."}` with valid base64.
pub fn is_scalar(v: &Value) -> bool {
    match v {
        Value::Array(_) => false,
        Value::Object(o) => {
            use base64::Engine;
            o.len() == 1
                && o.get("$b64")
                    .and_then(Value::as_str)
                    .is_some_and(|s| base64::engine::general_purpose::STANDARD.decode(s).is_ok())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn mapping() -> Mapping {
        Mapping::load(Path::new("mappings/openmrs.toml")).unwrap()
    }

    const CAPS: Caps = Caps {
        max_decompressed: 1 << 20,
        max_visits: 100,
        max_rows: 1000,
    };

    fn body(row: &str) -> String {
        format!(
            r#"{{"schema_version":1,"site_id":101,"batch_id":"b1","visits":[{{"stream_key":"101:5:1:2026-01-02","patient_id":5,"program_id":1,"visit_date":"2026-01-02","version":1,"complete":true,"rows":[{row}]}}]}}"#
        )
    }

    #[test]
    fn accepts_a_good_batch() {
        let b = parse(body(r#"{"table":"obs","op":"upsert","lsn":5,"pk":{"obs_id":1},"data":{"value_numeric":1.5,"x":{"$b64":"AAE="}}}"#).as_bytes()).unwrap();
        validate(&b, 101, CAPS, &mapping()).unwrap();
    }

    #[test]
    fn names_the_first_bad_field() {
        let e = parse(
            body(r#"{"table":"obs","op":"upsert","lsn":"five","pk":{"obs_id":1}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.pointer, "/visits/0/rows/0/lsn");
        assert_eq!(e.status, 422);
        assert!(!e.error.contains("five"), "{}", e.error);
        let b = parse(
            body(r#"{"table":"obs; DROP TABLE obs","op":"upsert","lsn":5,"pk":{"obs_id":1}}"#)
                .as_bytes(),
        )
        .unwrap();
        let e = validate(&b, 101, CAPS, &mapping()).unwrap_err();
        assert_eq!(
            (e.status, e.pointer.as_str()),
            (422, "/visits/0/rows/0/table")
        );
        let b = parse(
            body(r#"{"table":"obs","op":"upsert","lsn":5,"pk":{"obs_id":1},"data":{"v":[1]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            validate(&b, 101, CAPS, &mapping()).unwrap_err().pointer,
            "/visits/0/rows/0/data/v"
        );
    }

    #[test]
    fn a_column_sent_twice_is_refused_also_after_rows_named_alike() {
        let row = |data: &str| {
            format!(r#"{{"table":"obs","op":"upsert","lsn":5,"pk":{{"obs_id":1}},"data":{data}}}"#)
        };
        let rows = [
            row(r#"{"v":1,"w":2}"#),
            row(r#"{"v":1,"w":2}"#),
            row(r#"{"v":1,"w":2,"v":3}"#),
        ];
        let b = parse(body(&rows[..2].join(",")).as_bytes()).unwrap();
        validate(&b, 101, CAPS, &mapping()).unwrap();
        let b = parse(body(&rows.join(",")).as_bytes()).unwrap();
        let e = validate(&b, 101, CAPS, &mapping()).unwrap_err();
        assert_eq!(
            (e.status, e.pointer.as_str()),
            (422, "/visits/0/rows/2/data/v")
        );
        // a key sent twice is not the key's columns
        let b = parse(
            body(r#"{"table":"obs","op":"delete","lsn":5,"pk":{"obs_id":1,"obs_id":2}}"#)
                .as_bytes(),
        )
        .unwrap();
        let e = validate(&b, 101, CAPS, &mapping()).unwrap_err();
        assert_eq!((e.status, e.pointer.as_str()), (422, "/visits/0/rows/0/pk"));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let mut bytes = body(r#"{"table":"obs","op":"upsert","lsn":5,"pk":{"obs_id":1},"data":{"value_text":"Zo?"}}"#)
            .into_bytes();
        let at = bytes.iter().position(|&b| b == b'?').unwrap();
        bytes[at] = 0xff;
        let e = parse(&bytes).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.error.starts_with("body is not valid JSON"), "{}", e.error);
    }

    #[test]
    fn another_site_is_403() {
        let b =
            parse(body(r#"{"table":"obs","op":"delete","lsn":5,"pk":{"obs_id":1}}"#).as_bytes())
                .unwrap();
        assert_eq!(validate(&b, 102, CAPS, &mapping()).unwrap_err().status, 403);
    }

    #[test]
    fn gzip_bomb_is_413_and_truncation_422() {
        let zeros = vec![0u8; 8 << 20];
        let gz = crate::wire::gzip(&zeros);
        assert!(gz.len() < 64 << 10);
        assert_eq!(gunzip(&gz, true, 1 << 20).unwrap_err().status, 413);
        assert_eq!(
            gunzip(&gz[..gz.len() / 2], true, 16 << 20)
                .unwrap_err()
                .status,
            422
        );
        assert_eq!(gunzip(&crate::wire::gzip(b"{}"), true, 100).unwrap(), b"{}");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic fuzz of the decoder: random bytes, gzipped random bytes,
        // and random truncations of a valid body.
        let valid = body(r#"{"table":"obs","op":"upsert","lsn":5,"pk":{"obs_id":1}}"#);
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = gunzip(&bytes, true, 1 << 16).map(|j| parse(&j));
            let _ = parse(&bytes);
            let cut = (next() as usize) % valid.len();
            let _ = parse(&valid.as_bytes()[..cut]).map(|b| validate(&b, 101, CAPS, &mapping()));
            let mut flipped = valid.clone().into_bytes();
            let i = (next() as usize) % flipped.len();
            flipped[i] = next() as u8;
            let _ = parse(&flipped).map(|b| validate(&b, 101, CAPS, &mapping()));
        }
    }
}
