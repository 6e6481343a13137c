//! The outbox (visit versions waiting to ship), the ledger of shipped versions and the dead
//! letters. The outbox's (count, bytes) counter is kept in the same transactions that change
//! the outbox, so metrics never walk it.
//!
//! An outbox value is `enqueue time (u64 BE) | 0 | the envelope deflated (see `packed`)`. A
//! value of an earlier version holds the envelope as it is after the time (its first byte
//! `{`); both are read.

use std::borrow::Cow;

use sled::transaction::{ConflictableTransactionResult, Transactional, TransactionalTree};

use super::{decode, encode, packed, DeadLetter, OutboxEntry, State, StateError, OUTBOX_SIZE};

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

/// Marks a deflated outbox value (an envelope of an earlier version starts with `{`).
const DEFLATED: u8 = 0;

/// The outbox value of `envelope` enqueued at `now`.
fn pack(now: u64, envelope: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(13 + envelope.len() / 6);
    head.extend(now.to_be_bytes());
    head.push(DEFLATED);
    packed::deflate_into(head, envelope)
}

/// The envelope's length in an outbox value (what it ships and what the counter counts).
fn envelope_len(value: &[u8]) -> usize {
    match value.get(8) {
        Some(&DEFLATED) => packed::inflated_len(&value[9..]).unwrap_or(0),
        _ => value.len().saturating_sub(8),
    }
}

/// (enqueue time, envelope) of an outbox value.
fn unpack(value: &[u8]) -> Result<(u64, Cow<'_, [u8]>), StateError> {
    let now = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(StateError::Malformed("outbox entry"))?;
    if value.get(8) != Some(&DEFLATED) {
        return Ok((now, Cow::Borrowed(&value[8..])));
    }
    Ok((
        now,
        Cow::Owned(packed::inflate(&value[9..], "outbox entry")?),
    ))
}

/// Inside a transaction: appends `envelope`, enqueued at `now`, to the outbox under `id` and
/// counts it.
fn put(
    outbox: &TransactionalTree,
    meta: &TransactionalTree,
    id: u64,
    now: u64,
    envelope: &[u8],
) -> ConflictableTransactionResult<(), StateError> {
    bump_outbox(meta, 1, envelope.len() as i64)?;
    outbox.insert(&id.to_be_bytes(), pack(now, envelope))?;
    Ok(())
}

/// Inside a transaction: removes the entry `id` from the outbox (if there) and uncounts it.
fn take(
    outbox: &TransactionalTree,
    meta: &TransactionalTree,
    id: u64,
) -> ConflictableTransactionResult<(), StateError> {
    if let Some(old) = outbox.remove(&id.to_be_bytes())? {
        bump_outbox(meta, -1, -(envelope_len(&old) as i64))?;
    }
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
    put(outbox, meta, id, now, &envelope(version))?;
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

    /// The id of the oldest outbox entry.
    pub fn outbox_first_id(&self) -> Result<Option<u64>, StateError> {
        Ok(self
            .outbox
            .first()?
            .map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]))))
    }

    /// Up to `max_bytes` of the oldest outbox entries after the entry `after` (all when
    /// `None`), at least one when any.
    pub fn outbox_peek_after(
        &self,
        after: Option<u64>,
        max_bytes: usize,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        let mut total = 0;
        let entries = match after {
            Some(id) => match id.checked_add(1) {
                Some(from) => self.outbox.range(from.to_be_bytes()..),
                None => return Ok(out),
            },
            None => self.outbox.iter(),
        };
        for item in entries {
            let (k, v) = item?;
            let len = envelope_len(&v);
            if !out.is_empty() && total + len > max_bytes {
                break;
            }
            total += len;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            let (enqueued_ms, visit) = unpack(&v)?;
            out.push(OutboxEntry {
                id,
                enqueued_ms,
                visit: visit.into_owned(),
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
                    take(outbox, meta, *id)?;
                    // (an older version can be stored after a newer one: a batch that failed
                    // is sent again after the batches sent behind it were stored)
                    let newer = shipped
                        .get(stream_key.as_bytes())?
                        .and_then(|v| decode::<(u64, u64)>("ledger", &v).ok())
                        .is_some_and(|(had, _)| had > *version);
                    if !newer {
                        shipped.insert(stream_key.as_bytes(), encode(&(version, now)))?;
                    }
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
                    take(outbox, meta, *id)?;
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
                    put(outbox, meta, *outbox_id, now, letter.visit.get().as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_stored_deflated_and_entries_of_an_earlier_version_still_ship() {
        let dir = std::env::temp_dir().join(format!(
            "emr-outbox-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        let state = State::open(&dir).unwrap();
        let envelope = br#"{"stream_key":"101:7:1:2026-01-02","version":1,"rows":[]}"#.repeat(20);
        (&state.outbox, &state.versions, &state.meta)
            .transaction(|(outbox, versions, meta)| {
                append_version((outbox, versions, meta), "k", 2, 5, |_| envelope.clone())
            })
            .map_err(StateError::from)
            .unwrap();
        let stored = state.outbox.get(2u64.to_be_bytes()).unwrap().unwrap();
        assert!(stored.len() < envelope.len() / 5, "{} bytes", stored.len());
        // An entry as an earlier version stored it: the time, then the envelope.
        let old = br#"{"stream_key":"101:8:1:2026-01-02","version":1}"#;
        state
            .outbox
            .insert(3u64.to_be_bytes(), [&6u64.to_be_bytes()[..], old].concat())
            .unwrap();
        (&state.meta,)
            .transaction(|(meta,)| bump_outbox(meta, 1, old.len() as i64))
            .map_err(StateError::from)
            .unwrap();
        assert_eq!(
            state.outbox_stats().unwrap(),
            (2, (envelope.len() + old.len()) as u64, Some(5))
        );
        // the byte limit counts envelopes as they ship
        assert_eq!(
            state.outbox_peek_after(None, envelope.len()).unwrap().len(),
            1
        );
        let entries = state.outbox_peek_after(None, usize::MAX).unwrap();
        assert_eq!(entries[0].visit, envelope);
        assert_eq!(entries[1].visit, old);
        assert_eq!(entries[1].enqueued_ms, 6);
        // the entries after one (the batch after the one in flight), and the oldest's id
        let after: Vec<u64> = (state.outbox_peek_after(Some(2), usize::MAX).unwrap())
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(after, [3]);
        assert!(state
            .outbox_peek_after(Some(3), usize::MAX)
            .unwrap()
            .is_empty());
        assert!(state
            .outbox_peek_after(Some(u64::MAX), 1)
            .unwrap()
            .is_empty());
        assert_eq!(state.outbox_first_id().unwrap(), Some(2));
        state
            .outbox_done(&[(2, "a".into(), 1), (3, "b".into(), 1)], 7)
            .unwrap();
        assert_eq!(state.outbox_stats().unwrap(), (0, 0, None));
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
