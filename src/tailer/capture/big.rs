//! Big transactions: the rows of an unfinished transaction beyond `SPILL_ROWS` ship straight
//! to the receiver as visit parts (`complete: false`), bypassing sled; the binlog is their
//! outbox (see the module doc of `capture`).

use std::sync::atomic::Ordering::Relaxed;

use super::Capture;
use crate::clock::now_ms;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::tailer::ship::Outcome;
use crate::tailer::state::DeadLetter;
use crate::tailer::visit::envelope;

impl Capture {
    /// Ships the held rows of an unfinished big transaction straight to the receiver (see the
    /// module doc); false when shutdown interrupted it.
    pub(super) async fn ship_open_transaction_part(
        &mut self,
        shutdown: &mut Shutdown,
    ) -> anyhow::Result<bool> {
        // Complete transactions before this one are written first.
        self.flush()?;
        let rows = std::mem::take(&mut self.pending);
        let first_lsn = rows
            .first()
            .map(|r| r.position.lsn(self.committed.epoch))
            .unwrap_or(0);
        let count = rows.len();
        let mut part = std::collections::BTreeMap::new();
        self.resolve_into(rows, &mut part).await?;
        // Its lookup entries are facts about committed rows: keep them (checkpoint unchanged).
        self.flush()?;
        let mut envelopes = Vec::with_capacity(part.len());
        for (stream_key, changes) in &part {
            let version = self.state.next_version(stream_key)?;
            let rows: Vec<&[u8]> = changes.rows.iter().map(|r| r.json.as_slice()).collect();
            envelopes.push((
                stream_key.clone(),
                version,
                envelope(stream_key, &changes.key, version, false, &rows),
            ));
        }
        let visits: Vec<&[u8]> = envelopes.iter().map(|e| e.2.as_slice()).collect();
        let batch_id = format!("{}-txn-{first_lsn}-{count}", self.sender.tailer_id);
        let body = crate::wire::batch_json(self.site_id, &batch_id, &visits);
        tracing::info!(
            rows = count,
            visits = visits.len(),
            "big transaction: shipping a part directly"
        );
        let lag = self.status.lag_seconds.load(Relaxed).max(0) as u64;
        match self.sender.deliver(&batch_id, &body, lag, shutdown).await {
            None => return Ok(false),
            Some(Outcome::Stored | Outcome::Duplicate) => {
                metrics::counter!(m::SHIP_REQUESTS, "outcome" => "stored").increment(1);
                metrics::counter!(m::SHIP_VISITS).increment(visits.len() as u64);
            }
            Some(Outcome::Rejected { status, reason, .. }) => {
                tracing::error!(status, %reason, rows = count, "receiver refused a big transaction's part; moved to dead letters");
                let letters = envelopes
                    .into_iter()
                    .map(|(stream_key, version, visit)| DeadLetter {
                        status,
                        reason: reason.clone(),
                        at_ms: now_ms(),
                        stream_key,
                        version,
                        visit: serde_json::value::RawValue::from_string(
                            String::from_utf8_lossy(&visit).into_owned(),
                        )
                        .expect("envelopes are JSON"),
                    })
                    .collect();
                self.state.add_dead_letters(letters)?;
            }
            Some(Outcome::Retry(_)) => unreachable!("deliver retries until the answer is final"),
        }
        Ok(true)
    }
}
