//! The missed-visit sweep: re-reads the source's visits day by day and queues a fresh
//! snapshot of every visit that was never shipped or changed since it was (the tailer was
//! down past binlog retention, a checkpoint was reset, a table was not mapped then).
//!
//! Each day is read in one consistent snapshot (`START TRANSACTION WITH CONSISTENT
//! SNAPSHOT`). The binlog position is read *before* the snapshot starts and gives every swept
//! row its `lsn`, so a binlog change after that position still wins at the receiver, and one
//! before it is in the snapshot anyway. Reading is gentle: at most `rows_per_sec` rows a second.
//!
//! Which rows make a visit follows the mapping: tables of role `visit` and `program` find
//! their patient, program and day through their `via` chain as the binlog path does (the day
//! of the root row unless `date_from = "own"`); `demographics` rows join the patient's visit of
//! the day they were created, changed or voided; `reference` rows (locations, concepts, users)
//! join the reference visit (patient 0, program 0) of the day they were created, changed or
//! retired, so an initial load carries them too (rows with no audit date are not swept). A visit is
//! re-sent when a row's digest (primary key and data) differs from what was last queued for
//! it, or a row was never queued; visits with an open buffer are left to the binlog path.
//!
//! Hard deletes made while the tailer was away (past binlog retention, a reset checkpoint):
//! the ledger lists the rows of each shipped visit as last queued upserted. A row it lists
//! that the day's snapshot no longer shows under that visit, and that the source no longer has
//! at all (looked up by primary key in the same snapshot: a row that moved to another visit is
//! not gone), is shipped as a delete with the snapshot's `lsn`, in the visit's next version;
//! visits whose every row is gone are found through the ledger's visits of the day.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::mapping::{Mapping, TableMapping};
use crate::tailer::state::{row_id, State, StateError};
use crate::tailer::visit::{envelope, VisitKey};
use crate::wire;

mod command;
mod read;
mod runner;

pub use command::{command, ADDR_FILE, ADMIN_HEADER};
pub use runner::{nightly, SweepRunner};

/// Errors of a sweep.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The source failed.
    #[error("source: {0}")]
    Source(#[from] mysql_async::Error),
    /// The state store failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The source or mapping is not what the sweep needs.
    #[error("{0}")]
    Setup(String),
}

/// What to sweep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Window {
    /// First visit day.
    pub since: NaiveDate,
    /// Last visit day.
    pub until: NaiveDate,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Days read.
    pub days: u64,
    /// Visits compared with the ledger.
    pub visits_checked: u64,
    /// Visits queued again (never shipped, or changed).
    pub visits_resent: u64,
    /// Rows read from the source.
    pub rows_read: u64,
    /// Visits whose buffer is open (the binlog path ships them).
    pub visits_open: u64,
    /// Open visits of past days shipped as `complete: false` (parts counted one by one).
    pub visits_open_shipped: u64,
    /// Rows the ledger shipped that the source no longer has, shipped as deletes.
    #[serde(default)]
    pub rows_deleted: u64,
}

/// Progress after each day: (days done, days in all, summary so far).
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64, &Summary) + Send);

/// Where a sweep stands, kept in the state store so an interrupted sweep resumes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resume {
    window: Window,
    next: NaiveDate,
}

const RESUME_KEY: &str = "sweep_resume";

/// How the sweep reads one table: its rows of a day, and which days hold any.
struct TableQuery<'a> {
    table: &'a str,
    spec: &'a TableMapping,
    /// `SELECT <shipped columns>, patient, program, day ... WHERE day in [?, ?)`.
    rows: String,
    /// `SELECT DISTINCT day ...` over the same rows.
    days: String,
}

/// The sweep of one source.
pub struct Sweeper {
    mapping: Mapping,
    state: State,
    opts: Opts,
    database: String,
    site_id: i64,
    epoch: u64,
    rows_per_sec: u32,
}

impl Sweeper {
    /// A sweeper reading `database` through `opts`, queueing into `state`.
    pub fn new(
        mapping: Mapping,
        state: State,
        opts: Opts,
        database: String,
        site_id: i64,
        epoch: u64,
        rows_per_sec: u32,
    ) -> Self {
        Self {
            mapping,
            state,
            opts,
            database,
            site_id,
            epoch,
            rows_per_sec: rows_per_sec.max(1),
        }
    }

    /// Sweeps `window` day by day. An earlier sweep of the same window that was interrupted
    /// resumes where it stopped.
    pub async fn run(
        &self,
        window: &Window,
        progress: Progress<'_>,
    ) -> Result<Summary, SweepError> {
        let mut day = match self.state.meta_get::<Resume>(RESUME_KEY)? {
            Some(r) if r.window == *window && r.next > window.since => {
                tracing::info!(from = %r.next, "resuming an interrupted sweep");
                r.next
            }
            _ => window.since,
        };
        let total = (window.until - window.since).num_days().max(-1) as u64 + 1;
        let mut summary = Summary::default();
        let mut conn = Conn::new(self.opts.clone()).await?;
        conn.query_drop(format!("USE `{}`", self.database)).await?;
        // Raw bytes in each column's own charset, decoded as the binlog path decodes them.
        conn.query_drop("SET SESSION character_set_results = NULL, SESSION time_zone = '+00:00'")
            .await?;
        // The per-table queries, built once (information_schema is read once per run).
        let mut queries = Vec::new();
        for (table, t) in &self.mapping.tables {
            if let Some((rows, days)) = self.select_for(&mut conn, table, t).await? {
                queries.push(TableQuery {
                    table,
                    spec: t,
                    rows,
                    days,
                });
            }
        }
        // Days with no row in any table are skipped: an initial load from a facility's first
        // day (years, mostly empty at the start) reads only the days that hold something.
        let present = self
            .days_present(&mut conn, &queries, day, window.until)
            .await?;
        // The ledger's visits of each day: a day whose rows are all gone still has them.
        let shipped = self
            .state
            .shipped_by_day(&day.to_string(), &window.until.to_string())?;
        let started = Instant::now();
        while day <= window.until {
            let shipped_today = shipped.get(&day.to_string());
            if present.contains(&day) || shipped_today.is_some() {
                self.day(&mut conn, &queries, day, shipped_today, &mut summary)
                    .await?;
            }
            summary.days += 1;
            let next = day + chrono::Duration::days(1);
            self.state.meta_set(
                RESUME_KEY,
                Some(&Resume {
                    window: window.clone(),
                    next,
                }),
            )?;
            let done = (day - window.since).num_days() as u64 + 1;
            progress(done, total, &summary);
            // Gentle: no more than rows_per_sec on average.
            let due = Duration::from_secs_f64(summary.rows_read as f64 / self.rows_per_sec as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
            day = next;
        }
        self.state.meta_set::<Resume>(RESUME_KEY, None)?;
        conn.disconnect().await.ok();
        metrics::counter!(crate::metrics::SWEEP_RUNS).increment(1);
        Ok(summary)
    }

    /// The days in `[since, until]` that hold a row of some swept table.
    async fn days_present(
        &self,
        conn: &mut Conn,
        queries: &[TableQuery<'_>],
        since: NaiveDate,
        until: NaiveDate,
    ) -> Result<std::collections::BTreeSet<NaiveDate>, SweepError> {
        let end = until + chrono::Duration::days(1);
        let mut days = std::collections::BTreeSet::new();
        for q in queries {
            let found: Vec<Option<String>> = conn
                .exec(q.days.as_str(), (since.to_string(), end.to_string()))
                .await?;
            days.extend(
                found
                    .into_iter()
                    .flatten()
                    .filter_map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
            );
        }
        Ok(days)
    }

    /// Moves an open buffer into the outbox as `complete: false`; the number of parts moved.
    fn ship_open(&self, stream_key: &str, key: &VisitKey) -> Result<u64, SweepError> {
        let mut parts = 0;
        let envelope_of = |version, rows: &[&[u8]], _last| {
            crate::tailer::visit::envelope(stream_key, key, version, false, rows)
        };
        while let Some(part) =
            self.state
                .move_to_outbox(stream_key, envelope_of, crate::clock::now_ms())?
        {
            parts += 1;
            if part.last {
                break;
            }
        }
        Ok(parts)
    }

    /// One day in one snapshot.
    async fn day(
        &self,
        conn: &mut Conn,
        queries: &[TableQuery<'_>],
        day: NaiveDate,
        shipped: Option<&Vec<String>>,
        summary: &mut Summary,
    ) -> Result<(), SweepError> {
        let position = crate::tailer::binlog::server_position(conn)
            .await
            .map_err(|e| SweepError::Setup(e.to_string()))?;
        let lsn = position.lsn(self.epoch);
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        let mut visits: BTreeMap<String, (VisitKey, Vec<wire::Row>)> = BTreeMap::new();
        let read = self.read_day(conn, queries, day, lsn, &mut visits).await;
        let gone = match read {
            Ok(_) => self.hard_deleted(conn, &visits, shipped, lsn).await,
            Err(_) => Ok(BTreeMap::new()),
        };
        conn.query_drop("COMMIT").await?;
        summary.rows_read += read?;
        let mut gone = gone?;
        // Visits with no row left: only their deletes.
        for (stream_key, deletes) in &gone {
            if !visits.contains_key(stream_key) {
                if let Some(key) = visit_key_of(stream_key) {
                    visits.insert(stream_key.clone(), (key, Vec::new()));
                }
            }
            summary.rows_deleted += deletes.len() as u64;
        }
        for (stream_key, (key, mut rows)) in visits {
            let deletes = gone.remove(&stream_key).unwrap_or_default();
            let deleting = !deletes.is_empty();
            rows.extend(deletes);
            summary.visits_checked += 1;
            metrics::counter!(crate::metrics::SWEEP_VISITS_CHECKED).increment(1);
            if self.state.is_open(&stream_key)? {
                summary.visits_open += 1;
                if day < chrono::Local::now().date_naive() {
                    // Still open past its day (the tailer was stopped since, or its clock is
                    // behind): ship what the buffer holds, marked as never closed.
                    summary.visits_open_shipped += self.ship_open(&stream_key, &key)?;
                }
                continue;
            }
            let stored: Vec<(Vec<u8>, Vec<u8>)> = rows
                .iter()
                .map(|r| {
                    (
                        row_id(&r.table, &r.pk),
                        serde_json::to_vec(r).expect("rows serialize"),
                    )
                })
                .collect();
            let mut changed = deleting || self.state.shipped(&stream_key)?.is_none();
            if !changed {
                let held = self.state.row_digests(&stream_key)?;
                changed = stored
                    .iter()
                    .any(|(id, row)| held.get(id) != Some(&crate::tailer::state::row_digest(row)));
            }
            if !changed {
                continue;
            }
            self.state.enqueue_snapshot(
                &stream_key,
                &stored,
                |version, rows, _last| envelope(&stream_key, &key, version, true, rows),
                now_ms(),
            )?;
            summary.visits_resent += 1;
            metrics::counter!(crate::metrics::SWEEP_VISITS_RESENT).increment(1);
        }
        Ok(())
    }
}

/// The visit key of a stream key `{site}:{patient}:{program}:{date}`.
fn visit_key_of(stream_key: &str) -> Option<VisitKey> {
    let mut parts = stream_key.splitn(4, ':');
    let (_site, patient, program, date) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(VisitKey {
        patient_id: patient.parse().ok()?,
        program_id: program.parse().ok()?,
        visit_date: date.to_owned(),
    })
}

impl Sweeper {
    /// The rows the ledger lists for the day's visits (those read, and the ledger's own of the
    /// day) that the snapshot shows nowhere: deletes to ship, by visit. Runs inside the day's
    /// snapshot.
    async fn hard_deleted(
        &self,
        conn: &mut Conn,
        visits: &BTreeMap<String, (VisitKey, Vec<wire::Row>)>,
        shipped: Option<&Vec<String>>,
        lsn: u64,
    ) -> Result<BTreeMap<String, Vec<wire::Row>>, SweepError> {
        let mut candidates: std::collections::BTreeSet<&str> =
            visits.keys().map(String::as_str).collect();
        candidates.extend(shipped.into_iter().flatten().map(String::as_str));
        let mut out: BTreeMap<String, Vec<wire::Row>> = BTreeMap::new();
        for stream_key in candidates {
            if self.state.is_open(stream_key)? {
                continue;
            }
            let present: std::collections::HashSet<(&str, String)> = visits
                .get(stream_key)
                .map(|(_, rows)| {
                    rows.iter()
                        .map(|r| (r.table.as_str(), crate::tailer::state::canonical_pk(&r.pk)))
                        .collect()
                })
                .unwrap_or_default();
            for (table, pk_json) in self.state.ledger_rows(stream_key)? {
                if present.contains(&(table.as_str(), pk_json.clone())) {
                    continue;
                }
                let Some(spec) = self.mapping.table(&table) else {
                    continue;
                };
                let Ok(pk) =
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&pk_json)
                else {
                    continue;
                };
                if self.source_has(conn, &table, spec, &pk).await? {
                    continue; // moved to another visit, or a row the sweep does not read
                }
                out.entry(stream_key.to_owned())
                    .or_default()
                    .push(wire::Row {
                        table,
                        op: wire::Op::Delete,
                        lsn,
                        pk,
                        data: serde_json::Map::new(),
                    });
            }
        }
        Ok(out)
    }

    /// Whether the source has the row of `table` with primary key `pk` (true when the key
    /// cannot be looked up: a delete is shipped only for a row surely gone).
    async fn source_has(
        &self,
        conn: &mut Conn,
        table: &str,
        spec: &TableMapping,
        pk: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<bool, SweepError> {
        let mut params = Vec::new();
        for column in &spec.pk {
            let value = match pk.get(column) {
                Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => mysql_async::Value::Int(i),
                    (None, Some(u)) => mysql_async::Value::UInt(u),
                    _ => return Ok(true),
                },
                Some(serde_json::Value::String(s)) => {
                    mysql_async::Value::Bytes(s.clone().into_bytes())
                }
                _ => return Ok(true),
            };
            params.push(value);
        }
        // Names come from the mapping (checked identifiers).
        let condition = spec
            .pk
            .iter()
            .map(|c| format!("`{c}` = ?"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let found: Option<u8> = conn
            .exec_first(
                format!("SELECT 1 FROM `{table}` WHERE {condition} LIMIT 1"),
                mysql_async::Params::Positional(params),
            )
            .await?;
        Ok(found.is_some())
    }
}

/// The default window: the last `days` days up to today (local time).
pub fn last_days(days: u32) -> Window {
    let today = chrono::Local::now().date_naive();
    Window {
        since: today - chrono::Duration::days(days.saturating_sub(1) as i64),
        until: today,
    }
}
