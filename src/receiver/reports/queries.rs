//! The SQL of each report over the IDS tables (`ids-reports.sql`: `ids.cohort` applies the
//! cohort gates and outcome rules of art-rules.md on an end date).
//!
//! Every report's SQL yields one row per counted patient (or patient-day, for visits) with
//! the row dimensions (`gender`, `age_group`, and `regimen` or `weight_band` where the report
//! has them), `fields` (the columns of the answer the patient counts in) and the detail
//! columns. Parameters: $1 site (NULL: all), $2 start, $3 end (dates), $4 days past the
//! expiry of the definition (60 MOH, 30 PEPFAR).

use super::cohort::{COHORT, COHORT_COUNTED, FIELDS as COHORT_FIELDS};
use super::vl::{TX_PVLS, TX_PVLS_COUNTED};
use super::{By, ReportName};

/// How the rows of an answer are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rows {
    /// PEPFAR age group × gender, every M/F group present (zeros included).
    Age,
    /// Age group × gender × regimen (the groups present).
    AgeRegimen,
    /// Weight band × gender × regimen (the bands present).
    WeightRegimen,
    /// One row for the whole cohort (`cohort` = all), zeros included.
    Total,
}

impl Rows {
    /// The dimension columns, in the order the rows are keyed.
    pub(super) fn dims(self) -> &'static [&'static str] {
        match self {
            Self::Age => &["gender", "age_group"],
            Self::AgeRegimen => &["gender", "age_group", "regimen"],
            Self::WeightRegimen => &["gender", "weight_band", "regimen"],
            Self::Total => &["cohort"],
        }
    }
}

/// A report's SQL and the shape of its answer.
pub(super) struct Query {
    pub(super) sql: &'static str,
    pub(super) rows: Rows,
    pub(super) fields: &'static [&'static str],
    pub(super) detail_columns: &'static [&'static str],
    /// The visits report's `detail=days`: visits per site and day.
    pub(super) days: Option<&'static str>,
    /// Women are also counted by maternal status (the `maternal` column: FP, FBf, FNP), in
    /// rows of their own (gender FP, FBf or FNP, age group All).
    pub(super) maternal: bool,
    /// The answer counted by SQL of its own, whose rows (dimensions, `fields`, `n`) count `n`
    /// times each: patients grouped before their fields are built (the cohort), or a
    /// patient's visit days (visits). Without it, each row of `sql` counts once.
    pub(super) counted: Option<&'static str>,
    /// Planner settings of this report's transaction beside the common ones (`SET LOCAL`
    /// statements; empty: none).
    pub(super) planner: &'static str,
}

/// The columns (fields) of a report's answer.
pub(super) fn fields(name: ReportName, by: By) -> &'static [&'static str] {
    query_for(name, by).fields
}

const COUNT: &[&str] = &["count"];

pub(super) fn query_for(name: ReportName, by: By) -> Query {
    let simple = |sql, detail_columns| Query {
        sql,
        rows: Rows::Age,
        fields: COUNT,
        detail_columns,
        days: None,
        maternal: false,
        counted: None,
        planner: "",
    };
    match name {
        ReportName::TxCurr => simple(
            "SELECT site_id, patient_id, gender, age_group, ARRAY['count'] AS fields,
                    last_dispensation_date::text AS last_dispensation_date,
                    expiry_date::text AS expiry_date, outcome_date::text AS outcome_date
             FROM ids.cohort($3, $4, $1)
             WHERE outcome = 'On antiretrovirals'",
            &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "last_dispensation_date",
                "expiry_date",
                "outcome_date",
            ],
        ),
        // New: enrolled in the period, not a transfer-in, no ART start before the period.
        ReportName::TxNew => simple(
            "SELECT site_id, patient_id, gender, age_group, ARRAY['count'] AS fields,
                    date_enrolled::text AS date_enrolled,
                    earliest_start_date::text AS earliest_start_date
             FROM ids.cohort($3, $4, $1)
             WHERE date_enrolled BETWEEN $2 AND $3
               AND NOT transfer_in AND earliest_start_date >= $2",
            &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "date_enrolled",
                "earliest_start_date",
            ],
        ),
        ReportName::Visits => Query {
            days: Some(
                "SELECT site_id, visit_date::text AS visit_date, visits FROM ids.visits_daily
                 WHERE ($1::int IS NULL OR site_id = $1)
                   AND visit_date BETWEEN $2 AND $3",
            ),
            // a counted patient's visit days in [start, end], from their timeline: one scan
            // of the status rows (the days between two binary searches)
            counted: Some(
                "SELECT p.gender, ids.age_group(p.birthdate, $3) AS age_group,
                        ARRAY['count'] AS fields, p.n
                 FROM (SELECT p.gender, p.birthdate,
                              width_bucket($3, p.visit_days) - width_bucket($2 - 1, p.visit_days)
                                AS n
                       FROM ids.art_status p WHERE $1::int IS NULL OR p.site_id = $1) p
                 WHERE p.n > 0",
            ),
            // The planner takes the status rows with visits in the period for a third of
            // them (most have some) and scans them alone, where sending them up from two
            // workers is cheaper: at 100k patients, same database, alternating, 138-190 ms
            // serial, 123-129 ms with parallel_tuple_cost 0.01 (which changed no other
            // report's time: only this one).
            planner: "SET LOCAL parallel_tuple_cost = 0.01",
            // (the detail list is `days`)
            ..simple("", &["site_id", "visit_date", "visits"])
        },
        ReportName::MissedAppointments => simple(
            MISSED,
            &[
                "site_id",
                "patient_id",
                "gender",
                "age_group",
                "appointment_date",
                "set_on",
            ],
        ),
        ReportName::TxMl => Query {
            fields: &[
                "died",
                "iit_lt_3_months",
                "iit_3_5_months",
                "iit_6_plus_months",
                "transferred_out",
                "refused_stopped",
            ],
            ..simple(
                TX_ML,
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "fields",
                    "outcome",
                    "outcome_date",
                    "earliest_start_date",
                ],
            )
        },
        ReportName::TxRtt => Query {
            fields: &[
                "returned_lt_3_months",
                "returned_3_5_months",
                "returned_6_plus_months",
                "cd4_lt_200",
                "cd4_gte_200",
                "cd4_unknown",
                "not_eligible_for_cd4",
            ],
            ..simple(
                TX_RTT,
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "fields",
                    "outcome_at_start",
                    "outcome_date_at_start",
                    "returned_on",
                    "months",
                    "cd4",
                ],
            )
        },
        ReportName::TxPvls => Query {
            fields: &[
                "tx_curr",
                "due_for_vl",
                "drawn_routine",
                "drawn_targeted",
                "high_vl_routine",
                "high_vl_targeted",
                "low_vl_routine",
                "low_vl_targeted",
            ],
            maternal: true,
            counted: Some(TX_PVLS_COUNTED),
            ..simple(
                TX_PVLS,
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "fields",
                    "maternal",
                    "outcome",
                    "outcome_date",
                    "earliest_start_date",
                    "vl_ordered_on",
                    "vl_reason",
                    "vl_result",
                ],
            )
        },
        ReportName::Cohort => Query {
            rows: Rows::Total,
            fields: COHORT_FIELDS,
            counted: Some(COHORT_COUNTED),
            ..simple(
                COHORT,
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "fields",
                    "date_enrolled",
                    "earliest_start_date",
                    "outcome",
                    "outcome_date",
                    "regimen",
                ],
            )
        },
        ReportName::TxCurrMmd => Query {
            fields: &["lt_3_months", "3_5_months", "6_plus_months"],
            ..simple(
                "SELECT site_id, patient_id, gender, age_group,
                        ARRAY[CASE WHEN d < 90 THEN 'lt_3_months' WHEN d <= 150 THEN '3_5_months'
                                   ELSE '6_plus_months' END] AS fields,
                        last_dispensation_date::text AS last_dispensation_date,
                        expiry_date::text AS expiry_date, d AS prescribed_days
                 FROM (SELECT c.*, c.expiry_date - c.last_dispensation_date AS d
                       FROM ids.cohort($3, $4, $1) c
                       WHERE c.outcome = 'On antiretrovirals') c",
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "fields",
                    "last_dispensation_date",
                    "expiry_date",
                    "prescribed_days",
                ],
            )
        },
        ReportName::RegimenDistribution if by == By::Weight => Query {
            rows: Rows::WeightRegimen,
            counted: Some(WEIGHT_COUNTED),
            ..simple(
                BY_WEIGHT,
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "weight_band",
                    "regimen",
                    "weight",
                ],
            )
        },
        ReportName::RegimenDistribution => Query {
            rows: Rows::AgeRegimen,
            ..simple(
                "SELECT c.site_id, c.patient_id, c.gender, c.age_group,
                        coalesce(c.regimen, 'unknown') AS regimen, ARRAY['count'] AS fields,
                        c.regimen_drugs::text AS drugs
                 FROM ids.cohort($3, $4, $1) c
                 WHERE c.outcome = 'On antiretrovirals'",
                &[
                    "site_id",
                    "patient_id",
                    "gender",
                    "age_group",
                    "regimen",
                    "drugs",
                ],
            )
        },
        ReportName::DefaulterList => simple(
            DEFAULTERS,
            &[
                "site_id",
                "patient_id",
                "arv_number",
                "given_name",
                "family_name",
                "gender",
                "age",
                "age_group",
                "phone",
                "landmark",
                "address",
                "defaulter_date",
                "appointment_date",
            ],
        ),
    }
}

/// Missed appointments as the engine lists them (moh-reports.md): each patient's latest
/// appointment date in [start, end] (of APPOINTMENT encounters of the HIV program), with no
/// ARV dispensation from the day after the visit that set it to the appointment + 14 days,
/// whose outcome at appointment + 14 is not died, transferred out or stopped; drug-refill and
/// external-consultation clients not registered by the end date are left out. "Latest" is the
/// latest appointment date (ties: the latest set). The engine asks for a TREATMENT encounter
/// with an ARV order; the dispensations are those orders (ids.arv_dispensations does not keep
/// the encounter type).
/// The rows of the regimen distribution by weight: every cohort row with its weight band and
/// regimen, and whether it counts (on ART).
macro_rules! weight_rows {
    () => {
        "SELECT c.site_id, c.patient_id, c.gender, c.age_group,
                ids.weight_band(w.value) AS weight_band,
                coalesce(c.regimen, 'unknown') AS regimen, w.value AS weight,
                c.outcome = 'On antiretrovirals' AS on_art
         FROM ids.cohort($3, $4, $1) c
         -- the latest weight by the end date
         CROSS JOIN LATERAL (
           SELECT c.weight_values[width_bucket($3, c.weight_days)] AS value) w"
    };
}

/// The regimen distribution by weight: the patients on ART.
const BY_WEIGHT: &str = concat!(
    "SELECT r.site_id, r.patient_id, r.gender, r.age_group, r.weight_band, r.regimen,
            ARRAY['count'] AS fields, r.weight
     FROM (",
    weight_rows!(),
    ") r WHERE r.on_art"
);

/// The regimen distribution by weight, counted: every cohort row grouped and the patients on
/// ART counted per group. Filtered first (as the detail list is), the planner took the outcome
/// filter for 0.5% of the rows (88k of 100k kept) and grouped them in the leader alone, as it
/// did TX_PVLS's (`vl.rs`); grouped on both workers: 100k patients, all sites, alternating in
/// psql, 117-190 -> 103-122 ms (the weight band of `ids-reports.sql` in both).
const WEIGHT_COUNTED: &str = concat!(
    "SELECT f.gender, f.weight_band, f.regimen, ARRAY['count'] AS fields, f.n
     FROM (SELECT r.gender, r.weight_band, r.regimen, count(*) FILTER (WHERE r.on_art) AS n
           FROM (",
    weight_rows!(),
    ") r GROUP BY 1, 2, 3) f
     WHERE f.n > 0"
);

const MISSED: &str = "
    SELECT p.site_id, p.patient_id, p.gender, ids.age_group(p.birthdate, $3) AS age_group,
           ARRAY['count'] AS fields, p.appointment_date::text AS appointment_date,
           p.set_on::text AS set_on
    -- (no OFFSET 0 fence to look the latest appointment up once per patient: it kept the
    -- scan out of parallel workers, and the repeated lookups cost less than a second core
    -- gives; at 100k patients, same database, alternating: 187-239 ms -> 127-136 ms)
    FROM (SELECT p.*, p.appt_dates[p.ai] AS appointment_date, p.appt_set[p.ai] AS set_on
          FROM (SELECT p.*, width_bucket($3, p.appt_dates) AS ai FROM ids.art_status p
                WHERE $1::int IS NULL OR p.site_id = $1) p) p
    WHERE p.appointment_date >= $2
      AND NOT coalesce(ids.unregistered_refill(p.refill_on, p.new_patient_on, p.registered_at,
                                               $3), false)
      -- no dispensation day after the day it was set up to the appointment + 14: as many
      -- days on or before the one as on or before the other
      AND width_bucket(p.appointment_date + 14, p.disp_days) <= width_bucket(p.set_on, p.disp_days)
      AND ids.outcome_from(p.outcome_days, p.moh_outcomes, p.pepfar_outcomes,
                           p.appointment_date + 14, $4)
          NOT IN ('Patient died', 'Patient transferred out', 'Treatment stopped')";

/// TX_ML (moh-reports.md): on ART at the start (outcome as of start - 1 day, ART started
/// before the period) or started in the period; at the end died, defaulted (by months from
/// ART start to the defaulter date: < 3, 3..5, > 5), transferred out or stopped. PEPFAR's 30
/// days ($4 is always 30 here).
const TX_ML: &str = "
    SELECT e.site_id, e.patient_id, e.gender, e.age_group,
           ARRAY[CASE e.outcome
             WHEN 'Patient died' THEN 'died'
             WHEN 'Patient transferred out' THEN 'transferred_out'
             WHEN 'Treatment stopped' THEN 'refused_stopped'
             ELSE CASE WHEN x.months < 3 THEN 'iit_lt_3_months'
                       WHEN x.months <= 5 THEN 'iit_3_5_months'
                       ELSE 'iit_6_plus_months' END END] AS fields,
           e.outcome, e.outcome_date::text AS outcome_date,
           e.earliest_start_date::text AS earliest_start_date
    FROM ids.cohort($3, $4, $1, $2 - 1) e
    CROSS JOIN LATERAL (
      SELECT ids.months_between(e.earliest_start_date, e.defaulted_on) AS months) x
    WHERE e.outcome IN ('Defaulted', 'Patient died', 'Treatment stopped', 'Patient transferred out')
      AND ((e.outcome_before = 'On antiretrovirals' AND e.earliest_start_date < $2)
           OR e.earliest_start_date BETWEEN $2 AND $3)";

/// TX_RTT (moh-reports.md): defaulted or stopped at the start, On ART at the end, with an
/// ARV dispensation in [start, end] — start_date itself included (the engine skips a return
/// dated exactly start_date: a bug, art-rules.md section 6). Months from the outcome date at
/// the start to the first dispensation of the period. CD4: the latest 'CD4 count' on or before
/// the end date (the engine takes an arbitrary CD4 row: art-rules.md section 6).
const TX_RTT: &str = "
    SELECT e.site_id, e.patient_id, e.gender, e.age_group,
           ARRAY[CASE WHEN x.months IS NULL OR x.months < 3 THEN 'returned_lt_3_months'
                      WHEN x.months <= 5 THEN 'returned_3_5_months'
                      ELSE 'returned_6_plus_months' END,
                 CASE WHEN c.value IS NULL THEN
                        CASE WHEN x.months IS NULL OR x.months <= 2 THEN 'not_eligible_for_cd4'
                             ELSE 'cd4_unknown' END
                      WHEN c.value < 200 OR (c.value = 200 AND c.modifier = '<') THEN 'cd4_lt_200'
                      ELSE 'cd4_gte_200' END] AS fields,
           e.outcome_before AS outcome_at_start,
           e.outcome_date_before::text AS outcome_date_at_start,
           r.day::text AS returned_on, x.months, c.value AS cd4
    FROM ids.cohort($3, $4, $1, $2 - 1) e
    CROSS JOIN LATERAL (
      SELECT min(d.dispensation_date) AS day FROM ids.arv_dispensations d
      WHERE d.site_id = e.site_id AND d.patient_id = e.patient_id
        AND d.dispensation_date BETWEEN $2 AND $3) r
    CROSS JOIN LATERAL (SELECT ids.months_between(e.outcome_date_before, r.day) AS months) x
    LEFT JOIN LATERAL ids.latest_numeric(e.site_id, e.patient_id,
                                         ids.concepts_named(e.site_id, '{CD4 count}'),
                                         $3) c ON true
    WHERE e.outcome_before IN ('Defaulted', 'Treatment stopped')
      AND e.outcome = 'On antiretrovirals' AND r.day IS NOT NULL";

/// The defaulter list (moh-reports.md): Defaulted at the end date under the definition, the
/// defaulter date in [start, end], with an appointment; ARV number (identifier type 4), name,
/// phone (attribute 12), landmark (attribute 19), address, age, the latest appointment date.
/// Patient data: served to callers allowed patient lists only, never logged.
const DEFAULTERS: &str = "
    SELECT c.site_id, c.patient_id, c.gender, c.age_group, ARRAY['count'] AS fields,
           (SELECT i.identifier FROM cdr.patient_identifier i
             WHERE i.site_id = c.site_id AND i.patient_id = c.patient_id
               AND i.identifier_type = 4 AND i.voided = 0
             ORDER BY i.preferred DESC, i.patient_identifier_id DESC LIMIT 1) AS arv_number,
           n.given_name, n.family_name,
           (SELECT a.value FROM cdr.person_attribute a
             WHERE a.site_id = c.site_id AND a.person_id = c.patient_id
               AND a.person_attribute_type_id = 12 AND a.voided = 0
             ORDER BY a.person_attribute_id DESC LIMIT 1) AS phone,
           (SELECT a.value FROM cdr.person_attribute a
             WHERE a.site_id = c.site_id AND a.person_id = c.patient_id
               AND a.person_attribute_type_id = 19 AND a.voided = 0
             ORDER BY a.person_attribute_id DESC LIMIT 1) AS landmark,
           (SELECT nullif(concat_ws(', ', nullif(ad.address1, ''), nullif(ad.address2, ''),
                                    nullif(ad.city_village, ''), nullif(ad.state_province, '')), '')
              FROM cdr.person_address ad
             WHERE ad.site_id = c.site_id AND ad.person_id = c.patient_id AND ad.voided = 0
             ORDER BY ad.preferred DESC, ad.person_address_id DESC LIMIT 1) AS address,
           date_part('year', age($3, c.birthdate))::int AS age,
           c.defaulted_on::text AS defaulter_date, ap.appointment_date::text AS appointment_date
    FROM ids.cohort($3, $4, $1) c
    CROSS JOIN LATERAL (
      SELECT a.appointment_date FROM ids.appointments a
      WHERE a.site_id = c.site_id AND a.patient_id = c.patient_id
        AND a.recorded_at < $3 + 1
      ORDER BY a.recorded_at DESC, a.obs_id DESC LIMIT 1) ap
    LEFT JOIN LATERAL (
      SELECT n.given_name, n.family_name FROM cdr.person_name n
      WHERE n.site_id = c.site_id AND n.person_id = c.patient_id AND n.voided = 0
      ORDER BY n.preferred DESC, n.person_name_id DESC LIMIT 1) n ON true
    WHERE c.outcome = 'Defaulted'
      AND c.defaulted_on BETWEEN $2 AND $3";
