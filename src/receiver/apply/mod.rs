//! Applying a validated batch to the MySQL operational mirror and to PostgreSQL `cdr`.
//!
//! Contract (both stores, each in one transaction):
//! - a batch id already recorded in a store changes nothing there (replay → same result);
//! - a row image never overwrites a newer one (`lsn` guard), and a delete leaves a tombstone
//!   with its `lsn` so that an older upsert cannot resurrect the row;
//! - column names reach SQL only from the store's own catalog (which the mapping's schema
//!   files created); data columns the store does not know go to `_overflow` (JSON);
//! - a store that is unreachable makes the whole answer 503 and nothing half-applied in it.

mod copy;
mod literal;
mod migrate;
mod mysql;
mod plan;
mod postgres;
mod schema;

use std::sync::Arc;
use std::time::Instant;

use crate::wire::Batch;
pub use mysql::MirrorStore;
pub use plan::{
    group_layouts, oldest_upsert, plan, upsert_groups, Layout, Plan, PlannedRow, Split, TablePlan,
};
pub use postgres::{PgOptions, PgStore};
pub use schema::{Catalog, Table};

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The store is unreachable or failed transiently (retry: 503).
    #[error("{store} unavailable: {message}")]
    Unavailable {
        /// mysql or postgres.
        store: &'static str,
        /// What happened (no values).
        message: String,
    },
    /// The store refused a value (a data error: 422).
    #[error("{store} refused a value in table {table}: {message}")]
    Rejected {
        /// mysql or postgres.
        store: &'static str,
        /// The table.
        table: String,
        /// The store's error code and text (no values are quoted by us).
        message: String,
    },
    /// Setup failed (migrations).
    #[error("{store} setup: {message}")]
    Setup {
        /// mysql or postgres.
        store: &'static str,
        /// What happened.
        message: String,
    },
}

impl ApplyError {
    /// Whether the tailer should retry later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ApplyError::Unavailable { .. })
    }
}

/// What a store did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now: rows written (upserts that won + deletes).
    Stored(u64),
    /// The store had this batch already.
    Duplicate,
}

/// What both stores did with a batch, and how long each took (seconds).
pub struct Both {
    /// PostgreSQL's result.
    pub pg: Result<Applied, ApplyError>,
    /// PostgreSQL's time.
    pub pg_seconds: f64,
    /// The mirror's result.
    pub mysql: Result<Applied, ApplyError>,
    /// The mirror's time.
    pub mysql_seconds: f64,
}

/// Applies a planned batch to both stores at once (`lag_seconds`: how long its oldest visit
/// waited at the facility, for PostgreSQL's record of the site), PostgreSQL on its own task: each store's
/// CPU work (encoding its rows) runs beside the other's waits instead of between them. Each
/// store queues a site's batches itself (its site lock, taken first in its transaction), so
/// a site's next batch can be parsed, planned and applied to one store while the batch before
/// it is still being applied to the other.
pub async fn both(
    pg: Arc<PgStore>,
    mirror: &MirrorStore,
    site_id: i64,
    batch: Arc<Batch>,
    plan: Arc<Plan>,
    lag_seconds: Option<i32>,
) -> Both {
    let started = Instant::now();
    let pg = tokio::spawn({
        let (batch, plan) = (batch.clone(), plan.clone());
        async move {
            let r = pg.apply(site_id, &batch, &plan, lag_seconds).await;
            (r, started.elapsed().as_secs_f64())
        }
    });
    let mysql = mirror.apply(site_id, &batch.batch_id, &plan).await;
    let mysql_seconds = started.elapsed().as_secs_f64();
    let (pg, pg_seconds) = pg.await.unwrap_or_else(|e| {
        (
            Err(ApplyError::Unavailable {
                store: "postgres",
                message: format!("apply task: {e}"),
            }),
            started.elapsed().as_secs_f64(),
        )
    });
    Both {
        pg,
        pg_seconds,
        mysql,
        mysql_seconds,
    }
}
