//! Byte layouts of the state store's keys.
//!
//! A row is known within its visit by its row id, `table \0 canonical-pk-json`; a visit's
//! chunks and ledger are keyed by its stream key (see `chunks`).

use serde_json::{Map, Value};

/// Prefix of all rows of a visit.
pub fn visit_prefix(stream_key: &str) -> Vec<u8> {
    let mut k = stream_key.as_bytes().to_vec();
    k.push(0);
    k
}

/// The id of a row within its visit.
pub fn row_id(table: &str, pk: &Map<String, Value>) -> Vec<u8> {
    row_id_of(table, &canonical_pk(pk))
}

/// The id of a row within its visit, from its key's canonical text (`canonical_pk`).
pub fn row_id_of(table: &str, pk: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 1 + pk.len());
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(pk.as_bytes());
    k
}

/// The primary key as compact JSON (serde_json maps are sorted, so this is canonical).
pub fn canonical_pk(pk: &Map<String, Value>) -> String {
    serde_json::to_string(pk).unwrap_or_default()
}

/// Key of a lookup index entry.
pub fn lookup_key(table: &str, pk: &str) -> Vec<u8> {
    let mut k = table.as_bytes().to_vec();
    k.push(0);
    k.extend(pk.as_bytes());
    k
}
