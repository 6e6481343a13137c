//! `POST /api/v1/stream`: authenticate the site, gunzip and parse with caps, validate against
//! the mapping, apply to both stores at once, answer (DESIGN.md "Wire contract").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::app::{answer, App};
use super::apply::{self, Applied, ApplyError};
use super::auth::Caller;
use super::batch::{self, Refusal};
use crate::metrics as m;

fn refuse(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    answer(status, json!({ "error": r.error, "pointer": r.pointer }))
}

/// `POST /api/v1/stream`.
pub async fn stream(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let site_id = match app.tokens.caller(authorization) {
        Some(Caller::Site(site_id)) => site_id,
        Some(Caller::Reader(_)) => {
            return answer(
                StatusCode::FORBIDDEN,
                json!({ "error": "a reader token cannot send batches; use the site's token" }),
            )
        }
        None => {
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({ "error": "missing or unknown bearer token" }),
            )
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let gzip = match encoding.trim().to_ascii_lowercase().as_str() {
        "gzip" => true,
        "identity" | "" => false,
        _ => {
            return answer(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({ "error": "Content-Encoding must be gzip or identity" }),
            )
        }
    };
    let decoded = match batch::gunzip(&body, gzip, app.caps.max_decompressed) {
        Ok(d) => d,
        Err(r) => return refuse(r),
    };
    let batch = match batch::parse(&decoded) {
        Ok(b) => b,
        Err(r) => return refuse(r),
    };
    drop(decoded);
    if let Err(r) = batch::validate(&batch, site_id, app.caps, &app.mapping) {
        return refuse(r);
    }
    if let Some(key) = headers
        .get(crate::wire::IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        if key != batch.batch_id {
            return refuse(Refusal {
                status: 422,
                error: "Idempotency-Key differs from batch_id".into(),
                pointer: "/batch_id".into(),
            });
        }
    }
    metrics::gauge!(m::SITE_LAST_SEEN, "site" => site_id.to_string())
        .set(crate::clock::now_ms() as f64 / 1000.0);
    let mut batch = batch;
    let plan = Arc::new(apply::plan(&mut batch, &app.mapping));
    let batch = Arc::new(batch);
    // At most ten years, so a bad header cannot overflow the column.
    let lag = headers
        .get(crate::wire::LAG_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|l| (0..=315_360_000).contains(l));
    let both = apply::both(
        app.pg.clone(),
        &app.mirror,
        site_id,
        batch.clone(),
        plan.clone(),
        lag,
    )
    .await;
    metrics::histogram!(m::RECEIVER_APPLY_DURATION, "store" => "postgres").record(both.pg_seconds);
    metrics::histogram!(m::RECEIVER_APPLY_DURATION, "store" => "mysql").record(both.mysql_seconds);
    let (pg, mirror) = (both.pg, both.mysql);
    match (pg, mirror) {
        (Err(e), _) | (_, Err(e)) => store_error(e, site_id),
        (Ok(Applied::Duplicate), Ok(Applied::Duplicate)) => answer(
            StatusCode::CONFLICT,
            json!({ "batch_id": batch.batch_id, "status": "already stored" }),
        ),
        (Ok(pg), Ok(my)) => {
            for (table, t) in &plan.tables {
                for (store, applied) in [("postgres", pg), ("mysql", my)] {
                    if let Applied::Stored(_) = applied {
                        metrics::counter!(m::RECEIVER_ROWS_APPLIED, "table" => table.clone(), "store" => store).increment(t.rows.len() as u64);
                    }
                }
            }
            if let Some(l) = lag {
                metrics::gauge!(m::SITE_LAG, "site" => site_id.to_string()).set(f64::from(l));
            }
            answer(
                StatusCode::OK,
                json!({ "batch_id": batch.batch_id, "visits": batch.visits.len(), "rows": plan.rows_in }),
            )
        }
    }
}

fn store_error(e: ApplyError, site_id: i64) -> Response {
    if e.is_retryable() {
        tracing::warn!(site_id, error = %e, "store unavailable");
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        )
    } else {
        tracing::warn!(site_id, error = %e, "store refused a batch");
        answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": e.to_string(), "pointer": "" }),
        )
    }
}
