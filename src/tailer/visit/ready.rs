//! When an open visit is ready to ship (DESIGN.md, "The visit"):
//! - a closing encounter type committed and the settle delay passed with no change; or
//! - no change for the idle timeout; or
//! - its day is over and the settle delay passed with no change; or
//! - it holds no clinical row (demographics, program or reference changes only: there is no
//!   closing encounter to wait for) and the settle delay passed with no change.
//!
//! "No change" is measured on two clocks, and either will do: the tailer's (since capture
//! recorded the visit's last change) and the source's (the binlog time capture has committed
//! up to, since the visit's last change was made). Reading a backlog, the source's clock runs
//! ahead: a visit of last week followed by days of other transactions is as settled as it will
//! ever be, and moves at once instead of a settle delay after capture read it. Live, the two
//! agree. A change that comes after all (a long transaction's) makes the visit's next version,
//! as one after the settle delay always did.
//!
//! Pure: the caller passes the clocks, so tests need no sleeping.

use super::VisitMeta;

/// The readiness rule's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    /// Quiet time after a closing encounter or for a past day (ms).
    pub settle_ms: u64,
    /// Quiet time after which any visit is ready (ms).
    pub idle_ms: u64,
}

/// `Some(complete)` when the visit is ready: `complete` says the visit was closed (a closing
/// encounter seen; demographics-only changes have nothing to close). A visit whose day is over
/// without a closing encounter ships after the settle delay as `complete: false`, like one
/// shipped on the idle timeout: the central side sees that it never closed.
///
/// `now_ms` is the tailer's clock, `source_ms` the binlog time of the last transaction
/// capture committed (0: unknown).
pub fn is_ready(
    meta: &VisitMeta,
    now_ms: u64,
    source_ms: u64,
    today: &str,
    rules: Readiness,
) -> Option<bool> {
    // (binlog timestamps are whole seconds: one less, so that a truncated second never
    // counts as quiet time)
    let source_quiet = match meta.last_event_ms {
        0 => 0,
        last => source_ms.saturating_sub(last).saturating_sub(1000),
    };
    let quiet = now_ms.saturating_sub(meta.last_change_ms).max(source_quiet);
    let day_over = meta.key.visit_date.as_str() < today;
    let closed = meta.closing_at_ms.is_some();
    if quiet >= rules.settle_ms && (closed || !meta.clinical) {
        return Some(true);
    }
    if quiet >= rules.settle_ms && day_over {
        return Some(false);
    }
    if quiet >= rules.idle_ms {
        return Some(false);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tailer::visit::VisitKey;

    const RULES: Readiness = Readiness {
        settle_ms: 5_000,
        idle_ms: 1_800_000,
    };

    fn meta(date: &str, last: u64, closing: Option<u64>) -> VisitMeta {
        VisitMeta {
            key: VisitKey {
                patient_id: 1,
                program_id: 1,
                visit_date: date.into(),
            },
            first_change_ms: 0,
            last_change_ms: last,
            closing_at_ms: closing,
            changes: 1,
            clinical: true,
            last_event_ms: 0,
        }
    }

    #[test]
    fn closing_encounter_waits_for_settle() {
        let m = meta("2026-11-26", 10_000, Some(10_000));
        assert_eq!(is_ready(&m, 14_999, 0, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 15_000, 0, "2026-11-26", RULES), Some(true));
    }

    #[test]
    fn open_visit_of_today_waits_for_idle_timeout() {
        let m = meta("2026-11-26", 0, None);
        assert_eq!(is_ready(&m, 60_000, 0, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 1_800_000, 0, "2026-11-26", RULES), Some(false));
    }

    #[test]
    fn demographics_only_visit_is_ready_after_settle() {
        let mut m = meta("2026-11-26", 0, None);
        m.clinical = false;
        assert_eq!(is_ready(&m, 4_999, 0, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 5_000, 0, "2026-11-26", RULES), Some(true));
    }

    #[test]
    fn quiet_in_the_sources_time_will_do() {
        // captured just now (the tailer's clock), made at 10:00:07 (the source's)
        let mut m = meta("2026-10-01", 100_000, Some(100_000));
        m.last_event_ms = 36_007_000;
        // the binlog read up to 10:00:12: 5 s after it, but the second may have been cut
        assert_eq!(is_ready(&m, 100_001, 36_012_000, "2026-11-26", RULES), None);
        assert_eq!(
            is_ready(&m, 100_001, 36_013_000, "2026-11-26", RULES),
            Some(true)
        );
        // an open visit of today: the idle timeout in the source's time too
        let mut open = meta("2026-11-26", 100_000, None);
        open.last_event_ms = 36_007_000;
        let later = 36_007_000 + 1_000 + RULES.idle_ms;
        assert_eq!(
            is_ready(&open, 100_001, later - 1, "2026-11-26", RULES),
            None
        );
        assert_eq!(
            is_ready(&open, 100_001, later, "2026-11-26", RULES),
            Some(false)
        );
        // a buffer of an earlier version (no source time) waits on the tailer's clock
        m.last_event_ms = 0;
        assert_eq!(is_ready(&m, 100_001, 99_000_000, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 105_000, 0, "2026-11-26", RULES), Some(true));
    }

    #[test]
    fn past_day_is_ready_after_settle_complete_only_if_closed() {
        let open = meta("2026-10-01", 0, None);
        assert_eq!(is_ready(&open, 4_000, 0, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&open, 5_000, 0, "2026-11-26", RULES), Some(false));
        let closed = meta("2026-10-01", 0, Some(0));
        assert_eq!(is_ready(&closed, 5_000, 0, "2026-11-26", RULES), Some(true));
    }
}
