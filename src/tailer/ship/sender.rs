//! Posting a batch: the HTTP client (rustls, the web PKI roots plus `ship.ca_file`), the
//! bearer token and idempotency key, the answer classified.

use std::time::{Duration, Instant};

use super::classify::{classify, Outcome};
use super::ShipError;
use crate::config::ShipConfig;
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;

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
    pub(super) async fn post_gzipped(
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
