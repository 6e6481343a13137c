//! The viral load report's SQL (TX_PVLS), beside the other reports' (`queries`).

/// TX_PVLS, viral load coverage (moh-reports.md), on PEPFAR outcomes ($4 is always 30).
/// - Candidates: in the cohort on the end date, On ART, or with another outcome dated within
///   the 12 months before it (after end - 12 months, on or before end).
/// - `tx_curr`: On ART at the end date.
/// - `due_for_vl`: ART started 6 months or more before the end date (earliest start on or
///   before end - 6 months), not a defaulter of more than 12 months; a candidate who left care
///   only when their last VL order on or before the end date (else their ART start) plus 12
///   months (6 for pregnant or breastfeeding women and paediatric regimens, names ending in
///   P) fell before their outcome date. The engine takes the months from a hard-coded
///   2024-03-31: a bug (art-rules.md section 6), the report's end date is used.
/// - `drawn_*`: among the due, the latest VL order (lab order, order_type 4, of specimen
///   'Blood', 'DBS (Free drop to DBS card)', 'DBS (Using capillary tube)' or 'Plasma', found by
///   name) up to the end date, when it is dated on or after start - 12 months; routine when
///   its latest 'Reason for test' obs is missing or 'Routine', else targeted.
/// - `high_vl_*` / `low_vl_*`: its latest 'HIV viral load' (856) result: 'LDL' is low, a number
///   under 1000 is low, else high; a number with the modifier `<` is below it, so low when it
///   is 1000 or less (`<1000`: low; the engine ignores the modifier and counts it high, a bug:
///   art-rules.md section 6) and high above (`<5000` cannot be shown suppressed). No result:
///   counted in drawn only.
/// - Maternal status of women: FP when the latest 'Is patient pregnant?' obs of the period is
///   'Yes', else FBf when the latest 'Breast feeding?' obs of the period is, else FNP.
pub(super) const TX_PVLS: &str = "
    SELECT c.site_id, c.patient_id, c.gender, c.age_group,
           array_remove(ARRAY[
             CASE WHEN c.outcome = 'On antiretrovirals' THEN 'tx_curr' END,
             CASE WHEN d.due THEN 'due_for_vl' END,
             CASE WHEN d.due AND v.drawn THEN 'drawn_' || v.kind END,
             CASE WHEN d.due AND v.drawn AND v.result IS NOT NULL
                  THEN v.result || '_vl_' || v.kind END], NULL) AS fields,
           m.maternal, c.outcome, c.outcome_date::text AS outcome_date,
           c.earliest_start_date::text AS earliest_start_date,
           v.ordered_on::text AS vl_ordered_on, v.kind AS vl_reason, v.result AS vl_result
    FROM ids.cohort($3, $4, $1) c
    JOIN (SELECT s.site_id,
                 ids.concepts_named(s.site_id, '{Blood,DBS (Free drop to DBS card),DBS (Using capillary tube),Plasma}') AS specimens,
                 ids.concepts_named(s.site_id, '{Reason for test}') AS reason,
                 ids.concepts_named(s.site_id, '{Routine}') AS routine,
                 ids.concepts_named(s.site_id, '{Is patient pregnant?}') AS pregnant,
                 ids.concepts_named(s.site_id, '{Breast feeding?}') AS breastfeeding,
                 ids.concepts_named(s.site_id, '{Yes}') AS yes
          FROM ids.site_state s WHERE $1::int IS NULL OR s.site_id = $1
          -- (OFFSET 0 here and below: each site's concepts looked up once, each patient's
          -- lookups made once, not again at every use or for every obs row)
          OFFSET 0) n ON n.site_id = c.site_id
    CROSS JOIN LATERAL (
      SELECT CASE
        WHEN c.gender <> 'F' THEN NULL
        WHEN (SELECT o.value_coded = ANY (n.yes) FROM cdr.obs o
               WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                 AND o.concept_id = ANY (n.pregnant) AND o.voided = 0
                 AND o.obs_datetime >= $2 AND o.obs_datetime < $3 + 1
               ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1) THEN 'FP'
        WHEN (SELECT o.value_coded = ANY (n.yes) FROM cdr.obs o
               WHERE o.site_id = c.site_id AND o.person_id = c.patient_id
                 AND o.concept_id = ANY (n.breastfeeding) AND o.voided = 0
                 AND o.obs_datetime >= $2 AND o.obs_datetime < $3 + 1
               ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1) THEN 'FBf'
        ELSE 'FNP' END AS maternal OFFSET 0) m
    LEFT JOIN ids.regimens r ON r.drugs = c.regimen_drugs
    LEFT JOIN LATERAL (
      SELECT o.order_id, o.start_date::date AS ordered_on FROM cdr.orders o
      WHERE o.site_id = c.site_id AND o.patient_id = c.patient_id AND o.start_date < $3 + 1
        AND o.order_type_id = 4 AND o.voided = 0 AND o.concept_id = ANY (n.specimens)
      ORDER BY o.start_date DESC, o.order_id DESC LIMIT 1) lv ON true
    CROSS JOIN LATERAL (
      SELECT lv.order_id IS NOT NULL
               AND lv.ordered_on >= ($2 - interval '12 months')::date AS drawn,
             lv.ordered_on,
             CASE WHEN coalesce((SELECT o.value_coded = ANY (n.routine) FROM cdr.obs o
                                  WHERE o.site_id = c.site_id AND o.order_id = lv.order_id
                                    AND o.concept_id = ANY (n.reason) AND o.voided = 0
                                  ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1), true)
                  THEN 'routine' ELSE 'targeted' END AS kind,
             (SELECT CASE
                       WHEN upper(btrim(o.value_text)) = 'LDL' THEN 'low'
                       WHEN o.value_numeric IS NULL THEN NULL
                       WHEN o.value_modifier = '<' THEN
                         CASE WHEN o.value_numeric <= 1000 THEN 'low' ELSE 'high' END
                       WHEN o.value_numeric < 1000 THEN 'low' ELSE 'high' END
                FROM cdr.obs o
               WHERE o.site_id = c.site_id AND o.order_id = lv.order_id AND o.concept_id = 856
                 AND o.voided = 0
               ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1) AS result OFFSET 0) v
    CROSS JOIN LATERAL (
      SELECT c.earliest_start_date <= ($3 - interval '6 months')::date
             AND NOT (c.outcome = 'Defaulted'
                      AND c.defaulted_on < ($3 - interval '12 months')::date)
             AND (c.outcome = 'On antiretrovirals'
                  OR (coalesce(lv.ordered_on, c.earliest_start_date)
                      + CASE WHEN m.maternal IN ('FP', 'FBf') OR r.name LIKE '%P'
                             THEN interval '6 months' ELSE interval '12 months' END)::date
                     < c.outcome_date) AS due) d
    WHERE c.outcome = 'On antiretrovirals'
       OR (c.outcome_date > ($3 - interval '12 months')::date AND c.outcome_date <= $3)";
