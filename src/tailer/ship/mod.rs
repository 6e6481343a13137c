//! The shipper: drains the outbox to the receiver in gzipped batches, with a bearer token and
//! an idempotency key; retries what may succeed later, dead-letters what never will.
//!
//! Delivery contract: an outbox entry leaves the outbox only when the receiver answered
//! 2xx/409 for a batch that contained it (ledger updated), or a 4xx other than
//! 408/425/429 named it (dead letter). Everything else is retried, oldest entry first,
//! forever, with exponential backoff and full jitter. Up to `ship.in_flight` batches are
//! posted at once (`Shipper::run`).

mod batch;
mod classify;
mod sender;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::ShipConfig;
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::tailer::state::{DeadLetter, OutboxEntry, State, StateError};
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
    ///
    /// Up to `in_flight` batches are posted at once, each the entries after the one before;
    /// their answers are taken in the order they were sent. A batch that is not stored is
    /// sent again from the outbox's first entry once the batches sent after it are answered
    /// (what those stored stays stored: the receiver keeps the newest image of every row, so
    /// the order batches arrive in does not matter).
    pub async fn run(self, mut shutdown: Shutdown) -> Result<(), ShipError> {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.backoff_initial_ms),
            Duration::from_secs(self.config.backoff_max_secs),
        );
        // After a refusal that names no visit, send one visit at a time to find it.
        let mut solo = 0usize;
        // Posted, not yet answered, oldest first.
        let mut flying: VecDeque<Flight> = VecDeque::new();
        // The batch after the last one posted, made meanwhile on the blocking pool.
        let mut ahead: Option<Making> = None;
        loop {
            if shutdown.is_fired() {
                // (what is posted is answered first, as when one batch was sent at a time)
                self.settle_all(flying).await?;
                return Ok(());
            }
            let (window, limit) = if solo > 0 {
                (1, 1)
            } else {
                (self.config.in_flight.max(1), self.config.max_batch_bytes)
            };
            while flying.len() < window {
                let Some(batch) = self.next_batch(&flying, ahead.take(), limit).await? else {
                    break;
                };
                if solo == 0 {
                    // Entries are appended with growing ids, so the next batch is the entries
                    // after this one's last.
                    ahead = Some(self.make_after(batch.entries.last().map(|e| e.id), limit));
                }
                flying.push_back(self.post(batch));
            }
            let Some(mut flight) = flying.pop_front() else {
                ahead = None;
                tokio::select! {
                    biased;
                    _ = shutdown.fired() => return Ok(()),
                    _ = self.wake.notified() => {},
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
                continue;
            };
            let outcome = flight.answer().await;
            if self.settle(&flight, &outcome)? {
                backoff.reset();
                solo = solo.saturating_sub(1);
                continue;
            }
            // Not stored: the batches sent after it are answered first (what they stored
            // leaves the outbox), then the outbox is read again from its first entry.
            ahead = None;
            self.settle_all(std::mem::take(&mut flying)).await?;
            use std::sync::atomic::Ordering::Relaxed;
            let Flight { entries, heads, .. } = flight;
            match outcome {
                Outcome::Stored | Outcome::Duplicate => {}
                Outcome::Retry(reason) => {
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

    /// The next batch to post: the one made ahead if it still is (else the entries after the
    /// last one in flight), or the outbox's first entries when nothing is in flight; `None`
    /// when there is nothing to send, or when an entry older than those in flight has been
    /// committed since (ids are taken before their transactions commit): the batches in
    /// flight are answered first, and the oldest entry then goes first.
    async fn next_batch(
        &self,
        flying: &VecDeque<Flight>,
        ahead: Option<Making>,
        limit: usize,
    ) -> Result<Option<Prepared>, ShipError> {
        let mut made = match ahead {
            Some(handle) => joined(handle).await?,
            None => None,
        };
        if made.is_none() && !flying.is_empty() {
            let after = flying.back().and_then(|f| f.entries.last()).map(|e| e.id);
            made = joined(self.make_after(after, limit)).await?;
        }
        let oldest_expected = flying
            .front()
            .and_then(|f| f.entries.first())
            .or_else(|| made.as_ref().and_then(|b| b.entries.first()))
            .map(|e| e.id);
        let first = self.state.outbox_first_id()?;
        if first.is_some() && oldest_expected.is_some() && first < oldest_expected {
            if !flying.is_empty() {
                return Ok(None);
            }
            made = None;
        }
        Ok(match made {
            Some(b) => Some(b),
            None if flying.is_empty() => Prepared::read(
                &self.state,
                self.sender.site_id,
                &self.sender.tailer_id,
                None,
                limit,
            )?,
            None => None,
        })
    }

    /// Starts making the batch of the outbox's entries after `after` (up to `limit` bytes) on
    /// the blocking pool.
    fn make_after(&self, after: Option<u64>, limit: usize) -> Making {
        let (state, sender) = (self.state.clone(), self.sender.clone());
        tokio::task::spawn_blocking(move || {
            Prepared::read(&state, sender.site_id, &sender.tailer_id, after, limit)
        })
    }

    /// Posts `batch` on its own task.
    fn post(&self, batch: Prepared) -> Flight {
        let Prepared {
            entries,
            heads,
            batch_id,
            raw_len,
            gz,
            oldest_ms,
        } = batch;
        let waited = now_ms().saturating_sub(oldest_ms) / 1000;
        let sender = self.sender.clone();
        let post =
            tokio::spawn(async move { sender.post_gzipped(&batch_id, raw_len, gz, waited).await });
        Flight {
            entries,
            heads,
            post,
        }
    }

    /// Waits for the answers of `flights`, oldest first, and settles each.
    async fn settle_all(&self, flights: VecDeque<Flight>) -> Result<(), ShipError> {
        for mut flight in flights {
            let answer = flight.answer().await;
            self.settle(&flight, &answer)?;
        }
        Ok(())
    }

    /// Counts an answer, and takes a stored (or duplicate) batch's entries out of the outbox;
    /// whether it was.
    fn settle(&self, flight: &Flight, outcome: &Outcome) -> Result<bool, ShipError> {
        use std::sync::atomic::Ordering::Relaxed;
        let label = match outcome {
            Outcome::Stored => "stored",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry(_) => "retry",
            Outcome::Rejected { .. } => "rejected",
        };
        metrics::counter!(m::SHIP_REQUESTS, "outcome" => label).increment(1);
        if !matches!(outcome, Outcome::Stored | Outcome::Duplicate) {
            return Ok(false);
        }
        metrics::counter!(m::SHIP_VISITS).increment(flight.entries.len() as u64);
        let done: Vec<(u64, String, u64)> = flight
            .entries
            .iter()
            .zip(&flight.heads)
            .map(|(e, h)| (e.id, h.stream_key.clone(), h.version))
            .collect();
        self.state.outbox_done(&done, now_ms())?;
        self.status.last_shipped_ms.store(now_ms(), Relaxed);
        self.status.failures.store(0, Relaxed);
        self.status.set_error(None);
        Ok(true)
    }
}

/// A batch being made on the blocking pool (`None`: no entries).
type Making = tokio::task::JoinHandle<Result<Option<Prepared>, StateError>>;

/// The batch `making` made; `None` also when its task failed to join (it is made again).
async fn joined(making: Making) -> Result<Option<Prepared>, ShipError> {
    Ok(making.await.ok().transpose()?.flatten())
}

/// A batch posted and not yet answered.
struct Flight {
    entries: Vec<OutboxEntry>,
    heads: Vec<batch::EntryHead>,
    post: tokio::task::JoinHandle<Outcome>,
}

impl Flight {
    /// The receiver's answer (a post task that failed is one to retry).
    async fn answer(&mut self) -> Outcome {
        (&mut self.post)
            .await
            .unwrap_or_else(|e| Outcome::Retry(format!("post task: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use axum::http::{HeaderMap, StatusCode};

    use super::*;

    /// What the test receiver saw: the batch ids in the order they came, and the most
    /// requests it held at once.
    #[derive(Default)]
    struct Seen {
        ids: Mutex<Vec<String>>,
        now: AtomicUsize,
        most: AtomicUsize,
        second: Notify,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_batches_fly_at_once_and_one_not_stored_is_sent_again_alone() {
        // GIVEN a receiver that holds the first request until a second one arrives, answers
        // the first 503 and every other 200
        let seen = Arc::new(Seen::default());
        let app = axum::Router::new().route(
            "/stream",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        let id = headers[crate::wire::IDEMPOTENCY_HEADER]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        let n = {
                            let mut ids = seen.ids.lock().unwrap();
                            ids.push(id);
                            ids.len()
                        };
                        let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most.fetch_max(now, Ordering::SeqCst);
                        let status = match n {
                            1 => {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    seen.second.notified(),
                                )
                                .await;
                                StatusCode::SERVICE_UNAVAILABLE
                            }
                            2 => {
                                seen.second.notify_one();
                                StatusCode::OK
                            }
                            _ => StatusCode::OK,
                        };
                        seen.now.fetch_sub(1, Ordering::SeqCst);
                        (status, "{}")
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/stream", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        // AND four visits in the outbox, each its own batch
        let dir =
            std::env::temp_dir().join(format!("emr-ship-{}-{}", std::process::id(), now_ms()));
        let state = State::open(&dir).unwrap();
        let mut keys = Vec::new();
        for p in 1..=4 {
            let key = format!("101:{p}:1:2026-01-02");
            state
                .enqueue_snapshot(
                    &key,
                    &[],
                    |version, _, _| {
                        format!(
                            r#"{{"stream_key":"{key}","version":{version},"pad":"{}","rows":[]}}"#,
                            "x".repeat(700)
                        )
                        .into_bytes()
                    },
                    now_ms(),
                )
                .unwrap();
            keys.push(key);
        }
        let ids: Vec<u64> = state
            .outbox_peek_after(None, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        let config: ShipConfig = toml::from_str(&format!(
            "url = \"{url}\"\nmax_batch_bytes = 1024\nbackoff_initial_ms = 10\nin_flight = 2"
        ))
        .unwrap();
        let tailer_id = state.tailer_id().unwrap();
        let shipper = Shipper::new(
            config,
            state.clone(),
            101,
            Arc::new(Notify::new()),
            Arc::new(ShipStatus::default()),
        )
        .unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        let run = tokio::spawn(shipper.run(shutdown));
        // WHEN it ships until the outbox is empty
        let deadline = Instant::now() + Duration::from_secs(20);
        while state.outbox_stats().unwrap().0 > 0 {
            assert!(Instant::now() < deadline, "the outbox did not drain");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.fire();
        run.await.unwrap().unwrap();
        // THEN two requests were held at once: the first two batches, in the order they
        // reached the receiver (two connections: either may come first)
        assert_eq!(seen.most.load(Ordering::SeqCst), 2);
        let batch = |i: usize| format!("{tailer_id}-{}-{}", ids[i], ids[i]);
        let sent = seen.ids.lock().unwrap().clone();
        let mut first_two = sent[..2].to_vec();
        first_two.sort();
        assert_eq!(first_two, [batch(0), batch(1)]);
        // AND the one held and not stored went again, later, and every other batch once
        let held = &sent[0];
        assert_eq!(sent.iter().filter(|id| *id == held).count(), 2, "{sent:?}");
        let mut once: Vec<String> = sent.iter().filter(|id| *id != held).cloned().collect();
        once.sort();
        let mut others: Vec<String> = (0..4).map(batch).filter(|b| b != held).collect();
        others.sort();
        assert_eq!(once, others, "{sent:?}");
        // AND every visit is in the ledger of shipped versions
        for key in &keys {
            assert_eq!(state.shipped(key).unwrap().map(|(v, _)| v), Some(1));
        }
        drop(state);
        std::fs::remove_dir_all(&dir).ok();
    }
}
