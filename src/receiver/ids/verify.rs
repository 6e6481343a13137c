//! The differential check: a site's derived tables against a fresh computation of the same
//! definitions over all its patients, in one REPEATABLE READ snapshot (`ids.verify_site`,
//! a symmetric EXCEPT ALL). Patients still queued are left out: their rows are known to wait.
//!
//! `emr-stream ids verify` runs it on demand; every receiver runs it in the background, one
//! site at a time, the site checked longest ago first, spending at most a set share of its
//! time on it; a difference is logged (table and key ids only), exported as
//! `emr_ids_verify_diff_rows{site}`, and queues a rebuild of the site.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;

use super::VERIFY_LOCK;
use crate::metrics as m;
use crate::shutdown::Shutdown;

/// One differing row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The derived table.
    pub table: String,
    /// `missing`: the definition gives the row, the table lacks it; `extra`: the reverse.
    pub side: String,
    /// The row's key (JSON of its key columns: ids and dates).
    pub key: String,
}

/// A site's check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteCheck {
    /// The site.
    pub site_id: i32,
    /// Every differing row.
    pub differences: Vec<Difference>,
    /// How long it took (ms).
    pub took_ms: u64,
}

/// Checks one site in one snapshot; `None` when another verifier holds the site.
pub async fn check_site(pool: &Pool, site_id: i32) -> Result<Option<SiteCheck>, String> {
    let started = Instant::now();
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let free: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1::int4, $2::int4)",
            &[&VERIFY_LOCK, &site_id],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if !free {
        return Ok(None);
    }
    let rows = tx
        .query(
            "SELECT table_name, side, key FROM ids.verify_site($1) ORDER BY 1, 3, 2",
            &[&site_id],
        )
        .await
        .map_err(|e| format!("verifying site {site_id}: {e}"))?;
    let differences: Vec<Difference> = rows
        .iter()
        .map(|r| Difference {
            table: r.get(0),
            side: r.get(1),
            key: r.get(2),
        })
        .collect();
    let took_ms = started.elapsed().as_millis() as u64;
    tx.execute(
        "INSERT INTO ids.verify_log (site_id, checked_at, diff_rows, took_ms) VALUES ($1, now(), $2, $3)
         ON CONFLICT (site_id) DO UPDATE SET checked_at = now(), diff_rows = EXCLUDED.diff_rows,
           took_ms = EXCLUDED.took_ms",
        &[&site_id, &(differences.len() as i64), &(took_ms as i64)],
    )
    .await
    .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    metrics::gauge!(m::IDS_VERIFY_DIFF_ROWS, "site" => site_id.to_string())
        .set(differences.len() as f64);
    Ok(Some(SiteCheck {
        site_id,
        differences,
        took_ms,
    }))
}

/// The background verifier: one site at a time, the one checked longest ago (or never)
/// first; after a check it rests so that checking takes at most `duty` of its time. A site
/// with differences is logged and queued for a rebuild.
pub async fn verifier(pool: Pool, duty: f64, mut shutdown: Shutdown) {
    let duty = duty.clamp(0.01, 1.0);
    loop {
        let started = Instant::now();
        let pause = match next_site(&pool).await {
            Ok(Some(site)) => match check_site(&pool, site).await {
                Ok(Some(check)) => {
                    if !check.differences.is_empty() {
                        report(&pool, &check).await;
                    }
                    started.elapsed().mul_f64((1.0 - duty) / duty)
                }
                Ok(None) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(site_id = site, error = %e, "IDS verification failed; will retry");
                    Duration::from_secs(30)
                }
            },
            Ok(None) => Duration::from_secs(30),
            Err(e) => {
                tracing::warn!(error = %e, "IDS verifier: cannot read the sites; will retry");
                Duration::from_secs(30)
            }
        };
        if !shutdown.sleep(pause.max(Duration::from_millis(200))).await {
            return;
        }
    }
}

/// The site whose last check is oldest (never checked first), among those with data.
async fn next_site(pool: &Pool) -> Result<Option<i32>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_opt(
            "SELECT s.site_id FROM ids.site_state s
             LEFT JOIN ids.verify_log v ON v.site_id = s.site_id
             ORDER BY v.checked_at NULLS FIRST, s.site_id LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.map(|r| r.get(0)))
}

/// Logs a site's differences (ids and dates only) and queues its rebuild.
async fn report(pool: &Pool, check: &SiteCheck) {
    let shown: Vec<String> = check
        .differences
        .iter()
        .take(20)
        .map(|d| format!("{} {} {}", d.table, d.side, d.key))
        .collect();
    tracing::error!(
        site_id = check.site_id,
        rows = check.differences.len(),
        first = ?shown,
        "IDS tables differ from their definitions: queueing a rebuild of the site"
    );
    let queued = match pool.get().await {
        Ok(mut client) => super::queue_rebuild(&mut client, check.site_id, false)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = queued {
        tracing::warn!(site_id = check.site_id, error = %e, "cannot queue the rebuild");
    }
}

/// Seconds since each site was last checked and its differing rows then, for the metrics.
pub async fn ages(
    client: &impl deadpool_postgres::GenericClient,
) -> Result<Vec<(i32, f64, i64)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT site_id, extract(epoch FROM now() - checked_at)::float8, diff_rows
             FROM ids.verify_log ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
