//! A batch made ready to post: outbox entries read, their heads decoded, the body written and
//! gzipped. The shipper makes the next one while the receiver applies the current one
//! (`Shipper::run`), so reading, inflating and compressing are off the delivery's path.

use serde::Deserialize;

use crate::tailer::state::{OutboxEntry, State, StateError};

/// What the shipper needs to know of an outbox entry.
#[derive(Deserialize)]
pub(super) struct EntryHead {
    pub(super) stream_key: String,
    pub(super) version: u64,
}

/// A batch ready to post.
pub(super) struct Prepared {
    pub(super) entries: Vec<OutboxEntry>,
    pub(super) heads: Vec<EntryHead>,
    pub(super) batch_id: String,
    /// Bytes of the body before gzip.
    pub(super) raw_len: usize,
    /// The gzipped body.
    pub(super) gz: Vec<u8>,
    /// When its oldest visit entered the outbox (unix ms).
    pub(super) oldest_ms: u64,
}

impl Prepared {
    /// Up to `max_bytes` of the outbox's entries after `after` (from the first when `None`),
    /// as a batch of `site_id` from `tailer_id`; `None` when there are none.
    pub(super) fn read(
        state: &State,
        site_id: i64,
        tailer_id: &str,
        after: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<Self>, StateError> {
        let entries = state.outbox_peek_after(after, max_bytes)?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let heads: Vec<EntryHead> = entries
            .iter()
            .map(|e| {
                serde_json::from_slice(&e.visit).map_err(|source| StateError::Corrupt {
                    what: "outbox entry",
                    source,
                })
            })
            .collect::<Result<_, _>>()?;
        let batch_id = format!("{tailer_id}-{}-{}", first.id, last.id);
        let visits: Vec<&[u8]> = entries.iter().map(|e| e.visit.as_slice()).collect();
        let body = crate::wire::batch_json(site_id, &batch_id, &visits);
        let oldest_ms = entries.iter().map(|e| e.enqueued_ms).min().unwrap_or(0);
        Ok(Some(Self {
            gz: crate::wire::gzip(&body),
            raw_len: body.len(),
            entries,
            heads,
            batch_id,
            oldest_ms,
        }))
    }
}
