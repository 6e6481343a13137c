//! The MOH quarterly cohort's SQL (moh-reports.md), beside the other reports' (`queries`):
//! registration in the quarter and cumulatively (`cum_`), outcomes on the end date (MOH, 60
//! days), and among those alive and on ART their regimens, TB status, adherence and
//! pregnancy at the last visit; one row, every field drilling down to its patients
//! (`detail=patients&field=NAME`). Answers are found by name, as the engine does.

/// How many registration fields lead [`FIELDS`]; each is counted in the quarter and (with
/// `cum_`, the same number of fields after them) from the first enrolment to the end date.
#[cfg(test)]
const REGISTRATION: usize = 24;

/// Every field of the answer, in its order.
pub(super) const FIELDS: &[&str] = &[
    "total_registered",
    "initiated_on_art_first_time",
    "re_initiated_on_art",
    "transfer_in",
    "all_males",
    "pregnant_females_all_ages",
    "non_pregnant_females",
    "unknown_gender",
    "children_below_24_months",
    "children_24_months_14_years",
    "adults",
    "unknown_age",
    "presumed_severe_hiv_disease_in_infants",
    "confirmed_hiv_infection_in_infants_pcr",
    "asymptomatic",
    "who_stage_three",
    "who_stage_four",
    "pregnant_women",
    "breastfeeding_mothers",
    "unknown_other_reason_outside_guidelines",
    "current_episode_of_tb",
    "tb_within_the_last_two_years",
    "no_tb",
    "kaposis_sarcoma",
    "cum_total_registered",
    "cum_initiated_on_art_first_time",
    "cum_re_initiated_on_art",
    "cum_transfer_in",
    "cum_all_males",
    "cum_pregnant_females_all_ages",
    "cum_non_pregnant_females",
    "cum_unknown_gender",
    "cum_children_below_24_months",
    "cum_children_24_months_14_years",
    "cum_adults",
    "cum_unknown_age",
    "cum_presumed_severe_hiv_disease_in_infants",
    "cum_confirmed_hiv_infection_in_infants_pcr",
    "cum_asymptomatic",
    "cum_who_stage_three",
    "cum_who_stage_four",
    "cum_pregnant_women",
    "cum_breastfeeding_mothers",
    "cum_unknown_other_reason_outside_guidelines",
    "cum_current_episode_of_tb",
    "cum_tb_within_the_last_two_years",
    "cum_no_tb",
    "cum_kaposis_sarcoma",
    "total_alive_and_on_art",
    "died_total",
    "died_within_month_1",
    "died_within_month_2",
    "died_within_month_3",
    "died_after_month_3",
    "defaulted",
    "stopped_art",
    "transferred_out",
    "unknown_outcome",
    "0A",
    "0P",
    "2A",
    "2P",
    "4A",
    "4PA",
    "4PP",
    "5A",
    "6A",
    "7A",
    "8A",
    "9A",
    "9PA",
    "9PP",
    "10A",
    "11A",
    "11PA",
    "11PP",
    "12A",
    "12PA",
    "12PP",
    "13A",
    "14A",
    "14PA",
    "14PP",
    "15A",
    "15PA",
    "15PP",
    "16A",
    "16P",
    "17A",
    "17PA",
    "17PP",
    "unknown_regimen",
    "tb_suspected",
    "tb_not_suspected",
    "tb_confirmed_on_treatment",
    "tb_confirmed_not_on_treatment",
    "unknown_tb_status",
    "adherent_95_105",
    "not_adherent",
    "unknown_adherence",
    "total_pregnant_women",
    "total_breastfeeding_women",
];

// Each enrolled patient's facts, one scalar column per group of fields (NULL: none of them):
// what `fields_of!` turns into the fields. Counting groups the patients by these columns
// first (a national cohort's million patients fall into a few hundred groups), so that the
// fields are built once per group, not once per patient.
macro_rules! facts {
    () => {
        "SELECT c.site_id, c.patient_id, c.gender, c.age_group, c.date_enrolled,
                c.earliest_start_date, c.outcome, c.outcome_date,
                coalesce(c.regimen, 'unknown') AS regimen,
                c.date_enrolled BETWEEN $2 AND $3 AS in_quarter,
                CASE WHEN c.date_enrolled = c.earliest_start_date
                     THEN 'initiated_on_art_first_time' END AS initiated,
                CASE WHEN a.reinitiated THEN 're_initiated_on_art' END AS reinitiated,
                CASE WHEN c.date_enrolled <> c.earliest_start_date AND NOT a.reinitiated
                          AND c.registered_at < $3 + 1 THEN 'transfer_in' END AS transfer_in,
                CASE WHEN c.gender = 'M' THEN 'all_males'
                     WHEN c.gender = 'F' AND (ri.pregnant_asked OR ri.reason = 'pregnant_women')
                     THEN 'pregnant_females_all_ages'
                     WHEN c.gender = 'F' THEN 'non_pregnant_females'
                     ELSE 'unknown_gender' END AS sex,
                CASE WHEN c.months_old IS NULL THEN 'unknown_age'
                     WHEN c.months_old < 24 THEN 'children_below_24_months'
                     WHEN c.months_old / 12 <= 14 THEN 'children_24_months_14_years'
                     ELSE 'adults' END AS age,
                ri.reason,
                c.tb_at_start, c.ks,
                CASE c.outcome
                  WHEN 'On antiretrovirals' THEN 'total_alive_and_on_art'
                  WHEN 'Patient died' THEN 'died_total'
                  WHEN 'Defaulted' THEN 'defaulted'
                  WHEN 'Treatment stopped' THEN 'stopped_art'
                  WHEN 'Patient transferred out' THEN 'transferred_out'
                  ELSE 'unknown_outcome' END AS outcome_field,
                CASE WHEN c.outcome <> 'Patient died' THEN NULL
                     WHEN c.outcome_date - c.earliest_start_date <= 30 THEN 'died_within_month_1'
                     WHEN c.outcome_date - c.earliest_start_date <= 60 THEN 'died_within_month_2'
                     WHEN c.outcome_date - c.earliest_start_date <= 91 THEN 'died_within_month_3'
                     ELSE 'died_after_month_3' END AS died_when,
                CASE WHEN c.outcome = 'On antiretrovirals'
                     THEN coalesce(c.regimen, 'unknown_regimen') END AS on_regimen,
                CASE WHEN c.outcome = 'On antiretrovirals'
                     THEN coalesce(c.tb_fields[width_bucket($3, c.tb_days)], 'unknown_tb_status')
                     END AS tb_status,
                CASE WHEN c.outcome = 'On antiretrovirals'
                     THEN coalesce(c.adh_class[width_bucket($3, c.adh_days)], 'unknown_adherence')
                     END AS adherence,
                CASE WHEN c.outcome <> 'On antiretrovirals' OR c.gender <> 'F' THEN NULL
                     WHEN c.preg_days[ri.preg_last] = c.last_dispensation_date
                          AND c.preg_yes[ri.preg_last] THEN 'total_pregnant_women'
                     WHEN c.bf_days[ri.bf_last] = c.last_dispensation_date
                          AND c.bf_yes[ri.bf_last] THEN 'total_breastfeeding_women' END AS women
         -- (ids.apart(), volatile, keeps this level apart: each patient's outcome and the
         -- other columns the facts refer to several times are computed once, not once per
         -- reference; at 100k patients 510 ms -> 320 ms. A set-returning generate_series(1, 1)
         -- did the same at the cost of a function call context per row: at 1M patients, all
         -- sites, 1.95-2.35 s, with ids.apart() 1.57-1.70 s. The other reports filter on the
         -- outcome and read fewer columns: there the fence costs more than it saves.)
         FROM (SELECT c.site_id, c.patient_id, c.gender, c.age_group,
                      c.date_enrolled, c.earliest_start_date, c.outcome, c.outcome_date,
                      c.regimen, c.registered_at, c.last_dispensation_date, c.reinit_asked,
                      c.reason_field, c.tb_at_start, c.ks, c.preg_days, c.preg_yes,
                      c.bf_days, c.bf_yes, c.tb_days, c.tb_fields, c.adh_days, c.adh_class,
                      c.months_old, ids.apart() AS once
               FROM ids.cohort($3, $4, $1) c) c
         CROSS JOIN LATERAL (
           SELECT coalesce(c.reason_field, 'unknown_other_reason_outside_guidelines') AS reason,
                  -- (a pregnancy answered Yes from the day of enrolment: a Yes from index
                  -- width_bucket(enrolment - 1) + 1 up to width_bucket(the window's end);
                  -- array_position finds a value's first index from a start without copying a
                  -- slice)
                  c.gender = 'F' AND coalesce(
                    array_position(c.preg_yes, true,
                                   width_bucket(c.date_enrolled - 1, c.preg_days) + 1)
                      <= width_bucket(least(c.date_enrolled + 30, $3), c.preg_days),
                    false) AS pregnant_asked,
                  width_bucket(c.last_dispensation_date, c.preg_days) AS preg_last,
                  width_bucket(c.last_dispensation_date, c.bf_days) AS bf_last) ri
         CROSS JOIN LATERAL (
           SELECT c.date_enrolled <> c.earliest_start_date AND coalesce(c.reinit_asked, false)
                    AS reinitiated) a"
    };
}

// The facts of a row `f` as one grouping key, and the key `f.k` back into the fact columns.
// (Grouped by fifteen columns, the planner expects about as many groups as patients and
// groups a nation's million rows in the leader alone; by one key it expects few and groups
// in every worker first.)
macro_rules! fact_key {
    () => {
        "ARRAY[f.in_quarter::text, f.initiated, f.reinitiated, f.transfer_in, f.sex, f.age,
               f.reason, f.tb_at_start, f.ks, f.outcome_field, f.died_when, f.on_regimen,
               f.tb_status, f.adherence, f.women]"
    };
}
macro_rules! fact_columns {
    () => {
        "f.k[1]::boolean AS in_quarter, f.k[2] AS initiated, f.k[3] AS reinitiated,
         f.k[4] AS transfer_in, f.k[5] AS sex, f.k[6] AS age, f.k[7] AS reason,
         f.k[8] AS tb_at_start, f.k[9] AS ks, f.k[10] AS outcome_field, f.k[11] AS died_when,
         f.k[12] AS on_regimen, f.k[13] AS tb_status, f.k[14] AS adherence, f.k[15] AS women"
    };
}

// The fields of a row of facts `f`: registration in the quarter (when enrolled in it) and
// cumulatively (`cum_`), then the outcomes.
macro_rules! fields_of {
    () => {
        "array_remove(
           CASE WHEN f.in_quarter THEN ARRAY['total_registered', f.initiated, f.reinitiated,
                  f.transfer_in, f.sex, f.age, f.reason, f.tb_at_start, f.ks]
                ELSE '{}'::text[] END
           || ARRAY['cum_total_registered', 'cum_' || f.initiated, 'cum_' || f.reinitiated,
                    'cum_' || f.transfer_in, 'cum_' || f.sex, 'cum_' || f.age, 'cum_' || f.reason,
                    'cum_' || f.tb_at_start, 'cum_' || f.ks]
           || ARRAY[f.outcome_field, f.died_when, f.on_regimen, f.tb_status, f.adherence,
                    f.women], NULL)"
    };
}

/// The cohort on the end date ($3, MOH: $4 is always 60), one row per enrolled patient with
/// the fields it counts in:
/// - registration (quarter: enrolled in [$2, $3]; `cum_`: every one, enrolled by $3):
///   - `initiated_on_art_first_time` when enrolled on the earliest start;
///     `re_initiated_on_art` when not, and the earliest obs 7937 'Ever registered at an ART
///     clinic' answered Yes (by name) sits in an HIV CLINIC REGISTRATION encounter holding
///     an obs 7751 'Date ART last taken' more than 14 days before it; `transfer_in` when not
///     enrolled on the earliest start, registered (a type-9 encounter by the end date) and
///     not re-initiated;
///   - gender, women split by pregnancy at registration: `pregnant_females_all_ages` when the
///     reason for starting is 'Patient pregnant' or 'Is patient pregnant?' is answered Yes
///     from the enrolment day to 30 days after it (and by the end date);
///   - age at initiation (at the earliest start: under 24 months, to 14 years, over 14,
///     unknown without a birthdate);
///   - the reason for starting: the answer of the patient's earliest obs 7563 by the end date;
///   - TB at initiation from the 'Who stages criteria present' obs dated by the enrolment day:
///     a current episode (pulmonary or extrapulmonary) over one within two years over none;
///     `kaposis_sarcoma` beside it;
/// - outcomes on the end date: alive and on ART, died (and by days from the earliest start
///   to the death: 30, 60, 91, more; no date counts as after month 3), defaulted, stopped,
///   transferred out, unknown (no dispensation by then, or Pre-ART);
/// - among the alive and on ART:
///   - the regimen (`unknown_regimen` when the last day's drugs name none);
///   - TB status: the answer of the latest obs 7459 by the end date (none, or another answer:
///     `unknown_tb_status`);
///   - adherence on the last day with an obs 6987 'Drug order adherence' tied to an ARV order
///     (by the end date): `adherent_95_105` when every number of that day is from 95 to 105,
///     `not_adherent` when one is not, `unknown_adherence` without a number;
///   - women: `total_pregnant_women` when the latest 'Is patient pregnant?' answer on the
///     day of the last dispensation is Yes, else `total_breastfeeding_women` when the latest
///     'Breast feeding?' answer of that day is.
///
/// One row per enrolled patient with its fields (the detail list).
pub(super) const COHORT: &str = concat!(
    "SELECT f.site_id, f.patient_id, f.gender, f.age_group, 'all' AS cohort, ",
    fields_of!(),
    " AS fields, f.date_enrolled::text AS date_enrolled,
      f.earliest_start_date::text AS earliest_start_date, f.outcome,
      f.outcome_date::text AS outcome_date, f.regimen FROM (",
    facts!(),
    ") f"
);

/// The cohort counted: one row per group of patients with the same facts, its fields and how
/// many patients (`n`).
pub(super) const COHORT_COUNTED: &str = concat!(
    "SELECT 'all' AS cohort, ",
    fields_of!(),
    " AS fields, f.n FROM (SELECT ",
    fact_columns!(),
    ", f.n FROM (SELECT ",
    fact_key!(),
    " AS k, count(*) AS n FROM (",
    facts!(),
    ") f GROUP BY 1) f) f"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registration_field_has_its_cumulative_twin() {
        for (i, f) in FIELDS[..REGISTRATION].iter().enumerate() {
            assert_eq!(FIELDS[REGISTRATION + i], format!("cum_{f}"));
        }
    }
}
