//! IDS analytics: the materialized views in schema `ids` (created by `ids-views.sql` beside
//! the mapping), their refresher and the reports read from them.
//!
//! Refresh: after applies the views are marked dirty; the refresher waits the debounce
//! period (so a burst refreshes once), takes a PostgreSQL advisory lock (one refresher across
//! receiver replicas; the others skip and try again later), refreshes CONCURRENTLY (readers
//! are never blocked and never see an empty view) and records the time in `ids.refresh_log`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::metrics as m;
use crate::shutdown::Shutdown;

/// The views, in refresh order (a view comes after the views it reads).
pub const VIEWS: [&str; 6] = [
    "ids.arv_dispensations",
    "ids.program_states",
    "ids.art_status",
    "ids.patient_visits",
    "ids.appointments",
    "ids.visits_daily",
];
/// Advisory lock key of the refresher.
pub const REFRESH_LOCK: i64 = 0x656d_7202;

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
///
/// All views refresh in one transaction: readers keep reading the previous contents (a
/// concurrent refresh takes no lock that blocks SELECT) and see every view change at once at
/// commit, so a report never mixes dispensations of one refresh with statuses of another.
pub async fn refresh(pool: &Pool) -> Result<bool, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&REFRESH_LOCK])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !locked {
        return Ok(false);
    }
    let mut took = Vec::with_capacity(VIEWS.len());
    for view in VIEWS {
        let started = Instant::now();
        tx.batch_execute(&format!("REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
            .await
            .map_err(|e| format!("refresh {view}: {e}"))?;
        took.push((view, started.elapsed()));
    }
    for (view, duration) in &took {
        tx.execute(
            "INSERT INTO ids.refresh_log (view_name, refreshed_at, duration_ms) VALUES ($1, now(), $2)
             ON CONFLICT (view_name) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, duration_ms = EXCLUDED.duration_ms",
            &[view, &(duration.as_millis() as i64)],
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    for (view, duration) in took {
        metrics::histogram!(m::VIEW_REFRESH_DURATION, "view" => view)
            .record(duration.as_secs_f64());
        tracing::debug!(view, ms = duration.as_millis() as u64, "view refreshed");
    }
    Ok(true)
}

/// Seconds since each view was last refreshed (by any replica), for the age gauge.
pub async fn view_ages(pool: &Pool) -> Result<Vec<(String, f64)>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT view_name, extract(epoch FROM now() - refreshed_at)::float8 FROM ids.refresh_log
             WHERE view_name = ANY($1)",
            &[&VIEWS.to_vec()],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
