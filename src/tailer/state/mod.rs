//! The tailer's embedded state in sled: checkpoint, open visit buffers, the lookup index,
//! the outbox, the ledger of shipped versions and the dead letters. Nothing outside this
//! module sees sled types.
//!
//! Invariants:
//! - `commit_transaction` writes a source transaction's rows into visit buffers, its lookup
//!   entries and the checkpoint after it in **one** sled transaction: after a crash, state is
//!   a prefix of source transactions and the checkpoint says which.
//! - `move_to_outbox` removes a visit buffer and appends its envelope to the outbox in one
//!   transaction; an outbox entry leaves only through `outbox_done` (2xx/409) or
//!   `outbox_dead` (other 4xx), never silently.

mod keys;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::clock::now_ms;
use crate::position::BinlogPosition;
use crate::tailer::visit::{VisitKey, VisitMeta};
use crate::wire;
pub use keys::{canonical_pk, row_key, visit_prefix};

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// sled failed (disk full, corruption, I/O).
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value did not decode (a bug or a corrupted store).
    #[error("state store: undecodable {what}: {source}")]
    Corrupt {
        /// Which record.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A visit buffer changed between reading and moving it (the move is retried later).
    #[error("state store: visit buffer changed during a move")]
    Changed,
    /// Another process holds the state directory.
    #[error("state directory {0} is in use by another emr-stream process (a tailer is running?)")]
    Locked(String),
}

impl From<TransactionError<StateError>> for StateError {
    fn from(e: TransactionError<StateError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StateError::Sled(e),
        }
    }
}

/// Where the tailer resumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Position after the last whole source transaction recorded.
    pub position: BinlogPosition,
    /// Its MariaDB GTID, when known.
    pub gtid: Option<String>,
    /// The `lsn` epoch (goes up when the source's positions went back).
    pub epoch: u64,
    /// Source `@@server_id` this checkpoint belongs to.
    pub server_id: u32,
    /// Source commit time of that transaction (unix seconds).
    pub timestamp: u32,
}

/// A dead letter: an outbox entry the receiver refused for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// HTTP status (0 when not from HTTP).
    pub status: u16,
    /// The receiver's reason (no patient data: the receiver only names fields).
    pub reason: String,
    /// When (unix ms).
    pub at_ms: u64,
    /// Stream key of the visit.
    pub stream_key: String,
    /// Version of the visit.
    pub version: u64,
    /// The visit envelope as it was to be sent.
    pub visit: Box<serde_json::value::RawValue>,
}

/// One pending outbox entry.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// Outbox id (monotone).
    pub id: u64,
    /// When it was enqueued (unix ms).
    pub enqueued_ms: u64,
    /// The visit envelope (JSON).
    pub visit: Vec<u8>,
}

/// The rows one source transaction brings to one visit.
#[derive(Debug)]
pub struct VisitChanges {
    /// The visit.
    pub key: VisitKey,
    /// Its rows (a row changed twice keeps the latest).
    pub rows: Vec<wire::Row>,
    /// A closing encounter type committed.
    pub closing: bool,
    /// Some row is clinical (role `visit`), so the visit may wait for a closing encounter.
    pub clinical: bool,
}

/// The rows of one source transaction, grouped by visit, ready to be recorded.
#[derive(Debug, Default)]
pub struct TxnChanges {
    /// Per stream key.
    pub visits: BTreeMap<String, VisitChanges>,
    /// New lookup index entries (table, pk) → visit key.
    pub lookups: HashMap<(String, String), VisitKey>,
}

/// Most rows in one outbox entry: a bigger visit ships in parts (one version each).
pub const VISIT_PART_ROWS: usize = 2_000;

/// What `move_to_outbox` moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedPart {
    /// The version the part was given.
    pub version: u64,
    /// Whether the buffer is now empty (and gone).
    pub last: bool,
}

const CHECKPOINT: &[u8] = b"checkpoint";
const TAILER_ID: &[u8] = b"tailer_id";
/// (count, bytes) of the outbox, kept in the transactions that change it, so that metrics
/// never walk a large outbox.
const OUTBOX_SIZE: &[u8] = b"outbox_size";

/// The store.
#[derive(Clone)]
pub struct State {
    db: sled::Db,
    meta: sled::Tree,
    visits: sled::Tree,
    visit_rows: sled::Tree,
    lookup: sled::Tree,
    outbox: sled::Tree,
    versions: sled::Tree,
    shipped: sled::Tree,
    dead: sled::Tree,
    digests: sled::Tree,
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt { what, source })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("state records serialize")
}

/// Adds to the outbox's (count, bytes) counter inside a transaction.
fn bump_outbox(
    meta: &sled::transaction::TransactionalTree,
    count: i64,
    bytes: i64,
) -> sled::transaction::ConflictableTransactionResult<(), StateError> {
    let (c, b) = meta
        .get(OUTBOX_SIZE)?
        .map(|v| outbox_size(&v))
        .unwrap_or((0, 0));
    let mut value = (c as i64 + count).max(0).to_be_bytes().to_vec();
    value.extend((b as i64 + bytes).max(0).to_be_bytes());
    meta.insert(OUTBOX_SIZE, value)?;
    Ok(())
}

/// Inside a transaction: gives `stream_key` its next version, appends the envelope built for
/// it to the outbox under `id` and counts it. Returns the version.
fn append_version(
    (outbox, versions, meta): (
        &sled::transaction::TransactionalTree,
        &sled::transaction::TransactionalTree,
        &sled::transaction::TransactionalTree,
    ),
    stream_key: &str,
    id: u64,
    now: u64,
    envelope: impl Fn(u64) -> Vec<u8>,
) -> sled::transaction::ConflictableTransactionResult<u64, StateError> {
    let version = versions
        .get(stream_key.as_bytes())?
        .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0)
        + 1;
    let mut value = now.to_be_bytes().to_vec();
    value.extend(envelope(version));
    bump_outbox(meta, 1, value.len() as i64 - 8)?;
    outbox.insert(&id.to_be_bytes(), value)?;
    versions.insert(stream_key.as_bytes(), &version.to_be_bytes())?;
    Ok(version)
}

fn outbox_size(v: &[u8]) -> (u64, u64) {
    let c = v
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let b = v
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    (c, b)
}

fn abort(e: StateError) -> ConflictableTransactionError<StateError> {
    ConflictableTransactionError::Abort(e)
}

/// The digest of a stored row's content: its primary key and data, not its `lsn` (the same
/// row read again later digests the same). Rows are stored as `{"table","op","lsn","pk",
/// "data"}` in that order.
pub fn row_digest(stored: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let from = stored.windows(5).position(|w| w == b"\"pk\":").unwrap_or(0);
    let hash = sha2::Sha256::digest(&stored[from..]);
    let mut out = [0; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

impl State {
    /// Opens (or creates) the store in `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        Self::open_with_cache(dir, crate::config::DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store in `dir` with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(dir: &Path, cache_mib: u64) -> Result<Self, StateError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_mib.max(1) * 1024 * 1024)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    StateError::Locked(dir.display().to_string())
                }
                other => StateError::Sled(other),
            })?;
        let state = Self {
            meta: db.open_tree("meta")?,
            visits: db.open_tree("visits")?,
            visit_rows: db.open_tree("visit_rows")?,
            lookup: db.open_tree("lookup")?,
            outbox: db.open_tree("outbox")?,
            versions: db.open_tree("versions")?,
            shipped: db.open_tree("shipped")?,
            dead: db.open_tree("dead")?,
            digests: db.open_tree("digests")?,
            db,
        };
        if state.meta.get(TAILER_ID)?.is_none() {
            let id = format!("{:016x}{:08x}", now_ms(), std::process::id());
            state.meta.insert(TAILER_ID, id.as_bytes())?;
        }
        Ok(state)
    }

    /// A random id of this state store, fixed at creation (batch ids include it, so that a
    /// fresh store never reuses a batch id the receiver has seen).
    pub fn tailer_id(&self) -> Result<String, StateError> {
        Ok(self
            .meta
            .get(TAILER_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default())
    }

    /// The checkpoint, if any transaction was recorded.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        self.meta
            .get(CHECKPOINT)?
            .map(|v| decode("checkpoint", &v))
            .transpose()
    }

    /// Sets the checkpoint alone (first start, reset).
    pub fn set_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StateError> {
        self.meta.insert(CHECKPOINT, encode(checkpoint))?;
        self.db.flush()?;
        Ok(())
    }

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
                for (k, digest) in row_keys.iter().zip(&digests) {
                    rows.remove(k)?;
                    digest_tree.insert(k, &digest[..])?;
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
                        digests.insert(k.as_slice(), &row_digest(row)[..])?;
                    }
                    Ok(version)
                })
                .map_err(StateError::from)?;
            given.push(version);
        }
        Ok(given)
    }

    /// A value kept in the meta tree under `name` (sweep progress and the like).
    pub fn meta_get<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        self.meta
            .get(format!("x:{name}"))?
            .map(|v| decode("meta", &v))
            .transpose()
    }

    /// Stores `value` in the meta tree under `name`; `None` removes it.
    pub fn meta_set<T: Serialize>(&self, name: &str, value: Option<&T>) -> Result<(), StateError> {
        match value {
            Some(v) => self.meta.insert(format!("x:{name}"), encode(v))?,
            None => self.meta.remove(format!("x:{name}"))?,
        };
        Ok(())
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

    /// Records dead letters that never were in the outbox.
    pub fn add_dead_letters(&self, letters: Vec<DeadLetter>) -> Result<(), StateError> {
        self.outbox_dead(&[], letters)
    }

    /// Up to `max_bytes` of the oldest outbox entries (at least one when any).
    pub fn outbox_peek(&self, max_bytes: usize) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        let mut total = 0;
        for item in self.outbox.iter() {
            let (k, v) = item?;
            if !out.is_empty() && total + v.len() > max_bytes {
                break;
            }
            total += v.len();
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            let enqueued_ms = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
            out.push(OutboxEntry {
                id,
                enqueued_ms,
                visit: v[8..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Entries the receiver stored (2xx) or already had (409): out of the outbox, into the
    /// ledger of shipped versions.
    pub fn outbox_done(&self, done: &[(u64, String, u64)], now: u64) -> Result<(), StateError> {
        (&self.outbox, &self.shipped, &self.meta)
            .transaction(|(outbox, shipped, meta)| {
                for (id, stream_key, version) in done {
                    if let Some(old) = outbox.remove(&id.to_be_bytes())? {
                        bump_outbox(meta, -1, 8 - old.len() as i64)?;
                    }
                    shipped.insert(stream_key.as_bytes(), encode(&(version, now)))?;
                }
                Ok(())
            })
            .map_err(StateError::from)
    }

    /// Entries the receiver refused for good: out of the outbox, into dead letters.
    pub fn outbox_dead(&self, ids: &[u64], letters: Vec<DeadLetter>) -> Result<(), StateError> {
        let dead_ids: Vec<u64> = letters
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
        (&self.outbox, &self.dead, &self.meta)
            .transaction(|(outbox, dead, meta)| {
                for id in ids {
                    if let Some(old) = outbox.remove(&id.to_be_bytes())? {
                        bump_outbox(meta, -1, 8 - old.len() as i64)?;
                    }
                }
                for (id, letter) in dead_ids.iter().zip(&letters) {
                    dead.insert(&id.to_be_bytes(), encode(letter))?;
                }
                Ok(())
            })
            .map_err(StateError::from)
    }

    /// (count, bytes, oldest enqueue time in unix ms) of the outbox.
    pub fn outbox_stats(&self) -> Result<(usize, u64, Option<u64>), StateError> {
        let (count, bytes) = self
            .meta
            .get(OUTBOX_SIZE)?
            .map(|v| outbox_size(&v))
            .unwrap_or((0, 0));
        let oldest = self.outbox.first()?.and_then(|(_, v)| {
            v.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        });
        Ok((count as usize, bytes, oldest))
    }

    /// Number of outbox entries.
    pub fn outbox_len(&self) -> usize {
        self.meta
            .get(OUTBOX_SIZE)
            .ok()
            .flatten()
            .map(|v| outbox_size(&v).0 as usize)
            .unwrap_or(0)
    }

    /// Dead letters, oldest first, with their ids.
    pub fn dead_letters(&self) -> Result<Vec<(u64, DeadLetter)>, StateError> {
        self.dead
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])),
                    decode("dead letter", &v)?,
                ))
            })
            .collect()
    }

    /// Moves dead letters back to the end of the outbox (to be shipped again); returns how many.
    pub fn dead_retry(&self, ids: &[u64], now: u64) -> Result<usize, StateError> {
        let mut moved = Vec::new();
        for id in ids {
            if let Some(v) = self.dead.get(id.to_be_bytes())? {
                let letter: DeadLetter = decode("dead letter", &v)?;
                moved.push((*id, self.db.generate_id()?, letter));
            }
        }
        (&self.dead, &self.outbox, &self.meta)
            .transaction(|(dead, outbox, meta)| {
                for (id, outbox_id, letter) in &moved {
                    dead.remove(&id.to_be_bytes())?;
                    let mut value = now.to_be_bytes().to_vec();
                    value.extend_from_slice(letter.visit.get().as_bytes());
                    bump_outbox(meta, 1, value.len() as i64 - 8)?;
                    outbox.insert(&outbox_id.to_be_bytes(), value)?;
                }
                Ok(())
            })
            .map_err(StateError::from)?;
        Ok(moved.len())
    }

    /// Deletes dead letters for good; returns how many.
    pub fn dead_drop(&self, ids: &[u64]) -> Result<usize, StateError> {
        let mut n = 0;
        for id in ids {
            if self.dead.remove(id.to_be_bytes())?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The last shipped version of a visit and when (unix ms).
    pub fn shipped(&self, stream_key: &str) -> Result<Option<(u64, u64)>, StateError> {
        self.shipped
            .get(stream_key.as_bytes())?
            .map(|v| decode("ledger", &v))
            .transpose()
    }

    /// Waits until everything written so far is on disk.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "emr-state-{name}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn row(table: &str, id: i64, lsn: u64) -> wire::Row {
        wire::Row {
            table: table.into(),
            op: crate::wire::Op::Upsert,
            lsn,
            pk: serde_json::from_value(json!({ "obs_id": id })).unwrap(),
            data: serde_json::from_value(json!({ "value_numeric": 1.5 })).unwrap(),
        }
    }

    #[test]
    fn transaction_rows_and_checkpoint_move_together_and_outbox_versions() {
        let dir = temp_dir("txn");
        let state = State::open(&dir).unwrap();
        let key = VisitKey {
            patient_id: 7,
            program_id: 1,
            visit_date: "2026-01-02".into(),
        };
        let mut txn = TxnChanges::default();
        txn.visits.insert(
            "101:7:1:2026-01-02".into(),
            VisitChanges {
                key: key.clone(),
                rows: vec![row("obs", 1, 10), row("obs", 2, 10)],
                closing: false,
                clinical: true,
            },
        );
        let cp = Checkpoint {
            position: BinlogPosition {
                file: "binlog.000001".into(),
                pos: 500,
            },
            gtid: None,
            epoch: 0,
            server_id: 1,
            timestamp: 0,
        };
        state.commit_transaction(&txn, &cp, 1000).unwrap();
        assert_eq!(state.checkpoint().unwrap(), Some(cp));
        assert_eq!(state.open_visit_count(), 1);
        let v = state
            .move_to_outbox(
                "101:7:1:2026-01-02",
                |version, rows, _| format!("{version}:{}", rows.len()).into_bytes(),
                2000,
            )
            .unwrap();
        assert_eq!(
            v,
            Some(MovedPart {
                version: 1,
                last: true
            })
        );
        assert_eq!(state.open_visit_count(), 0);
        let entries = state.outbox_peek(1 << 20).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].visit, b"1:2");
        // a later change to the same visit ships as version 2
        state
            .commit_transaction(&txn, &state.checkpoint().unwrap().unwrap(), 3000)
            .unwrap();
        let v = state
            .move_to_outbox(
                "101:7:1:2026-01-02",
                |v, _, _| v.to_string().into_bytes(),
                4000,
            )
            .unwrap();
        assert_eq!(
            v,
            Some(MovedPart {
                version: 2,
                last: true
            })
        );
        state
            .outbox_done(&[(entries[0].id, "101:7:1:2026-01-02".into(), 1)], 5000)
            .unwrap();
        assert_eq!(state.outbox_len(), 1);
        assert_eq!(
            state.shipped("101:7:1:2026-01-02").unwrap(),
            Some((1, 5000))
        );
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
