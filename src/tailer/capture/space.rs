//! The state disk's free-space floor: capture pauses below `state.min_free_mib` and resumes
//! by itself when the space is back (the binlog waits on the source meanwhile).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Capture;
use crate::metrics as m;
use crate::shutdown::Shutdown;

impl Capture {
    /// Whether the state disk has at least `state.min_free_mib` free (an unreadable size
    /// counts as enough: the check must not stop capture on its own).
    pub(super) fn has_space(&self) -> bool {
        match fs2::available_space(&self.state_dir) {
            Ok(free) => {
                self.status.free_bytes.store(free, Relaxed);
                metrics::gauge!(m::TAILER_STATE_FREE).set(free as f64);
                free >= self.min_free
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the state disk's free space");
                true
            }
        }
    }

    /// Waits until the state disk has its free-space floor again (at once when it has it);
    /// false on shutdown. Capture is paused meanwhile: the binlog stays on the source, and the
    /// outbox keeps shipping.
    pub(super) async fn wait_for_space(&mut self, shutdown: &mut Shutdown) -> bool {
        if self.has_space() {
            return true;
        }
        let free_mib = self.status.free_bytes.load(Relaxed) >> 20;
        tracing::error!(
            free_mib,
            min_free_mib = self.min_free >> 20,
            dir = %self.state_dir.display(),
            "the state disk is almost full: capture paused (the binlog waits on the source; \
             nothing is lost) until it has state.min_free_mib free again"
        );
        self.status.paused.store(1, Relaxed);
        metrics::gauge!(m::TAILER_CAPTURE_PAUSED).set(1.0);
        let resumed = loop {
            tokio::select! {
                _ = shutdown.fired() => break false,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            if self.has_space() {
                break true;
            }
        };
        self.status.paused.store(0, Relaxed);
        metrics::gauge!(m::TAILER_CAPTURE_PAUSED).set(0.0);
        if resumed {
            tracing::info!(
                free_mib = self.status.free_bytes.load(Relaxed) >> 20,
                "the state disk has space again: capture resumes from the checkpoint"
            );
        }
        resumed
    }
}
