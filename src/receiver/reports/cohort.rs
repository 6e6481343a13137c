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
    WITH answer AS MATERIALIZED (
      SELECT DISTINCT ON (cn.site_id, m.grp, cn.concept_id) cn.site_id, m.grp, cn.concept_id,
             m.field
      -- the answers told apart, by group, lower-case name and the field they count in (a
      -- name absent from a site's metadata counts nothing; any other reason for starting,
      -- or free text, is unknown_other_reason_outside_guidelines)
      FROM (VALUES
      ('reason', 'presumed severe hiv', 'presumed_severe_hiv_disease_in_infants'),
      ('reason', 'hiv pcr', 'confirmed_hiv_infection_in_infants_pcr'),
      ('reason', 'asymptomatic', 'asymptomatic'),
      ('reason', 'cd4 count less than or equal to 250', 'asymptomatic'),
      ('reason', 'cd4 count less than or equal to 350', 'asymptomatic'),
      ('reason', 'cd4 count less than or equal to 500', 'asymptomatic'),
      ('reason', 'cd4 count less than or equal to 750', 'asymptomatic'),
      ('reason', 'who stage iii adult', 'who_stage_three'),
      ('reason', 'who stage iii peds', 'who_stage_three'),
      ('reason', 'who stage iv adult', 'who_stage_four'),
      ('reason', 'who stage iv peds', 'who_stage_four'),
      ('reason', 'patient pregnant', 'pregnant_women'),
      ('reason', 'breastfeeding', 'breastfeeding_mothers'),
      ('criteria', 'pulmonary tuberculosis (current)', 'current_episode_of_tb'),
      ('criteria', 'extrapulmonary tuberculosis (eptb)', 'current_episode_of_tb'),
      ('criteria', 'pulmonary tuberculosis within the last 2 years', 'tb_within_the_last_two_years'),
      ('criteria', 'kaposis sarcoma', 'kaposis_sarcoma'),
      ('tb', 'tb suspected', 'tb_suspected'),
      ('tb', 'tb not suspected', 'tb_not_suspected'),
      ('tb', 'confirmed tb on treatment', 'tb_confirmed_on_treatment'),
      ('tb', 'confirmed tb not on treatment', 'tb_confirmed_not_on_treatment')) m(grp, name, field)
      JOIN cdr.concept_name cn ON lower(cn.name) = m.name AND coalesce(cn.voided, 0) = 0
      WHERE ($1::int IS NULL OR cn.site_id = $1) AND cn.concept_id IS NOT NULL
      ORDER BY cn.site_id, m.grp, cn.concept_id, m.field)
    SELECT c.site_id, c.patient_id, c.gender, c.age_group, 'all' AS cohort,
           ARRAY(SELECT f FROM unnest(x.registration) f WHERE x.in_quarter
                 UNION ALL SELECT 'cum_' || f FROM unnest(x.registration) f
                 UNION ALL SELECT f FROM unnest(x.outcome) f) AS fields,
           c.date_enrolled::text AS date_enrolled,
           c.earliest_start_date::text AS earliest_start_date, c.outcome,
           c.outcome_date::text AS outcome_date, coalesce(r.name, 'unknown') AS regimen
    FROM ids.cohort($3, $4, $1) c
    JOIN ids.art_status p ON p.site_id = c.site_id AND p.patient_id = c.patient_id
    JOIN (SELECT s.site_id, ids.concepts_named(s.site_id, '{Yes}') AS yes,
                 ids.concepts_named(s.site_id, '{Is patient pregnant?}') AS pregnant,
                 ids.concepts_named(s.site_id, '{Breast feeding?}') AS breastfeeding,
                 ids.concepts_named(s.site_id, '{Who stages criteria present}') AS criteria,
                 ids.arv_drugs(s.site_id) AS arv
          FROM ids.site_state s WHERE $1::int IS NULL OR s.site_id = $1
          -- (OFFSET 0: each site's concepts looked up once, not again for every obs row)
          OFFSET 0) n ON n.site_id = c.site_id
    LEFT JOIN ids.regimens r ON r.drugs = c.regimen_drugs
    CROSS JOIN LATERAL (
      SELECT EXISTS (
        SELECT 1 FROM (
          SELECT o.encounter_id, o.obs_datetime FROM cdr.obs o
          WHERE o.site_id = c.site_id AND o.person_id = c.patient_id AND o.concept_id = 7937
            AND o.voided = 0 AND o.value_coded = ANY (n.yes)
          ORDER BY o.obs_datetime, o.obs_id LIMIT 1) e
        JOIN cdr.encounter en ON en.site_id = c.site_id AND en.encounter_id = e.encounter_id
                             AND en.encounter_type = 9 AND en.voided = 0
        JOIN cdr.obs l ON l.site_id = c.site_id AND l.encounter_id = e.encounter_id
                      AND l.concept_id = 7751 AND l.voided = 0
                      AND l.value_datetime < e.obs_datetime - interval '14 days') AS asked,
        (SELECT coalesce(max(ra.field), 'unknown_other_reason_outside_guidelines')
         FROM (SELECT o.value_coded FROM cdr.obs o
               WHERE o.site_id = c.site_id AND o.person_id = c.patient_id AND o.concept_id = 7563
                 AND o.voided = 0 AND o.obs_datetime < $3 + 1
               ORDER BY o.obs_datetime, o.obs_id LIMIT 1) o
         LEFT JOIN answer ra ON ra.site_id = c.site_id AND ra.grp = 'reason'
                            AND ra.concept_id = o.value_coded) AS reason,
        ARRAY(SELECT ca.field FROM cdr.obs o
              JOIN answer ca ON ca.site_id = c.site_id AND ca.grp = 'criteria'
                            AND ca.concept_id = o.value_coded
              WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                AND o.concept_id = ANY (n.criteria) AND o.voided = 0
                AND o.obs_datetime < c.date_enrolled + 1) AS criteria,
        c.gender = 'F' AND EXISTS (
          SELECT 1 FROM cdr.obs o
          WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
            AND o.concept_id = ANY (n.pregnant) AND o.voided = 0 AND o.value_coded = ANY (n.yes)
            AND o.obs_datetime >= c.date_enrolled
            AND o.obs_datetime < least(c.date_enrolled + 31, $3 + 1)) AS pregnant_asked
      -- (OFFSET 0: computed once per patient, not again at each use below)
      OFFSET 0) ri
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
                         AND p.registered_at < $3 + 1 THEN 'transfer_in' END,
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
                 (SELECT coalesce(max(ta.field), 'unknown_tb_status')
                  FROM (SELECT o.value_coded FROM cdr.obs o
                        WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                          AND o.concept_id = 7459 AND o.voided = 0 AND o.obs_datetime < $3 + 1
                        ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1) o
                  LEFT JOIN answer ta ON ta.site_id = c.site_id AND ta.grp = 'tb'
                                     AND ta.concept_id = o.value_coded),
                 (SELECT CASE WHEN count(v.value) = 0 THEN 'unknown_adherence'
                              WHEN bool_and(v.value BETWEEN 95 AND 105) THEN 'adherent_95_105'
                              ELSE 'not_adherent' END
                  FROM (SELECT o.value_numeric AS value,
                               dense_rank() OVER (ORDER BY o.obs_datetime::date DESC) AS k
                        FROM cdr.obs o
                        JOIN cdr.orders od ON od.site_id = o.site_id AND od.order_id = o.order_id
                                          AND od.voided = 0 AND od.order_type_id = 1
                        JOIN cdr.drug_order d ON d.site_id = o.site_id AND d.order_id = o.order_id
                                             AND d.drug_inventory_id = ANY (n.arv)
                        WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                          AND o.concept_id = 6987 AND o.voided = 0
                          AND o.obs_datetime < $3 + 1) v
                  WHERE v.k = 1),
                 CASE WHEN c.gender = 'F' THEN (
                   SELECT CASE
                     WHEN (array_agg(o.value_coded = ANY (n.yes)
                                     ORDER BY o.obs_datetime DESC, o.obs_id DESC)
                           FILTER (WHERE o.concept_id = ANY (n.pregnant)))[1]
                     THEN 'total_pregnant_women'
                     WHEN (array_agg(o.value_coded = ANY (n.yes)
                                     ORDER BY o.obs_datetime DESC, o.obs_id DESC)
                           FILTER (WHERE o.concept_id = ANY (n.breastfeeding)))[1]
                     THEN 'total_breastfeeding_women' END
                   FROM cdr.obs o
                   WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                     AND o.concept_id = ANY (n.pregnant || n.breastfeeding) AND o.voided = 0
                     AND o.obs_datetime >= c.last_dispensation_date
                     AND o.obs_datetime < c.last_dispensation_date + 1) END]
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
