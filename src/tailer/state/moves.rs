//! Moving a visit buffer (or a sweep's snapshot) into the outbox, with the visit's ledger:
//! the digests of the rows as last queued, by which a sweep finds what the receiver lacks.

use std::collections::BTreeMap;

use sled::transaction::{Transactional, TransactionalTree};
use sled::IVec;

use super::chunks::{self, push_entry};
use super::outbox::append_version;
use super::{abort, row_digest, visit_prefix, MovedPart, State, StateError, VISIT_PART_ROWS};

/// Whether a stored row (`{"table":…,"op":…}`) is a delete: it leaves the ledger, so that
/// the ledger lists the rows the receiver holds.
fn is_delete(stored: &[u8]) -> bool {
    let head = &stored[..stored.len().min(160)];
    head.windows(13).any(|w| w == b"\"op\":\"delete\"")
}

/// What queueing `rows` (row id, stored row) does to a visit's ledger: a digest to hold, or
/// `None` for a delete (it leaves the ledger). Computed before the transaction, which may run
/// its closure more than once.
fn ledger_changes<'a>(
    rows: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(&'a [u8], Option<[u8; 8]>)> {
    rows.map(|(id, row)| (id, (!is_delete(row)).then(|| row_digest(row))))
        .collect()
}

/// Inside a transaction: applies `changes` (from `ledger_changes`) to the visit's ledger.
fn update_ledger(
    ledger: &TransactionalTree,
    stream_key: &str,
    changes: &[(&[u8], Option<[u8; 8]>)],
) -> sled::transaction::ConflictableTransactionResult<(), StateError> {
    let old = ledger.get(stream_key.as_bytes())?;
    let mut held = chunks::ledger(old.as_deref()).map_err(abort)?;
    for (id, digest) in changes {
        match digest {
            Some(digest) => held.insert(id.to_vec(), *digest),
            None => held.remove(*id),
        };
    }
    if held.is_empty() {
        ledger.remove(stream_key.as_bytes())?;
    } else {
        ledger.insert(stream_key.as_bytes(), chunks::ledger_value(&held))?;
    }
    Ok(())
}

/// One buffer's move, prepared before the transaction (whose closure may run more than once).
struct Move<'a> {
    /// Where the buffer is in the caller's list.
    index: usize,
    stream_key: &'a str,
    /// The visit's meta and chunks as read; the move happens only if they are unchanged.
    meta_bytes: &'a IVec,
    scanned: &'a [(IVec, IVec)],
    /// The rows after the part, as one chunk.
    remainder: Vec<u8>,
    /// The part's rows, as stored.
    rows: Vec<&'a [u8]>,
    changes: Vec<(&'a [u8], Option<[u8; 8]>)>,
    last: bool,
    /// The outbox id.
    id: u64,
}

impl State {
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
        let moved = self.move_many_to_outbox(
            &[stream_key],
            |_, version, rows, last| envelope(version, rows, last),
            now,
        )?;
        Ok(moved.into_iter().next().flatten())
    }

    /// `move_to_outbox` for several buffers in **one** sled transaction (each sled
    /// transaction writes the log's buffer out twice, and each write wakes sled's IO threads:
    /// one transaction per visit cost the tailer more than the visits' rows did). `envelope`
    /// is also given the buffer's index in `stream_keys`. One answer per key, in order; a
    /// buffer that is gone or changed since it was read is `None` and the others still move.
    pub fn move_many_to_outbox(
        &self,
        stream_keys: &[&str],
        envelope: impl Fn(usize, u64, &[&[u8]], bool) -> Vec<u8>,
        now: u64,
    ) -> Result<Vec<Option<MovedPart>>, StateError> {
        // What each buffer still there held when read: (its index, its meta, its chunks).
        let mut read = Vec::with_capacity(stream_keys.len());
        for (index, stream_key) in stream_keys.iter().enumerate() {
            if let Some(meta_bytes) = self.visits.get(stream_key.as_bytes())? {
                let scanned: Vec<(IVec, IVec)> = self
                    .visit_chunks
                    .scan_prefix(visit_prefix(stream_key))
                    .collect::<Result<_, _>>()?;
                read.push((index, meta_bytes, scanned));
            }
        }
        let unpacked = read
            .iter()
            .map(|(_, _, scanned)| {
                scanned
                    .iter()
                    .map(|(_, chunk)| chunks::unpack_chunk(chunk))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let merged = unpacked
            .iter()
            .map(|u| chunks::merge(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut moves = Vec::with_capacity(read.len());
        for ((index, meta_bytes, scanned), merged) in read.iter().zip(&merged) {
            let last = merged.len() <= VISIT_PART_ROWS;
            let part: Vec<(&[u8], &[u8])> = merged
                .iter()
                .take(VISIT_PART_ROWS)
                .map(|(id, row)| (*id, *row))
                .collect();
            // The rows after the part stay, as one chunk under the newest scanned key.
            let mut remainder = Vec::new();
            for (id, row) in merged.iter().skip(VISIT_PART_ROWS) {
                push_entry(&mut remainder, id, row);
            }
            moves.push(Move {
                index: *index,
                stream_key: stream_keys[*index],
                meta_bytes,
                scanned,
                remainder: chunks::pack_chunk(&remainder),
                rows: part.iter().map(|(_, row)| *row).collect(),
                changes: ledger_changes(part.iter().copied()),
                last,
                id: self.db.generate_id()?,
            });
        }
        let moved = (
            &self.visits,
            &self.visit_chunks,
            &self.outbox,
            &self.versions,
            &self.meta,
            &self.ledger,
        )
            .transaction(|(visits, buffers, outbox, versions, meta, ledger)| {
                let mut moved = vec![None; stream_keys.len()];
                for m in &moves {
                    // The buffer must be exactly what was read (a concurrent move of a part
                    // leaves the visit's meta as it was, but not its chunks).
                    if visits.get(m.stream_key.as_bytes())?.as_deref() != Some(&m.meta_bytes[..]) {
                        continue;
                    }
                    let mut unchanged = true;
                    for (key, chunk) in m.scanned {
                        if buffers.get(key)?.as_ref() != Some(chunk) {
                            unchanged = false;
                            break;
                        }
                    }
                    if !unchanged {
                        continue;
                    }
                    let version = append_version(
                        (outbox, versions, meta),
                        m.stream_key,
                        m.id,
                        now,
                        |version| envelope(m.index, version, &m.rows, m.last),
                    )?;
                    if m.last {
                        visits.remove(m.stream_key.as_bytes())?;
                    }
                    for (i, (key, _)) in m.scanned.iter().enumerate() {
                        if !m.last && i + 1 == m.scanned.len() {
                            buffers.insert(key, m.remainder.as_slice())?;
                        } else {
                            buffers.remove(key)?;
                        }
                    }
                    update_ledger(ledger, m.stream_key, &m.changes)?;
                    moved[m.index] = Some(MovedPart {
                        version,
                        last: m.last,
                    });
                }
                Ok(moved)
            })
            .map_err(StateError::from)?;
        Ok(moved)
    }

    /// The digest of every row of a visit as last queued (by the binlog path or a sweep),
    /// by row id; a row last queued as deleted is not there.
    pub fn row_digests(&self, stream_key: &str) -> Result<BTreeMap<Vec<u8>, [u8; 8]>, StateError> {
        chunks::ledger(self.ledger.get(stream_key.as_bytes())?.as_deref())
    }

    /// The rows of a visit the ledger holds as last queued upserted (a row queued as deleted
    /// leaves the ledger): (table, canonical primary key JSON).
    pub fn ledger_rows(&self, stream_key: &str) -> Result<Vec<(String, String)>, StateError> {
        let mut out = Vec::new();
        for id in self.row_digests(stream_key)?.keys() {
            let Some(split) = id.iter().position(|b| *b == 0) else {
                continue;
            };
            let (table, pk) = (&id[..split], &id[split + 1..]);
            if let (Ok(table), Ok(pk)) = (std::str::from_utf8(table), std::str::from_utf8(pk)) {
                out.push((table.to_owned(), pk.to_owned()));
            }
        }
        Ok(out)
    }

    /// Queues a visit snapshot read by a sweep: its rows (row id, stored row JSON) go to the
    /// outbox as the visit's next versions (parts of `VISIT_PART_ROWS`), and their digests
    /// into the ledger, in one transaction per part. Returns the versions given.
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
            let changes =
                ledger_changes(part.iter().map(|(id, row)| (id.as_slice(), row.as_slice())));
            let version = (&self.outbox, &self.versions, &self.meta, &self.ledger)
                .transaction(|(outbox, versions, meta, ledger)| {
                    let version =
                        append_version((outbox, versions, meta), stream_key, id, now, |version| {
                            envelope(version, &row_bytes, last)
                        })?;
                    update_ledger(ledger, stream_key, &changes)?;
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailer::state::visits::tests::{commit, commit_to, row, temp_state, KEY};
    use crate::wire::Op;

    #[test]
    fn several_buffers_move_in_one_call_and_a_missing_one_is_passed_over() {
        const OTHER: &str = "101:8:1:2026-01-02";
        let (state, dir) = temp_state("many");
        commit(
            &state,
            vec![row(1, 1.0, Op::Upsert), row(2, 2.0, Op::Upsert)],
            10,
        );
        commit_to(&state, OTHER, vec![row(3, 3.0, Op::Upsert)], 20);
        let envelope = |i: usize, version: u64, rows: &[&[u8]], last: bool| {
            format!("{i}:{version}:{}:{last}", rows.len()).into_bytes()
        };
        let moved = state
            .move_many_to_outbox(&[KEY, "101:9:1:2026-01-02", OTHER], envelope, 1)
            .unwrap();
        let part = |version| {
            Some(MovedPart {
                version,
                last: true,
            })
        };
        assert_eq!(moved, vec![part(1), None, part(1)]);
        let entries = state.outbox_peek_after(None, usize::MAX).unwrap();
        let bodies: Vec<&[u8]> = entries.iter().map(|e| &e.visit[..]).collect();
        assert_eq!(bodies, vec![&b"0:1:2:true"[..], &b"2:1:1:true"[..]]);
        assert_eq!(state.open_visit_count(), 0);
        assert_eq!(state.visit_chunks.len(), 0);
        assert_eq!(state.ledger_rows(KEY).unwrap().len(), 2);
        assert_eq!(state.ledger_rows(OTHER).unwrap().len(), 1);
        // Moved again, nothing is there to move.
        let again = state
            .move_many_to_outbox(&[KEY, OTHER], envelope, 2)
            .unwrap();
        assert_eq!(again, vec![None, None]);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
