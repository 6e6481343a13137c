//! Open visit buffers: recording a group of source transactions' rows with the checkpoint
//! after them, and the lookup index. Moving them to the outbox is in `moves`; layouts in
//! `chunks`.

use sled::transaction::Transactional;

use super::chunks::{self, chunk_key, push_entry};
use super::{abort, decode, encode, Checkpoint, State, StateError, TxnChanges, CHECKPOINT};
use crate::tailer::visit::VisitMeta;

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
                push_entry(&mut chunk, &row.id, &row.json);
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
                        change.event_ms,
                        change.closing,
                        change.clinical,
                        change.rows.len() as u64,
                    );
                    visits.insert(stream_key.as_bytes(), encode(&visit))?;
                    buffers.insert(chunk_key(stream_key, seq), chunk.as_slice())?;
                }
                super::lookup::write(lookup, &txn.lookups)?;
                meta.insert(CHECKPOINT, cp.as_slice())?;
                Ok(())
            })
            .map_err(StateError::from)
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

    /// Whether a visit has an open buffer (the binlog path is still collecting it).
    pub fn is_open(&self, stream_key: &str) -> Result<bool, StateError> {
        Ok(self.visits.contains_key(stream_key.as_bytes())?)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::position::BinlogPosition;
    use crate::tailer::state::keys;
    use crate::tailer::state::VisitChanges;
    use crate::tailer::state::{row_digest, visit_prefix, VISIT_PART_ROWS};
    use crate::tailer::visit::VisitKey;
    use crate::wire::{Op, Row};
    use serde_json::json;

    pub(in crate::tailer::state) const KEY: &str = "101:7:1:2026-01-02";

    pub(in crate::tailer::state) fn temp_state(name: &str) -> (State, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "emr-visits-{name}-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (State::open(&dir).unwrap(), dir)
    }

    pub(in crate::tailer::state) fn row(id: i64, value: f64, op: Op) -> Row {
        Row {
            table: "obs".into(),
            op,
            lsn: id as u64,
            pk: serde_json::from_value(json!({ "obs_id": id })).unwrap(),
            data: serde_json::from_value(json!({ "value_numeric": value })).unwrap(),
        }
    }

    pub(in crate::tailer::state) fn commit(state: &State, rows: Vec<Row>, pos: u64) {
        commit_to(state, KEY, rows, pos);
    }

    pub(in crate::tailer::state) fn commit_to(state: &State, key: &str, rows: Vec<Row>, pos: u64) {
        let mut txn = TxnChanges::default();
        txn.visits.insert(
            key.into(),
            VisitChanges {
                key: VisitKey {
                    patient_id: 7,
                    program_id: 1,
                    visit_date: "2026-01-02".into(),
                },
                rows: rows.iter().map(Into::into).collect(),
                closing: false,
                clinical: true,
                // (the source's clock: as the position goes)
                event_ms: pos * 1000,
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

    #[test]
    fn a_buffer_keeps_its_last_change_in_the_sources_time() {
        let (state, dir) = temp_state("event-time");
        commit(&state, vec![row(1, 1.0, Op::Upsert)], 10);
        // (a transaction stamped earlier, committed after: a long one)
        commit(&state, vec![row(2, 2.0, Op::Upsert)], 7);
        let open = state.open_visits().unwrap();
        assert_eq!(open.len(), 1);
        let meta = &open[0].1;
        assert_eq!((meta.last_event_ms, meta.last_change_ms), (10_000, 7));
        assert_eq!(meta.changes, 2);
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Opens a store again right after one on the same directory was dropped: sled's flusher
    /// thread can hold the directory's lock a moment longer (the test failed once, under
    /// load, with `Locked`), so `open` is tried again for up to 5 s.
    fn reopen<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match open() {
                Ok(opened) => return opened,
                Err(e) if std::time::Instant::now() >= deadline => panic!("{e:?}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
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
        let entries = state.outbox_peek_after(None, usize::MAX).unwrap();
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
    fn a_store_of_the_per_row_layout_is_migrated_on_open() {
        let (state, dir) = temp_state("migrate");
        commit(&state, vec![row(1, 1.0, Op::Upsert)], 10);
        let meta = state.visits.get(KEY).unwrap().unwrap();
        drop(state);
        // Rewrite it as an earlier version kept it: one entry per row and per ledger row.
        {
            let db = reopen(|| sled::open(&dir));
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
        let state = reopen(|| State::open(&dir));
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
