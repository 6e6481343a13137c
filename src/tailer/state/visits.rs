//! Open visit buffers: recording a group of source transactions' rows with the checkpoint
//! after them, the lookup index, and moving a ready buffer (or a sweep's snapshot) into the
//! outbox with the visit's ledger. Layouts in `chunks`.

use std::collections::BTreeMap;

use sled::transaction::{Transactional, TransactionalTree};
use sled::IVec;

use super::chunks::{self, chunk_key, push_entry};
use super::outbox::append_version;
use super::{
    abort, decode, encode, keys, row_digest, visit_prefix, Checkpoint, MovedPart, State,
    StateError, TxnChanges, CHECKPOINT, VISIT_PART_ROWS,
};
use crate::tailer::visit::{VisitKey, VisitMeta};

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
    /// Records source transactions: their rows into visit buffers (one chunk per visit),
    /// lookup entries, and the checkpoint after the last of them, atomically.
    pub fn commit_transaction(
        &self,
        txn: &TxnChanges,
        checkpoint: &Checkpoint,
        now: u64,
    ) -> Result<(), StateError> {
        let cp = encode(checkpoint);
        let seq = self.db.generate_id()?;
        let mut stored = Vec::with_capacity(txn.visits.len());
        for change in txn.visits.values() {
            let mut chunk = Vec::with_capacity(change.rows.len() * 256);
            for row in &change.rows {
                push_entry(&mut chunk, &keys::row_id(&row.table, &row.pk), &encode(row));
            }
            stored.push(chunks::pack_chunk(&chunk));
        }
        (&self.meta, &self.visits, &self.visit_chunks, &self.lookup)
            .transaction(|(meta, visits, buffers, lookup)| {
                for ((stream_key, change), chunk) in txn.visits.iter().zip(&stored) {
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
                    buffers.insert(chunk_key(stream_key, seq), chunk.as_slice())?;
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
    /// is also given the buffer's index in `stream_keys`. One answer per key, in order; a buffer that is gone or
    /// changed since it was read is `None` and the others still move.
    pub fn move_many_to_outbox(
        &self,
        stream_keys: &[&str],
        envelope: impl Fn(usize, u64, &[&[u8]], bool) -> Vec<u8>,
        now: u64,
    ) -> Result<Vec<Option<MovedPart>>, StateError> {
        // What each buffer held when read: its meta and its chunks.
        let mut read = Vec::with_capacity(stream_keys.len());
        for stream_key in stream_keys {
            let Some(meta_bytes) = self.visits.get(stream_key.as_bytes())? else {
                read.push(None);
                continue;
            };
            let scanned: Vec<(IVec, IVec)> = self
                .visit_chunks
                .scan_prefix(visit_prefix(stream_key))
                .collect::<Result<_, _>>()?;
            read.push(Some((meta_bytes, scanned)));
        }
        let unpacked = read
            .iter()
            .map(|r| match r {
                Some((_, scanned)) => scanned
                    .iter()
                    .map(|(_, chunk)| chunks::unpack_chunk(chunk))
                    .collect::<Result<Vec<_>, _>>(),
                None => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let merged = unpacked
            .iter()
            .map(|u| chunks::merge(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut moves = Vec::with_capacity(stream_keys.len());
        for (index, ((stream_key, r), merged)) in
            stream_keys.iter().zip(&read).zip(&merged).enumerate()
        {
            let Some((meta_bytes, scanned)) = r else {
                continue;
            };
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
                index,
                stream_key,
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
                        unchanged &= buffers.get(key)?.as_ref() == Some(chunk);
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

    /// Whether a visit has an open buffer (the binlog path is still collecting it).
    pub fn is_open(&self, stream_key: &str) -> Result<bool, StateError> {
        Ok(self.visits.contains_key(stream_key.as_bytes())?)
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
    use crate::position::BinlogPosition;
    use crate::tailer::state::VisitChanges;
    use crate::wire::{Op, Row};
    use serde_json::json;

    const KEY: &str = "101:7:1:2026-01-02";

    fn temp_state(name: &str) -> (State, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "emr-visits-{name}-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (State::open(&dir).unwrap(), dir)
    }

    fn row(id: i64, value: f64, op: Op) -> Row {
        Row {
            table: "obs".into(),
            op,
            lsn: id as u64,
            pk: serde_json::from_value(json!({ "obs_id": id })).unwrap(),
            data: serde_json::from_value(json!({ "value_numeric": value })).unwrap(),
        }
    }

    fn commit(state: &State, rows: Vec<Row>, pos: u64) {
        commit_to(state, KEY, rows, pos);
    }

    fn commit_to(state: &State, key: &str, rows: Vec<Row>, pos: u64) {
        let mut txn = TxnChanges::default();
        txn.visits.insert(
            key.into(),
            VisitChanges {
                key: VisitKey {
                    patient_id: 7,
                    program_id: 1,
                    visit_date: "2026-01-02".into(),
                },
                rows,
                closing: false,
                clinical: true,
            },
        );
        let cp = Checkpoint {
            position: BinlogPosition {
                file: "binlog.000001".into(),
                pos,
            },
            gtid: None,
            epoch: 0,
            server_id: 1,
            timestamp: 0,
        };
        state.commit_transaction(&txn, &cp, pos).unwrap();
    }

    /// Moves the whole buffer; returns the rows of each part, parsed.
    fn move_all(state: &State) -> Vec<Vec<Row>> {
        let mut parts = Vec::new();
        let envelope = |_v, rows: &[&[u8]], _last| {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::from_slice(r).unwrap())
                .collect();
            serde_json::to_vec(&rows).unwrap()
        };
        while let Some(part) = state.move_to_outbox(KEY, envelope, 1).unwrap() {
            let last = part.last;
            parts.push(part);
            if last {
                break;
            }
        }
        let entries = state.outbox_peek(usize::MAX).unwrap();
        assert_eq!(entries.len(), parts.len());
        let ids: Vec<(u64, String, u64)> = entries
            .iter()
            .zip(&parts)
            .map(|(e, p)| (e.id, KEY.to_owned(), p.version))
            .collect();
        state.outbox_done(&ids, 2).unwrap();
        entries
            .iter()
            .map(|e| serde_json::from_slice(&e.visit).unwrap())
            .collect()
    }

    #[test]
    fn a_buffer_merges_its_chunks_and_moves_in_parts_with_the_ledger() {
        let (state, dir) = temp_state("parts");
        // 1,500 rows, then 1,500 more of which 500 change rows of the first commit.
        commit(
            &state,
            (0..1500).map(|i| row(i, 1.0, Op::Upsert)).collect(),
            10,
        );
        commit(
            &state,
            (1000..2500).map(|i| row(i, 2.0, Op::Upsert)).collect(),
            20,
        );
        let parts = move_all(&state);
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![VISIT_PART_ROWS, 500]
        );
        let all: Vec<&Row> = parts.iter().flatten().collect();
        let mut ids: Vec<i64> = all
            .iter()
            .map(|r| r.pk["obs_id"].as_i64().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, (0..2500).collect::<Vec<_>>(), "each row once");
        for r in &all {
            let want = if r.pk["obs_id"].as_i64().unwrap() < 1000 {
                1.0
            } else {
                2.0
            };
            assert_eq!(r.data["value_numeric"], json!(want), "the latest image");
        }
        assert_eq!(state.open_visit_count(), 0);
        assert_eq!(state.visit_chunks.len(), 0, "no chunk left behind");
        assert_eq!(state.ledger_rows(KEY).unwrap().len(), 2500);
        // Deletes leave the ledger; a changed row changes its digest.
        let before = state.row_digests(KEY).unwrap();
        commit(
            &state,
            vec![row(0, 0.0, Op::Delete), row(1, 9.0, Op::Upsert)],
            30,
        );
        move_all(&state);
        let after = state.row_digests(KEY).unwrap();
        assert_eq!(after.len(), 2499);
        let id1 = keys::row_id("obs", &row(1, 0.0, Op::Upsert).pk);
        assert_ne!(before[&id1], after[&id1]);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

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
        let entries = state.outbox_peek(usize::MAX).unwrap();
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

    #[test]
    fn a_store_of_the_per_row_layout_is_migrated_on_open() {
        let (state, dir) = temp_state("migrate");
        commit(&state, vec![row(1, 1.0, Op::Upsert)], 10);
        let meta = state.visits.get(KEY).unwrap().unwrap();
        drop(state);
        // Rewrite it as an earlier version kept it: one entry per row and per ledger row.
        {
            let db = sled::open(&dir).unwrap();
            db.drop_tree("visit_chunks").unwrap();
            db.drop_tree("ledger").unwrap();
            let rows = db.open_tree("visit_rows").unwrap();
            let digests = db.open_tree("digests").unwrap();
            for (id, value) in [(2, 2.0), (3, 3.0)] {
                let r = row(id, value, Op::Upsert);
                let key = [visit_prefix(KEY), keys::row_id("obs", &r.pk)].concat();
                rows.insert(&key, encode(&r)).unwrap();
            }
            let shipped = row(9, 9.0, Op::Upsert);
            let key = [visit_prefix(KEY), keys::row_id("obs", &shipped.pk)].concat();
            digests
                .insert(&key, &row_digest(&encode(&shipped))[..])
                .unwrap();
            db.open_tree("visits").unwrap().insert(KEY, meta).unwrap();
            db.flush().unwrap();
        }
        let state = State::open(&dir).unwrap();
        assert!(!state
            .db
            .tree_names()
            .iter()
            .any(|n| *n == "visit_rows" || *n == "digests"));
        assert_eq!(
            state.ledger_rows(KEY).unwrap(),
            vec![("obs".into(), r#"{"obs_id":9}"#.into())]
        );
        let parts = move_all(&state);
        let ids: Vec<i64> = parts[0]
            .iter()
            .map(|r| r.pk["obs_id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(state.ledger_rows(KEY).unwrap().len(), 3);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
