//! IDS analytics: plain tables in schema `ids` maintained per patient (`ids-tables.sql` beside
//! the mapping; design/incremental-ids.md).
//!
//! - [`maintain`]: inside a batch's apply transaction, the patients the batch touched (old and
//!   new owners of its rows) are recomputed before it commits, so a report sees a batch
//!   exactly when its rows commit; big changes go to the queue instead.
//! - [`queue`]: the overflow path, a dirty-patient table drained by workers in chunks.
//! - [`verify`]: the tables against a fresh full computation, one site at a time.
//! - [`stats`]: planner statistics that know the sites being written.
//!
//! Invariant: every writer of a site's derived rows (apply, queue workers, rebuilds) holds
//! that site's advisory transaction lock ([`SITE_LOCK`], site) from its first statement, so
//! every recompute reads a snapshot that holds all committed changes of the site. Applies,
//! rebuild queuing and a rebuild's end hold it exclusively; queue workers share it among
//! themselves ([`Hold::Shared`]): their chunks hold other patients (`SKIP LOCKED`), read
//! base rows no apply can change meanwhile, and adjust day counts by deltas that add up, so
//! a site's rebuild runs on every core.

pub mod maintain;
pub mod queue;
pub mod stats;
pub mod verify;

use deadpool_postgres::GenericClient;

/// Advisory lock namespace of a site's IDS writers: `pg_advisory_xact_lock(SITE_LOCK, site)`.
pub const SITE_LOCK: i32 = 0x656d;
/// Advisory lock namespace of a site's verification (one verifier per site at a time).
pub const VERIFY_LOCK: i32 = 0x656e;
/// The derived tables, in the order a recompute writes them.
pub const TABLES: [&str; 6] = [
    "arv_dispensations",
    "program_states",
    "appointments",
    "patient_visits",
    "art_status",
    "visits_daily",
];
/// Patients a queue worker recomputes per transaction (a site's applies wait at most that
/// long behind it).
pub const CHUNK: i32 = 500;

/// How a writer holds a site's IDS lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Alone: applies, rebuild queuing, the end of a rebuild.
    Alone,
    /// Shared with the site's other queue workers (never with an apply).
    Shared,
}

impl Hold {
    /// The suffix of PostgreSQL's advisory transaction-lock functions for this hold.
    fn suffix(self) -> &'static str {
        match self {
            Self::Alone => "",
            Self::Shared => "_shared",
        }
    }
}

/// Takes the site's IDS lock for the rest of the transaction; waits for the holders it
/// cannot share it with.
pub async fn lock_site(
    client: &impl GenericClient,
    site_id: i32,
    hold: Hold,
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "SELECT pg_advisory_xact_lock{}($1::int4, $2::int4)",
        hold.suffix()
    );
    client
        .execute(&sql, &[&SITE_LOCK, &site_id])
        .await
        .map(drop)
}

/// Tries the site's IDS lock for the rest of the transaction; false while a holder it cannot
/// share it with has it.
pub async fn try_lock_site(
    client: &impl GenericClient,
    site_id: i32,
    hold: Hold,
) -> Result<bool, tokio_postgres::Error> {
    let sql = format!(
        "SELECT pg_try_advisory_xact_lock{}($1::int4, $2::int4)",
        hold.suffix()
    );
    Ok(client
        .query_one(&sql, &[&SITE_LOCK, &site_id])
        .await?
        .get(0))
}

/// Every site the stores know: those that sent batches and those with IDS state.
pub async fn sites(client: &impl GenericClient) -> Result<Vec<i32>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT site_id FROM cdr._stream_sites UNION SELECT site_id FROM ids.site_state
             UNION SELECT DISTINCT site_id FROM cdr.patient ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Queues every patient of `site_id` for recomputation (a rebuild; readers keep the current
/// rows until each chunk commits). Marks the rebuild started unless `resume` finds one that
/// did not finish, which then just continues. Returns the patients queued now.
pub async fn queue_rebuild(
    client: &mut deadpool_postgres::Client,
    site_id: i32,
    resume: bool,
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    lock_site(&tx, site_id, Hold::Alone).await?;
    let unfinished: Option<bool> = tx
        .query_opt(
            "SELECT rebuild_started IS NOT NULL FROM ids.site_state WHERE site_id = $1",
            &[&site_id],
        )
        .await?
        .map(|r| r.get(0));
    if resume && unfinished == Some(true) {
        tx.commit().await?;
        return Ok(0);
    }
    let queued: i32 = tx
        .query_one("SELECT ids.queue_site($1)", &[&site_id])
        .await?
        .get(0);
    tx.commit().await?;
    Ok(queued as u64)
}
