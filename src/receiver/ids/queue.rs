//! The overflow path: `ids.dirty_patient`, written in apply transactions (and by rebuilds),
//! drained by workers in every receiver. A worker takes a site whose changes wait longest,
//! tries its lock shared with the site's other workers (a site being applied is skipped), and
//! recomputes at most [`CHUNK`] of its patients per transaction (`ids.drain`, which picks them
//! `FOR UPDATE SKIP LOCKED`), so several workers drain one site side by side. When a rebuilt
//! site's queue is empty, a worker takes its lock exclusively and ends the rebuild
//! (`ids.finish_rebuild`: the day counts counted again).
//!
//! A site that catches up on a backlog holds its lock almost all the time (its tailer sends
//! two batches at a time, so the next one already waits when one commits). When every queued
//! site is busy and the oldest change has waited [`STARVED`], the worker waits for that site's
//! lock (at most [`STARVED_WAIT`]): PostgreSQL grants it before the batches that queue after
//! it, so a chunk is recomputed between two batches and the site's reports lag by about
//! [`STARVED`], not by the whole catch-up.

use std::time::Duration;

use deadpool_postgres::Pool;

use super::{lock_site, try_lock_site, Hold, CHUNK};
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// How long a site's oldest queued change waits before a worker waits for its lock.
pub const STARVED: Duration = Duration::from_secs(10);
/// Longest a worker waits for a starved site's lock.
pub const STARVED_WAIT: Duration = Duration::from_secs(10);

/// Recomputes one chunk of the longest-waiting site that is free, or ends the rebuild of a
/// site whose queue has drained; `Some((site, patients))` when it did, `None` when nothing is
/// queued (or every queued site is busy).
pub async fn drain_one(pool: &Pool) -> Result<Option<(i32, i32)>, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    let sites: Vec<(i32, bool, f64)> = tx
        .query(
            "SELECT site_id, queued_since IS NULL,
                    coalesce(extract(epoch FROM now() - queued_since), 0)::float8
             FROM ids.site_state
             WHERE queued_since IS NOT NULL OR rebuild_started IS NOT NULL
             ORDER BY queued_since NULLS FIRST LIMIT 32",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    // (drained sites come first; the first queued one has waited longest)
    let starved = sites
        .iter()
        .find(|(_, drained, _)| !drained)
        .filter(|(_, _, waited)| *waited >= STARVED.as_secs_f64())
        .map(|(site, _, _)| *site);
    for (site, drained, _) in sites {
        if drained {
            // (still queued after all: it is drained when next found queued)
            if try_lock_site(&tx, site, Hold::Alone)
                .await
                .map_err(|e| e.to_string())?
                && finish_locked(&tx, site).await?
            {
                tx.commit().await.map_err(|e| e.to_string())?;
                return Ok(Some((site, 0)));
            }
            continue;
        }
        if try_lock_site(&tx, site, Hold::Shared)
            .await
            .map_err(|e| e.to_string())?
        {
            return drain_locked(tx, site).await.map(|n| Some((site, n)));
        }
    }
    let Some(site) = starved else {
        return Ok(None);
    };
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {}",
        STARVED_WAIT.as_millis()
    ))
    .await
    .map_err(|e| e.to_string())?;
    match lock_site(&tx, site, Hold::Shared).await {
        Ok(()) => {
            // (the recompute's own row locks wait as long as they need, as in any chunk)
            tx.batch_execute("SET LOCAL lock_timeout = 0")
                .await
                .map_err(|e| e.to_string())?;
            drain_locked(tx, site).await.map(|n| Some((site, n)))
        }
        // still busy after STARVED_WAIT: tried again at the next poll
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// One chunk of `site`, waiting for an apply that holds its lock (rebuild commands drain
/// their own sites, several chunks side by side). A deadlock with another writer of the site
/// (PostgreSQL aborts one of them) is retried.
pub async fn drain_site(pool: &Pool, site: i32) -> Result<i32, String> {
    let mut attempt = 0;
    loop {
        let mut client = pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        lock_site(&tx, site, Hold::Shared)
            .await
            .map_err(|e| e.to_string())?;
        match drain_locked(tx, site).await {
            Err(e) if attempt < 5 && e.contains("(40P01)") => attempt += 1,
            other => return other,
        }
    }
}

/// Ends the rebuild of `site` when its queue is empty (waits for its lock, exclusively);
/// whether a rebuild ended.
pub async fn finish_site(pool: &Pool, site: i32) -> Result<bool, String> {
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    lock_site(&tx, site, Hold::Alone)
        .await
        .map_err(|e| e.to_string())?;
    let finished = finish_locked(&tx, site).await?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(finished)
}

async fn finish_locked(tx: &deadpool_postgres::Transaction<'_>, site: i32) -> Result<bool, String> {
    Ok(tx
        .query_one("SELECT ids.finish_rebuild($1)", &[&site])
        .await
        .map_err(|e| format!("ending the rebuild of site {site}: {e}"))?
        .get(0))
}

async fn drain_locked(tx: deadpool_postgres::Transaction<'_>, site: i32) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let n: i32 = tx
        .query_one("SELECT ids.drain($1, $2)", &[&site, &CHUNK])
        .await
        .map_err(|e| format!("draining site {site}: {}", pg_error(&e)))?
        .get(0);
    tx.commit().await.map_err(|e| e.to_string())?;
    metrics::histogram!(m::IDS_MAINTAIN_DURATION, "path" => "worker")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::IDS_QUEUE_DRAINED).increment(n as u64);
    Ok(n)
}

/// A PostgreSQL error with its server message (the `Display` of a db error is just "db error").
fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A queue worker: drains until shutdown, polling every `poll` while nothing is queued.
/// Shutdown does not wait for the chunk in hand (it may wait [`STARVED_WAIT`] for a lock):
/// its transaction is rolled back and its patients stay queued.
pub async fn worker(pool: Pool, poll: Duration, mut shutdown: Shutdown) {
    loop {
        let drained = tokio::select! {
            drained = drain_one(&pool) => drained,
            _ = shutdown.fired() => return,
        };
        let pause = match drained {
            Ok(Some(_)) => Duration::ZERO,
            Ok(None) => poll,
            Err(e) => {
                tracing::warn!(error = %e, "IDS queue worker: will retry");
                poll.max(Duration::from_secs(2))
            }
        };
        if pause.is_zero() {
            if shutdown.is_fired() {
                return;
            }
            continue;
        }
        if !shutdown.sleep(pause).await {
            return;
        }
    }
}

/// Per site: patients queued and the age of the oldest queued change (0 when none), for the
/// metrics and the status page.
pub async fn backlog(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<(i32, i64, f64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT s.site_id, coalesce(q.n, 0),
                    coalesce(extract(epoch FROM now() - s.queued_since), 0)::float8
             FROM ids.site_state s
             LEFT JOIN (SELECT site_id, count(*) AS n FROM ids.dirty_patient GROUP BY 1) q
               ON q.site_id = s.site_id
             ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
