//! Row images straight to wire JSON: the rows event's images are framed here (column bitmaps,
//! null bitmap) and each value is read by mysql_common's own binlog value decoder, then turned
//! into its wire JSON (`value::to_json`). mysql_common's row iterator builds a `Column` (names,
//! schema, flags) and re-reads the table map's optional metadata for every row; this reads the
//! table map once per table (`Layout`) and builds nothing per row but the JSON.
//!
//! Equivalence with mysql_common's rows + `to_json` is checked on every type fixture (FULL
//! and MINIMAL metadata) and on random row images of every column type (`tests`).

use std::io;

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use mysql_common::io::ParseBuf;
use serde_json::{Map, Value as Json};

use super::value::{self, ColumnDesc};

/// A table's column types and metadata, as its table map logs them.
#[derive(Debug, Clone)]
pub struct Layout {
    columns: Vec<(ColumnType, Vec<u8>)>,
}

impl Layout {
    /// The layout of `tme`'s columns; `None` when a type is one this path leaves to
    /// mysql_common (an unknown type code, typed arrays).
    pub fn of(tme: &TableMapEvent<'_>) -> Option<Layout> {
        let columns = (0..tme.columns_count() as usize)
            .map(|i| {
                let ty = tme.get_column_type(i).ok().flatten()?;
                if ty == ColumnType::MYSQL_TYPE_TYPED_ARRAY {
                    return None;
                }
                Some((ty, tme.get_column_metadata(i).unwrap_or(&[]).to_vec()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Layout { columns })
    }

    /// Whether `tme` logs these columns (types and metadata), read in place.
    pub fn matches(&self, tme: &TableMapEvent<'_>) -> bool {
        self.columns.len() == tme.columns_count() as usize
            && self.columns.iter().enumerate().all(|(i, (ty, meta))| {
                tme.get_column_type(i).ok().flatten() == Some(*ty)
                    && tme.get_column_metadata(i).unwrap_or(&[]) == meta.as_slice()
            })
    }
}

/// One row: its before and after images (column name → wire JSON), as present in the event.
pub type Images = (Option<Map<String, Json>>, Option<Map<String, Json>>);

/// Decodes every row of `event`; `None` when this path does not handle the event (partial
/// JSON updates), so the caller uses mysql_common's rows instead.
pub fn decode<'a>(
    event: &'a RowsEventData<'_>,
    layout: &'a Layout,
    descs: &[ColumnDesc],
) -> Option<io::Result<Vec<Images>>> {
    if matches!(event, RowsEventData::PartialUpdateRowsEvent(_))
        || layout.columns.len() != event.num_columns() as usize
        || descs.len() != layout.columns.len()
    {
        return None;
    }
    let before: Option<Vec<usize>> = event
        .columns_before_image()
        .map(|bits| bits.iter_ones().collect());
    let after: Option<Vec<usize>> = event
        .columns_after_image()
        .map(|bits| bits.iter_ones().collect());
    let mut buf = ParseBuf(event.rows_data());
    let mut rows = Vec::new();
    let result = (|| {
        while !buf.is_empty() {
            let b = match &before {
                Some(cols) => Some(image(&mut buf, cols, layout, descs)?),
                None => None,
            };
            let a = match &after {
                Some(cols) => Some(image(&mut buf, cols, layout, descs)?),
                None => None,
            };
            rows.push((b, a));
        }
        Ok(())
    })();
    Some(result.map(|()| rows))
}

/// One image: the null bitmap of its present columns, then each non-null value.
fn image<'a>(
    buf: &mut ParseBuf<'a>,
    present: &[usize],
    layout: &'a Layout,
    descs: &[ColumnDesc],
) -> io::Result<Map<String, Json>> {
    let nulls: &[u8] = buf.parse(present.len().div_ceil(8))?;
    let mut map = Map::new();
    for (k, &i) in present.iter().enumerate() {
        let (ty, meta) = &layout.columns[i];
        let desc = &descs[i];
        let json = if nulls[k / 8] & (1 << (k % 8)) != 0 {
            Json::Null
        } else {
            let v: BinlogValue<'_> = buf.parse((*ty, meta.as_slice(), desc.unsigned, false))?;
            wire(v, desc)
        };
        map.insert(desc.name.clone(), json);
    }
    Ok(map)
}

/// mysql_common's rows of `event`, each value turned into its wire JSON: the reference the
/// direct path must equal, and the path for the events it does not handle.
pub fn through_mysql_common(
    event: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    descs: &[ColumnDesc],
) -> io::Result<Vec<Images>> {
    let mut out = Vec::new();
    for row in event.rows(tme) {
        let (b, a) = row?;
        out.push((
            b.map(|r| row_image(r, descs)),
            a.map(|r| row_image(r, descs)),
        ));
    }
    Ok(out)
}

/// A row decoded by mysql_common as column name → wire value.
fn row_image(row: BinlogRow, descs: &[ColumnDesc]) -> Map<String, Json> {
    let mut map = Map::new();
    for (i, v) in row.unwrap().into_iter().enumerate() {
        let Some(desc) = descs.get(i) else { continue };
        map.insert(desc.name.clone(), wire(v, desc));
    }
    map
}

/// A decoded binlog value as wire JSON.
pub fn wire(v: BinlogValue<'_>, desc: &ColumnDesc) -> Json {
    match v {
        BinlogValue::Value(v) => value::to_json(v, desc),
        // MySQL's binary JSON travels as its text, like MariaDB's JSON (a LONGTEXT).
        BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j) {
            Ok(v) => Json::String(v.to_string()),
            Err(_) => Json::Null,
        },
        // Partial JSON updates need binlog_row_value_options=PARTIAL_JSON, refused at start.
        BinlogValue::JsonDiff(_) => Json::Null,
    }
}
