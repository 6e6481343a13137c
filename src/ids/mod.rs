//! IDS analytics: the materialized views in schema `ids` (created by `ids-views.sql` beside
//! the mapping), their refresher and the reports read from them.
//!
//! Refresh: after applies the views are marked dirty; the refresher waits the debounce
//! period (so a burst refreshes once), takes a PostgreSQL advisory lock (one refresher across
//! receiver replicas; the others skip and try again later), refreshes CONCURRENTLY (readers
//! are never blocked and never see an empty view) and records the time in `ids.refresh_log`.

pub mod reports;

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::metrics as m;
use crate::shutdown::Shutdown;

/// The views, in refresh order.
pub const VIEWS: [&str; 1] = ["ids.visits_daily"];
/// Advisory lock key of the refresher.
const REFRESH_LOCK: i64 = 0x656d_7202;

/// Marks views dirty; cheap to clone.
#[derive(Clone, Default)]
pub struct Dirty(Arc<Notify>);

impl Dirty {
    /// Something changed in `cdr`.
    pub fn mark(&self) {
        self.0.notify_one();
    }
}

/// Refreshes the views when dirty, debounced, until shutdown.
pub async fn refresher(pool: Pool, dirty: Dirty, debounce: Duration, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.fired() => return,
            _ = dirty.0.notified() => {},
        }
        if !shutdown.sleep(debounce).await {
            return;
        }
        match refresh(&pool).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica is refreshing; make sure our changes are covered.
                tracing::debug!("views being refreshed elsewhere; retrying later");
                dirty.mark();
            }
            Err(e) => {
                tracing::warn!(error = %e, "view refresh failed; will retry");
                dirty.mark();
            }
        }
    }
}

/// Refreshes every view now if this process gets the lock; false when another holds it.
pub async fn refresh(pool: &Pool) -> Result<bool, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&REFRESH_LOCK])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !locked {
        return Ok(false);
    }
    let mut result = Ok(true);
    for view in VIEWS {
        let started = Instant::now();
        if let Err(e) = client
            .batch_execute(&format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
            .await
        {
            result = Err(format!("refresh {view}: {e}"));
            break;
        }
        let took = started.elapsed();
        metrics::histogram!(m::VIEW_REFRESH_DURATION, "view" => view).record(took.as_secs_f64());
        let logged = client
            .execute(
                "INSERT INTO ids.refresh_log (view_name, refreshed_at, duration_ms) VALUES ($1, now(), $2)
                 ON CONFLICT (view_name) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms",
                &[&view, &(took.as_millis() as i64)],
            )
            .await;
        if let Err(e) = logged {
            result = Err(e.to_string());
            break;
        }
        tracing::debug!(view, ms = took.as_millis() as u64, "view refreshed");
    }
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&REFRESH_LOCK])
        .await
        .ok();
    result
}
