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
pub mod commands;
pub mod ids;
pub mod pg;
pub mod receive;
pub mod reports;
pub mod status;
pub mod tls;

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
use app::{answer, refuse_reader, App};
use apply::{MirrorStore, PgOptions, PgStore};
use auth::Tokens;
use batch::Caps;

/// A site silent this long is flagged on `/status` (as the EmrSiteSilent alert example does).
const SILENT_AFTER_SECS: u64 = 24 * 3600;

/// Runs the receiver until shutdown; in-flight requests finish first.
pub async fn run(
    config: ReceiverConfig,
    metrics: PrometheusHandle,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mapping = Mapping::load(&config.mapping)?;
    // A certificate that cannot be used stops the start before anything else.
    let certs = match &config.tls {
        Some(t) => Some(tls::Certificates::load(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let mirror = MirrorStore::connect(
        config.mysql.url.expose(),
        config.mysql.ca_file.as_deref(),
        &config.mysql.database,
        &mapping,
    )
    .await
    .context("cannot set up the MySQL mirror")?;
    let pool = pg::pool_with(
        config.postgres.url.expose(),
        config.postgres.pool_size,
        config.postgres.ca_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("postgres: {e}"))?;
    let pg = PgStore::connect(
        pool.clone(),
        &mapping,
        PgOptions {
            partitions: config.postgres.partitions,
            inline_max_patients: config.ids.inline_max_patients,
        },
    )
    .await
    .context("cannot set up PostgreSQL")?;
    let mut tasks = Vec::new();
    for _ in 0..config.ids.workers {
        tasks.push(tokio::spawn(ids::queue::worker(
            pool.clone(),
            Duration::from_millis(config.ids.queue_poll_ms),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(ids::stats::keeper(
        pool.clone(),
        shutdown.clone(),
    )));
    if config.ids.verify {
        tasks.push(tokio::spawn(ids::verify::verifier(
            pool.clone(),
            f64::from(config.ids.verify_duty_percent) / 100.0,
            shutdown.clone(),
        )));
    }
    let app = Arc::new(App {
        tokens: Tokens::new(&config.sites, &config.readers),
        caps: Caps {
            max_decompressed: config.limits.max_decompressed_bytes,
            max_visits: config.limits.max_visits,
            max_rows: config.limits.max_rows,
        },
        mapping,
        mirror,
        pg: Arc::new(pg),
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
    let addr = listener.local_addr()?;
    let mut for_server = shutdown.clone();
    let stop = async move { for_server.fired().await };
    match certs {
        Some(certs) => {
            certs.reload_on_sighup()?;
            let listener = tls::TlsListener::new(listener, certs)?;
            tracing::info!(scheme = "https", addr = %addr, "receiver listening");
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await?;
        }
        None => {
            tracing::info!(scheme = "http", addr = %addr, "receiver listening");
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await?;
        }
    }
    shutdown.fired().await;
    for task in tasks {
        task.await.ok();
    }
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
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // Who is asking comes before what is asked: a stranger learns nothing from a 400 or 404.
    let scope = match app.tokens.reader(authorization) {
        Ok(scope) => scope,
        Err(refused) => return refuse_reader(refused),
    };
    let Some(name) = reports::ReportName::parse(&name) else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no such report; reports: {}", reports::report_names()) }),
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
    if let Err(refused) = auth::allows(scope, request.lists_patients()) {
        return refuse_reader(refused);
    }
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
    // Read from the stores: other receivers drain the queue and verify too.
    if let Err(e) = ids_gauges(app.pg.pool()).await {
        tracing::warn!(error = %e, "metrics: cannot read the IDS queue and checks");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// The IDS queue's backlog and the verifier's findings, per site.
async fn ids_gauges(pool: &deadpool_postgres::Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    for (site, patients, age) in ids::queue::backlog(&client)
        .await
        .map_err(|e| e.to_string())?
    {
        let site = site.to_string();
        metrics::gauge!(m::IDS_QUEUE_PATIENTS, "site" => site.clone()).set(patients as f64);
        metrics::gauge!(m::IDS_QUEUE_AGE, "site" => site).set(age);
    }
    for (site, age, diff) in ids::verify::ages(&client)
        .await
        .map_err(|e| e.to_string())?
    {
        let site = site.to_string();
        metrics::gauge!(m::IDS_VERIFY_AGE, "site" => site.clone()).set(age);
        metrics::gauge!(m::IDS_VERIFY_DIFF_ROWS, "site" => site).set(diff as f64);
    }
    Ok(())
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
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Err(refused) = app.tokens.reader(authorization) {
        return refuse_reader(refused);
    }
    match status::sites(app.pg.pool(), &app.tokens.site_ids(), &app.tx_curr).await {
        Ok(lines) => {
            if crate::web::wants_html(q.format.as_deref(), &headers) {
                axum::response::Html(status::to_html(&lines, SILENT_AFTER_SECS)).into_response()
            } else {
                Json(status::to_json(&lines)).into_response()
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
