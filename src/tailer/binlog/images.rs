//! Row images straight to wire JSON text: the rows event's images are framed here (column
//! bitmaps, null bitmap), each value is read by mysql_common's own binlog value decoder and
//! written as its wire JSON text (`value::write_json`) into the row's [`Image`]. mysql_common's
//! row iterator builds a `Column` (names, schema, flags) and re-reads the table map's optional
//! metadata for every row; this reads the table map once per table (`Layout`) and builds
//! nothing per row but the image's text.
//!
//! Equivalence with mysql_common's rows + `to_json` written by serde_json is checked on every
//! type fixture (FULL and MINIMAL metadata) and on random row images of every column type
//! (tests/decode_differential.rs).

use std::io;
use std::sync::Arc;

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

/// One row image as wire JSON: each present column's value written once as its JSON text,
/// into one buffer. Building one costs two allocations whatever the row's width, and the
/// tailer splices the texts into the rows it stores (`tailer::capture`); the few columns that
/// place a row are read back with [`Image::value`].
#[derive(Clone, PartialEq)]
pub struct Image {
    descs: Arc<[ColumnDesc]>,
    text: Vec<u8>,
    /// Per present column, in column order: its index in `descs` and where its text ends.
    cols: Vec<(u32, u32)>,
}

impl Image {
    /// An empty image of a table with columns `descs`.
    pub fn new(descs: Arc<[ColumnDesc]>) -> Self {
        let width = descs.len();
        Self {
            descs,
            text: Vec::with_capacity(width * 12),
            cols: Vec::with_capacity(width),
        }
    }

    /// Appends column `i`'s value, its JSON text written by `write` (columns in ascending
    /// order).
    pub fn push(&mut self, i: usize, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.text);
        self.cols.push((i as u32, self.text.len() as u32));
    }

    /// Bytes of the values' JSON texts, all columns together.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The table's columns.
    pub fn descs(&self) -> &Arc<[ColumnDesc]> {
        &self.descs
    }

    /// The JSON text of column `i`'s value, when the image holds it.
    pub fn raw_at(&self, i: usize) -> Option<&[u8]> {
        let k = self.cols.binary_search_by_key(&(i as u32), |c| c.0).ok()?;
        let start = if k == 0 { 0 } else { self.cols[k - 1].1 };
        Some(&self.text[start as usize..self.cols[k].1 as usize])
    }

    /// The JSON text of the value of the column named `name`, when the image holds it.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.raw_at(self.descs.iter().position(|d| d.name == name)?)
    }

    /// The value of the column named `name`, when the image holds it.
    pub fn value(&self, name: &str) -> Option<Json> {
        serde_json::from_slice(self.raw(name)?).ok()
    }

    /// (column name, JSON text) of every column held, in column order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut start = 0;
        self.cols.iter().map(move |&(i, end)| {
            let text = &self.text[start..end as usize];
            start = end as usize;
            (self.descs[i as usize].name.as_str(), text)
        })
    }

    /// The image as a map of column name → value.
    pub fn to_map(&self) -> Map<String, Json> {
        self.iter()
            .map(|(name, text)| {
                (
                    name.to_owned(),
                    serde_json::from_slice(text).unwrap_or(Json::Null),
                )
            })
            .collect()
    }
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(name, text)| (name, String::from_utf8_lossy(text))),
            )
            .finish()
    }
}

/// One row: its before and after images, as present in the event.
pub type Images = (Option<Image>, Option<Image>);

/// Decodes every row of `event`; `None` when this path does not handle the event (partial
/// JSON updates), so the caller uses mysql_common's rows instead.
pub fn decode<'a>(
    event: &'a RowsEventData<'_>,
    layout: &'a Layout,
    descs: &Arc<[ColumnDesc]>,
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
    descs: &Arc<[ColumnDesc]>,
) -> io::Result<Image> {
    let nulls: &[u8] = buf.parse(present.len().div_ceil(8))?;
    let mut image = Image::new(descs.clone());
    for (k, &i) in present.iter().enumerate() {
        let (ty, meta) = &layout.columns[i];
        let desc = &descs[i];
        if nulls[k / 8] & (1 << (k % 8)) != 0 {
            image.push(i, |out| out.extend_from_slice(b"null"));
        } else {
            let v: BinlogValue<'_> = buf.parse((*ty, meta.as_slice(), desc.unsigned, false))?;
            match v {
                BinlogValue::Value(v) => image.push(i, |out| value::write_json(v, desc, out)),
                other => image.push(i, |out| value::write_value(&wire(other, desc), out)),
            }
        }
    }
    Ok(image)
}

/// mysql_common's rows of `event`, each value turned into its wire JSON value and written by
/// serde_json: the reference the direct path must equal (its values are written without
/// building JSON values, `value::write_json`), and the path for the events it does not handle.
pub fn through_mysql_common(
    event: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    descs: &Arc<[ColumnDesc]>,
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

/// A row decoded by mysql_common, as an image.
fn row_image(row: BinlogRow, descs: &Arc<[ColumnDesc]>) -> Image {
    let mut image = Image::new(descs.clone());
    for (i, v) in row.unwrap().into_iter().enumerate() {
        let Some(desc) = descs.get(i) else { continue };
        image.push(i, |out| value::write_value(&wire(v, desc), out));
    }
    image
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
