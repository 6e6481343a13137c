//! The viral load report's SQL (TX_PVLS), beside the other reports' (`queries`).

// Each candidate's facts, scalar columns: what `pvls_fields!` turns into the fields. The
// count groups the candidates by these first (a nation's in a few hundred groups), so the
// fields are built once per group, and each fact is computed once per patient.
macro_rules! pvls_facts {
    () => {
        "SELECT c.site_id, c.patient_id, c.gender, c.age_group, v.maternal,
                c.outcome = 'On antiretrovirals' AS tx_curr, d.due, v.drawn, v.kind, v.result,
                c.outcome, c.outcome_date, c.earliest_start_date, v.ordered_on,
                -- a candidate: On ART, or another outcome within the 12 months to the end
                c.outcome = 'On antiretrovirals'
                  OR (c.outcome_date > ($3 - interval '12 months')::date
                      AND c.outcome_date <= $3) AS candidate
         FROM ids.cohort($3, $4, $1) c
         -- the latest pregnancy and breastfeeding answers and VL order by the end date (the
         -- last entries of their timelines on or before it)
         CROSS JOIN LATERAL (
           SELECT width_bucket($3, c.preg_days) AS pi, width_bucket($3, c.bf_days) AS bi,
                  width_bucket($3, c.vl_days) AS vi) i
         CROSS JOIN LATERAL (
           SELECT CASE WHEN c.gender <> 'F' THEN NULL
                       WHEN c.preg_days[i.pi] >= $2 AND c.preg_yes[i.pi] THEN 'FP'
                       WHEN c.bf_days[i.bi] >= $2 AND c.bf_yes[i.bi] THEN 'FBf'
                       ELSE 'FNP' END AS maternal,
                  c.vl_days[i.vi] AS ordered_on,
                  coalesce(c.vl_days[i.vi] >= ($2 - interval '12 months')::date, false) AS drawn,
                  c.vl_kind[i.vi] AS kind, c.vl_result[i.vi] AS result) v
         CROSS JOIN LATERAL (
           SELECT c.earliest_start_date <= ($3 - interval '6 months')::date
                  AND NOT (c.outcome = 'Defaulted'
                           AND c.defaulted_on < ($3 - interval '12 months')::date)
                  AND (c.outcome = 'On antiretrovirals'
                       OR (coalesce(v.ordered_on, c.earliest_start_date)
                           + CASE WHEN v.maternal IN ('FP', 'FBf') OR c.regimen LIKE '%P'
                                  THEN interval '6 months' ELSE interval '12 months' END)::date
                          < c.outcome_date) AS due) d"
    };
}

// The fields of a row of facts `f`.
macro_rules! pvls_fields {
    () => {
        "array_remove(ARRAY[
           CASE WHEN f.tx_curr THEN 'tx_curr' END,
           CASE WHEN f.due THEN 'due_for_vl' END,
           CASE WHEN f.due AND f.drawn THEN 'drawn_' || f.kind END,
           CASE WHEN f.due AND f.drawn AND f.result IS NOT NULL
                THEN f.result || '_vl_' || f.kind END], NULL)"
    };
}

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
///
/// One row per candidate with its fields (the detail list).
pub(super) const TX_PVLS: &str = concat!(
    "SELECT f.site_id, f.patient_id, f.gender, f.age_group, ",
    pvls_fields!(),
    " AS fields, f.maternal, f.outcome, f.outcome_date::text AS outcome_date,
      f.earliest_start_date::text AS earliest_start_date,
      f.ordered_on::text AS vl_ordered_on, f.kind AS vl_reason, f.result AS vl_result
    FROM (",
    pvls_facts!(),
    ") f WHERE f.candidate"
);

/// TX_PVLS counted: one row per group of candidates with the same facts, its dimensions
/// (gender, age group, maternal status), fields and how many candidates (`n`). Every cohort
/// row is grouped and the candidates counted in each group: filtered first, the planner took
/// the computed filter to keep a few thousand rows (a nation's answer has about a million) and
/// grouped them in the leader alone, without its parallel workers (1M patients, all sites:
/// 1.46-2.08 s, counted this way 1.38-1.90 s, six alternating pairs in psql, each won).
pub(super) const TX_PVLS_COUNTED: &str = concat!(
    "SELECT f.gender, f.age_group, f.maternal, ",
    pvls_fields!(),
    " AS fields, f.n FROM (
      SELECT gender, age_group, maternal, tx_curr, due, drawn, kind, result,
             count(*) FILTER (WHERE candidate) AS n
      FROM (",
    pvls_facts!(),
    ") f GROUP BY gender, age_group, maternal, tx_curr, due, drawn, kind, result) f
    WHERE f.n > 0"
);
