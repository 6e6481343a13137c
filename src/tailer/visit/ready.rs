//! When an open visit is ready to ship (DESIGN.md, "The visit"):
//! - a closing encounter type committed and the settle delay passed with no change; or
//! - no change for the idle timeout; or
//! - its day is over and the settle delay passed with no change; or
//! - it holds no clinical row (demographics, program or reference changes only: there is no
//!   closing encounter to wait for) and the settle delay passed with no change.
//!
//! Pure: the caller passes the clock, so tests need no sleeping.

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
pub fn is_ready(meta: &VisitMeta, now_ms: u64, today: &str, rules: Readiness) -> Option<bool> {
    let quiet = now_ms.saturating_sub(meta.last_change_ms);
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
        }
    }

    #[test]
    fn closing_encounter_waits_for_settle() {
        let m = meta("2026-11-26", 10_000, Some(10_000));
        assert_eq!(is_ready(&m, 14_999, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 15_000, "2026-11-26", RULES), Some(true));
    }

    #[test]
    fn open_visit_of_today_waits_for_idle_timeout() {
        let m = meta("2026-11-26", 0, None);
        assert_eq!(is_ready(&m, 60_000, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 1_800_000, "2026-11-26", RULES), Some(false));
    }

    #[test]
    fn demographics_only_visit_is_ready_after_settle() {
        let mut m = meta("2026-11-26", 0, None);
        m.clinical = false;
        assert_eq!(is_ready(&m, 4_999, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&m, 5_000, "2026-11-26", RULES), Some(true));
    }

    #[test]
    fn past_day_is_ready_after_settle_complete_only_if_closed() {
        let open = meta("2026-10-01", 0, None);
        assert_eq!(is_ready(&open, 4_000, "2026-11-26", RULES), None);
        assert_eq!(is_ready(&open, 5_000, "2026-11-26", RULES), Some(false));
        let closed = meta("2026-10-01", 0, Some(0));
        assert_eq!(is_ready(&closed, 5_000, "2026-11-26", RULES), Some(true));
    }
}
