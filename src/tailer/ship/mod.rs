//! The shipper: drains the outbox to the receiver in gzipped batches, with a bearer token and
//! an idempotency key; retries what may succeed later, dead-letters what never will.
//!
//! Delivery contract: an outbox entry leaves the outbox only when the receiver answered
//! 2xx/409 for a batch that contained it (ledger updated), or a 4xx other than
//! 408/425/429 named it (dead letter). Everything else is retried in order, forever, with
//! exponential backoff and full jitter.

mod batch;
mod classify;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::ShipConfig;
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::tailer::state::{DeadLetter, State, StateError};
use batch::Prepared;
pub use classify::{classify, Outcome};

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

/// Sends batches to the receiver: gzip, bearer token, idempotency key; classifies answers.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    token: crate::config::Secret,
    /// This facility.
    pub site_id: i64,
    /// The state store's id (part of every batch id).
    pub tailer_id: String,
    backoff: (Duration, Duration),
}

/// Builds the HTTP client: rustls with the web PKI roots plus `ca_file`, timeouts.
pub fn http_client(config: &ShipConfig) -> Result<reqwest::Client, ShipError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
        .timeout(Duration::from_secs(config.request_timeout_secs))
        .user_agent(concat!("emr-stream/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ShipError::Client(format!("cannot read ship.ca_file {}: {e}", path.display()))
        })?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ShipError::Client(format!("ship.ca_file {}: {e}", path.display())))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| ShipError::Client(e.to_string()))
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

impl Sender {
    /// A sender for `site_id` as configured in `[ship]`.
    pub fn new(config: &ShipConfig, site_id: i64, tailer_id: String) -> Result<Self, ShipError> {
        Ok(Self {
            client: http_client(config)?,
            url: config.url.clone(),
            token: config.token.clone(),
            site_id,
            tailer_id,
            backoff: (
                Duration::from_millis(config.backoff_initial_ms),
                Duration::from_secs(config.backoff_max_secs),
            ),
        })
    }

    /// Posts until the answer is final (stored, duplicate or rejected), retrying the rest with
    /// backoff; `None` when shutdown came first.
    pub async fn deliver(
        &self,
        batch_id: &str,
        body: &[u8],
        lag_seconds: u64,
        shutdown: &mut Shutdown,
    ) -> Option<Outcome> {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        loop {
            match self.post(batch_id, body, lag_seconds).await {
                Outcome::Retry(reason) => {
                    metrics::counter!(m::SHIP_REQUESTS, "outcome" => "retry").increment(1);
                    tracing::warn!(%reason, failures = backoff.failures() + 1, "direct ship failed; will retry");
                    if !backoff.wait(shutdown).await {
                        return None;
                    }
                }
                outcome => return Some(outcome),
            }
        }
    }

    /// One POST; the answer classified. `lag_seconds` (how long the oldest visit waited here)
    /// travels in the `X-Emr-Lag-Seconds` header for the receiver's status page.
    pub async fn post(&self, batch_id: &str, body: &[u8], lag_seconds: u64) -> Outcome {
        let gz = crate::wire::gzip(body);
        self.post_gzipped(batch_id, body.len(), gz, lag_seconds)
            .await
    }

    /// One POST of a body gzipped already (`raw_len` bytes before gzip); the answer classified.
    async fn post_gzipped(
        &self,
        batch_id: &str,
        raw_len: usize,
        gz: Vec<u8>,
        lag_seconds: u64,
    ) -> Outcome {
        metrics::counter!(m::SHIP_BYTES_RAW).increment(raw_len as u64);
        metrics::counter!(m::SHIP_BYTES_COMPRESSED).increment(gz.len() as u64);
        let started = Instant::now();
        let result = self
            .client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .header(crate::wire::IDEMPOTENCY_HEADER, batch_id)
            .header(crate::wire::LAG_HEADER, lag_seconds)
            .body(gz)
            .send()
            .await;
        let outcome = match result {
            Err(e) => Outcome::Retry(format!("connection: {}", without_url(&e))),
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                classify(status, &text)
            }
        };
        metrics::histogram!(m::SHIP_DURATION).record(started.elapsed().as_secs_f64());
        outcome
    }
}

/// A reqwest error with every cause (a refused certificate is the innermost one: "invalid
/// peer certificate: Expired", "UnknownIssuer", "NotValidForName"), without its URL (which
/// could carry credentials), with a hint when the receiver's certificate was refused.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let line = c.to_string();
        if !text.contains(&line) {
            text.push_str(&format!(": {line}"));
        }
        cause = c.source();
    }
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<receiver>");
    }
    if text.contains("certificate") {
        text.push_str(
            " (the receiver's TLS certificate was refused: check its dates and names, and \
             ship.ca_file; the outbox keeps every visit until it is accepted)",
        );
    }
    text
}
