-- IDS analytics over schema cdr: materialized views with unique indexes, refreshed
-- CONCURRENTLY by the receiver (debounced, one refresher at a time through an advisory lock,
-- all views in one transaction so readers see them change together), and the ART outcome
-- function the reports use. The rules are ../shared/reference/art-rules.md; where the rules
-- leave a choice open, the choice is written next to the code that makes it.
-- Applied by the receiver at start; idempotent. A changed view needs a new name (or a manual
-- DROP) because CREATE MATERIALIZED VIEW IF NOT EXISTS keeps the old definition.
CREATE SCHEMA IF NOT EXISTS ids;

CREATE TABLE IF NOT EXISTS ids.refresh_log (
  view_name text PRIMARY KEY,
  refreshed_at timestamptz NOT NULL,
  duration_ms bigint NOT NULL
);

-- The first definition of visits_daily counted voided patients' visits; its successor is
-- built on patient_visits below.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_matviews WHERE schemaname = 'ids' AND matviewname = 'visits_daily'
             AND definition NOT LIKE '%patient_visits%') THEN
    DROP MATERIALIZED VIEW ids.visits_daily;
  END IF;
END $$;

-- ARV dispensations, one row per patient, drug and day, with the day the pills run out.
-- A dispensation: a non-voided drug order (order_type_id 1) with quantity > 0 of a drug whose
-- concept is in concept set 1085. Several orders of one drug on one day add up (quantities of
-- 6000 or more are typos and count as 0); their daily dose is the largest valid one (1 when
-- none is valid: null, 0, negative or NaN). Pills brought back: non-voided obs 2540 of that
-- day, counted for the drug of the order they are tied to, else for their value_drug.
-- expiry = day + ROUND((quantity + pills) / daily_dose) days, halves up (numeric round), at
-- most 100 years out so that one absurd dose cannot break the refresh.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.arv_dispensations AS
  WITH arv AS (
    SELECT DISTINCT d.site_id, d.drug_id
    FROM cdr.drug d
    JOIN cdr.concept_set s ON s.site_id = d.site_id AND s.concept_id = d.concept_id
    WHERE s.concept_set = 1085
  ), dispensed AS (
    SELECT o.site_id, o.patient_id, o.start_date::date AS day, x.drug_inventory_id AS drug_id,
           sum(CASE WHEN x.quantity < 6000 THEN x.quantity ELSE 0 END)::bigint AS quantity,
           coalesce(max(x.equivalent_daily_dose) FILTER (
             WHERE x.equivalent_daily_dose > 0 AND x.equivalent_daily_dose <> 'NaN'), 1) AS daily_dose
    FROM cdr.orders o
    JOIN cdr.drug_order x ON x.site_id = o.site_id AND x.order_id = o.order_id
    JOIN arv a ON a.site_id = o.site_id AND a.drug_id = x.drug_inventory_id
    WHERE o.voided = 0 AND o.order_type_id = 1 AND x.quantity > 0
      AND o.patient_id IS NOT NULL AND o.start_date IS NOT NULL
    GROUP BY 1, 2, 3, 4
  ), brought AS (
    SELECT b.site_id, b.person_id AS patient_id, b.obs_datetime::date AS day,
           coalesce(x.drug_inventory_id, b.value_drug) AS drug_id,
           sum(coalesce(b.value_numeric, 0)) AS pills
    FROM cdr.obs b
    LEFT JOIN cdr.drug_order x ON x.site_id = b.site_id AND x.order_id = b.order_id
    WHERE b.concept_id = 2540 AND b.voided = 0 AND b.obs_datetime IS NOT NULL
      AND b.value_numeric <> 'NaN'
    GROUP BY 1, 2, 3, 4
  )
  SELECT d.site_id, d.patient_id, d.drug_id, d.day AS dispensation_date, d.quantity,
         d.daily_dose, coalesce(b.pills, 0) AS pill_count,
         d.day + least(greatest(round((d.quantity + coalesce(b.pills, 0))::numeric
                                      / d.daily_dose::numeric), -36525), 36525)::int AS expiry_date
  FROM dispensed d
  LEFT JOIN brought b ON b.site_id = d.site_id AND b.patient_id = d.patient_id
                     AND b.day = d.day AND b.drug_id = d.drug_id;
CREATE UNIQUE INDEX IF NOT EXISTS arv_dispensations_key
  ON ids.arv_dispensations (site_id, patient_id, dispensation_date, drug_id);

-- Program states of non-voided enrolments, for outcomes on any date.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.program_states AS
  SELECT s.site_id, s.patient_state_id, p.patient_id, p.program_id, s.state, s.start_date,
         s.end_date, s.date_created
  FROM cdr.patient_state s
  JOIN cdr.patient_program p ON p.site_id = s.site_id AND p.patient_program_id = s.patient_program_id
  WHERE s.voided = 0 AND p.voided = 0 AND s.start_date IS NOT NULL AND p.patient_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS program_states_key ON ids.program_states (site_id, patient_state_id);
CREATE INDEX IF NOT EXISTS program_states_patient ON ids.program_states (site_id, patient_id, start_date);

-- Per-patient ART status, one row per non-voided patient whose person is not voided (the
-- only patients any report counts): demographics, enrolment (first ARV dispensation), earliest
-- start (the earliest "date antiretrovirals started" obs 2516 of a HIV CLINIC REGISTRATION
-- encounter, else the enrolment), transfer-in (a non-voided obs 3289 "type of patient"
-- answered 7572 "transfer in"), and, as of the refresh, the last dispensation, its expiry and
-- the latest HIV-program state.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.art_status AS
  WITH dispensations AS (
    SELECT site_id, patient_id, min(dispensation_date) AS date_enrolled,
           max(dispensation_date) AS last_dispensation_date
    FROM ids.arv_dispensations GROUP BY 1, 2
  ), expiry AS (
    SELECT a.site_id, a.patient_id, min(a.expiry_date) AS expiry_date
    FROM ids.arv_dispensations a
    JOIN dispensations d ON d.site_id = a.site_id AND d.patient_id = a.patient_id
                        AND d.last_dispensation_date = a.dispensation_date
    GROUP BY 1, 2
  ), started AS (
    SELECT o.site_id, o.person_id AS patient_id, min(o.value_datetime::date) AS started_on
    FROM cdr.obs o
    JOIN cdr.encounter e ON e.site_id = o.site_id AND e.encounter_id = o.encounter_id
    WHERE o.concept_id = 2516 AND o.voided = 0 AND e.voided = 0 AND e.encounter_type = 9
      AND o.value_datetime IS NOT NULL
    GROUP BY 1, 2
  ), transfer_in AS (
    SELECT DISTINCT site_id, person_id AS patient_id
    FROM cdr.obs WHERE concept_id = 3289 AND value_coded = 7572 AND voided = 0
  ), latest AS (
    SELECT DISTINCT ON (site_id, patient_id) site_id, patient_id, state, start_date
    FROM ids.program_states WHERE program_id = 1
    ORDER BY site_id, patient_id, start_date DESC, date_created DESC, patient_state_id DESC
  )
  SELECT p.site_id, p.patient_id,
         CASE upper(left(pe.gender, 1)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'U' END AS gender,
         pe.birthdate, d.date_enrolled,
         coalesce(s.started_on, d.date_enrolled) AS earliest_start_date,
         (t.patient_id IS NOT NULL) AS transfer_in,
         d.last_dispensation_date, x.expiry_date,
         l.state AS latest_state, l.start_date AS latest_state_date
  FROM cdr.patient p
  JOIN cdr.person pe ON pe.site_id = p.site_id AND pe.person_id = p.patient_id
  LEFT JOIN dispensations d ON d.site_id = p.site_id AND d.patient_id = p.patient_id
  LEFT JOIN expiry x ON x.site_id = p.site_id AND x.patient_id = p.patient_id
  LEFT JOIN started s ON s.site_id = p.site_id AND s.patient_id = p.patient_id
  LEFT JOIN transfer_in t ON t.site_id = p.site_id AND t.patient_id = p.patient_id
  LEFT JOIN latest l ON l.site_id = p.site_id AND l.patient_id = p.patient_id
  WHERE p.voided = 0 AND pe.voided = 0;
CREATE UNIQUE INDEX IF NOT EXISTS art_status_key ON ids.art_status (site_id, patient_id);
CREATE INDEX IF NOT EXISTS art_status_enrolled ON ids.art_status (date_enrolled);

-- Patient-days with at least one non-voided encounter (any patient; reports join art_status).
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.patient_visits AS
  SELECT site_id, patient_id, encounter_datetime::date AS visit_date, count(*)::bigint AS encounters
  FROM cdr.encounter
  WHERE voided = 0 AND patient_id IS NOT NULL AND encounter_datetime IS NOT NULL
  GROUP BY 1, 2, 3;
CREATE UNIQUE INDEX IF NOT EXISTS patient_visits_key ON ids.patient_visits (site_id, patient_id, visit_date);
CREATE INDEX IF NOT EXISTS patient_visits_day ON ids.patient_visits (site_id, visit_date);

-- Appointments: non-voided obs 5096, when recorded and the date given.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.appointments AS
  SELECT site_id, obs_id, person_id AS patient_id, obs_datetime AS recorded_at,
         value_datetime::date AS appointment_date
  FROM cdr.obs
  WHERE concept_id = 5096 AND voided = 0 AND person_id IS NOT NULL
    AND obs_datetime IS NOT NULL AND value_datetime IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS appointments_key ON ids.appointments (site_id, obs_id);
CREATE INDEX IF NOT EXISTS appointments_patient ON ids.appointments (site_id, patient_id, recorded_at);

-- Visits per day per site: distinct patient-days with non-voided encounters of counted
-- (non-voided) patients.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.visits_daily AS
  SELECT v.site_id, v.visit_date, count(*)::bigint AS visits
  FROM ids.patient_visits v
  JOIN ids.art_status p ON p.site_id = v.site_id AND p.patient_id = v.patient_id
  GROUP BY 1, 2;
CREATE UNIQUE INDEX IF NOT EXISTS visits_daily_key ON ids.visits_daily (site_id, visit_date);

-- Age group at a date: whole years (TIMESTAMPDIFF(YEAR, ...)), 'Unknown' without birthdate.
CREATE OR REPLACE FUNCTION ids.age_group(birthdate date, on_date date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE
    WHEN birthdate IS NULL THEN 'Unknown'
    WHEN a < 1 THEN '<1' WHEN a < 5 THEN '1-4' WHEN a < 10 THEN '5-9'
    WHEN a < 50 THEN (a / 5 * 5)::text || '-' || (a / 5 * 5 + 4)::text
    ELSE '50+' END
  FROM (SELECT date_part('year', age(on_date, birthdate))::int AS a) y
$$;

-- The ART outcome of every counted patient on end_date, precedence as the rules give it:
-- died (any non-voided state 3 or 127 started by then), else the latest HIV-program state by
-- then (start_date, then date_created, then id) when it is transferred out (2) or treatment
-- stopped (6), else Pre-ART (latest state 1) or Unknown without an ARV dispensation by then,
-- else Defaulted when end_date - expiry >= default_days, else On antiretrovirals.
CREATE OR REPLACE FUNCTION ids.outcomes(end_date date, default_days int, site integer)
RETURNS TABLE (site_id integer, patient_id integer, gender text, age_group text, outcome text,
               last_dispensation_date date, expiry_date date, defaulted_on date)
LANGUAGE sql STABLE AS $$
  WITH last AS (
    SELECT a.site_id, a.patient_id, max(a.dispensation_date) AS day
    FROM ids.arv_dispensations a
    WHERE a.dispensation_date <= outcomes.end_date AND (outcomes.site IS NULL OR a.site_id = outcomes.site)
    GROUP BY 1, 2
  ), expiry AS (
    SELECT a.site_id, a.patient_id, l.day, min(a.expiry_date) AS expiry_date
    FROM ids.arv_dispensations a
    JOIN last l ON l.site_id = a.site_id AND l.patient_id = a.patient_id AND l.day = a.dispensation_date
    GROUP BY 1, 2, 3
  ), died AS (
    SELECT DISTINCT s.site_id, s.patient_id FROM ids.program_states s
    WHERE s.state IN (3, 127) AND s.start_date <= outcomes.end_date
      AND (outcomes.site IS NULL OR s.site_id = outcomes.site)
  ), latest AS (
    SELECT DISTINCT ON (s.site_id, s.patient_id) s.site_id, s.patient_id, s.state
    FROM ids.program_states s
    WHERE s.program_id = 1 AND s.start_date <= outcomes.end_date
      AND (outcomes.site IS NULL OR s.site_id = outcomes.site)
    ORDER BY s.site_id, s.patient_id, s.start_date DESC, s.date_created DESC, s.patient_state_id DESC
  )
  SELECT p.site_id, p.patient_id, p.gender, ids.age_group(p.birthdate, outcomes.end_date),
         CASE
           WHEN d.patient_id IS NOT NULL THEN 'Patient died'
           WHEN l.state = 2 THEN 'Patient transferred out'
           WHEN l.state = 6 THEN 'Treatment stopped'
           WHEN x.day IS NULL THEN CASE WHEN l.state = 1 THEN 'Pre-ART (continue)' ELSE 'Unknown' END
           WHEN outcomes.end_date - x.expiry_date >= outcomes.default_days THEN 'Defaulted'
           ELSE 'On antiretrovirals'
         END,
         x.day, x.expiry_date, x.expiry_date + outcomes.default_days
  FROM ids.art_status p
  LEFT JOIN expiry x ON x.site_id = p.site_id AND x.patient_id = p.patient_id
  LEFT JOIN died d ON d.site_id = p.site_id AND d.patient_id = p.patient_id
  LEFT JOIN latest l ON l.site_id = p.site_id AND l.patient_id = p.patient_id
  WHERE outcomes.site IS NULL OR p.site_id = outcomes.site
$$;
