//! What every request handler of the receiver shares: the stores, the site tokens, the caps,
//! the metrics handle; and the one way handlers answer (counted per status).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::PrometheusHandle;

use super::apply::{MirrorStore, PgStore};
use super::auth::{Refused, Tokens};
use super::batch::Caps;
use super::status;
use crate::mapping::Mapping;
use crate::metrics as m;

/// Everything a request needs.
pub struct App {
    pub(crate) mapping: Mapping,
    pub(crate) tokens: Tokens,
    pub(crate) caps: Caps,
    pub(crate) mirror: MirrorStore,
    pub(crate) pg: std::sync::Arc<PgStore>,
    pub(crate) metrics: PrometheusHandle,
    pub(crate) tx_curr: status::TxCurrCache,
}

/// A JSON answer, counted in `emr_receiver_requests_total{status}`.
pub(crate) fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    metrics::counter!(m::RECEIVER_REQUESTS, "status" => status.as_u16().to_string()).increment(1);
    (status, Json(body)).into_response()
}

/// The answer to a refused reader: 401 (with the challenges a program and a browser answer)
/// or 403.
pub(crate) fn refuse_reader(refused: Refused) -> Response {
    let status = StatusCode::from_u16(refused.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = answer(status, serde_json::json!({ "error": refused.message() }));
    if refused == Refused::Unknown {
        // One challenge per header: browsers read the Basic one (the login prompt), programs
        // the Bearer one.
        for challenge in [
            "Basic realm=\"emr-stream (password: reader token)\"",
            "Bearer realm=\"emr-stream\"",
        ] {
            response.headers_mut().append(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static(challenge),
            );
        }
    }
    response
}
