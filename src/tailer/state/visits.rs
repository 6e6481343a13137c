//! Open visit buffers: recording a source transaction's rows with the checkpoint after them,
//! the lookup index, and moving a ready buffer (or a sweep's snapshot) into the outbox.

use sled::transaction::Transactional;

use super::outbox::append_version;
use super::{
    abort, decode, encode, keys, row_digest, row_key, visit_prefix, Checkpoint, MovedPart, State,
    StateError, TxnChanges, CHECKPOINT, VISIT_PART_ROWS,
};
use crate::tailer::visit::{VisitKey, VisitMeta};

/// Whether a stored row (`{"table":…,"op":…}`) is a delete: it leaves the ledger, so that
/// the ledger lists the rows the receiver holds.
fn is_delete(stored: &[u8]) -> bool {
    let head = &stored[..stored.len().min(160)];
    head.windows(13).any(|w| w == b"\"op\":\"delete\"")
}

impl State {
    /// Records one source transaction: rows into visit buffers, lookup entries, and the
    /// checkpoint after it, atomically.
    pub fn commit_transaction(
        &self,
        txn: &TxnChanges,
        checkpoint: &Checkpoint,
        now: u64,
    ) -> Result<(), StateError> {
        let cp = encode(checkpoint);
        (&self.meta, &self.visits, &self.visit_rows, &self.lookup)
            .transaction(|(meta, visits, rows, lookup)| {
                for (stream_key, change) in &txn.visits {
                    let mut visit = match visits.get(stream_key.as_bytes())? {
                        Some(v) => decode::<VisitMeta>("visit", &v).map_err(abort)?,
                        None => VisitMeta::new(change.key.clone(), now),
                    };
                    visit.touch(
                        now,
                        change.closing,
                        change.clinical,
                        change.rows.len() as u64,
                    );
                    visits.insert(stream_key.as_bytes(), encode(&visit))?;
                    for row in &change.rows {
                        rows.insert(row_key(stream_key, &row.table, &row.pk), encode(row))?;
                    }
                }
                for ((table, pk), key) in &txn.lookups {
                    lookup.insert(keys::lookup_key(table, pk), encode(key))?;
                }
                meta.insert(CHECKPOINT, cp.as_slice())?;
                Ok(())
            })
            .map_err(StateError::from)
    }

    /// The visit key recorded for the row `table` / `pk` (the canonical pk text).
    pub fn lookup(&self, table: &str, pk: &str) -> Result<Option<VisitKey>, StateError> {
        self.lookup
            .get(keys::lookup_key(table, pk))?
            .map(|v| decode("lookup", &v))
            .transpose()
    }

    /// All open visit buffers.
    pub fn open_visits(&self) -> Result<Vec<(String, VisitMeta)>, StateError> {
        self.visits
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("visit", &v)?,
                ))
            })
            .collect()
    }

    /// Number of open visit buffers.
    pub fn open_visit_count(&self) -> usize {
        self.visits.len()
    }

    /// Moves the buffer of `stream_key` into the outbox as its next version, built by
    /// `envelope(version, rows, last)`. A buffer of more than `VISIT_PART_ROWS` rows moves in
    /// parts, one version each; `last` says whether this part emptied the buffer. `None` when
    /// the buffer is gone, or changed since it was read (moved on a later call).
    pub fn move_to_outbox(
        &self,
        stream_key: &str,
        envelope: impl Fn(u64, &[&[u8]], bool) -> Vec<u8>,
        now: u64,
    ) -> Result<Option<MovedPart>, StateError> {
        let Some(meta_bytes) = self.visits.get(stream_key.as_bytes())? else {
            return Ok(None);
        };
        let mut row_keys = Vec::new();
        let mut wire_rows = Vec::new();
        let mut last = true;
        for item in self.visit_rows.scan_prefix(visit_prefix(stream_key)) {
            if wire_rows.len() == VISIT_PART_ROWS {
                last = false;
                break;
            }
            let (k, v) = item?;
            wire_rows.push(v);
            row_keys.push(k);
        }
        let row_bytes: Vec<&[u8]> = wire_rows.iter().map(|r| r.as_ref()).collect();
        let id = self.db.generate_id()?;
        let digests: Vec<[u8; 8]> = wire_rows.iter().map(|r| row_digest(r)).collect();
        let version = (
            &self.visits,
            &self.visit_rows,
            &self.outbox,
            &self.versions,
            &self.meta,
            &self.digests,
        )
            .transaction(|(visits, rows, outbox, versions, meta, digest_tree)| {
                // The buffer must be exactly what was scanned.
                if visits.get(stream_key.as_bytes())?.as_deref() != Some(&meta_bytes[..]) {
                    return Err(abort(StateError::Changed));
                }
                let version =
                    append_version((outbox, versions, meta), stream_key, id, now, |version| {
                        envelope(version, &row_bytes, last)
                    })?;
                if last {
                    visits.remove(stream_key.as_bytes())?;
                }
                for ((k, digest), row) in row_keys.iter().zip(&digests).zip(&row_bytes) {
                    rows.remove(k)?;
                    if is_delete(row) {
                        digest_tree.remove(k)?;
                    } else {
                        digest_tree.insert(k, &digest[..])?;
                    }
                }
                Ok(version)
            })
            .map_err(StateError::from);
        match version {
            Ok(version) => Ok(Some(MovedPart { version, last })),
            Err(StateError::Changed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The digest of a row as last queued for shipping (by the binlog path or a sweep), by
    /// its visit row key.
    pub fn row_digest(&self, row_key: &[u8]) -> Result<Option<[u8; 8]>, StateError> {
        Ok(self
            .digests
            .get(row_key)?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    /// The rows of a visit the ledger holds as last queued upserted (a row queued as deleted
    /// leaves the ledger): (table, canonical primary key JSON).
    pub fn ledger_rows(&self, stream_key: &str) -> Result<Vec<(String, String)>, StateError> {
        let prefix = visit_prefix(stream_key);
        let mut out = Vec::new();
        for item in self.digests.scan_prefix(&prefix) {
            let (key, _) = item?;
            let rest = &key[prefix.len()..];
            let Some(split) = rest.iter().position(|b| *b == 0) else {
                continue;
            };
            let (table, pk) = (&rest[..split], &rest[split + 1..]);
            if let (Ok(table), Ok(pk)) = (std::str::from_utf8(table), std::str::from_utf8(pk)) {
                out.push((table.to_owned(), pk.to_owned()));
            }
        }
        Ok(out)
    }

    /// Whether a visit has an open buffer (the binlog path is still collecting it).
    pub fn is_open(&self, stream_key: &str) -> Result<bool, StateError> {
        Ok(self.visits.contains_key(stream_key.as_bytes())?)
    }

    /// Queues a visit snapshot read by a sweep: its rows (visit row key, stored row JSON) go
    /// to the outbox as the visit's next versions (parts of `VISIT_PART_ROWS`), and their
    /// digests into the ledger, in one transaction per part. Returns the versions given.
    pub fn enqueue_snapshot(
        &self,
        stream_key: &str,
        rows: &[(Vec<u8>, Vec<u8>)],
        envelope: impl Fn(u64, &[&[u8]], bool) -> Vec<u8>,
        now: u64,
    ) -> Result<Vec<u64>, StateError> {
        let mut given = Vec::new();
        let parts: Vec<&[(Vec<u8>, Vec<u8>)]> = if rows.is_empty() {
            vec![rows]
        } else {
            rows.chunks(VISIT_PART_ROWS).collect()
        };
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let id = self.db.generate_id()?;
            let row_bytes: Vec<&[u8]> = part.iter().map(|r| r.1.as_slice()).collect();
            let last = i + 1 == count;
            let version = (&self.outbox, &self.versions, &self.meta, &self.digests)
                .transaction(|(outbox, versions, meta, digests)| {
                    let version =
                        append_version((outbox, versions, meta), stream_key, id, now, |version| {
                            envelope(version, &row_bytes, last)
                        })?;
                    for (k, row) in part {
                        if is_delete(row) {
                            digests.remove(k.as_slice())?;
                        } else {
                            digests.insert(k.as_slice(), &row_digest(row)[..])?;
                        }
                    }
                    Ok(version)
                })
                .map_err(StateError::from)?;
            given.push(version);
        }
        Ok(given)
    }

    /// The next version of `stream_key` (for visit parts shipped without the outbox).
    pub fn next_version(&self, stream_key: &str) -> Result<u64, StateError> {
        let updated = self
            .versions
            .update_and_fetch(stream_key.as_bytes(), |old| {
                let v = old
                    .map(|v| u64::from_be_bytes(v.try_into().unwrap_or([0; 8])))
                    .unwrap_or(0)
                    + 1;
                Some(v.to_be_bytes().to_vec())
            })?;
        Ok(updated
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(1))
    }
}
