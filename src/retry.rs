//! The one retry helper: exponential backoff with full jitter and a cap, and a sleep that
//! wakes on shutdown.

use std::time::Duration;

use crate::shutdown::Shutdown;

/// Backoff state: the n-th failure waits a uniform random time in `[0, min(cap, base·2^n)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    seed: u64,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Self {
            base,
            cap,
            failures: 0,
            seed,
        }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt; counts a failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(20));
        let ceiling = exp.min(self.cap);
        self.failures = self.failures.saturating_add(1);
        // xorshift64*: enough randomness for jitter, no dependency.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let r = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { r % (nanos + 1) })
    }

    /// Sleeps the next delay; returns false when shutdown came first.
    pub async fn wait(&mut self, shutdown: &mut Shutdown) -> bool {
        let delay = self.next_delay();
        shutdown.sleep(delay).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_exponential_ceiling_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for n in 0..30u32 {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(100)
                .saturating_mul(1 << n.min(20))
                .min(Duration::from_secs(2));
            assert!(d <= ceiling, "attempt {n}: {d:?} > {ceiling:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_wakes_on_shutdown() {
        let (trigger, mut shutdown) = crate::shutdown::channel();
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        b.next_delay();
        b.next_delay();
        let task = tokio::spawn(async move { b.wait(&mut shutdown).await });
        trigger.fire();
        assert!(!task.await.unwrap());
    }
}
