//! The facility sidecar: binlog → visit buffers → outbox → receiver.
//!
//! Tasks: the capture loop (it records whole source transactions into visit buffers, on a
//! thread and runtime of its own: see `on_its_own_thread`), the mover (ready visits to the
//! outbox), the shipper, and the HTTP endpoint (on the main runtime's one worker).
//! Errors from the source are retried from the checkpoint with backoff; errors of the state
//! store and refusals (purged binlog, unsupported source) stop the tailer with a message that
//! names the remedy.

pub mod binlog;
mod capture;
pub mod checkpoint;
pub mod dead;
mod http;
mod mover;
pub mod resolve;
pub mod ship;
pub mod state;
mod status;
pub mod sweep;
pub mod visit;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Notify;

use crate::config::TailerConfig;
use crate::mapping::Mapping;
use crate::shutdown::Shutdown;
use crate::tailer::ship::{ShipStatus, Shipper};
use crate::tailer::state::{Checkpoint, State};
use binlog::BinlogPosition;
pub use capture::{Capture, CaptureStatus};

/// Runs the tailer until shutdown.
pub async fn run(
    config: TailerConfig,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mapping = Mapping::load(&config.mapping)?;
    std::fs::create_dir_all(&config.state.dir)
        .with_context(|| format!("cannot create state dir {}", config.state.dir.display()))?;
    let state = State::open_with_cache(&config.state.dir, config.state.cache_mib)?;
    let opts = binlog::source_opts(&config.source)?;
    let pool = mysql_async::Pool::new(opts.clone());
    let mut conn = pool
        .get_conn()
        .await
        .context("cannot connect to the source database (source.url)")?;
    // A stopped tailer's registration can linger on a busy server for a few heartbeats.
    let grace = std::time::Duration::from_secs(3 * config.source.heartbeat_secs.max(1) + 5);
    let info = binlog::preflight_with_grace(&mut conn, config.source.server_id, grace).await?;
    if !info.full_metadata {
        tracing::info!("source logs no column names (binlog_row_metadata is not FULL); names come from information_schema");
    }
    let site_id = match config.source.site_id {
        Some(id) => id,
        None => binlog::read_site_id(&mut conn, &config.source.database).await?,
    };
    let checkpoint = match state.checkpoint()? {
        Some(cp) => {
            crate::tailer::checkpoint::check_resumable(&cp, &info)
                .map_err(|e| anyhow::anyhow!(e))?;
            cp
        }
        None => {
            let position = match config.source.start.as_str() {
                "current" => binlog::server_position(&mut conn).await?,
                "earliest" => BinlogPosition {
                    file: info
                        .files
                        .first()
                        .map(|f| f.0.clone())
                        .context("the source has no binlog files")?,
                    pos: 4,
                },
                other => BinlogPosition::parse(other).context("source.start")?,
            };
            let cp = Checkpoint {
                position,
                gtid: None,
                epoch: 0,
                server_id: info.server_id,
                timestamp: 0,
            };
            state.set_checkpoint(&cp)?;
            tracing::info!(position = %cp.position, "no checkpoint: starting from source.start");
            cp
        }
    };
    drop(conn);
    tracing::info!(site_id, position = %checkpoint.position, source_version = %info.version, "tailer starting");

    crate::metrics::zero_tailer(state.dead_letters()?.len());
    let wake = Arc::new(Notify::new());
    let ship_status = Arc::new(ShipStatus::default());
    let capture_status = Arc::new(CaptureStatus::default());
    let sender = crate::tailer::ship::Sender::new(&config.ship, site_id, state.tailer_id()?)?;
    let shipper = Shipper::new(
        config.ship.clone(),
        state.clone(),
        site_id,
        wake.clone(),
        ship_status.clone(),
    )?;
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen {}", config.http.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "tailer http listening");
    // Where `emr-stream sweep` finds this tailer (http.listen may name port 0, or 0.0.0.0).
    if let Err(e) = std::fs::write(config.state.dir.join(sweep::ADDR_FILE), local.to_string()) {
        tracing::warn!(error = %e, "cannot record the http address in the state directory");
    }
    let ship_task = tokio::spawn(shipper.run(shutdown.clone()));
    let sweeps = {
        let (mapping, sweep_state, opts) = (mapping.clone(), state.clone(), opts.clone());
        let (database, rows_per_sec) = (config.source.database.clone(), config.sweep.rows_per_sec);
        Arc::new(crate::tailer::sweep::SweepRunner::new(
            move |epoch| {
                crate::tailer::sweep::Sweeper::new(
                    mapping.clone(),
                    sweep_state.clone(),
                    opts.clone(),
                    database.clone(),
                    site_id,
                    epoch,
                    rows_per_sec,
                )
            },
            state.clone(),
        ))
    };
    let nightly = config.sweep.nightly.then(|| {
        let (runner, sweep_config, shutdown) =
            (sweeps.clone(), config.sweep.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::tailer::sweep::nightly(runner, &sweep_config, shutdown).await;
        })
    });

    let http = tokio::spawn(http::serve(
        listener,
        http::Board {
            state: state.clone(),
            metrics,
            ship: ship_status,
            capture: capture_status.clone(),
            site_id,
            heartbeat_secs: config.source.heartbeat_secs,
            wake: wake.clone(),
            admin_token: http::admin_token(),
            sweeps,
        },
        shutdown.clone(),
    ));
    let mapped: HashMap<String, Vec<String>> = mapping
        .tables
        .iter()
        .map(|(k, v)| (k.clone(), v.pk.clone()))
        .collect();
    let capture = Capture::new(
        &config,
        mapping,
        state.clone(),
        pool.clone(),
        opts,
        site_id,
        mapped,
        capture_status,
        checkpoint,
        sender,
    );
    let mover = mover::Mover::new(&config, state.clone(), wake);
    let mut move_task = tokio::spawn(mover.clone().run(shutdown.clone()));
    // Capture stops on the tailer's shutdown, or when the mover fails: it then ends between
    // two groups, as on shutdown, before the tailer exits with the mover's error (on a thread
    // of its own, it would otherwise run on until the process ends).
    let (stop_capture, capture_shutdown) = crate::shutdown::channel();
    let forward = {
        let (mut outer, stop) = (shutdown.clone(), stop_capture.clone());
        tokio::spawn(async move {
            outer.fired().await;
            stop.fire();
        })
    };
    let capturing = on_its_own_thread(capture, capture_shutdown)?;
    tokio::pin!(capturing);
    let (result, mover_done) = tokio::select! {
        result = &mut capturing => (result, false),
        moved = &mut move_task => {
            let failed = match moved {
                // shutdown: capture is stopping too
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.context("moving ready visits to the outbox")),
                Err(e) => Some(anyhow::Error::from(e).context("mover task")),
            };
            stop_capture.fire();
            let captured = capturing.await;
            if let (Some(_), Err(e)) = (&failed, &captured) {
                tracing::error!(error = %format!("{e:#}"), "capture also ended with an error");
            }
            (failed.map_or(captured, Err), true)
        }
    };
    forward.abort();
    if result.is_ok() {
        if !mover_done {
            move_task.await.context("mover task")??;
        }
        // Capture's last group is written: the visits it made ready go to the outbox now.
        mover.move_ready()?;
    } else {
        move_task.abort();
    }
    // Capture ended (shutdown or fatal error): stop the others too.
    let ship_result = if result.is_err() {
        ship_task.abort();
        Ok(())
    } else {
        ship_task
            .await
            .context("shipper task")?
            .map_err(anyhow::Error::from)
    };
    http.abort();
    if let Some(task) = nightly {
        task.abort();
    }
    state.flush()?;
    pool.disconnect().await.ok();
    result?;
    ship_result
}

/// Runs capture on a thread of its own, with a single-threaded runtime of its own, and returns
/// a future of its result.
///
/// Its binlog connection is then polled by the thread that reads it. On the main runtime, the
/// socket's readiness came from the one worker's event loop, which had to wake the capture
/// thread for every read and could not while it ran the mover's or the shipper's work: the
/// capture thread was blocked for about a third of a backlog's capture (its schedstat), and
/// it now captures about a tenth faster (scripts/bench-e2e.sh, three alternating pairs).
fn on_its_own_thread(
    capture: Capture,
    shutdown: Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start capture's runtime")
                .and_then(|runtime| runtime.block_on(capture.run(shutdown)));
            let _ = done.send(result);
        })
        .context("cannot start the capture thread")?;
    Ok(async move {
        result.await.unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the capture thread ended without a result (it panicked: see the log above)"
            ))
        })
    })
}
