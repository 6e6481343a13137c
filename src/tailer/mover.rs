//! Moves ready visits from their buffers into the outbox, beside the capture loop: capture
//! records source transactions on its own thread while the mover, on the runtime's worker,
//! checks the open buffers every `visits.ready_check_ms` and moves the ready ones (DESIGN.md,
//! "The visit"). A buffer that capture changes between the mover's read and its transaction is
//! left for the next check (`State::move_many_to_outbox` moves only what it read). Moving
//! used to run inside the capture loop, where it took a fifth of the capture thread's time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::now_ms;
use crate::config::TailerConfig;
use crate::metrics as m;
use crate::shutdown::Shutdown;
use crate::tailer::state::State;
use crate::tailer::visit::{envelope, is_ready, Readiness, VisitKey};

/// Most row changes of ready visits moved to the outbox in one sled transaction (1000 against
/// 4000, with the moves still in the capture loop and a 100 ms purge delay: peak RSS
/// 108.2–108.7 against 113.8–114.6 MiB, the same CPU; `scripts/bench-e2e.sh`, two pairs).
const MOVE_ROWS: u64 = 1_000;

/// The mover's parts.
#[derive(Clone)]
pub struct Mover {
    state: State,
    rules: Readiness,
    every: Duration,
    /// Wakes the shipper when something moved.
    wake: Arc<Notify>,
}

impl Mover {
    /// Prepares the mover.
    pub fn new(config: &TailerConfig, state: State, wake: Arc<Notify>) -> Self {
        Self {
            state,
            rules: Readiness {
                settle_ms: config.visits.settle_ms,
                idle_ms: config.visits.idle_timeout_secs * 1000,
            },
            every: Duration::from_millis(config.visits.ready_check_ms),
            wake,
        }
    }

    /// Checks every `visits.ready_check_ms` until shutdown or an error of the state store.
    pub async fn run(self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.fired() => return Ok(()),
                _ = tick.tick() => self.move_ready()?,
            }
        }
    }

    /// Moves every ready visit to the outbox (big visits in several parts), several visits
    /// per sled transaction (`MOVE_ROWS` row changes at most).
    pub fn move_ready(&self) -> anyhow::Result<()> {
        let now = now_ms();
        let today = chrono::Local::now().format("%Y-%m-%d").to_string();
        // the source's clock: the binlog time of the last transaction capture committed
        let source_ms = self
            .state
            .checkpoint()?
            .map_or(0, |cp| u64::from(cp.timestamp) * 1000);
        let open = self.state.open_visits()?;
        let mut still_open = open.len();
        let mut moved = 0;
        // Ready visits: (stream key, visit key, complete), in groups of about MOVE_ROWS rows.
        let mut groups: Vec<Vec<(&str, &VisitKey, bool)>> = vec![Vec::new()];
        let mut group_rows = 0;
        for (stream_key, meta) in &open {
            let Some(complete) = is_ready(meta, now, source_ms, &today, self.rules) else {
                continue;
            };
            if group_rows > 0 && group_rows + meta.changes > MOVE_ROWS {
                groups.push(Vec::new());
                group_rows = 0;
            }
            group_rows += meta.changes;
            if let Some(group) = groups.last_mut() {
                group.push((stream_key, &meta.key, complete));
            }
        }
        for mut group in groups {
            // A buffer bigger than a part moves again, part by part, until it is empty.
            while !group.is_empty() {
                let keys: Vec<&str> = group.iter().map(|(k, _, _)| *k).collect();
                let envelope_of = |i: usize, version, rows: &[&[u8]], last| {
                    let (stream_key, key, complete) = group[i];
                    envelope(stream_key, key, version, complete && last, rows)
                };
                let parts = self.state.move_many_to_outbox(&keys, envelope_of, now)?;
                let mut again = Vec::new();
                for (visit, part) in group.iter().zip(parts) {
                    let Some(part) = part else { continue };
                    moved += 1;
                    let label = if visit.2 && part.last {
                        "true"
                    } else {
                        "false"
                    };
                    metrics::counter!(m::TAILER_VISITS_READY, "complete" => label).increment(1);
                    if part.last {
                        still_open -= 1;
                    } else {
                        again.push(*visit);
                    }
                }
                group = again;
            }
        }
        metrics::gauge!(m::TAILER_OPEN_VISITS).set(still_open as f64);
        if moved > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }
}
