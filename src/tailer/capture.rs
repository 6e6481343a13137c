//! The capture loop: follows the binlog, records each whole source transaction (rows into
//! visit buffers + checkpoint, atomically), and moves ready visits to the outbox.
//!
//! Invariant: rows of a transaction are held until its commit event; a disconnect or restart
//! inside a transaction drops them and re-reads the transaction whole from the checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use mysql_async::{Opts, Pool};
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::binlog::{BinlogReader, RowChange, RowOp, Step};
use crate::config::TailerConfig;
use crate::mapping::Mapping;
use crate::mapping::Role;
use crate::metrics as m;
use crate::retry::Backoff;
use crate::shutdown::Shutdown;
use crate::state::{now_ms, Checkpoint, State, TxnChanges, VisitChanges};
use crate::visit::{envelope, is_ready, Readiness, Resolver, WireRow};

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
    rules: Readiness,
    ready_every: Duration,
    wake: Arc<Notify>,
    status: Arc<CaptureStatus>,
    pending: Vec<RowChange>,
    last_checkpoint_write_ms: u64,
}

/// Checkpoint-only commits (transactions of other databases) are written at most this often.
const IDLE_CHECKPOINT_MS: u64 = 1_000;

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
        wake: Arc<Notify>,
        status: Arc<CaptureStatus>,
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
            rules: Readiness {
                settle_ms: config.visits.settle_ms,
                idle_ms: config.visits.idle_timeout_secs * 1000,
            },
            ready_every: Duration::from_millis(config.visits.ready_check_ms),
            wake,
            status,
            pending: Vec::new(),
            last_checkpoint_write_ms: 0,
        }
    }

    /// Runs until shutdown or a fatal error.
    pub async fn run(mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut ready_tick = tokio::time::interval(self.ready_every);
        ready_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let checkpoint = self
                .state
                .checkpoint()?
                .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
            let connected = BinlogReader::connect(
                self.opts.clone(),
                self.pool.clone(),
                self.server_id,
                &checkpoint.position,
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
            tracing::info!(position = %checkpoint.position, "following the binlog");
            let mut cp = checkpoint;
            let ended = loop {
                tokio::select! {
                    biased;
                    _ = shutdown.fired() => break None,
                    _ = ready_tick.tick() => {
                        self.move_ready_visits()?;
                        continue;
                    }
                    step = reader.next() => match step {
                        Ok(Some(step)) => {
                            backoff.reset();
                            self.status.last_event_ms.store(now_ms(), Relaxed);
                            metrics::counter!(m::TAILER_EVENTS).increment(1);
                            self.step(step, &mut cp).await?;
                        }
                        Ok(None) => break Some(anyhow::anyhow!("the source closed the binlog stream")),
                        Err(e) if e.is_retryable() => break Some(e.into()),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            self.status.connected.store(0, Relaxed);
            // Rows of an unfinished transaction are re-read whole from the checkpoint.
            self.pending.clear();
            self.resolver.clear_pending();
            match ended {
                None => {
                    self.move_ready_visits()?;
                    return Ok(());
                }
                Some(e) => {
                    tracing::warn!(error = %e, "binlog stream interrupted; reconnecting from the checkpoint");
                    metrics::counter!(m::TAILER_RECONNECTS).increment(1);
                    if !backoff.wait(&mut shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn step(&mut self, step: Step, cp: &mut Checkpoint) -> Result<(), anyhow::Error> {
        match step {
            Step::Rows(rows) => {
                self.pending.extend(rows);
            }
            Step::Commit {
                position,
                gtid,
                timestamp,
                ddl,
            } => {
                if position <= cp.position {
                    // Already recorded (re-read after a reconnect).
                    self.pending.clear();
                    self.resolver.clear_pending();
                    return Ok(());
                }
                cp.position = position;
                cp.gtid = gtid.or(cp.gtid.take());
                cp.timestamp = timestamp;
                let lag = (now_ms() / 1000) as i64 - timestamp as i64;
                self.status.lag_seconds.store(lag.max(0), Relaxed);
                metrics::gauge!(m::TAILER_LAG).set(lag.max(0) as f64);
                if ddl {
                    tracing::info!(position = %cp.position, "schema change on the source database");
                }
                self.record(cp).await?;
            }
            Step::Heartbeat => {
                self.status.lag_seconds.store(0, Relaxed);
                metrics::gauge!(m::TAILER_LAG).set(0.0);
            }
            Step::Skip => {}
        }
        Ok(())
    }

    /// Records the pending rows of one transaction with the checkpoint after it.
    async fn record(&mut self, cp: &Checkpoint) -> anyhow::Result<()> {
        let now = now_ms();
        if self.pending.is_empty() {
            if now.saturating_sub(self.last_checkpoint_write_ms) >= IDLE_CHECKPOINT_MS {
                self.state
                    .commit_transaction(&TxnChanges::default(), cp, now)?;
                self.last_checkpoint_write_ms = now;
                publish_checkpoint(cp);
            }
            return Ok(());
        }
        let commit_date = local_date(cp.timestamp);
        let rows = std::mem::take(&mut self.pending);
        let mut txn = TxnChanges::default();
        let mut counts: HashMap<(String, RowOp), u64> = HashMap::new();
        for change in rows {
            *counts.entry((change.table.clone(), change.op)).or_default() += 1;
            let Some(spec) = self.mapping.table(&change.table) else {
                continue;
            };
            let mut pk = Map::new();
            for c in &spec.pk {
                pk.insert(
                    c.clone(),
                    change.image.get(c).cloned().unwrap_or(Value::Null),
                );
            }
            let key = self
                .resolver
                .resolve(&change.table, &pk, &change.image, &commit_date)
                .await?;
            let closing = self.is_closing(&change);
            let data = match change.op {
                RowOp::Delete => Map::new(),
                RowOp::Upsert => change
                    .image
                    .into_iter()
                    .filter(|(c, _)| spec.ships_column(c) && !spec.pk.contains(c))
                    .collect(),
            };
            let lsn = change.position.lsn(cp.epoch);
            let clinical = spec.role == Role::Visit;
            let entry = txn
                .visits
                .entry(key.stream_key(self.site_id))
                .or_insert_with(|| VisitChanges {
                    key,
                    rows: Vec::new(),
                    closing: false,
                    clinical: false,
                });
            entry.rows.push(WireRow {
                table: change.table,
                op: change.op,
                lsn,
                pk,
                data,
            });
            entry.closing |= closing;
            entry.clinical |= clinical;
        }
        txn.lookups = self.resolver.take_pending();
        self.state.commit_transaction(&txn, cp, now)?;
        self.last_checkpoint_write_ms = now;
        self.status.transactions.fetch_add(1, Relaxed);
        metrics::counter!(m::TAILER_TRANSACTIONS).increment(1);
        for ((table, op), n) in counts {
            let op = if op == RowOp::Upsert {
                "upsert"
            } else {
                "delete"
            };
            metrics::counter!(m::TAILER_ROWS, "table" => table, "op" => op).increment(n);
        }
        publish_checkpoint(cp);
        Ok(())
    }

    fn is_closing(&self, change: &RowChange) -> bool {
        let mapping = &self.mapping;
        change.op == RowOp::Upsert
            && change.table == mapping.encounter_table
            && change
                .image
                .get("voided")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0
            && change
                .image
                .get(&mapping.encounter_type_column)
                .and_then(Value::as_i64)
                .is_some_and(|t| mapping.closing_encounter_types.contains(&t))
    }

    /// Moves every ready visit to the outbox.
    fn move_ready_visits(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        let today = chrono::Local::now().format("%Y-%m-%d").to_string();
        let mut moved = 0;
        let open = self.state.open_visits()?;
        for (stream_key, meta) in &open {
            let Some(complete) = is_ready(meta, now, &today, self.rules) else {
                continue;
            };
            let version = self.state.move_to_outbox(
                stream_key,
                |version, rows| envelope(stream_key, &meta.key, version, complete, rows),
                now,
            )?;
            if version.is_some() {
                moved += 1;
                metrics::counter!(m::TAILER_VISITS_READY, "complete" => if complete { "true" } else { "false" }).increment(1);
            }
        }
        metrics::gauge!(m::TAILER_OPEN_VISITS).set((open.len() - moved) as f64);
        if moved > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}

fn publish_checkpoint(cp: &Checkpoint) {
    metrics::gauge!(m::TAILER_CHECKPOINT_FILE).set(cp.position.sequence() as f64);
    metrics::gauge!(m::TAILER_CHECKPOINT_POS).set(cp.position.pos as f64);
}

/// The facility's local date of a unix timestamp (the commit day of demographics changes).
fn local_date(timestamp: u32) -> String {
    let t = chrono::Local
        .timestamp_opt(timestamp as i64, 0)
        .single()
        .unwrap_or_else(chrono::Local::now);
    t.format("%Y-%m-%d").to_string()
}
