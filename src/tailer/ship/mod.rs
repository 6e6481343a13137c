//! The shipper: drains the outbox to the receiver in gzipped batches, with a bearer token and
//! an idempotency key; retries what may succeed later, dead-letters what never will.
//!
//! Delivery contract: an outbox entry leaves the outbox only when the receiver answered
//! 2xx/409 for a batch that contained it (ledger updated), or a 4xx other than
//! 408/425/429 named it (dead letter). Everything else is retried in order, forever, with
//! exponential backoff and full jitter.

mod batch;
mod classify;
mod sender;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::ShipConfig;
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::tailer::state::{DeadLetter, State, StateError};
use batch::Prepared;
pub use classify::{classify, Outcome};
pub use sender::{http_client, Sender};

/// Errors that stop the shipper (storage, setup); network trouble is retried, not returned.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The HTTP client could not be built (bad CA file ...).
    #[error("http client: {0}")]
    Client(String),
}

/// Shared view of the shipper for status pages.
#[derive(Debug, Default)]
pub struct ShipStatus {
    /// Unix ms of the last accepted batch.
    pub last_shipped_ms: std::sync::atomic::AtomicU64,
    /// Consecutive failures.
    pub failures: std::sync::atomic::AtomicU64,
    /// Why the last attempt failed (`None` after a success): a refused certificate, a
    /// refused token, an unreachable receiver. No patient data.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl ShipStatus {
    /// Records why an attempt failed (`None`: it succeeded).
    pub fn set_error(&self, reason: Option<&str>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = reason.map(str::to_owned);
    }
}

/// Ships the outbox.
pub struct Shipper {
    sender: Sender,
    config: ShipConfig,
    state: State,
    wake: Arc<Notify>,
    status: Arc<ShipStatus>,
}

impl Shipper {
    /// A shipper for `site_id` draining `state`'s outbox; `wake` is notified when entries arrive.
    pub fn new(
        config: ShipConfig,
        state: State,
        site_id: i64,
        wake: Arc<Notify>,
        status: Arc<ShipStatus>,
    ) -> Result<Self, ShipError> {
        Ok(Self {
            sender: Sender::new(&config, site_id, state.tailer_id()?)?,
            config,
            state,
            wake,
            status,
        })
    }

    /// Runs until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), ShipError> {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_secs(self.config.backoff_max_secs),
        );
        // After a refusal that names no visit, send one visit at a time to find it.
        let mut solo = 0usize;
        // The batch after the one in flight, made meanwhile on the blocking pool.
        let mut ahead: Option<tokio::task::JoinHandle<Result<Option<Prepared>, StateError>>> = None;
        loop {
            if shutdown.is_fired() {
                return Ok(());
            }
            let limit = if solo > 0 {
                1
            } else {
                self.config.max_batch_bytes
            };
            // (a made batch that failed to join is made again below)
            let mut made = match ahead.take() {
                Some(handle) => handle.await.ok().transpose()?.flatten(),
                None => None,
            };
            // An entry committed after the batch before was read can have a smaller id (ids are
            // taken before their transactions commit): the oldest entry still goes first.
            let first = made.as_ref().and_then(|b| b.entries.first()).map(|e| e.id);
            if first.is_some() && self.state.outbox_first_id()? < first {
                made = None;
            }
            let made = match made {
                Some(b) => Some(b),
                None => Prepared::read(
                    &self.state,
                    self.sender.site_id,
                    &self.sender.tailer_id,
                    None,
                    limit,
                )?,
            };
            let Some(Prepared {
                entries,
                heads,
                batch_id,
                raw_len,
                gz,
                oldest_ms,
            }) = made
            else {
                tokio::select! {
                    biased;
                    _ = shutdown.fired() => return Ok(()),
                    _ = self.wake.notified() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
                continue;
            };
            if solo == 0 {
                // Entries are appended with growing ids, so the next batch is the entries after
                // this one's last; it is used only if this one is stored.
                let (state, sender) = (self.state.clone(), self.sender.clone());
                let after = entries.last().map(|e| e.id);
                ahead = Some(tokio::task::spawn_blocking(move || {
                    Prepared::read(&state, sender.site_id, &sender.tailer_id, after, limit)
                }));
            }
            let waited = now_ms().saturating_sub(oldest_ms) / 1000;
            let outcome = self
                .sender
                .post_gzipped(&batch_id, raw_len, gz, waited)
                .await;
            if !matches!(outcome, Outcome::Stored | Outcome::Duplicate) {
                // (the outbox is read again from its first entry)
                ahead = None;
            }
            use std::sync::atomic::Ordering::Relaxed;
            match outcome {
                Outcome::Stored | Outcome::Duplicate => {
                    metrics::counter!(m::SHIP_REQUESTS, "outcome" => if outcome == Outcome::Stored { "stored" } else { "duplicate" }).increment(1);
                    metrics::counter!(m::SHIP_VISITS).increment(entries.len() as u64);
                    let done: Vec<(u64, String, u64)> = entries
                        .iter()
                        .zip(heads)
                        .map(|(e, h)| (e.id, h.stream_key, h.version))
                        .collect();
                    self.state.outbox_done(&done, now_ms())?;
                    self.status.last_shipped_ms.store(now_ms(), Relaxed);
                    self.status.failures.store(0, Relaxed);
                    self.status.set_error(None);
                    backoff.reset();
                    solo = solo.saturating_sub(1);
                }
                Outcome::Retry(reason) => {
                    metrics::counter!(m::SHIP_REQUESTS, "outcome" => "retry").increment(1);
                    self.status.failures.fetch_add(1, Relaxed);
                    self.status.set_error(Some(&reason));
                    tracing::warn!(%reason, failures = backoff.failures() + 1, visits = entries.len(), "ship failed; will retry");
                    if !backoff.wait(&mut shutdown).await {
                        return Ok(());
                    }
                }
                Outcome::Rejected {
                    status,
                    reason,
                    visit_index,
                } => {
                    metrics::counter!(m::SHIP_REQUESTS, "outcome" => "rejected").increment(1);
                    let culprit = match visit_index {
                        Some(i) if i < entries.len() => Some(i),
                        _ if entries.len() == 1 => Some(0),
                        _ => None,
                    };
                    match culprit {
                        Some(i) => {
                            tracing::error!(status, %reason, stream_key = %heads[i].stream_key, version = heads[i].version, "receiver refused a visit; moved to dead letters");
                            let letter =
                                DeadLetter {
                                    status,
                                    reason,
                                    at_ms: now_ms(),
                                    stream_key: heads[i].stream_key.clone(),
                                    version: heads[i].version,
                                    visit: serde_json::value::RawValue::from_string(
                                        String::from_utf8_lossy(&entries[i].visit).into_owned(),
                                    )
                                    .map_err(|source| StateError::Corrupt {
                                        what: "outbox entry",
                                        source,
                                    })?,
                                };
                            self.state.outbox_dead(&[entries[i].id], vec![letter])?;
                            metrics::gauge!(m::DEAD_LETTERS)
                                .set(self.state.dead_letters()?.len() as f64);
                        }
                        None => {
                            tracing::warn!(status, %reason, visits = entries.len(), "receiver refused a batch without naming a visit; sending one at a time");
                            solo = entries.len();
                        }
                    }
                }
            }
        }
    }
}
