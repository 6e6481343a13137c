//! The tailer's embedded state in sled: checkpoint, open visit buffers, the lookup index,
//! the outbox, the ledger of shipped versions and the dead letters. Nothing outside this
//! module sees sled types.
//!
//! Invariants:
//! - `commit_transaction` writes a source transaction's rows into visit buffers, its lookup
//!   entries and the checkpoint after it in **one** sled transaction: after a crash, state is
//!   a prefix of source transactions and the checkpoint says which.
//! - `move_to_outbox` (`move_many_to_outbox` for several) removes a visit buffer and appends
//!   its envelope to the outbox in one transaction; an outbox entry leaves only through
//!   `outbox_done` (2xx/409) or `outbox_dead` (other 4xx), never silently.

mod chunks;
mod keys;
mod lookup;
mod moves;
mod outbox;
mod packed;
mod visits;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::clock::now_ms;
use crate::position::BinlogPosition;
use crate::tailer::visit::VisitKey;
use crate::wire;
pub use keys::{canonical_pk, row_id, row_id_of, visit_prefix};
pub use lookup::{LookupId, LookupKey};

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
    /// A stored binary value did not decode (a bug or a corrupted store).
    #[error("state store: malformed {0}")]
    Malformed(&'static str),
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
    pub rows: Vec<StoredRow>,
    /// A closing encounter type committed.
    pub closing: bool,
    /// Some row is clinical (role `visit`), so the visit may wait for a closing encounter.
    pub clinical: bool,
    /// The binlog timestamp of the last source transaction among them (unix ms).
    pub event_ms: u64,
}

/// A row as the visit buffers hold it: its row id (`row_id`) and its JSON, the bytes of
/// `serde_json::to_vec(&wire::Row)` (the sweep's ledger compares digests of these bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// `table \0 canonical-pk-json`.
    pub id: Vec<u8>,
    /// The row's JSON.
    pub json: Vec<u8>,
}

impl From<&wire::Row> for StoredRow {
    fn from(row: &wire::Row) -> Self {
        Self {
            id: row_id(&row.table, &row.pk),
            json: encode(row),
        }
    }
}

/// The rows of one source transaction, grouped by visit, ready to be recorded.
#[derive(Debug, Default)]
pub struct TxnChanges {
    /// Per stream key.
    pub visits: BTreeMap<String, VisitChanges>,
    /// New lookup index entries (table, row key) → visit key.
    pub lookups: HashMap<LookupKey, VisitKey>,
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
pub(super) const OUTBOX_SIZE: &[u8] = b"outbox_size";

/// The store.
#[derive(Clone)]
pub struct State {
    pub(super) db: sled::Db,
    pub(super) meta: sled::Tree,
    pub(super) visits: sled::Tree,
    /// Visit buffers: chunks of rows (see `chunks`).
    pub(super) visit_chunks: sled::Tree,
    pub(super) lookup: sled::Tree,
    pub(super) outbox: sled::Tree,
    pub(super) versions: sled::Tree,
    pub(super) shipped: sled::Tree,
    pub(super) dead: sled::Tree,
    /// Per visit, the digest of every row as last queued upserted (see `chunks`).
    pub(super) ledger: sled::Tree,
}

pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StateError> {
    serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt { what, source })
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("state records serialize")
}

pub(super) fn abort(e: StateError) -> ConflictableTransactionError<StateError> {
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
            visit_chunks: db.open_tree("visit_chunks")?,
            lookup: db.open_tree("lookup")?,
            outbox: db.open_tree("outbox")?,
            versions: db.open_tree("versions")?,
            shipped: db.open_tree("shipped")?,
            dead: db.open_tree("dead")?,
            ledger: db.open_tree("ledger")?,
            db,
        };
        chunks::migrate_per_row_layout(&state.db, &state.visit_chunks, &state.ledger)?;
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
                rows: vec![(&row("obs", 1, 10)).into(), (&row("obs", 2, 10)).into()],
                closing: false,
                clinical: true,
                event_ms: 0,
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
        let entries = state.outbox_peek_after(None, 1 << 20).unwrap();
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
