//! The outbox (visit versions waiting to ship), the ledger of shipped versions and the dead
//! letters. The outbox's (count, bytes) counter is kept in the same transactions that change
//! the outbox, so metrics never walk it.

use sled::transaction::{ConflictableTransactionResult, Transactional, TransactionalTree};

use super::{decode, encode, DeadLetter, OutboxEntry, State, StateError, OUTBOX_SIZE};

/// Adds to the outbox's (count, bytes) counter inside a transaction.
fn bump_outbox(
    meta: &TransactionalTree,
    count: i64,
    bytes: i64,
) -> ConflictableTransactionResult<(), StateError> {
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
pub(super) fn append_version(
    (outbox, versions, meta): (&TransactionalTree, &TransactionalTree, &TransactionalTree),
    stream_key: &str,
    id: u64,
    now: u64,
    envelope: impl Fn(u64) -> Vec<u8>,
) -> ConflictableTransactionResult<u64, StateError> {
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

impl State {
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

    /// The stream keys of shipped visits dated `since..=until` (`YYYY-MM-DD`, the key's last
    /// part), by day. One pass over the ledger's visits (one entry per visit, not per row).
    pub fn shipped_by_day(
        &self,
        since: &str,
        until: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>, StateError> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for item in self.shipped.iter() {
            let (key, _) = item?;
            let Ok(stream_key) = std::str::from_utf8(&key) else {
                continue;
            };
            let Some(day) = stream_key.rsplit(':').next() else {
                continue;
            };
            if (since..=until).contains(&day) {
                out.entry(day.to_owned())
                    .or_default()
                    .push(stream_key.to_owned());
            }
        }
        Ok(out)
    }

    /// The last shipped version of a visit and when (unix ms).
    pub fn shipped(&self, stream_key: &str) -> Result<Option<(u64, u64)>, StateError> {
        self.shipped
            .get(stream_key.as_bytes())?
            .map(|v| decode("ledger", &v))
            .transpose()
    }
}
