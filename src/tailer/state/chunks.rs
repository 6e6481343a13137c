//! Binary layouts of the visit buffers and the ledger, and the one-time move of a store from
//! the per-row layout.
//!
//! A visit buffer is a run of **chunks**, one per group commit that touched the visit, keyed
//! `stream_key \0 seq` (seq: big-endian, from `generate_id`, so later chunks sort later). A
//! chunk holds `(row id, stored row JSON)` entries, row id = `table \0 canonical-pk-json`;
//! reading a buffer merges its chunks by row id, the later entry winning, so a row changed
//! twice ships once, as its latest image. The **ledger** of a visit (the digest of every row
//! as last queued upserted) is one value per visit: `(row id, 8-byte digest)` entries.
//!
//! One write per visit per group commit, and one ledger write per visit version, instead of
//! one per row: sled's cost is per operation, and a visit has tens of rows. A chunk is stored
//! deflated (`pack_chunk`, see `packed`); a chunk of an earlier version, plain, is read too.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{packed, StateError};

/// Starts a deflated chunk: the length of a row id no plain chunk can have.
const DEFLATED_CHUNK: [u8; 4] = [0xFF; 4];

/// A chunk's entries as stored.
pub fn pack_chunk(entries: &[u8]) -> Vec<u8> {
    packed::deflate_into(DEFLATED_CHUNK.to_vec(), entries)
}

/// A stored chunk's entries (see `entries`).
pub fn unpack_chunk(stored: &[u8]) -> Result<Cow<'_, [u8]>, StateError> {
    match stored.strip_prefix(&DEFLATED_CHUNK[..]) {
        Some(deflated) => Ok(Cow::Owned(packed::inflate(deflated, "visit buffer chunk")?)),
        None => Ok(Cow::Borrowed(stored)),
    }
}

/// One entry: (row id, value).
pub type Entry<'a> = (&'a [u8], &'a [u8]);

/// Appends one entry (`id`, `value`) to `out`.
pub fn push_entry(out: &mut Vec<u8>, id: &[u8], value: &[u8]) {
    out.extend((id.len() as u32).to_le_bytes());
    out.extend(id);
    out.extend((value.len() as u32).to_le_bytes());
    out.extend(value);
}

/// The entries of a chunk or a ledger value, in order.
pub fn entries(bytes: &[u8]) -> Result<Vec<Entry<'_>>, StateError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (id, after) = field(rest)?;
        let (value, after) = field(after)?;
        out.push((id, value));
        rest = after;
    }
    Ok(out)
}

fn field(bytes: &[u8]) -> Result<(&[u8], &[u8]), StateError> {
    let malformed = || StateError::Malformed("visit buffer chunk or ledger entry");
    let len: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(malformed)?;
    let end = 4 + u32::from_le_bytes(len) as usize;
    let value = bytes.get(4..end).ok_or_else(malformed)?;
    Ok((value, &bytes[end..]))
}

/// Key of a visit buffer's chunk.
pub fn chunk_key(stream_key: &str, seq: u64) -> Vec<u8> {
    let mut k = super::visit_prefix(stream_key);
    k.extend(seq.to_be_bytes());
    k
}

/// The latest entry per row id over `chunks` (their entries, oldest first), in row id order.
pub fn merge<'a>(chunks: &'a [Cow<'a, [u8]>]) -> Result<BTreeMap<&'a [u8], &'a [u8]>, StateError> {
    let mut latest = BTreeMap::new();
    for chunk in chunks {
        latest.extend(entries(chunk)?);
    }
    Ok(latest)
}

/// A ledger value as a map from row id to digest.
pub fn ledger(bytes: Option<&[u8]>) -> Result<BTreeMap<Vec<u8>, [u8; 8]>, StateError> {
    let mut out = BTreeMap::new();
    for (id, digest) in entries(bytes.unwrap_or_default())? {
        let digest = digest
            .try_into()
            .map_err(|_| StateError::Malformed("ledger digest"))?;
        out.insert(id.to_vec(), digest);
    }
    Ok(out)
}

/// The ledger value of a map (empty when no row is held).
pub fn ledger_value(ledger: &BTreeMap<Vec<u8>, [u8; 8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(ledger.len() * 48);
    for (id, digest) in ledger {
        push_entry(&mut out, id, digest);
    }
    out
}

/// Moves a store written by an earlier version (one sled entry per buffered row in
/// `visit_rows`, one per ledger row in `digests`) to chunks and per-visit ledgers, then drops
/// the old trees. Safe to repeat after a crash half way: chunks merge by row id and ledger
/// entries are overwritten with the same digests.
pub fn migrate_per_row_layout(
    db: &sled::Db,
    chunks: &sled::Tree,
    ledger_tree: &sled::Tree,
) -> Result<(), StateError> {
    let names = db.tree_names();
    for (old, is_ledger) in [(&b"visit_rows"[..], false), (&b"digests"[..], true)] {
        if !names.iter().any(|n| n.as_ref() == old) {
            continue;
        }
        let tree = db.open_tree(old)?;
        let mut by_visit: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for item in tree.iter() {
            let (key, value) = item?;
            let Some(split) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let entry = by_visit.entry(key[..split].to_vec()).or_default();
            push_entry(entry, &key[split + 1..], &value);
        }
        for (stream_key, value) in by_visit {
            let stream_key = String::from_utf8_lossy(&stream_key).into_owned();
            if is_ledger {
                let mut merged = ledger(ledger_tree.get(stream_key.as_bytes())?.as_deref())?;
                merged.extend(ledger(Some(&value))?);
                ledger_tree.insert(stream_key.as_bytes(), ledger_value(&merged))?;
            } else {
                chunks.insert(
                    chunk_key(&stream_key, db.generate_id()?),
                    pack_chunk(&value),
                )?;
            }
        }
        db.flush()?;
        db.drop_tree(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_refuse_truncation() {
        let mut chunk = Vec::new();
        push_entry(&mut chunk, b"obs\0{\"obs_id\":1}", b"{\"a\":1}");
        push_entry(&mut chunk, b"", b"");
        let got = entries(&chunk).unwrap();
        assert_eq!(
            got,
            vec![
                (&b"obs\0{\"obs_id\":1}"[..], &b"{\"a\":1}"[..]),
                (&b""[..], &b""[..])
            ]
        );
        for cut in 1..chunk.len() {
            if cut == chunk.len() - 8 {
                continue; // a whole first entry: still well formed
            }
            assert!(entries(&chunk[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn merge_keeps_the_latest_entry_per_row_in_row_order() {
        let chunk = |pairs: &[(&str, &str)]| {
            let mut c = Vec::new();
            for (id, v) in pairs {
                push_entry(&mut c, id.as_bytes(), v.as_bytes());
            }
            c
        };
        // the first stored as an earlier version did (plain), the second deflated
        let stored = [
            chunk(&[("obs\x002", "old"), ("encounter\x001", "e")]),
            pack_chunk(&chunk(&[("obs\x002", "new"), ("obs\x001", "o1")])),
        ];
        let chunks: Vec<Cow<[u8]>> = stored.iter().map(|c| unpack_chunk(c).unwrap()).collect();
        assert!(matches!(chunks[0], Cow::Borrowed(_)));
        assert!(matches!(chunks[1], Cow::Owned(_)));
        let merged = merge(&chunks).unwrap();
        let got: Vec<(&str, &str)> = merged
            .iter()
            .map(|(k, v)| {
                (
                    std::str::from_utf8(k).unwrap(),
                    std::str::from_utf8(v).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("encounter\x001", "e"),
                ("obs\x001", "o1"),
                ("obs\x002", "new")
            ]
        );
    }
}
