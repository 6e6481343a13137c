//! What the decoder knows of a table's columns: from the table map event (types, fractional
//! digits), its optional metadata (names, charsets, signedness, ENUM/SET labels when the source
//! logs FULL row metadata), and `information_schema` for sources that log no names
//! (MySQL 5.7, `binlog_row_metadata=MINIMAL`).

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::Pool;

use super::value::{ColumnDesc, BINARY_CHARSET};

/// Column descriptors of a table map; `sample` is a decoded row (names, charsets, signedness).
pub fn from_table_map(tme: &TableMapEvent<'_>, sample: Option<&BinlogRow>) -> Vec<ColumnDesc> {
    let count = tme.columns_count() as usize;
    let (mut enums, mut sets) = labels_from_metadata(tme);
    (0..count)
        .map(|i| {
            let mut column_type = tme
                .get_column_type(i)
                .ok()
                .flatten()
                .unwrap_or(ColumnType::MYSQL_TYPE_STRING);
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            if column_type == ColumnType::MYSQL_TYPE_STRING {
                // ENUM and SET are logged as STRING with the real type in the metadata.
                if let Some(real) = meta.first().and_then(|b| ColumnType::try_from(*b).ok()) {
                    if matches!(
                        real,
                        ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET
                    ) {
                        column_type = real;
                    }
                }
            }
            let fsp = match column_type {
                ColumnType::MYSQL_TYPE_DATETIME2
                | ColumnType::MYSQL_TYPE_TIME2
                | ColumnType::MYSQL_TYPE_TIMESTAMP2 => meta.first().copied().unwrap_or(0),
                _ => 0,
            };
            let labels = match column_type {
                ColumnType::MYSQL_TYPE_ENUM => enums.next(),
                ColumnType::MYSQL_TYPE_SET => sets.next(),
                _ => None,
            };
            let fixed_len =
                (column_type == ColumnType::MYSQL_TYPE_STRING && meta.len() >= 2).then(|| {
                    let (byte0, byte1) = (meta[0] as usize, meta[1] as usize);
                    if byte0 & 0x30 != 0x30 {
                        byte1 | (((byte0 & 0x30) ^ 0x30) << 4)
                    } else {
                        byte1
                    }
                });
            let col = sample.and_then(|r| r.columns_ref().get(i));
            let is_blob = matches!(
                column_type,
                ColumnType::MYSQL_TYPE_BLOB
                    | ColumnType::MYSQL_TYPE_TINY_BLOB
                    | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
                    | ColumnType::MYSQL_TYPE_LONG_BLOB
            );
            ColumnDesc {
                name: col
                    .map(|c| c.name_str().into_owned())
                    .unwrap_or_else(|| format!("@{i}")),
                column_type,
                unsigned: col.is_some_and(|c| c.flags().contains(ColumnFlags::UNSIGNED_FLAG)),
                charset: col
                    .map(|c| c.character_set())
                    .filter(|c| *c != 0)
                    .unwrap_or(if is_blob { BINARY_CHARSET } else { 0 }),
                fsp,
                labels,
                fixed_len,
            }
        })
        .collect()
}

/// ENUM and SET labels in column order, when the source logs them.
fn labels_from_metadata(
    tme: &TableMapEvent<'_>,
) -> (
    std::vec::IntoIter<Vec<String>>,
    std::vec::IntoIter<Vec<String>>,
) {
    let mut enums = Vec::new();
    let mut sets = Vec::new();
    for field in tme.iter_optional_meta().flatten() {
        match field {
            OptionalMetadataField::EnumStrValue(values) => {
                for column in values.iter_values().flatten() {
                    enums.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(values) => {
                for column in values.iter_values().flatten() {
                    sets.push(
                        column
                            .values()
                            .iter()
                            .map(|v| v.value().into_owned())
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    (enums.into_iter(), sets.into_iter())
}

/// A column as `information_schema` describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Name.
    pub name: String,
    /// ENUM/SET labels.
    pub labels: Option<Vec<String>>,
}

/// The columns of `database.table` in order, from `information_schema`.
pub async fn from_information_schema(
    pool: &Pool,
    database: &str,
    table: &str,
) -> Result<Vec<CatalogColumn>, mysql_async::Error> {
    let mut conn = pool.get_conn().await?;
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, column_type)| CatalogColumn {
            labels: parse_labels(&column_type),
            name,
        })
        .collect())
}

/// Labels of `enum('a','b')` / `set('a','b')` column types (quotes doubled inside).
pub fn parse_labels(column_type: &str) -> Option<Vec<String>> {
    let lower = column_type.to_ascii_lowercase();
    if !lower.starts_with("enum(") && !lower.starts_with("set(") {
        return None;
    }
    let inner = &column_type[column_type.find('(')? + 1..column_type.rfind(')')?];
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                Some('\'') | None => break,
                Some(ch) => label.push(ch),
            }
        }
        labels.push(label);
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_and_set_labels() {
        assert_eq!(
            parse_labels("enum('small','medium')"),
            Some(vec!["small".into(), "medium".into()])
        );
        assert_eq!(
            parse_labels("set('a','it''s')"),
            Some(vec!["a".into(), "it's".into()])
        );
        assert_eq!(parse_labels("int(11)"), None);
    }
}
