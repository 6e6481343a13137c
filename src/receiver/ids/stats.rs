//! Planner statistics that know the sites being written (`ids.stale_tables`).
//!
//! Statistics taken before a site's data came (a new facility's initial load, a rebuild into
//! empty tables) make the planner take that site for empty; every index that starts with
//! `site_id` then looks as good as the one a probe by patient needs, and a recompute probe
//! became a scan of the site. Autovacuum re-analyses a table only after 10% of it changed,
//! which a national table rarely does for one site, so the writers of a site ANALYZE what is
//! stale themselves: rebuilds every few seconds while they run ([`keep_fresh`]), the receiver
//! for the sites with queued changes every few seconds and those applied every minute
//! ([`keeper`]).

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::shutdown::Shutdown;

/// How often the receiver checks the sites with queued changes (a rebuild, an initial load).
pub const QUEUED_EVERY: Duration = Duration::from_secs(5);
/// How often it checks every site applied since its last such check.
pub const APPLIED_EVERY: Duration = Duration::from_secs(60);

/// ANALYZEs the tables whose statistics do not know one of `sites`; returns their names.
pub async fn analyze_stale(pool: &Pool, sites: &[i32]) -> Result<Vec<String>, String> {
    if sites.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let stale: Vec<String> = client
        .query_one("SELECT ids.stale_tables($1)", &[&sites])
        .await
        .map_err(|e| format!("finding stale statistics: {e}"))?
        .get(0);
    for table in &stale {
        // the names come from the catalog, quoted by format('%I.%I')
        client
            .batch_execute(&format!("ANALYZE {table}"))
            .await
            .map_err(|e| format!("ANALYZE {table}: {e}"))?;
        tracing::info!(table = %table, "statistics taken again: they did not know a site being written");
    }
    Ok(stale)
}

/// Keeps the statistics of `site` fresh every `every` until `done` resolves (beside a rebuild).
pub async fn keep_fresh<F: std::future::Future>(
    pool: &Pool,
    site: i32,
    every: Duration,
    done: F,
) -> F::Output {
    tokio::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return out,
            _ = tokio::time::sleep(every) => {
                if let Err(e) = analyze_stale(pool, &[site]).await {
                    tracing::warn!(error = %e, site, "statistics check");
                }
            }
        }
    }
}

/// The receiver's check: every [`QUEUED_EVERY`] the sites with queued changes, every
/// [`APPLIED_EVERY`] also those applied since the last such check.
pub async fn keeper(pool: Pool, mut shutdown: Shutdown) {
    let mut since: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut last_full = std::time::Instant::now();
    while shutdown.sleep(QUEUED_EVERY).await {
        let full = last_full.elapsed() >= APPLIED_EVERY;
        let checked_at = chrono::Utc::now();
        let checked = match recent_sites(&pool, since, full).await {
            Ok(sites) => analyze_stale(&pool, &sites).await,
            Err(e) => Err(e),
        };
        match checked {
            Err(e) => tracing::warn!(error = %e, "statistics check: will retry"),
            Ok(_) if full => {
                since = Some(checked_at);
                last_full = std::time::Instant::now();
            }
            Ok(_) => {}
        }
    }
}

/// The sites with queued changes, and when `applied` those applied since `since` (all when
/// `None`).
async fn recent_sites(
    pool: &Pool,
    since: Option<chrono::DateTime<chrono::Utc>>,
    applied: bool,
) -> Result<Vec<i32>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT site_id FROM ids.site_state
             WHERE queued_since IS NOT NULL
                OR ($2 AND ($1::timestamptz IS NULL OR applied_at >= $1))
             ORDER BY 1",
            &[&since, &applied],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
