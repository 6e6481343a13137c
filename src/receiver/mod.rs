//! The central receiver: `POST /api/v1/stream` (authenticate, decode, validate, apply to both
//! stores), the reports, `/status`, `/metrics`, `/healthz` and `/readyz`.
//!
//! Answers (DESIGN.md): 200 stored; 409 already stored; 422 invalid, with the JSON pointer of
//! the first bad field; 401/403 auth; 413 too large; 503 a store is unavailable. The receiver
//! is stateless: run several behind a load balancer.

mod app;
pub mod apply;
pub mod auth;
pub mod batch;
pub mod ids;
pub mod receive;
pub mod reports;
pub mod status;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::config::ReceiverConfig;
use crate::mapping::Mapping;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use app::{answer, App};
use apply::{MirrorStore, PgStore};
use auth::SiteTokens;
use batch::Caps;
use ids::Dirty;

/// A site silent this long is flagged on `/status` (as the EmrSiteSilent alert example does).
const SILENT_AFTER_SECS: u64 = 24 * 3600;

/// Runs the receiver until shutdown; in-flight requests finish first.
pub async fn run(
    config: ReceiverConfig,
    metrics: PrometheusHandle,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mapping = Mapping::load(&config.mapping)?;
    let mirror = MirrorStore::connect(config.mysql.url.expose(), &config.mysql.database, &mapping)
        .await
        .context("cannot set up the MySQL mirror")?;
    let pool = apply::postgres_pool(config.postgres.url.expose(), config.postgres.pool_size)?;
    let pg = PgStore::connect(pool.clone(), &mapping)
        .await
        .context("cannot set up PostgreSQL")?;
    let dirty = Dirty::default();
    let refresher = tokio::spawn(ids::refresher(
        pool,
        dirty.clone(),
        Duration::from_millis(config.views.debounce_ms),
        shutdown.clone(),
    ));
    // Views may be stale from a previous run: refresh once at start.
    dirty.mark();
    let app = Arc::new(App {
        tokens: SiteTokens::new(&config.sites),
        caps: Caps {
            max_decompressed: config.limits.max_decompressed_bytes,
            max_visits: config.limits.max_visits,
            max_rows: config.limits.max_rows,
        },
        mapping,
        mirror,
        pg,
        dirty,
        metrics,
        tx_curr: status::TxCurrCache::default(),
    });
    let router = Router::new()
        .route(crate::wire::STREAM_PATH, post(receive::stream))
        .route("/api/v1/reports/{name}", get(report))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_page))
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            config.limits.max_body_bytes,
            refuse_announced_oversize,
        ))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "receiver listening");
    let mut for_server = shutdown.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { for_server.fired().await })
        .await?;
    shutdown.fired().await;
    refresher.await.ok();
    Ok(())
}

/// Refuses a body whose announced length is over the cap before reading any of it (the body
/// limit layer catches bodies without a length, or that lie about it, while reading).
async fn refuse_announced_oversize(
    State(limit): State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        let mut response = answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({ "error": format!("body larger than {limit} bytes") }),
        );
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

async fn report(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(name) = reports::ReportName::parse(&name) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": "no such report; reports: tx_curr, tx_new, visits, missed_appointments" }),
        );
    };
    let accept_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    let today = chrono::Local::now().date_naive();
    let request = match reports::Request::parse(name, &params, accept_csv, today) {
        Ok(r) => r,
        Err(e) => return answer(StatusCode::BAD_REQUEST, json!({ "error": e.0 })),
    };
    match reports::read(app.pg.pool(), &request).await {
        Ok(report) if request.csv => {
            metrics::counter!(m::RECEIVER_REQUESTS, "status" => "200").increment(1);
            (
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                report.to_csv(),
            )
                .into_response()
        }
        Ok(report) => answer(
            StatusCode::OK,
            serde_json::to_value(report).unwrap_or_default(),
        ),
        Err(e) => {
            tracing::warn!(report = name.as_str(), error = %e, "report failed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "report store unavailable" }),
            )
        }
    }
}

async fn render_metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    // The views' age comes from the refresh log: another replica may have refreshed them.
    if let Ok(ages) = ids::view_ages(app.pg.pool()).await {
        for (view, age) in ages {
            metrics::gauge!(m::VIEW_AGE, "view" => view).set(age);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    format: Option<String>,
}

async fn status_page(
    State(app): State<Arc<App>>,
    Query(q): Query<StatusQuery>,
    headers: HeaderMap,
) -> Response {
    match status::sites(app.pg.pool(), &app.tokens.site_ids(), &app.tx_curr).await {
        Ok((lines, age)) => {
            if crate::web::wants_html(q.format.as_deref(), &headers) {
                axum::response::Html(status::to_html(&lines, age, SILENT_AFTER_SECS))
                    .into_response()
            } else {
                Json(status::to_json(&lines, age)).into_response()
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot read PostgreSQL");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "PostgreSQL unavailable" }),
            )
        }
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (pg, my) = tokio::join!(app.pg.ping(), app.mirror.ping());
    let status = if pg && my {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "postgres": pg, "mysql": my }))).into_response()
}
