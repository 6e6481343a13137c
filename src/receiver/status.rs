//! The receiver's `/status` (JSON, or HTML for a browser): every site, configured or seen,
//! with when it last sent a batch, how long its visits waited at the facility (the lag the
//! tailer reports with each batch), the visit versions received today, its TX_CURR today
//! (MOH definition), when its data was last applied to the IDS tables, what waits in the IDS
//! queue and what the last verification found. Counts only, never patient data.
//!
//! TX_CURR is kept until a batch is applied anywhere or the day changes, so an open status
//! page costs the database one TX_CURR query per change, not per reload.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use maud::html;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::clock::now_ms;
use crate::web::{ago, page};

/// TX_CURR per site as of the last apply.
#[derive(Default)]
pub struct TxCurrCache {
    inner: Mutex<Option<Cached>>,
}

/// The latest apply time and the day TX_CURR was computed for, and TX_CURR per site.
type Cached = (String, String, BTreeMap<i64, i64>);

/// One site's line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteLine {
    /// The site.
    pub site_id: i64,
    /// Unix ms of its last accepted batch.
    pub last_seen_ms: Option<u64>,
    /// Seconds the oldest visit of its last batch waited at the facility.
    pub lag_seconds: Option<i64>,
    /// Batches accepted since the receiver's tables were created.
    pub batches: i64,
    /// Visit versions received today (the database's day).
    pub visits_today: i64,
    /// TX_CURR today, MOH definition.
    pub tx_curr: Option<i64>,
    /// Unix ms its data was last applied to the IDS tables (reports' `as_of`).
    pub applied_ms: Option<u64>,
    /// Patients waiting in the IDS queue.
    pub queued_patients: i64,
    /// Seconds the oldest of them has waited.
    pub queued_seconds: Option<f64>,
    /// Rows that differed from a full recomputation at its last check.
    pub verify_diff_rows: Option<i64>,
    /// Unix ms of that check.
    pub verified_ms: Option<u64>,
}

/// Reads every site's line; `configured` sites appear even if never seen.
pub async fn sites(
    pool: &Pool,
    configured: &[i64],
    cache: &TxCurrCache,
) -> Result<Vec<SiteLine>, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT site_id::int8, (extract(epoch FROM last_seen) * 1000)::int8, lag_seconds::int8, batches,
                    CASE WHEN visits_day = current_date THEN visits_today ELSE 0 END
             FROM cdr._stream_sites",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut lines: BTreeMap<i64, SiteLine> = configured
        .iter()
        .map(|&site_id| {
            let line = SiteLine::new(site_id);
            (site_id, line)
        })
        .collect();
    for r in rows {
        let site_id: i64 = r.get(0);
        lines.insert(
            site_id,
            SiteLine {
                last_seen_ms: r.get::<_, Option<i64>>(1).map(|t| t.max(0) as u64),
                lag_seconds: r.get(2),
                batches: r.get(3),
                visits_today: r.get(4),
                ..SiteLine::new(site_id)
            },
        );
    }
    let ids = client
        .query(
            "SELECT s.site_id::int8, (extract(epoch FROM s.applied_at) * 1000)::int8,
                    (SELECT count(*) FROM ids.dirty_patient q WHERE q.site_id = s.site_id),
                    extract(epoch FROM now() - s.queued_since)::float8,
                    v.diff_rows, (extract(epoch FROM v.checked_at) * 1000)::int8
             FROM ids.site_state s LEFT JOIN ids.verify_log v ON v.site_id = s.site_id",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    for r in ids {
        let site_id: i64 = r.get(0);
        let line = lines
            .entry(site_id)
            .or_insert_with(|| SiteLine::new(site_id));
        line.applied_ms = r.get::<_, Option<i64>>(1).map(|t| t.max(0) as u64);
        line.queued_patients = r.get(2);
        line.queued_seconds = r.get(3);
        line.verify_diff_rows = r.get(4);
        line.verified_ms = r.get::<_, Option<i64>>(5).map(|t| t.max(0) as u64);
    }
    let tx_curr = tx_curr(&client, cache).await?;
    for line in lines.values_mut() {
        line.tx_curr = Some(tx_curr.get(&line.site_id).copied().unwrap_or(0));
    }
    Ok(lines.into_values().collect())
}

impl SiteLine {
    fn new(site_id: i64) -> Self {
        Self {
            site_id,
            last_seen_ms: None,
            lag_seconds: None,
            batches: 0,
            visits_today: 0,
            tx_curr: None,
            applied_ms: None,
            queued_patients: 0,
            queued_seconds: None,
            verify_diff_rows: None,
            verified_ms: None,
        }
    }
}

/// TX_CURR per site, from the cache when nothing was applied since.
async fn tx_curr(
    client: &tokio_postgres::Client,
    cache: &TxCurrCache,
) -> Result<BTreeMap<i64, i64>, String> {
    let row = client
        .query_one(
            "SELECT coalesce(max(applied_at)::text, '') || '/' || coalesce(sum(batches), 0)::text,
                    current_date::text
             FROM ids.site_state",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (refreshed, today): (String, String) = (row.get(0), row.get(1));
    let mut guard = cache.inner.lock().await;
    if let Some((r, d, counts)) = guard.as_ref() {
        if *r == refreshed && *d == today {
            return Ok(counts.clone());
        }
    }
    let moh = crate::receiver::reports::Definition::Moh.default_days();
    let counts: BTreeMap<i64, i64> = client
        .query(
            "SELECT site_id::int8, count(*) FROM ids.cohort(current_date, $1, NULL)
             WHERE outcome = $2 GROUP BY 1",
            &[&moh, &crate::receiver::reports::ON_ART],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    *guard = Some((refreshed, today, counts.clone()));
    Ok(counts)
}

/// The JSON answer.
pub fn to_json(lines: &[SiteLine]) -> Value {
    json!({ "sites": lines })
}

/// The HTML page; a site silent for over `silent_after_secs` is flagged, and so is a site
/// whose IDS tables differed from their definitions.
pub fn to_html(lines: &[SiteLine], silent_after_secs: u64) -> String {
    let now = now_ms();
    let body = html! {
        h1 { "emr-stream receiver" }
        table #sites {
            tr {
                th { "Site" } th { "Last seen" } th { "Lag" } th { "Visits received today" }
                th { "TX_CURR today (MOH)" } th { "Batches" } th { "Reports as of" }
                th { "IDS queue" } th { "Last verified" }
            }
            @for l in lines {
                tr id={ "site-" (l.site_id) } {
                    td { (l.site_id) }
                    td {
                        @match l.last_seen_ms {
                            None => span.bad { "never" },
                            Some(t) if now.saturating_sub(t) / 1000 > silent_after_secs => {
                                span.bad { (ago(now, t)) }
                            }
                            Some(t) => span.ok { (ago(now, t)) },
                        }
                    }
                    td.n {
                        @match l.lag_seconds {
                            Some(s) => { (s) " s" }
                            None => "–",
                        }
                    }
                    td.n.today { (l.visits_today) }
                    td.n.txcurr { @if let Some(t) = l.tx_curr { (t) } }
                    td.n.batches { (l.batches) }
                    td.asof { @if let Some(t) = l.applied_ms { (ago(now, t)) } @else { "–" } }
                    td.queue {
                        @if l.queued_patients == 0 { "empty" } @else {
                            span.warn {
                                (l.queued_patients) " patients"
                                @if let Some(s) = l.queued_seconds { ", " (s.round() as i64) " s" }
                            }
                        }
                    }
                    td.verified {
                        @match (l.verified_ms, l.verify_diff_rows) {
                            (Some(t), Some(0)) => span.ok { (ago(now, t)) ", equal" },
                            (Some(t), Some(d)) => span.bad { (ago(now, t)) ", " (d) " rows differ" },
                            _ => "not yet",
                        }
                    }
                }
            }
        }
    };
    page("emr-stream receiver", body)
}
