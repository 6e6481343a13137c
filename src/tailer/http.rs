//! The tailer's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (alive) and
//! `/status` (JSON: checkpoint, lag, open visits, outbox, dead letters, last shipment).
//! It shows ids, counts and positions only, never patient data.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::CaptureStatus;
use crate::metrics as m;
use crate::ship::ShipStatus;
use crate::shutdown::Shutdown;
use crate::state::{now_ms, State};

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
}

/// Serves until shutdown.
pub async fn serve(listener: tokio::net::TcpListener, board: Board, mut shutdown: Shutdown) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .with_state(board);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.fired().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "tailer http server failed");
    }
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

async fn status(
    AxState(board): AxState<Board>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    let err = |e: crate::state::StateError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let checkpoint = board.state.checkpoint().map_err(err)?;
    let (outbox, outbox_bytes, oldest) = board.state.outbox_stats().map_err(err)?;
    let dead = board.state.dead_letters().map_err(err)?;
    let now = now_ms();
    Ok(Json(json!({
        "site_id": board.site_id,
        "connected": board.capture.connected.load(Relaxed) == 1,
        "checkpoint": checkpoint.as_ref().map(|c| c.position.to_string()),
        "gtid": checkpoint.as_ref().and_then(|c| c.gtid.clone()),
        "lag_seconds": board.capture.lag_seconds.load(Relaxed),
        "last_event_ms": match board.capture.last_event_ms.load(Relaxed) { 0 => None, t => Some(t) },
        "transactions": board.capture.transactions.load(Relaxed),
        "open_visits": board.state.open_visit_count(),
        "outbox_visits": outbox,
        "outbox_bytes": outbox_bytes,
        "outbox_oldest_age_seconds": oldest.map(|t| now.saturating_sub(t) / 1000),
        "dead_letters": dead.len(),
        "last_shipped_ms": match board.ship.last_shipped_ms.load(Relaxed) { 0 => None, t => Some(t) },
        "ship_failures": board.ship.failures.load(Relaxed),
    })))
}
