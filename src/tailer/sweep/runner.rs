//! Sweeps inside a running tailer: one at a time, the nightly one and those asked for on
//! `POST /sweep`.

use super::{last_days, Summary, SweepError, Sweeper, Window};
use crate::tailer::state::State;

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
