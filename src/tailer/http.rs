//! The tailer's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (connected to the source and its stream not stuck) and `/status` (JSON, or HTML for a
//! browser: checkpoint, lag, open visits, outbox, last shipment, dead letters with a retry
//! button), and `POST /sweep` (what `emr-stream sweep` asks a running tailer). Retrying and
//! sweeping are for the local admin only: requests from a loopback address carrying the page's
//! token, or the admin header. It shows ids, counts and positions only, never patient data.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use super::status::{render, Snapshot};
use super::CaptureStatus;
use crate::clock::now_ms;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::tailer::ship::ShipStatus;
use crate::tailer::state::State;
use crate::web::wants_html;

/// What the endpoint reads.
#[derive(Clone)]
pub struct Board {
    /// The state store.
    pub state: State,
    /// The metrics recorder.
    pub metrics: PrometheusHandle,
    /// The shipper's live numbers.
    pub ship: Arc<ShipStatus>,
    /// The capture loop's live numbers.
    pub capture: Arc<CaptureStatus>,
    /// This facility.
    pub site_id: i64,
    /// The source's heartbeat period: a stream silent for three of them is stuck.
    pub heartbeat_secs: u64,
    /// Wakes the shipper (after a retry).
    pub wake: Arc<Notify>,
    /// The token the status page's forms carry (against cross-site requests).
    pub admin_token: Arc<str>,
    /// Sweeps on demand (`POST /sweep`), one at a time with the nightly one.
    pub sweeps: Arc<crate::tailer::sweep::SweepRunner>,
}

/// Serves until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, board: Board, mut shutdown: Shutdown) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/dead/retry", post(retry))
        .route("/sweep", post(sweep))
        .with_state(board);
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.fired().await })
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "tailer http server failed");
    }
}

/// A random token for the admin forms (the OS's randomness, else the clock).
pub fn admin_token() -> Arc<str> {
    use sha2::Digest;
    let mut seed = Vec::new();
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let mut buf = [0u8; 32];
        if f.read_exact(&mut buf).is_ok() {
            seed.extend_from_slice(&buf);
        }
    }
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    seed.extend_from_slice(&clock.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    let hash = sha2::Sha256::digest(&seed);
    hash.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into()
}

async fn metrics(AxState(board): AxState<Board>) -> impl IntoResponse {
    // Outbox gauges are computed on scrape: the outbox can be large during an outage, and
    // a scrape every few seconds is the right rate to walk it.
    if let Ok((count, bytes, oldest)) = board.state.outbox_stats() {
        metrics::gauge!(m::OUTBOX_VISITS).set(count as f64);
        metrics::gauge!(m::OUTBOX_BYTES).set(bytes as f64);
        let age = oldest
            .map(|t| now_ms().saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!(m::OUTBOX_OLDEST).set(age);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        board.metrics.render(),
    )
}

/// Why the tailer is not ready, if it is not.
fn not_ready(board: &Board, now: u64) -> Option<String> {
    unready_reason(
        board.capture.connected.load(Relaxed) == 1,
        board.capture.last_event_ms.load(Relaxed),
        board.heartbeat_secs,
        now,
    )
}

/// Ready = connected to the source, and an event or heartbeat came within three heartbeat
/// periods (plus 5 s): the source sends heartbeats when idle, so silence means a stuck stream.
fn unready_reason(
    connected: bool,
    last_event_ms: u64,
    heartbeat_secs: u64,
    now: u64,
) -> Option<String> {
    if !connected {
        return Some("not connected to the source".into());
    }
    let last = last_event_ms;
    let limit_ms = (3 * heartbeat_secs.max(1) + 5) * 1000;
    if last == 0 || now.saturating_sub(last) > limit_ms {
        return Some(format!(
            "no binlog event or heartbeat for over {} s",
            limit_ms / 1000
        ));
    }
    None
}

async fn readyz(AxState(board): AxState<Board>) -> Response {
    match not_ready(&board, now_ms()) {
        None => (StatusCode::OK, Json(json!({ "ready": true }))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// What `/status` shows, read now.
fn snapshot(board: &Board) -> Result<Snapshot, crate::tailer::state::StateError> {
    let checkpoint = board.state.checkpoint()?;
    let (outbox, outbox_bytes, oldest) = board.state.outbox_stats()?;
    let dead = board.state.dead_letters()?;
    let now = now_ms();
    let nonzero = |t: u64| (t != 0).then_some(t);
    Ok(Snapshot {
        site_id: board.site_id,
        connected: board.capture.connected.load(Relaxed) == 1,
        capture_paused: board.capture.paused.load(Relaxed) == 1,
        state_free_mib: board.capture.free_bytes.load(Relaxed) >> 20,
        ready: not_ready(board, now).is_none(),
        checkpoint: checkpoint.as_ref().map(|c| c.position.to_string()),
        gtid: checkpoint.as_ref().and_then(|c| c.gtid.clone()),
        lag_seconds: board.capture.lag_seconds.load(Relaxed),
        last_event_ms: nonzero(board.capture.last_event_ms.load(Relaxed)),
        transactions: board.capture.transactions.load(Relaxed),
        open_visits: board.state.open_visit_count(),
        outbox_visits: outbox,
        outbox_bytes,
        outbox_oldest_age_seconds: oldest.map(|t| now.saturating_sub(t) / 1000),
        dead_letters: dead.len(),
        dead: dead
            .iter()
            .map(|(id, letter)| crate::tailer::dead::summary(*id, letter))
            .collect(),
        last_shipped_ms: nonzero(board.ship.last_shipped_ms.load(Relaxed)),
        ship_failures: board.ship.failures.load(Relaxed),
        last_ship_error: board
            .ship
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    })
}

#[derive(Deserialize)]
struct StatusQuery {
    format: Option<String>,
}

async fn status(
    AxState(board): AxState<Board>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    let s = match snapshot(&board) {
        Ok(s) => s,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    if wants_html(q.format.as_deref(), &headers) {
        Html(render(&s, peer.ip().is_loopback(), &board.admin_token)).into_response()
    } else {
        Json(s).into_response()
    }
}

#[derive(Deserialize)]
struct RetryForm {
    token: String,
    id: u64,
}

async fn retry(
    AxState(board): AxState<Board>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<RetryForm>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "dead letters are retried from the facility machine only\n",
        )
            .into_response();
    }
    if form.token != *board.admin_token {
        return (
            StatusCode::FORBIDDEN,
            "stale or missing page token: reload /status\n",
        )
            .into_response();
    }
    match board.state.dead_retry(&[form.id], now_ms()) {
        Ok(n) => {
            tracing::info!(
                id = form.id,
                moved = n,
                "dead letter retried from the status page"
            );
            if let Ok(dead) = board.state.dead_letters() {
                metrics::gauge!(m::DEAD_LETTERS).set(dead.len() as f64);
            }
            board.wake.notify_one();
            Redirect::to("/status").into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn sweep(
    AxState(board): AxState<Board>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(window): Json<crate::tailer::sweep::Window>,
) -> Response {
    if !peer.ip().is_loopback() || !headers.contains_key(crate::tailer::sweep::ADMIN_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            "sweeps are started from the facility machine: `emr-stream sweep`\n",
        )
            .into_response();
    }
    if window.since > window.until {
        return (StatusCode::BAD_REQUEST, "since is after until\n").into_response();
    }
    tracing::info!(since = %window.since, until = %window.until, "sweep asked for");
    match board.sweeps.run(&window, false).await {
        None => (
            StatusCode::CONFLICT,
            "a sweep is running already (the nightly one, or another request)\n",
        )
            .into_response(),
        Some(Ok(summary)) => {
            board.wake.notify_one();
            Json(summary).into_response()
        }
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_connection_and_a_recent_event() {
        let now = 1_000_000;
        assert_eq!(unready_reason(true, now - 2_000, 10, now), None);
        assert_eq!(
            unready_reason(false, now, 10, now).as_deref(),
            Some("not connected to the source")
        );
        // 3 heartbeats of 10 s + 5 s = 35 s of silence allowed
        assert_eq!(unready_reason(true, now - 35_000, 10, now), None);
        assert!(unready_reason(true, now - 35_001, 10, now)
            .unwrap()
            .contains("35 s"));
        assert!(unready_reason(true, 0, 10, now).is_some());
    }
}
