//! `emr-stream ids rebuild|verify`: operator commands on the IDS tables, run beside the
//! receivers (they take the same per-site locks; reports are served throughout).

use std::time::Duration;

use anyhow::Context;
use deadpool_postgres::Pool;

use super::apply::{PgOptions, PgStore};
use super::ids::{self, queue, stats, verify};
use super::pg;
use crate::config::ReceiverConfig;
use crate::mapping::Mapping;
use crate::progress::Progress;

/// Connects with the receiver's config and brings the schema up to date (as a receiver
/// starting would).
async fn connect(config: &ReceiverConfig, connections: usize) -> anyhow::Result<Pool> {
    let mapping = Mapping::load(&config.mapping)?;
    let pool = pg::pool_with(
        config.postgres.url.expose(),
        connections.max(4),
        config.postgres.ca_file.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!("postgres: {e}"))?;
    PgStore::connect(
        pool.clone(),
        &mapping,
        PgOptions {
            partitions: config.postgres.partitions,
            inline_max_patients: config.ids.inline_max_patients,
        },
    )
    .await
    .context("cannot set up PostgreSQL")?;
    Ok(pool)
}

async fn sites_of(pool: &Pool, site: Option<i32>) -> anyhow::Result<Vec<i32>> {
    Ok(match site {
        Some(s) => vec![s],
        None => ids::sites(&pool.get().await?).await?,
    })
}

async fn queued(pool: &Pool, sites: &[i32]) -> anyhow::Result<i64> {
    Ok(pool
        .get()
        .await?
        .query_one(
            "SELECT count(*) FROM ids.dirty_patient WHERE site_id = ANY($1)",
            &[&sites],
        )
        .await?
        .get(0))
}

/// Recomputes every patient of `site` (all sites when `None`) in chunks, `workers` of them
/// side by side, with a progress bar. An interrupted rebuild resumes where it stopped;
/// running receivers help drain it.
pub async fn rebuild(
    config: &ReceiverConfig,
    site: Option<i32>,
    workers: usize,
) -> anyhow::Result<()> {
    let pool = connect(config, workers + 1).await?;
    let sites = sites_of(&pool, site).await?;
    let mut client = pool.get().await?;
    for &s in &sites {
        ids::queue_rebuild(&mut client, s, true).await?;
    }
    drop(client);
    let total = queued(&pool, &sites).await?.max(0) as u64;
    let progress = Progress::new(
        match site {
            Some(s) => format!("ids rebuild site {s}"),
            None => format!("ids rebuild of {} sites", sites.len()),
        },
        "patients",
        total,
    );
    for &s in &sites {
        let mut site_rebuild = tokio::spawn({
            let pool = pool.clone();
            async move { rebuild_site(&pool, s, workers).await }
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                done = &mut site_rebuild => { done??; break; }
                _ = tick.tick() => {}
            }
            let left = queued(&pool, &sites).await?.max(0) as u64;
            progress.set(total.saturating_sub(left), format_args!("site {s}"));
        }
    }
    progress.set(total, "done");
    progress.finish();
    eprintln!(
        "rebuilt the IDS rows of {total} patients of {} site(s)",
        sites.len()
    );
    Ok(())
}

/// Drains `site`'s queue with `workers` chunks side by side, then ends its rebuild (the day
/// counts counted again). Returns the wall time it took.
pub async fn rebuild_site(pool: &Pool, site: i32, workers: usize) -> anyhow::Result<Duration> {
    let started = std::time::Instant::now();
    stats::analyze_stale(pool, &[site])
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let drainers: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                while queue::drain_site(&pool, site).await? > 0 {}
                Ok::<_, String>(())
            })
        })
        .collect();
    // the site's rows come in as it drains: its statistics are taken again once they show
    stats::keep_fresh(pool, site, Duration::from_secs(2), async {
        for d in drainers {
            d.await?.map_err(|e| anyhow::anyhow!(e))?;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await?;
    queue::finish_site(pool, site)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(started.elapsed())
}

/// Checks `site` (all sites when `None`) against a full recomputation; prints one JSON line
/// per differing row on stdout and fails when any differs.
pub async fn verify(config: &ReceiverConfig, site: Option<i32>) -> anyhow::Result<()> {
    let pool = connect(config, 4).await?;
    let sites = sites_of(&pool, site).await?;
    let progress = Progress::new("ids verify", "sites", sites.len() as u64);
    let (mut differing, mut rows) = (Vec::new(), 0);
    for (i, &s) in sites.iter().enumerate() {
        let check = loop {
            match verify::check_site(&pool, s)
                .await
                .map_err(|e| anyhow::anyhow!(e))?
            {
                Some(check) => break check,
                // a receiver's verifier is checking this site: wait for it
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        for d in &check.differences {
            println!(
                "{}",
                serde_json::json!({ "site_id": s, "table": d.table, "side": d.side,
                                    "key": serde_json::from_str::<serde_json::Value>(&d.key).unwrap_or_default() })
            );
        }
        if !check.differences.is_empty() {
            differing.push(s);
            rows += check.differences.len();
        }
        progress.set(i as u64 + 1, format_args!("{rows} rows differ"));
    }
    progress.finish();
    anyhow::ensure!(
        differing.is_empty(),
        "{rows} IDS rows differ from their definitions in sites {differing:?}: `emr-stream ids rebuild --site N` recomputes a site"
    );
    eprintln!(
        "the IDS tables of {} site(s) equal their definitions",
        sites.len()
    );
    Ok(())
}
