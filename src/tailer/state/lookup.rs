//! The lookup index: the visit of every row that others are placed through (an encounter, an
//! order), by the row's key.
//!
//! Rows with a single non-negative integer key (all of OpenMRS's) are kept in blocks of
//! [`BLOCK`] consecutive ids, one sled value each (`table \0 \x01 id/BLOCK`, big-endian): a
//! group of a backlog brings hundreds of new encounters and orders with consecutive ids, and
//! writing each as its own sled key was most of capture's sled work (its inserts and its tree's
//! node splits). A group now rewrites the few blocks its ids fall in. Other keys keep one entry
//! each, under `table \0 canonical-pk-json` (the layout every entry had before blocks; a store
//! written before them is read through it).
//!
//! A block's value is its entries one after another, each: the id's slot in the block (u8),
//! patient id (i64 LE), program id (i64 LE), the visit date's length (u8) and bytes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};
use smol_str::SmolStr;

use super::{abort, decode, encode, keys, State, StateError};
use crate::tailer::visit::VisitKey;

/// Ids per block.
const BLOCK: u64 = 64;
/// Marks a block's key (a legacy key's text starts with `{`).
const BLOCK_MARK: u8 = 1;

/// The key of a row that others look up through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LookupId {
    /// A single-column key holding a non-negative integer (kept in blocks).
    Int(u64),
    /// Any other key, as its canonical text (`canonical_pk`).
    Text(String),
}

impl LookupId {
    /// The id of the row of a table with the single key column `column` whose key value is
    /// `id`.
    pub fn of(column: &str, id: &Value) -> Self {
        match id.as_u64() {
            Some(n) => LookupId::Int(n),
            None => {
                let mut pk = Map::new();
                pk.insert(column.to_owned(), id.clone());
                LookupId::Text(keys::canonical_pk(&pk))
            }
        }
    }

    /// The id of a row whose key columns are `columns`, their canonical text `pk_text`, and
    /// whose values `value` gives by name: [`LookupId::of`] for a single column, so that the
    /// rows placed through it find it.
    pub fn of_row(
        columns: &[String],
        pk_text: &str,
        value: impl Fn(&str) -> Option<Value>,
    ) -> Self {
        match (columns, columns.first().and_then(|c| value(c))) {
            ([column], Some(id)) => Self::of(column, &id),
            _ => LookupId::Text(pk_text.to_owned()),
        }
    }
}

/// A lookup entry's key: the table and the row's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupKey {
    /// The table.
    pub table: SmolStr,
    /// The row's key.
    pub id: LookupId,
}

fn block_key(table: &str, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 10);
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.push(BLOCK_MARK);
    k.extend_from_slice(&block.to_be_bytes());
    k
}

/// One entry of a block's value, as stored (nothing copied out of the value).
struct Entry<'a> {
    slot: u8,
    patient_id: i64,
    program_id: i64,
    date: &'a [u8],
}

impl Entry<'_> {
    fn key(&self) -> Result<VisitKey, StateError> {
        Ok(VisitKey {
            patient_id: self.patient_id,
            program_id: self.program_id,
            visit_date: String::from_utf8(self.date.to_vec())
                .map_err(|_| StateError::Malformed("lookup block"))?,
        })
    }
}

/// The entries of a block's value, in the order stored.
fn entries(block: &[u8]) -> Result<Vec<Entry<'_>>, StateError> {
    let bad = || StateError::Malformed("lookup block");
    let mut out = Vec::new();
    let mut rest = block;
    while !rest.is_empty() {
        let (head, tail) = rest.split_at_checked(17).ok_or_else(bad)?;
        let len = tail.first().copied().ok_or_else(bad)? as usize;
        out.push(Entry {
            slot: head[0],
            patient_id: i64::from_le_bytes(head[1..9].try_into().expect("8 bytes")),
            program_id: i64::from_le_bytes(head[9..17].try_into().expect("8 bytes")),
            date: tail.get(1..1 + len).ok_or_else(bad)?,
        });
        rest = &tail[1 + len..];
    }
    Ok(out)
}

/// A block's value of `entries`.
fn block_value(entries: &[(u8, VisitKey)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 28);
    for (slot, key) in entries {
        // (dates are `YYYY-MM-DD`; a longer text is cut at 255 bytes, on a character boundary)
        let mut len = key.visit_date.len().min(255);
        while !key.visit_date.is_char_boundary(len) {
            len -= 1;
        }
        out.push(*slot);
        out.extend_from_slice(&key.patient_id.to_le_bytes());
        out.extend_from_slice(&key.program_id.to_le_bytes());
        out.push(len as u8);
        out.extend_from_slice(&key.visit_date.as_bytes()[..len]);
    }
    out
}

/// Writes `lookups` in a sled transaction on the lookup tree: an integer id's entry into its
/// block (read, changed, written once per block), any other as its own key.
pub(super) fn write(
    tree: &sled::transaction::TransactionalTree,
    lookups: &std::collections::HashMap<LookupKey, VisitKey>,
) -> sled::transaction::ConflictableTransactionResult<(), StateError> {
    let mut blocks: BTreeMap<(&str, u64), Vec<(u8, &VisitKey)>> = BTreeMap::new();
    for (LookupKey { table, id }, key) in lookups {
        match id {
            LookupId::Int(n) => blocks
                .entry((table.as_str(), n / BLOCK))
                .or_default()
                .push(((n % BLOCK) as u8, key)),
            LookupId::Text(pk) => {
                tree.insert(keys::lookup_key(table, pk), encode(key))?;
            }
        }
    }
    for ((table, block), new) in blocks {
        let k = block_key(table, block);
        let mut all = match tree.get(&k)? {
            Some(v) => entries(&v)
                .and_then(|e| e.iter().map(|e| Ok((e.slot, e.key()?))).collect())
                .map_err(abort)?,
            None => Vec::with_capacity(new.len()),
        };
        for (slot, key) in new {
            match all.iter_mut().find(|(s, _)| *s == slot) {
                Some(entry) => entry.1 = key.clone(),
                None => all.push((slot, key.clone())),
            }
        }
        tree.insert(k, block_value(&all))?;
    }
    Ok(())
}

impl State {
    /// The visit recorded for the row of `table` whose single key column `column` holds `id`.
    pub fn lookup(
        &self,
        table: &str,
        column: &str,
        id: &LookupId,
    ) -> Result<Option<VisitKey>, StateError> {
        let text = match id {
            LookupId::Int(n) => {
                if let Some(block) = self.lookup.get(block_key(table, n / BLOCK))? {
                    let slot = (n % BLOCK) as u8;
                    if let Some(entry) = entries(&block)?.iter().find(|e| e.slot == slot) {
                        return entry.key().map(Some);
                    }
                }
                // an entry written before blocks
                let mut pk = Map::new();
                pk.insert(column.to_owned(), Value::from(*n));
                Cow::Owned(keys::canonical_pk(&pk))
            }
            LookupId::Text(text) => Cow::Borrowed(text.as_str()),
        };
        self.lookup
            .get(keys::lookup_key(table, &text))?
            .map(|v| decode("lookup", &v))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailer::state::visits::tests::temp_state;
    use crate::tailer::state::TxnChanges;
    use serde_json::json;

    fn visit(patient_id: i64, day: &str) -> VisitKey {
        VisitKey {
            patient_id,
            program_id: 1,
            visit_date: day.into(),
        }
    }

    fn key(table: &str, id: LookupId) -> LookupKey {
        LookupKey {
            table: table.into(),
            id,
        }
    }

    #[test]
    fn entries_are_found_in_blocks_and_by_their_text() {
        let (state, dir) = temp_state("lookup-blocks");
        let commit = |lookups: Vec<(LookupKey, VisitKey)>| {
            let txn = TxnChanges {
                lookups: lookups.into_iter().collect(),
                ..TxnChanges::default()
            };
            let cp = state
                .checkpoint()
                .unwrap()
                .unwrap_or_else(|| super::super::Checkpoint {
                    position: crate::position::BinlogPosition {
                        file: "binlog.000001".into(),
                        pos: 4,
                    },
                    gtid: None,
                    epoch: 0,
                    server_id: 1,
                    timestamp: 0,
                });
            state.commit_transaction(&txn, &cp, 1).unwrap();
        };
        // what the index answers for (table, id), against what it should
        let expect = |cases: &[(&str, LookupId, Option<VisitKey>)]| {
            for (table, id, want) in cases {
                let column = format!("{table}_id");
                assert_eq!(
                    &state.lookup(table, &column, id).unwrap(),
                    want,
                    "{table} {id:?}"
                );
            }
        };
        let (int, text) = (LookupId::Int, LookupId::of("encounter_id", &json!("x-1")));
        // ids in one block, in the next, a large one, a text key, the same id in another table
        commit(vec![
            (key("encounter", int(0)), visit(1, "2026-01-02")),
            (key("encounter", int(63)), visit(2, "2026-01-03")),
            (key("encounter", int(64)), visit(3, "2026-01-04")),
            (key("encounter", int(u64::MAX)), visit(4, "2026-01-05")),
            (key("orders", int(63)), visit(5, "2026-01-06")),
            (key("encounter", text.clone()), visit(6, "2026-01-07")),
        ]);
        expect(&[
            ("encounter", int(0), Some(visit(1, "2026-01-02"))),
            ("encounter", int(63), Some(visit(2, "2026-01-03"))),
            ("encounter", int(64), Some(visit(3, "2026-01-04"))),
            ("encounter", int(u64::MAX), Some(visit(4, "2026-01-05"))),
            ("orders", int(63), Some(visit(5, "2026-01-06"))),
            ("encounter", text, Some(visit(6, "2026-01-07"))),
            ("encounter", int(1), None),
            ("orders", int(0), None),
        ]);
        // a later group changes one entry of a block and adds another: the rest stay
        commit(vec![
            (key("encounter", int(63)), visit(7, "2026-02-01")),
            (key("encounter", int(5)), visit(8, "2026-02-02")),
        ]);
        expect(&[
            ("encounter", int(63), Some(visit(7, "2026-02-01"))),
            ("encounter", int(5), Some(visit(8, "2026-02-02"))),
            ("encounter", int(0), Some(visit(1, "2026-01-02"))),
        ]);
        // an entry of a store written before blocks is found through its text, and a later
        // entry of the same row (in a block) comes first
        state
            .lookup
            .insert(
                keys::lookup_key("encounter", r#"{"encounter_id":9}"#),
                encode(&visit(9, "2025-12-31")),
            )
            .unwrap();
        expect(&[("encounter", int(9), Some(visit(9, "2025-12-31")))]);
        commit(vec![(key("encounter", int(9)), visit(10, "2026-03-01"))]);
        expect(&[("encounter", int(9), Some(visit(10, "2026-03-01")))]);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_blocks_value_round_trips_and_damage_is_refused() {
        let all = vec![(3, visit(-1, "2026-01-02")), (60, visit(i64::MAX, "é"))];
        let value = block_value(&all);
        let read: Vec<(u8, VisitKey)> = entries(&value)
            .unwrap()
            .iter()
            .map(|e| (e.slot, e.key().unwrap()))
            .collect();
        assert_eq!(read, all);
        assert!(entries(&value[..value.len() - 1]).is_err());
        assert!(entries(&value[..10]).is_err());
        assert!(entries(&[]).unwrap().is_empty());
    }

    #[test]
    fn ids_are_integers_only_when_the_key_is_one_non_negative_integer() {
        assert_eq!(LookupId::of("encounter_id", &json!(5)), LookupId::Int(5));
        assert_eq!(
            LookupId::of("encounter_id", &json!(-5)),
            LookupId::Text(r#"{"encounter_id":-5}"#.into())
        );
        assert_eq!(
            LookupId::of("encounter_id", &json!("5")),
            LookupId::Text(r#"{"encounter_id":"5"}"#.into())
        );
        let one = ["encounter_id".to_owned()];
        let value = |c: &str| (c == "encounter_id").then(|| json!(7));
        assert_eq!(LookupId::of_row(&one, "{}", value), LookupId::Int(7));
        let two = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            LookupId::of_row(&two, r#"{"a":1,"b":2}"#, |_| Some(json!(1))),
            LookupId::Text(r#"{"a":1,"b":2}"#.into())
        );
    }
}
