//! The capture loop: follows the binlog and records whole source transactions (rows into visit
//! buffers + the checkpoint after them, atomically). Ready visits leave the buffers for the
//! outbox in `tailer::mover`, beside it.
//!
//! Group commit: several complete source transactions are recorded in one sled transaction
//! (at most `GROUP_ROWS` rows, `GROUP_WAIT` old) with the checkpoint after the last of them,
//! so the checkpoint still only moves at transaction boundaries.
//!
//! Big transactions: rows of an unfinished transaction are held until its commit, up to
//! `SPILL_ROWS`; beyond that each chunk is shipped straight to the receiver as visit parts
//! (`complete: false`), bypassing sled, so memory stays bounded whatever the transaction's
//! size. The binlog is their outbox: the checkpoint stays before the transaction until its
//! commit is read, so a crash in the middle re-reads and re-sends it whole (batch ids are
//! derived from the rows' positions and every row carries its `lsn`, so re-sending is
//! harmless). While the receiver is unreachable, capture waits at such a transaction; nothing
//! is lost, the source keeps the binlog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use mysql_async::{Opts, Pool};
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::TailerConfig;
use crate::mapping::{Mapping, Role};
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::tailer::binlog::{BinlogReader, RowChange, Step};
use crate::tailer::ship::Sender;
use crate::tailer::state::{Checkpoint, State, TxnChanges, VisitChanges};
mod big;
mod rows;
mod space;

use crate::tailer::resolve::Resolver;
use crate::wire::Op;

/// Live numbers of the capture loop, for `/status`.
#[derive(Debug, Default)]
pub struct CaptureStatus {
    /// Seconds of lag at the last commit or heartbeat.
    pub lag_seconds: AtomicI64,
    /// Unix ms of the last event.
    pub last_event_ms: AtomicU64,
    /// Transactions recorded since start.
    pub transactions: AtomicU64,
    /// Whether the binlog stream is connected (1) or not (0).
    pub connected: AtomicU64,
    /// Whether capture waits for space on the state disk (1) or not (0).
    pub paused: AtomicU64,
    /// Free bytes of the state disk at the last check.
    pub free_bytes: AtomicU64,
}

/// Most rows in one group commit. Chosen when a group's rows waited as `serde_json` maps,
/// several KiB each with the allocator's pages: scripts/bench-e2e.sh, `AGAIN=1`, alternating,
/// peak RSS 71.9–75.0 / 77.9–82.1 / 95.2–98.8 / 131.2–131.5 MiB at 1000 / 2500 / 5000 / 10000
/// rows, CPU 3.69–4.07 / 3.31–3.75 / 3.42–3.65 / 3.63–3.86 s per 100k rows. They now wait as
/// their stored JSON (`rows`), a few hundred bytes each.
const GROUP_ROWS: usize = 2_500;
/// Longest a recorded-but-unwritten transaction waits for others to join its group.
const GROUP_WAIT: Duration = Duration::from_millis(50);
/// Rows of an unfinished transaction held in memory before they are written in chunks.
const SPILL_ROWS: usize = 2_000;

/// Complete transactions (and chunks of an open one) not yet written to sled.
#[derive(Default)]
struct Group {
    changes: TxnChanges,
    /// Checkpoint after the last complete transaction in the group.
    checkpoint: Option<Checkpoint>,
    rows: usize,
    transactions: u64,
    since: Option<Instant>,
}

/// The capture loop's parts.
pub struct Capture {
    state: State,
    mapping: Mapping,
    resolver: Resolver,
    opts: Opts,
    pool: Pool,
    database: String,
    server_id: u32,
    heartbeat: Duration,
    site_id: i64,
    mapped: HashMap<String, Vec<String>>,
    /// How often a waiting group is written and the state disk's free space checked
    /// (`visits.ready_check_ms`).
    check_every: Duration,
    status: Arc<CaptureStatus>,
    /// Rows of the transaction being read.
    pending: Vec<RowChange>,
    /// Ships the chunks of big transactions.
    sender: Sender,
    group: Group,
    /// The last checkpoint written to sled.
    committed: Checkpoint,
    /// Cache of the last (timestamp, local date) conversion.
    day_cache: (u32, String),
    /// Which columns each table ships, in order.
    projections: rows::Projections,
    /// The state directory, and the free space (bytes) below which capture pauses.
    state_dir: std::path::PathBuf,
    min_free: u64,
}

/// Why the read loop ended.
enum Ended {
    /// Shutdown.
    Shutdown,
    /// The stream failed in a way a reconnect may cure.
    Interrupted(anyhow::Error),
    /// The state disk is below its free-space floor.
    LowOnSpace,
}

impl Capture {
    /// Prepares the loop.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &TailerConfig,
        mapping: Mapping,
        state: State,
        pool: Pool,
        opts: Opts,
        site_id: i64,
        mapped: HashMap<String, Vec<String>>,
        status: Arc<CaptureStatus>,
        checkpoint: Checkpoint,
        sender: Sender,
    ) -> Self {
        let database = config.source.database.clone();
        Self {
            resolver: Resolver::new(
                mapping.clone(),
                state.clone(),
                pool.clone(),
                database.clone(),
            ),
            mapping,
            state,
            opts,
            pool,
            database,
            server_id: config.source.server_id,
            heartbeat: Duration::from_secs(config.source.heartbeat_secs.max(1)),
            site_id,
            mapped,
            check_every: Duration::from_millis(config.visits.ready_check_ms),
            status,
            pending: Vec::new(),
            sender,
            group: Group::default(),
            committed: checkpoint,
            day_cache: (u32::MAX, String::new()),
            projections: rows::Projections::default(),
            state_dir: config.state.dir.clone(),
            min_free: config.state.min_free_mib.saturating_mul(1 << 20),
        }
    }

    /// Runs until shutdown or a fatal error.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut tick = tokio::time::interval(self.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.wait_for_space(&mut shutdown).await {
                return Ok(());
            }
            let start = self.committed.position.clone();
            let connected = BinlogReader::connect(
                self.opts.clone(),
                self.pool.clone(),
                self.server_id,
                &start,
                &self.database,
                self.mapped.clone(),
                self.heartbeat,
            )
            .await;
            let mut reader = match connected {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "cannot connect to the source binlog; will retry");
                    metrics::counter!(m::TAILER_RECONNECTS).increment(1);
                    if !backoff.wait(&mut shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            self.status.connected.store(1, Relaxed);
            tracing::info!(position = %start, "following the binlog");
            // One timer for the group's flush, moved only when the group's deadline changes: a
            // timer made for every event registered and dropped a timer entry each time, and
            // woke the runtime's driver to do it (9% of the capture thread's CPU, perf).
            let flush_timer = tokio::time::sleep(GROUP_WAIT);
            tokio::pin!(flush_timer);
            let mut armed = None;
            let ended = loop {
                let flush_at = self.group.since.map(|t| t + GROUP_WAIT);
                if let Some(at) = flush_at.filter(|at| armed != Some(*at)) {
                    flush_timer.as_mut().reset(at);
                    armed = Some(at);
                }
                tokio::select! {
                    biased;
                    _ = shutdown.fired() => break Ended::Shutdown,
                    _ = &mut flush_timer, if flush_at.is_some() => self.flush()?,
                    _ = tick.tick() => {
                        self.flush()?;
                        if !self.has_space() {
                            break Ended::LowOnSpace;
                        }
                    }
                    step = reader.next() => match step {
                        Ok(Some(step)) => {
                            backoff.reset();
                            self.status.last_event_ms.store(now_ms(), Relaxed);
                            metrics::counter!(m::TAILER_EVENTS).increment(1);
                            if !self.step(step, &mut shutdown).await? {
                                break Ended::Shutdown;
                            }
                        }
                        Ok(None) => break Ended::Interrupted(anyhow::anyhow!("the source closed the binlog stream")),
                        Err(e) if e.is_retryable() => break Ended::Interrupted(e.into()),
                        Err(e) => {
                            self.abandon_open_transaction();
                            self.flush()?;
                            return Err(e.into());
                        }
                    }
                }
            };
            self.status.connected.store(0, Relaxed);
            // Complete transactions are written; an unfinished one is re-read whole.
            self.abandon_open_transaction();
            self.flush()?;
            match ended {
                Ended::Shutdown => return Ok(()),
                // The loop's head waits for the space and reconnects from the checkpoint.
                Ended::LowOnSpace => {}
                Ended::Interrupted(e) => {
                    tracing::warn!(error = %e, "binlog stream interrupted; reconnecting from the checkpoint");
                    metrics::counter!(m::TAILER_RECONNECTS).increment(1);
                    if !backoff.wait(&mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Drops the rows of a transaction whose commit was not read.
    fn abandon_open_transaction(&mut self) {
        self.pending.clear();
    }

    /// The position of the last complete transaction seen (written or in the group).
    fn last_commit(&self) -> &Checkpoint {
        self.group.checkpoint.as_ref().unwrap_or(&self.committed)
    }

    /// Handles one step; false when shutdown interrupted it.
    async fn step(&mut self, step: Step, shutdown: &mut Shutdown) -> anyhow::Result<bool> {
        match step {
            Step::Rows(rows) => {
                self.pending.extend(rows);
                if self.pending.len() >= SPILL_ROWS {
                    return self.ship_open_transaction_part(shutdown).await;
                }
            }
            Step::Commit {
                position,
                gtid,
                timestamp,
                ddl,
            } => {
                let last = self.last_commit();
                if position <= last.position {
                    // Already recorded (re-read after a reconnect).
                    self.abandon_open_transaction();
                    return Ok(true);
                }
                let mut cp = last.clone();
                cp.position = position;
                cp.gtid = gtid.or(cp.gtid);
                cp.timestamp = timestamp;
                let lag = ((now_ms() / 1000) as i64 - timestamp as i64).max(0);
                self.status.lag_seconds.store(lag, Relaxed);
                metrics::gauge!(m::TAILER_LAG).set(lag as f64);
                if ddl {
                    tracing::info!(position = %cp.position, "schema change on the source database");
                }
                let rows = std::mem::take(&mut self.pending);
                self.group.rows += rows.len();
                let mut visits = std::mem::take(&mut self.group.changes.visits);
                self.resolve_into(rows, &mut visits).await?;
                self.group.changes.visits = visits;
                self.group.checkpoint = Some(cp);
                self.group.transactions += 1;
                self.group.since.get_or_insert_with(Instant::now);
                if self.group.rows >= GROUP_ROWS {
                    self.flush()?;
                }
            }
            Step::Heartbeat => {
                self.status.lag_seconds.store(0, Relaxed);
                metrics::gauge!(m::TAILER_LAG).set(0.0);
            }
            Step::Skip => {}
        }
        Ok(true)
    }

    /// Resolves row changes into visit changes.
    async fn resolve_into(
        &mut self,
        rows: Vec<RowChange>,
        visits: &mut std::collections::BTreeMap<String, VisitChanges>,
    ) -> anyhow::Result<()> {
        let epoch = self.committed.epoch;
        for change in rows {
            let day = self.local_date(change.timestamp);
            let Some(spec) = self.mapping.table(&change.table) else {
                continue;
            };
            let lsn = change.position.lsn(epoch);
            let image = &change.image;
            let (pk, row) = self
                .projections
                .row(&change.table, spec, change.op, lsn, image);
            let key = self
                .resolver
                .resolve(&change.table, &pk, &|c| image.value(c), &day)
                .await?;
            let closing = is_closing(&self.mapping, &change);
            let clinical = spec.role == Role::Visit;
            let entry = visits
                .entry(key.stream_key(self.site_id))
                .or_insert_with(|| VisitChanges {
                    key,
                    rows: Vec::new(),
                    closing: false,
                    clinical: false,
                    event_ms: 0,
                });
            entry.rows.push(row);
            entry.closing |= closing;
            entry.clinical |= clinical;
            entry.event_ms = entry.event_ms.max(u64::from(change.timestamp) * 1000);
        }
        Ok(())
    }

    /// Writes the group: its rows, lookups and the checkpoint after its last complete
    /// transaction, in one sled transaction.
    fn flush(&mut self) -> anyhow::Result<()> {
        let group = std::mem::take(&mut self.group);
        let lookups = self.resolver.take_pending();
        if group.rows == 0 && group.checkpoint.is_none() && lookups.is_empty() {
            return Ok(());
        }
        let checkpoint = group.checkpoint.unwrap_or_else(|| self.committed.clone());
        let mut changes = group.changes;
        changes.lookups = lookups;
        self.state
            .commit_transaction(&changes, &checkpoint, now_ms())?;
        self.committed = checkpoint;
        self.status
            .transactions
            .fetch_add(group.transactions, Relaxed);
        metrics::counter!(m::TAILER_TRANSACTIONS).increment(group.transactions);
        metrics::gauge!(m::TAILER_CHECKPOINT_FILE).set(self.committed.position.sequence() as f64);
        metrics::gauge!(m::TAILER_CHECKPOINT_POS).set(self.committed.position.pos as f64);
        Ok(())
    }

    /// The facility's local date of a unix timestamp (the day of demographics changes).
    fn local_date(&mut self, timestamp: u32) -> String {
        if self.day_cache.0 != timestamp {
            let t = chrono::Local
                .timestamp_opt(timestamp as i64, 0)
                .single()
                .unwrap_or_else(chrono::Local::now);
            self.day_cache = (timestamp, t.format("%Y-%m-%d").to_string());
        }
        self.day_cache.1.clone()
    }
}

fn is_closing(mapping: &Mapping, change: &RowChange) -> bool {
    change.op == Op::Upsert
        && change.table == mapping.encounter_table
        && change
            .image
            .value("voided")
            .and_then(|v| v.as_i64())
            .unwrap_or(0)
            == 0
        && change
            .image
            .value(&mapping.encounter_type_column)
            .and_then(|v| v.as_i64())
            .is_some_and(|t| mapping.closing_encounter_types.contains(&t))
}
