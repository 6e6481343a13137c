//! The SQL of each report over the IDS views.

use super::ReportName;

/// A report's SQL: `patients` yields one row per counted patient (or patient-day) with
/// `gender` and `age_group`; `detail` (when not the same) yields the detail list.
pub(super) struct Query {
    pub(super) patients: &'static str,
    pub(super) detail: Option<&'static str>,
    pub(super) detail_columns: &'static [&'static str],
}

pub(super) fn query_for(name: ReportName) -> Query {
    match name {
        ReportName::TxCurr => Query {
            patients: "SELECT site_id, patient_id, gender, age_group,
                        last_dispensation_date::text AS last_dispensation_date,
                        expiry_date::text AS expiry_date
                       FROM ids.outcomes($3::text::date, $4, $1)
                       WHERE outcome = 'On antiretrovirals'",
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "last_dispensation_date",
                "expiry_date",
            ],
        },
        ReportName::TxNew => Query {
            patients: "SELECT site_id, patient_id, gender,
                        ids.age_group(birthdate, $3::text::date) AS age_group,
                        date_enrolled::text AS date_enrolled,
                        earliest_start_date::text AS earliest_start_date
                       FROM ids.art_status
                       WHERE ($1::int IS NULL OR site_id = $1)
                         AND date_enrolled BETWEEN $2::text::date AND $3::text::date
                         AND NOT transfer_in AND earliest_start_date >= $2::text::date",
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "date_enrolled",
                "earliest_start_date",
            ],
        },
        ReportName::Visits => Query {
            patients: "SELECT p.gender, ids.age_group(p.birthdate, $3::text::date) AS age_group
                       FROM ids.patient_visits v
                       JOIN ids.art_status p ON p.site_id = v.site_id AND p.patient_id = v.patient_id
                       WHERE ($1::int IS NULL OR v.site_id = $1)
                         AND v.visit_date BETWEEN $2::text::date AND $3::text::date",
            detail: Some(
                "SELECT site_id, visit_date::text AS visit_date, visits FROM ids.visits_daily
                 WHERE ($1::int IS NULL OR site_id = $1)
                   AND visit_date BETWEEN $2::text::date AND $3::text::date",
            ),
            detail_columns: &["site_id", "visit_date", "visits"],
        },
        ReportName::MissedAppointments => Query {
            patients: MISSED,
            detail: None,
            detail_columns: &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "outcome",
                "appointment_date",
                "missed_appointment",
                "defaulted",
                "defaulted_on",
            ],
        },
    }
}

/// Patients whose latest appointment (recorded by the end date) fell in [start, end) with no
/// visit from that day to the end date, and patients who defaulted in [start, end].
const MISSED: &str = "
    WITH o AS (SELECT * FROM ids.outcomes($3::text::date, $4, $1)),
    latest AS (
      SELECT a.site_id, a.patient_id, max(a.appointment_date) AS appointment_date
      FROM ids.appointments a
      WHERE a.recorded_at < $3::text::date + 1 AND ($1::int IS NULL OR a.site_id = $1)
      GROUP BY 1, 2
    ), missed AS (
      SELECT l.* FROM latest l
      WHERE l.appointment_date >= $2::text::date AND l.appointment_date < $3::text::date
        AND NOT EXISTS (
          SELECT 1 FROM ids.patient_visits v
          WHERE v.site_id = l.site_id AND v.patient_id = l.patient_id
            AND v.visit_date BETWEEN l.appointment_date AND $3::text::date)
    )
    SELECT o.site_id, o.patient_id, o.gender, o.age_group, o.outcome,
           m.appointment_date::text AS appointment_date,
           (m.patient_id IS NOT NULL) AS missed_appointment,
           (o.outcome = 'Defaulted' AND o.defaulted_on >= $2::text::date) AS defaulted,
           CASE WHEN o.outcome = 'Defaulted' THEN o.defaulted_on::text END AS defaulted_on
    FROM o LEFT JOIN missed m ON m.site_id = o.site_id AND m.patient_id = o.patient_id
    WHERE m.patient_id IS NOT NULL OR (o.outcome = 'Defaulted' AND o.defaulted_on >= $2::text::date)";
