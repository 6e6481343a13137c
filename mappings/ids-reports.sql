-- IDS report functions: how a report reads the tables of ids-tables.sql on its end date
-- (art-rules.md, moh-reports.md). Nothing stored depends on them, so the receiver makes them
-- again at start when this file changes (every ids function ids-tables.sql does not make is
-- dropped first, so that a signature may change and a retired function goes) without
-- queueing any patient for recomputation; a change of ids-tables.sql makes them again too.

-- Whole years from `a` to `b` as MySQL's TIMESTAMPDIFF(YEAR, a, b) counts them. (The casts
-- to timestamp matter: on dates, age() would take timestamptz, which is only STABLE, and
-- PostgreSQL does not inline an IMMUTABLE function that calls one: a call per row of a
-- national report cost 1.8 s per million rows, inlined 0.07 s.)
CREATE OR REPLACE FUNCTION ids.years_between(a date, b date) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT date_part('year', age(b::timestamp, a::timestamp))::int
$$;

-- The index of an age in whole years among the PEPFAR groups (1 for <1, 2 for 1-4, then one
-- per five years, 20 for 90+).
CREATE OR REPLACE FUNCTION ids.age_group_index(years integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN years < 1 THEN 1 WHEN years >= 90 THEN 20 ELSE years / 5 + 2 END
$$;

-- PEPFAR age group at a date (art-rules.md section 4): whole years (TIMESTAMPDIFF(YEAR, ...)),
-- <1, 1-4, five-year groups to 85-89, 90+; 'Unknown' without birthdate. One expression
-- without FROM, so that PostgreSQL inlines it into a report's scan (a call per patient of a
-- national answer cost more than the rest of the row).
CREATE OR REPLACE FUNCTION ids.age_group(birthdate date, on_date date) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN birthdate IS NULL THEN 'Unknown' ELSE
    (ARRAY['<1', '1-4', '5-9', '10-14', '15-19', '20-24', '25-29', '30-34', '35-39', '40-44',
           '45-49', '50-54', '55-59', '60-64', '65-69', '70-74', '75-79', '80-84', '85-89',
           '90+'])[ids.age_group_index(ids.years_between(birthdate, on_date))] END
$$;

-- The cohort gates of art-rules.md section 1 on end_date, as the enrolment date they give
-- (NULL: not in any cohort report): a state 7 of the HIV program; a reason for starting ART
-- (obs 7563) by then; an ARV dispensation by then; and a drug-refill or external-consultation
-- client (an obs 3289 so answered by then) only when registered: a 'New patient' obs 3289 by
-- then (then only dispensations on or after it count for enrolment) or an HIV CLINIC
-- REGISTRATION encounter before end_date (the rules' "before end_date": strictly earlier than
-- its first moment; with a registration but no 'New patient' obs every dispensation counts).
-- The 'New patient' obs is bounded by end_date + 1 day like the refill obs it answers (our
-- reading where the rules leave it open).
CREATE OR REPLACE FUNCTION ids.cohort_enrolment(on_art_state boolean, reason_on date,
    refill_on date, new_patient_on date, registered_at timestamp, date_enrolled date,
    enrolled_after_new date, end_date date) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN NOT on_art_state OR reason_on IS NULL OR reason_on > end_date THEN NULL
    WHEN refill_on IS NULL OR refill_on > end_date THEN
      CASE WHEN date_enrolled <= end_date THEN date_enrolled END
    WHEN new_patient_on <= end_date THEN
      CASE WHEN enrolled_after_new <= end_date THEN enrolled_after_new END
    WHEN registered_at < end_date THEN CASE WHEN date_enrolled <= end_date THEN date_enrolled END
  END
$$;

-- Drug-refill and external-consultation clients who have not registered by end_date (the
-- fourth gate alone: missed appointments leave them out).
CREATE OR REPLACE FUNCTION ids.unregistered_refill(refill_on date, new_patient_on date,
                                                   registered_at timestamp, end_date date)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT refill_on <= end_date AND NOT coalesce(new_patient_on <= end_date, false)
         AND NOT coalesce(registered_at < end_date, false)
$$;

-- A patient's outcome on a date and its date, from their outcome timelines (art_status's
-- outcome_days with moh_* for the MOH's 60 days, pepfar_* for PEPFAR's 30; another
-- default_days has no timeline: NULL): one binary search (width_bucket) and a subscript.
CREATE OR REPLACE FUNCTION ids.outcome_from(days date[], moh smallint[], pepfar smallint[],
                                            on_date date, default_days integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN default_days IN (30, 60) THEN ids.outcome_name(
    (CASE default_days WHEN 60 THEN moh ELSE pepfar END)[width_bucket(on_date, days)]) END
$$;

CREATE OR REPLACE FUNCTION ids.outcome_date_from(days date[], moh date[], pepfar date[],
                                                 on_date date, default_days integer)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (CASE default_days WHEN 60 THEN moh WHEN 30 THEN pepfar END)[width_bucket(on_date, days)]
$$;

-- The cohort on end_date (art-rules.md section 1) with every patient's outcome on that day
-- (section 3) under a default_days threshold (60: MOH, 30: PEPFAR, the two the outcome
-- timelines keep): the patients of `site`, or of every site when it is NULL. Every fact on
-- end_date comes from the patient's art_status row (its timelines: the outcome and its date,
-- the last dispensation by then, its expiry, drug set and regimen; TB and Kaposi's sarcoma at
-- initiation and the age in months then, stored for the usual enrolment path; the clinical
-- timelines are returned whole for the reports that read them), so a report is one scan of the
-- status rows whatever its end date, which PostgreSQL may split over parallel workers (every
-- function a report calls is PARALLEL SAFE).
--
-- With `before`, also each patient's outcome on that other date and its date (NULL when not in
-- the cohort then): TX_ML and TX_RTT compare the day before their period with its end in the
-- same scan.
CREATE OR REPLACE FUNCTION ids.cohort(end_date date, default_days integer, site integer,
                                      before date DEFAULT NULL)
RETURNS TABLE (site_id integer, patient_id integer, gender text, birthdate date,
               age_group text, date_enrolled date, earliest_start_date date,
               transfer_in boolean, outcome text, outcome_date date,
               last_dispensation_date date, expiry_date date, defaulted_on date,
               regimen_drugs integer[], registered_at timestamp, outcome_before text,
               outcome_date_before date, regimen text, reinit_asked boolean,
               reason_field text, tb_at_start text, ks text, preg_days date[],
               preg_yes boolean[], bf_days date[], bf_yes boolean[], tb_days date[],
               tb_fields text[], adh_days date[], adh_class text[], vl_days date[],
               vl_kind text[], vl_result text[], weight_days date[],
               weight_values double precision[], months_old integer)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT p.site_id, p.patient_id, p.gender, p.birthdate,
         ids.age_group(p.birthdate, cohort.end_date),
         p.enrolled_on, coalesce(p.art_start_obs, p.enrolled_on), p.transfer_in,
         ids.outcome_from(p.outcome_days, p.moh_outcomes, p.pepfar_outcomes, cohort.end_date,
                          cohort.default_days),
         ids.outcome_date_from(p.outcome_days, p.moh_outcome_dates, p.pepfar_outcome_dates,
                               cohort.end_date, cohort.default_days),
         p.disp_days[p.di], p.disp_expiry[p.di],
         p.disp_expiry[p.di] + ids.threshold(coalesce(p.disp_legacy[p.di], false),
                                             cohort.default_days),
         p.disp_drugs[p.di]::integer[], p.registered_at,
         CASE WHEN p.enrolled_before IS NOT NULL THEN
           ids.outcome_from(p.outcome_days, p.moh_outcomes, p.pepfar_outcomes, cohort.before,
                            cohort.default_days) END,
         CASE WHEN p.enrolled_before IS NOT NULL THEN
           ids.outcome_date_from(p.outcome_days, p.moh_outcome_dates, p.pepfar_outcome_dates,
                                 cohort.before, cohort.default_days) END,
         p.disp_regimens[p.di], p.reinit_asked, p.reason_field,
         CASE WHEN p.enrolled_on = p.date_enrolled AND p.start_tb IS NOT NULL THEN p.start_tb
              ELSE ids.tb_at_start(p.crit_days, p.crit_fields, p.enrolled_on) END,
         CASE WHEN p.enrolled_on = p.date_enrolled AND p.start_tb IS NOT NULL THEN p.start_ks
              ELSE ids.ks_at_start(p.crit_days, p.crit_fields, p.enrolled_on) END,
         p.preg_days, p.preg_yes, p.bf_days, p.bf_yes, p.tb_days, p.tb_fields, p.adh_days,
         p.adh_class, p.vl_days, p.vl_kind, p.vl_result, p.weight_days, p.weight_values,
         CASE WHEN p.enrolled_on = p.date_enrolled AND p.months_at_start IS NOT NULL
              THEN p.months_at_start
              ELSE ids.months_between(p.birthdate, coalesce(p.art_start_obs, p.enrolled_on)) END
  FROM (SELECT p.*, ids.cohort_enrolment(p.on_art_state, p.reason_on, p.refill_on,
                      p.new_patient_on, p.registered_at, p.date_enrolled, p.enrolled_after_new,
                      cohort.end_date) AS enrolled,
               -- the same on the rows kept, cheaper: this subquery is inlined, so every column
               -- that reads the enrolment computes it again, and a patient who is no refill
               -- client is enrolled on date_enrolled (the cohort at 100k patients, serial:
               -- 425-437 ms -> 388-404 ms)
               CASE WHEN p.refill_on IS NULL THEN p.date_enrolled
                    ELSE ids.cohort_enrolment(p.on_art_state, p.reason_on, p.refill_on,
                           p.new_patient_on, p.registered_at, p.date_enrolled,
                           p.enrolled_after_new, cohort.end_date) END AS enrolled_on,
               ids.cohort_enrolment(p.on_art_state, p.reason_on, p.refill_on,
                      p.new_patient_on, p.registered_at, p.date_enrolled, p.enrolled_after_new,
                      cohort.before) AS enrolled_before,
               width_bucket(cohort.end_date, p.disp_days) AS di
        FROM ids.art_status p
        WHERE cohort.site IS NULL OR p.site_id = cohort.site) p
  WHERE p.enrolled IS NOT NULL
$$;

-- A fence for a report's subquery: PostgreSQL does not merge a subquery whose select list
-- calls a volatile function into the query around it, so each of its columns is computed once
-- per row however often the query reads it. Planned apart, the call is then inlined as the
-- constant 1 (no call per row), and being PARALLEL SAFE it keeps the scan on parallel workers.
CREATE OR REPLACE FUNCTION ids.apart() RETURNS integer
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$ SELECT 1 $$;

-- Weight band of the regimen distribution by weight (moh-reports.md): the engine's bands, and
-- 5-5.9 kg, which its bands skip (those patients would vanish), in a band of its own; under
-- 3 kg or none: Unknown. One reference to kg: the function is inlined, and a CASE of a test
-- per band computed the argument (a patient's latest weight) once per test (100k patients,
-- the distribution by weight in psql, alternating: 145-181 -> 112-129 ms).
CREATE OR REPLACE FUNCTION ids.weight_band(kg double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (ARRAY['Unknown', '3-3.9', '4-4.9', '5-5.9', '6-9.9', '10-13.9', '14-19.9', '20-24.9',
                '25-29.9', '30-34.9', '35-39.9', '40-49.9', '50+'])
         [width_bucket(coalesce(kg, 0),
                       ARRAY[3, 4, 5, 6, 10, 14, 20, 25, 30, 35, 40, 50]::double precision[]) + 1]
$$;

-- The latest non-voided numeric obs of one of `concepts` for a patient on or before on_date
-- (the latest weight, the latest CD4 count): value and modifier.
CREATE OR REPLACE FUNCTION ids.latest_numeric(site integer, patient integer, concepts integer[],
                                              on_date date)
RETURNS TABLE (value double precision, modifier text) LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT o.value_numeric, o.value_modifier FROM unnest(concepts) c(concept_id)
  CROSS JOIN LATERAL (
    SELECT o.value_numeric, o.value_modifier, o.obs_datetime, o.obs_id FROM cdr.obs o
    WHERE o.site_id = site AND o.person_id = patient AND o.concept_id = c.concept_id
      AND o.obs_datetime < on_date + 1 AND o.voided = 0 AND o.value_numeric IS NOT NULL
    ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1) o
  ORDER BY o.obs_datetime DESC, o.obs_id DESC LIMIT 1
$$;
