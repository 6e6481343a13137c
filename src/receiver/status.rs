//! The receiver's `/status` (JSON, or HTML for a browser): every site, configured or seen,
//! with when it last sent a batch, how long its visits waited at the facility (the lag the
//! tailer reports with each batch), the visit versions received today and its TX_CURR today
//! (MOH definition), plus the age of the IDS views. Counts only, never patient data.
//!
//! TX_CURR is computed from the views and kept until they refresh again or the day changes,
//! so an open status page costs the database one TX_CURR query per refresh, not per reload.

use std::collections::BTreeMap;

use deadpool_postgres::Pool;
use maud::html;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::clock::now_ms;
use crate::web::{ago, page};

/// TX_CURR per site as of one refresh of the views.
#[derive(Default)]
pub struct TxCurrCache {
    inner: Mutex<Option<Cached>>,
}

/// The views' refresh time and the day it was computed for, and TX_CURR per site.
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
}

/// Reads every site's line; `configured` sites appear even if never seen.
pub async fn sites(
    pool: &Pool,
    configured: &[i64],
    cache: &TxCurrCache,
) -> Result<(Vec<SiteLine>, Option<f64>), String> {
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
            let line = SiteLine {
                site_id,
                last_seen_ms: None,
                lag_seconds: None,
                batches: 0,
                visits_today: 0,
                tx_curr: None,
            };
            (site_id, line)
        })
        .collect();
    for r in rows {
        let site_id: i64 = r.get(0);
        lines.insert(
            site_id,
            SiteLine {
                site_id,
                last_seen_ms: r.get::<_, Option<i64>>(1).map(|t| t.max(0) as u64),
                lag_seconds: r.get(2),
                batches: r.get(3),
                visits_today: r.get(4),
                tx_curr: None,
            },
        );
    }
    let (tx_curr, age) = tx_curr(&client, cache).await?;
    for line in lines.values_mut() {
        line.tx_curr = Some(tx_curr.get(&line.site_id).copied().unwrap_or(0));
    }
    Ok((lines.into_values().collect(), age))
}

/// TX_CURR per site, from the cache when the views have not refreshed since.
async fn tx_curr(
    client: &tokio_postgres::Client,
    cache: &TxCurrCache,
) -> Result<(BTreeMap<i64, i64>, Option<f64>), String> {
    let row = client
        .query_one(
            "SELECT coalesce(max(refreshed_at)::text, ''), current_date::text,
                    extract(epoch FROM now() - min(refreshed_at))::float8
             FROM ids.refresh_log",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let (refreshed, today, age): (String, String, Option<f64>) =
        (row.get(0), row.get(1), row.get(2));
    let mut guard = cache.inner.lock().await;
    if let Some((r, d, counts)) = guard.as_ref() {
        if *r == refreshed && *d == today {
            return Ok((counts.clone(), age));
        }
    }
    let moh = crate::receiver::reports::Definition::Moh.default_days();
    let counts: BTreeMap<i64, i64> = client
        .query(
            "SELECT site_id::int8, count(*) FROM ids.outcomes(current_date, $1, NULL)
             WHERE outcome = $2 GROUP BY 1",
            &[&moh, &crate::receiver::reports::ON_ART],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    *guard = Some((refreshed, today, counts.clone()));
    Ok((counts, age))
}

/// The JSON answer.
pub fn to_json(lines: &[SiteLine], views_age: Option<f64>) -> Value {
    json!({ "sites": lines, "views_age_seconds": views_age })
}

/// The HTML page; a site silent for over `silent_after_secs` is flagged.
pub fn to_html(lines: &[SiteLine], views_age: Option<f64>, silent_after_secs: u64) -> String {
    let now = now_ms();
    let body = html! {
        h1 { "emr-stream receiver" }
        p {
            "IDS views refreshed: "
            b #views-age {
                @match views_age {
                    Some(a) => { (a.round() as i64) " s ago" }
                    None => "never",
                }
            }
        }
        table #sites {
            tr {
                th { "Site" } th { "Last seen" } th { "Lag" } th { "Visits received today" }
                th { "TX_CURR today (MOH)" } th { "Batches" }
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
                    td.n { (l.visits_today) }
                    td.n { @if let Some(t) = l.tx_curr { (t) } }
                    td.n { (l.batches) }
                }
            }
        }
    };
    page("emr-stream receiver", body)
}
