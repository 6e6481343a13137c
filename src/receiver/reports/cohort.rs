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
pub(super) const COHORT: &str = "
    SELECT c.site_id, c.patient_id, c.gender, c.age_group, 'all' AS cohort,
           ARRAY(SELECT f FROM unnest(x.registration) f WHERE x.in_quarter
                 UNION ALL SELECT 'cum_' || f FROM unnest(x.registration) f
                 UNION ALL SELECT f FROM unnest(x.outcome) f) AS fields,
           c.date_enrolled::text AS date_enrolled,
           c.earliest_start_date::text AS earliest_start_date, c.outcome,
           c.outcome_date::text AS outcome_date, coalesce(r.name, 'unknown') AS regimen
    FROM ids.cohort($3, $4, $1) c
    -- (a patient whose clinical row waits in the queue counts with no clinical fact)
    LEFT JOIN ids.clinical k ON k.site_id = c.site_id AND k.patient_id = c.patient_id
    LEFT JOIN ids.regimens r ON r.drugs = c.regimen_drugs
    CROSS JOIN LATERAL (
      SELECT coalesce(k.reinit_asked, false) AS asked,
             coalesce(k.reason_field, 'unknown_other_reason_outside_guidelines') AS reason,
             k.crit_fields[1:width_bucket(c.date_enrolled, k.crit_days)] AS criteria,
             c.gender = 'F' AND coalesce(true = ANY (
               k.preg_yes[width_bucket(c.date_enrolled - 1, k.preg_days) + 1
                          :width_bucket(least(c.date_enrolled + 30, $3), k.preg_days)]), false)
               AS pregnant_asked,
             width_bucket(c.last_dispensation_date, k.preg_days) AS preg_last,
             width_bucket(c.last_dispensation_date, k.bf_days) AS bf_last) ri
    CROSS JOIN LATERAL (
      SELECT c.date_enrolled <> c.earliest_start_date AND ri.asked AS reinitiated,
             ids.months_between(c.birthdate, c.earliest_start_date) AS months_old) a
    CROSS JOIN LATERAL (
      SELECT c.date_enrolled BETWEEN $2 AND $3 AS in_quarter,
             array_remove(ARRAY[
               'total_registered',
               CASE WHEN c.date_enrolled = c.earliest_start_date
                    THEN 'initiated_on_art_first_time' END,
               CASE WHEN a.reinitiated THEN 're_initiated_on_art' END,
               CASE WHEN c.date_enrolled <> c.earliest_start_date AND NOT a.reinitiated
                         AND c.registered_at < $3 + 1 THEN 'transfer_in' END,
               CASE WHEN c.gender = 'M' THEN 'all_males'
                    WHEN c.gender = 'F' AND (ri.pregnant_asked OR ri.reason = 'pregnant_women')
                    THEN 'pregnant_females_all_ages'
                    WHEN c.gender = 'F' THEN 'non_pregnant_females'
                    ELSE 'unknown_gender' END,
               CASE WHEN a.months_old IS NULL THEN 'unknown_age'
                    WHEN a.months_old < 24 THEN 'children_below_24_months'
                    WHEN a.months_old / 12 <= 14 THEN 'children_24_months_14_years'
                    ELSE 'adults' END,
               ri.reason,
               CASE WHEN 'current_episode_of_tb' = ANY (ri.criteria) THEN 'current_episode_of_tb'
                    WHEN 'tb_within_the_last_two_years' = ANY (ri.criteria)
                    THEN 'tb_within_the_last_two_years'
                    ELSE 'no_tb' END,
               CASE WHEN 'kaposis_sarcoma' = ANY (ri.criteria) THEN 'kaposis_sarcoma' END],
               NULL) AS registration,
             array_remove(CASE c.outcome
               WHEN 'On antiretrovirals' THEN ARRAY[
                 'total_alive_and_on_art', coalesce(r.name, 'unknown_regimen'),
                 coalesce(k.tb_fields[width_bucket($3, k.tb_days)], 'unknown_tb_status'),
                 coalesce(k.adh_class[width_bucket($3, k.adh_days)], 'unknown_adherence'),
                 CASE WHEN c.gender <> 'F' THEN NULL
                      WHEN k.preg_days[ri.preg_last] = c.last_dispensation_date
                           AND k.preg_yes[ri.preg_last] THEN 'total_pregnant_women'
                      WHEN k.bf_days[ri.bf_last] = c.last_dispensation_date
                           AND k.bf_yes[ri.bf_last] THEN 'total_breastfeeding_women' END]
               WHEN 'Patient died' THEN
                 ARRAY['died_total', CASE
                   WHEN c.outcome_date - c.earliest_start_date <= 30 THEN 'died_within_month_1'
                   WHEN c.outcome_date - c.earliest_start_date <= 60 THEN 'died_within_month_2'
                   WHEN c.outcome_date - c.earliest_start_date <= 91 THEN 'died_within_month_3'
                   ELSE 'died_after_month_3' END]
               WHEN 'Defaulted' THEN ARRAY['defaulted']
               WHEN 'Treatment stopped' THEN ARRAY['stopped_art']
               WHEN 'Patient transferred out' THEN ARRAY['transferred_out']
               ELSE ARRAY['unknown_outcome'] END, NULL) AS outcome
      OFFSET 0) x";

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
