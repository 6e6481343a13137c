//! A captured row's stored form, written from its image's JSON texts without building values:
//! the key object and the shipped columns in name order, the order serde_json's maps keep, so
//! the bytes equal those of the same row serialized as a `wire::Row` (the sweep's ledger
//! compares digests of the two). Which columns a table ships, and in which order, is worked
//! out once per table layout (`Projections`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::mapping::TableMapping;
use crate::tailer::binlog::images::Image;
use crate::tailer::binlog::value::ColumnDesc;
use crate::tailer::state::{row_id_of, StoredRow};
use crate::wire::{self, Op};

/// A table layout's key and shipped columns, each by name.
#[derive(Debug)]
struct Projection {
    /// The columns the projection was made for.
    descs: Arc<[ColumnDesc]>,
    /// Key columns sorted by name, with their index in `descs` (`None`: not in the layout,
    /// shipped as null).
    pk: Vec<(String, Option<usize>)>,
    /// Indices in `descs` of the shipped columns that are not key columns, sorted by name.
    data: Vec<usize>,
}

impl Projection {
    fn new(spec: &TableMapping, descs: &Arc<[ColumnDesc]>) -> Self {
        let mut pk: Vec<(String, Option<usize>)> = spec
            .pk
            .iter()
            .map(|c| (c.clone(), descs.iter().position(|d| &d.name == c)))
            .collect();
        pk.sort();
        pk.dedup_by(|a, b| a.0 == b.0);
        let mut data: Vec<usize> = (0..descs.len())
            .filter(|&i| {
                let name = &descs[i].name;
                spec.ships_column(name) && !spec.pk.contains(name)
            })
            .collect();
        data.sort_by(|&a, &b| descs[a].name.cmp(&descs[b].name));
        data.dedup_by(|a, b| descs[*a].name == descs[*b].name);
        Self {
            descs: descs.clone(),
            pk,
            data,
        }
    }
}

/// Projections of the tables seen, per table; a table's is made again when its columns
/// change (a new table map after DDL).
#[derive(Debug, Default)]
pub(super) struct Projections {
    tables: HashMap<String, Projection>,
}

impl Projections {
    /// The canonical key text (`{"obs_id":5}`, as `state::canonical_pk` writes it) and the
    /// stored row of a change of `table` to `image`.
    pub(super) fn row(
        &mut self,
        table: &str,
        spec: &TableMapping,
        op: Op,
        lsn: u64,
        image: &Image,
    ) -> (String, StoredRow) {
        let descs = image.descs();
        let projection = match self.tables.get_mut(table) {
            Some(p) if Arc::ptr_eq(&p.descs, descs) => p,
            _ => {
                let p = Projection::new(spec, descs);
                self.tables.insert(table.to_owned(), p);
                self.tables.get_mut(table).expect("just inserted")
            }
        };
        let mut pk = Vec::with_capacity(32);
        wire::write_object(
            &mut pk,
            projection.pk.iter().map(|(name, i)| {
                let text = i.and_then(|i| image.raw_at(i)).unwrap_or(b"null");
                (name.as_str(), text)
            }),
        );
        let mut json = Vec::with_capacity(64 + pk.len() + image.text_len() * 2);
        let shipped = match op {
            Op::Upsert => projection.data.as_slice(),
            Op::Delete => &[],
        };
        let data = shipped
            .iter()
            .filter_map(|&i| Some((descs[i].name.as_str(), image.raw_at(i)?)));
        wire::write_row(&mut json, table, op, lsn, &pk, data);
        // (JSON texts written by serde_json and `value::write_json` are UTF-8)
        let pk = String::from_utf8(pk)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let id = row_id_of(table, &pk);
        (pk, StoredRow { id, json })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::tailer::binlog::value::write_value;

    fn desc(name: &str) -> ColumnDesc {
        ColumnDesc {
            name: name.into(),
            column_type: mysql_async::consts::ColumnType::MYSQL_TYPE_VARCHAR,
            unsigned: false,
            charset: 45,
            fsp: 0,
            labels: None,
            fixed_len: None,
        }
    }

    /// The stored row as it was made before rows were written from texts: the image as a map,
    /// the key's columns picked out, the rest filtered, the `wire::Row` serialized.
    fn through_maps(spec: &TableMapping, table: &str, op: Op, image: &Image) -> StoredRow {
        let mut map = image.to_map();
        let pk: Map<String, Value> = spec
            .pk
            .iter()
            .map(|c| (c.clone(), map.get(c).cloned().unwrap_or(Value::Null)))
            .collect();
        map.retain(|c, _| spec.ships_column(c) && !spec.pk.contains(c));
        let data = if op == Op::Delete { Map::new() } else { map };
        let row = wire::Row {
            table: table.into(),
            op,
            lsn: 77,
            pk,
            data,
        };
        (&row).into()
    }

    #[test]
    fn rows_from_texts_are_the_bytes_of_rows_through_maps() {
        // GIVEN columns out of name order, a key of two columns (one missing from the layout),
        // an excluded column, a NULL, text that needs escaping, a column absent from the image
        let spec: TableMapping = serde_json::from_value(json!({
            "pk": ["obs_id", "zz_gone"], "role": "visit", "exclude": ["secret"],
        }))
        .unwrap();
        let descs: Arc<[ColumnDesc]> = [
            "value_text",
            "obs_id",
            "secret",
            "person_id",
            "comments",
            "absent",
        ]
        .map(desc)
        .into();
        let mut image = Image::new(descs.clone());
        let values = [
            json!("Zoë \"x\"\n"),
            json!(5),
            json!("salt"),
            json!(79),
            Value::Null,
        ];
        for (i, v) in values.iter().enumerate() {
            image.push(i, |out| write_value(v, out));
        }
        let mut projections = Projections::default();
        for op in [Op::Upsert, Op::Delete] {
            // WHEN the row is written from the image's texts
            let (pk, row) = projections.row("obs", &spec, op, 77, &image);
            // THEN it is byte for byte the row made through maps, and the key text canonical
            let expected = through_maps(&spec, "obs", op, &image);
            assert_eq!(
                String::from_utf8_lossy(&row.json),
                String::from_utf8_lossy(&expected.json)
            );
            assert_eq!(row, expected);
            assert_eq!(pk, r#"{"obs_id":5,"zz_gone":null}"#);
        }
        assert!(!String::from_utf8_lossy(
            &projections.row("obs", &spec, Op::Upsert, 1, &image).1.json
        )
        .contains("salt"));

        // WHEN the table's columns change (a new layout), THEN its projection is made again
        let narrower: Arc<[ColumnDesc]> = ["obs_id", "person_id"].map(desc).into();
        let mut image = Image::new(narrower);
        image.push(0, |out| out.extend_from_slice(b"6"));
        image.push(1, |out| out.extend_from_slice(b"80"));
        let (_, row) = projections.row("obs", &spec, Op::Upsert, 77, &image);
        assert_eq!(row, through_maps(&spec, "obs", Op::Upsert, &image));
    }
}
