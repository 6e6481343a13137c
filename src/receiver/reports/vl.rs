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
           v.maternal, c.outcome, c.outcome_date::text AS outcome_date,
           c.earliest_start_date::text AS earliest_start_date,
           v.ordered_on::text AS vl_ordered_on, v.kind AS vl_reason, v.result AS vl_result
    FROM ids.cohort($3, $4, $1) c
    -- (a patient whose clinical row waits in the queue counts with no clinical fact)
    LEFT JOIN ids.clinical k ON k.site_id = c.site_id AND k.patient_id = c.patient_id
    -- the latest pregnancy and breastfeeding answers and VL order by the end date (the last
    -- entries of their timelines on or before it)
    CROSS JOIN LATERAL (
      SELECT width_bucket($3, k.preg_days) AS pi, width_bucket($3, k.bf_days) AS bi,
             width_bucket($3, k.vl_days) AS vi) i
    CROSS JOIN LATERAL (
      SELECT CASE WHEN c.gender <> 'F' THEN NULL
                  WHEN k.preg_days[i.pi] >= $2 AND k.preg_yes[i.pi] THEN 'FP'
                  WHEN k.bf_days[i.bi] >= $2 AND k.bf_yes[i.bi] THEN 'FBf'
                  ELSE 'FNP' END AS maternal,
             k.vl_days[i.vi] AS ordered_on,
             coalesce(k.vl_days[i.vi] >= ($2 - interval '12 months')::date, false) AS drawn,
             k.vl_kind[i.vi] AS kind, k.vl_result[i.vi] AS result) v
    CROSS JOIN LATERAL (
      SELECT c.earliest_start_date <= ($3 - interval '6 months')::date
             AND NOT (c.outcome = 'Defaulted'
                      AND c.defaulted_on < ($3 - interval '12 months')::date)
             AND (c.outcome = 'On antiretrovirals'
                  OR (coalesce(v.ordered_on, c.earliest_start_date)
                      + CASE WHEN v.maternal IN ('FP', 'FBf') OR c.regimen LIKE '%P'
                             THEN interval '6 months' ELSE interval '12 months' END)::date
                     < c.outcome_date) AS due) d
    WHERE c.outcome = 'On antiretrovirals'
       OR (c.outcome_date > ($3 - interval '12 months')::date AND c.outcome_date <= $3)";
