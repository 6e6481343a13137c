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
//! Hard deletes made while the tailer was away are not detected (OpenMRS voids instead).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::binlog::value::{to_json, ColumnDesc};
use crate::binlog::RowOp;
use crate::mapping::{DateFrom, Mapping, Role, TableMapping};
use crate::state::{now_ms, row_key, State, StateError};
use crate::visit::{envelope, VisitKey, WireRow};

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
        let started = Instant::now();
        while day <= window.until {
            if present.contains(&day) {
                self.day(&mut conn, &queries, day, &mut summary).await?;
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
            crate::visit::envelope(stream_key, key, version, false, rows)
        };
        while let Some(part) =
            self.state
                .move_to_outbox(stream_key, envelope_of, crate::state::now_ms())?
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
        summary: &mut Summary,
    ) -> Result<(), SweepError> {
        let position = crate::binlog::server_position(conn)
            .await
            .map_err(|e| SweepError::Setup(e.to_string()))?;
        let lsn = position.lsn(self.epoch);
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        let mut visits: BTreeMap<String, (VisitKey, Vec<WireRow>)> = BTreeMap::new();
        let read = self.read_day(conn, queries, day, lsn, &mut visits).await;
        conn.query_drop("COMMIT").await?;
        summary.rows_read += read?;
        for (stream_key, (key, rows)) in visits {
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
                        row_key(&stream_key, &r.table, &r.pk),
                        serde_json::to_vec(r).expect("rows serialize"),
                    )
                })
                .collect();
            let mut changed = self.state.shipped(&stream_key)?.is_none();
            for (k, row) in &stored {
                if changed {
                    break;
                }
                changed = self.state.row_digest(k)? != Some(crate::state::row_digest(row));
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

    /// Reads every swept table's rows of visits dated `day`.
    async fn read_day(
        &self,
        conn: &mut Conn,
        queries: &[TableQuery<'_>],
        day: NaiveDate,
        lsn: u64,
        visits: &mut BTreeMap<String, (VisitKey, Vec<WireRow>)>,
    ) -> Result<u64, SweepError> {
        let mut rows_read = 0;
        let next = day + chrono::Duration::days(1);
        for TableQuery {
            table,
            spec: t,
            rows: sql,
            ..
        } in queries
        {
            let result: Vec<mysql_async::Row> = conn
                .exec(sql.as_str(), (day.to_string(), next.to_string()))
                .await?;
            for row in result {
                rows_read += 1;
                let columns = row.columns();
                let n = columns.len() - 3;
                let mut values = row.unwrap();
                let day_value = values.pop();
                let program = values.pop();
                let patient = values.pop();
                let (Some(patient), Some(visit_day)) = (
                    patient.and_then(|v| mysql_async::from_value_opt::<i64>(v).ok()),
                    day_value.and_then(|v| mysql_async::from_value_opt::<String>(v).ok()),
                ) else {
                    continue;
                };
                let program = program
                    .and_then(|v| mysql_async::from_value_opt::<Option<i64>>(v).ok())
                    .flatten()
                    .unwrap_or(self.mapping.default_program_id);
                let mut pk = Map::new();
                let mut data = Map::new();
                for (i, value) in values.into_iter().enumerate().take(n) {
                    let c = &columns[i];
                    let desc = ColumnDesc {
                        name: c.name_str().into_owned(),
                        column_type: c.column_type(),
                        unsigned: c
                            .flags()
                            .contains(mysql_async::consts::ColumnFlags::UNSIGNED_FLAG),
                        charset: c.character_set(),
                        fsp: c.decimals(),
                        labels: None,
                        fixed_len: None,
                    };
                    let json = to_json(value, &desc);
                    if t.pk.contains(&desc.name) {
                        pk.insert(desc.name, json);
                    } else {
                        data.insert(desc.name, json);
                    }
                }
                let key = VisitKey {
                    patient_id: patient,
                    program_id: program,
                    visit_date: visit_day,
                };
                let stream_key = key.stream_key(self.site_id);
                visits
                    .entry(stream_key)
                    .or_insert_with(|| (key, Vec::new()))
                    .1
                    .push(WireRow {
                        table: (*table).to_owned(),
                        op: RowOp::Upsert,
                        lsn,
                        pk,
                        data,
                    });
            }
        }
        Ok(rows_read)
    }

    /// The rows and days queries of a table (see `TableQuery`), following the `via` chain;
    /// None for tables the sweep does not read.
    async fn select_for(
        &self,
        conn: &mut Conn,
        table: &str,
        t: &TableMapping,
    ) -> Result<Option<(String, String)>, SweepError> {
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&self.database, table),
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let select: Vec<String> = columns
            .iter()
            .filter(|c| t.ships_column(c))
            .map(|c| format!("t0.`{c}`"))
            .collect();
        if t.role == Role::Reference {
            // Reference rows (locations, concepts, users...) belong to the reference visit
            // (patient 0, program 0) of the day they were created, changed or retired.
            let Some(day) = audit_day(&columns) else {
                return Ok(None);
            };
            let tail = format!(
                "CAST(DATE({day}) AS CHAR) FROM `{table}` t0 WHERE {day} >= ? AND {day} < ?"
            );
            return Ok(Some(queries(&select, "0, 0", &tail)));
        }
        // Walk the via chain: t0 → t1 → ... (at most 3 hops).
        let mut joins = String::new();
        let mut alias = 0;
        let mut current = t;
        let mut patient = t.patient.as_ref().map(|c| format!("t0.`{c}`"));
        let mut program = t.program.as_ref().map(|c| format!("t0.`{c}`"));
        let own_date = t.date.as_ref().map(|c| format!("t0.`{c}`"));
        let mut date = own_date.clone();
        while let Some(via) = &current.via {
            let Some(parent) = self.mapping.table(&via.table) else {
                break;
            };
            let parent_pk = parent.pk.first().ok_or_else(|| {
                SweepError::Setup(format!("table {} has no primary key", via.table))
            })?;
            alias += 1;
            joins.push_str(&format!(
                " LEFT JOIN `{}` t{alias} ON t{alias}.`{parent_pk}` = t{}.`{}`",
                via.table,
                alias - 1,
                via.column
            ));
            let up = |c: &Option<String>| c.as_ref().map(|c| format!("t{alias}.`{c}`"));
            patient = coalesce(up(&parent.patient), patient);
            program = coalesce(up(&parent.program), program);
            date = coalesce(up(&parent.date), date);
            current = parent;
            if alias == 3 {
                break;
            }
        }
        if t.date_from == DateFrom::Own {
            date = own_date.or(date);
        }
        let Some(patient) = patient else {
            return Ok(None);
        };
        let day_expr = match (t.role, date) {
            (Role::Demographics, _) => match audit_day(&columns) {
                Some(day) => day,
                None => return Ok(None),
            },
            (_, Some(date)) => date,
            (_, None) => return Ok(None),
        };
        let program = if t.role == Role::Demographics {
            "NULL".to_owned()
        } else {
            program.unwrap_or_else(|| "NULL".into())
        };
        let tail = format!(
            "CAST(DATE({day_expr}) AS CHAR) FROM `{table}` t0{joins} WHERE {day_expr} >= ? AND {day_expr} < ?"
        );
        Ok(Some(queries(
            &select,
            &format!("{patient}, {program}"),
            &tail,
        )))
    }
}

/// The rows query (`SELECT <select>, <patient_program>, <tail>`) and the days query
/// (`SELECT DISTINCT <tail>`), where `tail` is `<day> FROM ... WHERE ...`.
fn queries(select: &[String], patient_program: &str, tail: &str) -> (String, String) {
    (
        format!("SELECT {}, {patient_program}, {tail}", select.join(", ")),
        format!("SELECT DISTINCT {tail}"),
    )
}

/// The latest of a row's audit dates (created, changed, voided, retired) that its table has,
/// as SQL over alias `t0`; `None` when it has none.
fn audit_day(columns: &[String]) -> Option<String> {
    let audit: Vec<String> = [
        "date_created",
        "date_changed",
        "date_voided",
        "date_retired",
    ]
    .iter()
    .filter(|c| columns.iter().any(|x| x == *c))
    .map(|c| format!("t0.`{c}`"))
    .collect();
    match audit.len() {
        0 => None,
        1 => Some(audit[0].clone()),
        _ => Some(format!(
            "GREATEST({})",
            audit
                .iter()
                .map(|a| format!("COALESCE({a}, {})", audit[0]))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn coalesce(a: Option<String>, b: Option<String>) -> Option<String> {
    match (a, b) {
        (Some(a), Some(b)) => Some(format!("COALESCE({a}, {b})")),
        (a, b) => a.or(b),
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

/// `emr-stream sweep`: sweeps `window` with the tailer stopped; the visits it queues ship when
/// the tailer runs. Prints a progress line with an ETA on stderr and the summary on stdout.
pub async fn command(
    config: &crate::config::TailerConfig,
    window: Window,
) -> anyhow::Result<Summary> {
    use anyhow::Context;
    anyhow::ensure!(window.since <= window.until, "--since is after --until");
    let mapping = Mapping::load(&config.mapping)?;
    let state = match State::open(&config.state.dir) {
        Ok(state) => state,
        Err(StateError::Locked(_)) => return through_tailer(config, &window).await,
        Err(e) => return Err(e.into()),
    };
    let checkpoint = state.checkpoint()?.context(
        "no checkpoint yet: start the tailer once, or `emr-stream checkpoint reset --to-current --yes`",
    )?;
    let opts = crate::binlog::source_opts(config.source.url.expose())?;
    let site_id = match config.source.site_id {
        Some(id) => id,
        None => {
            let mut conn = Conn::new(opts.clone())
                .await
                .context("cannot connect to the source")?;
            let id = crate::binlog::read_site_id(&mut conn, &config.source.database).await?;
            conn.disconnect().await.ok();
            id
        }
    };
    let sweeper = Sweeper::new(
        mapping,
        state.clone(),
        opts,
        config.source.database.clone(),
        site_id,
        checkpoint.epoch,
        config.sweep.rows_per_sec,
    );
    let started = Instant::now();
    let summary = sweeper
        .run(&window, &mut |done, total, s| {
            let eta = started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64;
            let filled = (done * 30 / total.max(1)) as usize;
            eprint!(
                "\rsweep {} [{}{}] {done}/{total} days, {} visits checked, {} re-sent, ETA {:.0}s   ",
                window.since,
                "#".repeat(filled),
                ".".repeat(30 - filled),
                s.visits_checked,
                s.visits_resent,
                eta
            );
        })
        .await?;
    eprintln!();
    state.flush()?;
    Ok(summary)
}

/// The tailer's nightly sweep: waits for `config.at` local time, sweeps the last
/// `config.days` days, and again the next night, until shutdown.
/// The tailer holds the state: ask it (on its loopback HTTP endpoint) to sweep, and wait.
async fn through_tailer(
    config: &crate::config::TailerConfig,
    window: &Window,
) -> anyhow::Result<Summary> {
    let recorded = std::fs::read_to_string(config.state.dir.join(crate::tailer::ADDR_FILE))
        .ok()
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok());
    let mut addr = recorded.unwrap_or(config.http.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    eprintln!(
        "the tailer is running (its state in {} is in use): asking it at {addr} to sweep {} .. {}; progress is in its log",
        config.state.dir.display(),
        window.since,
        window.until
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/sweep"))
        .header(crate::tailer::SWEEP_HEADER, "sweep")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(window)?)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the state in {} is in use, but no tailer answers at {addr} ({e}): stop whatever holds the state and try again",
                config.state.dir.display()
            )
        })?;
    let status = answer.status();
    let body = answer.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "the tailer answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    Ok(serde_json::from_slice(&body)?)
}

/// Runs sweeps inside a running tailer, one at a time: the nightly one and those asked for on
/// `POST /sweep` (what `emr-stream sweep` does while the tailer holds the state).
pub struct SweepRunner {
    make: Box<dyn Fn(u64) -> Sweeper + Send + Sync>,
    state: State,
    lock: tokio::sync::Mutex<()>,
}

impl SweepRunner {
    /// `make(epoch)` builds a sweeper for the checkpoint's current `lsn` epoch.
    pub fn new(make: impl Fn(u64) -> Sweeper + Send + Sync + 'static, state: State) -> Self {
        Self {
            make: Box::new(make),
            state,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Sweeps `window` now, waiting for a running sweep to end first when `wait`, else `None`
    /// if one is running. Progress goes to the log, a line per day.
    pub async fn run(&self, window: &Window, wait: bool) -> Option<Result<Summary, SweepError>> {
        let _guard = if wait {
            self.lock.lock().await
        } else {
            self.lock.try_lock().ok()?
        };
        let epoch = match self.state.checkpoint() {
            Ok(Some(cp)) => cp.epoch,
            _ => 0,
        };
        let sweep = (self.make)(epoch);
        let mut log = |done: u64, total: u64, s: &Summary| {
            tracing::info!(
                since = %window.since, done, total, checked = s.visits_checked,
                resent = s.visits_resent, "sweep progress (days)"
            );
        };
        Some(sweep.run(window, &mut log).await)
    }
}

/// The tailer's nightly sweep: at `config.at` local time, the last `config.days` days.
pub async fn nightly(
    runner: std::sync::Arc<SweepRunner>,
    config: &crate::config::SweepConfig,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let Some(at) = config.time() else {
        return;
    };
    loop {
        let now = chrono::Local::now().naive_local();
        let mut next = now.date().and_time(at);
        if next <= now {
            next += chrono::Duration::days(1);
        }
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(at = %next, "nightly sweep scheduled");
        if !shutdown.sleep(wait).await {
            return;
        }
        let window = last_days(config.days);
        let result = tokio::select! {
            biased;
            _ = shutdown.fired() => return,
            r = runner.run(&window, true) => r,
        };
        match result {
            Some(Ok(s)) => tracing::info!(
                since = %window.since, checked = s.visits_checked, resent = s.visits_resent,
                rows = s.rows_read, "nightly sweep done"
            ),
            Some(Err(e)) => tracing::warn!(error = %e, "nightly sweep failed; next night retries"),
            None => {}
        }
    }
}
