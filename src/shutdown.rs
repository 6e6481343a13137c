//! Graceful shutdown: one trigger, many listeners; every long loop selects on it first.

use std::time::Duration;

use tokio::sync::watch;

/// Fires shutdown.
#[derive(Clone)]
pub struct Trigger(watch::Sender<bool>);

/// Listens for shutdown.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every listener to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Whether shutdown has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown fires.
    pub async fn fired(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                // trigger dropped: treat as shutdown
                return;
            }
        }
    }

    /// Sleeps `d`; false when shutdown came first.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.fired() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// Fires `trigger` on SIGINT or SIGTERM.
pub fn on_signals(trigger: Trigger) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        trigger.fire();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        trigger.fire();
    });
}
