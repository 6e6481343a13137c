-- IDS analytics over schema cdr: plain tables maintained per patient (design/incremental-ids.md).
--
-- Every row of ids.arv_dispensations, program_states, appointments, patient_visits and
-- art_status is a function of one (site, patient), the site's ARV drug set and the concepts
-- found by name (ids.definition_concepts); every row of visits_daily of
-- one (site, day). Nothing stored reads the clock: end dates are applied when a report reads.
-- Each table has ONE definition, ids.def_<table>(site, patients), used both by the incremental
-- recompute (patients = those a batch touched) and by rebuilds and verification (patients = all
-- of the site). The dirty set drives every base-table read as a parameterized index probe
-- (LATERAL ... OFFSET 0), so a recompute reads only its patients' rows whatever the statistics
-- say (checked with EXPLAIN by scripts/bench-ids.sh).
--
-- The receiver applies this file at start (idempotent: CREATE ... IF NOT EXISTS, CREATE OR
-- REPLACE); when its text changes, every site's patients are queued for recomputation, and the
-- tables keep their previous rows until each patient is recomputed. How reports read these
-- tables on an end date is ids-reports.sql: a change there queues nothing. The rules are
-- ../shared/reference/art-rules.md; where they leave a choice open, the choice is written next
-- to the code that makes it.
CREATE SCHEMA IF NOT EXISTS ids;

-- The materialized views these tables replace.
DO $$
DECLARE v text;
BEGIN
  FOREACH v IN ARRAY ARRAY['visits_daily', 'art_status', 'appointments', 'patient_visits',
                           'program_states', 'arv_dispensations'] LOOP
    IF EXISTS (SELECT 1 FROM pg_matviews WHERE schemaname = 'ids' AND matviewname = v) THEN
      EXECUTE format('DROP MATERIALIZED VIEW ids.%I CASCADE', v);
    END IF;
  END LOOP;
END $$;
DROP TABLE IF EXISTS ids.refresh_log;

-- What the recompute reads, by site and patient (site_id leads every key: see DESIGN.md "Scale").
-- A recompute reads a patient's rows of the touched days only: by patient, then date.
CREATE INDEX IF NOT EXISTS obs_person_day ON cdr.obs (site_id, person_id, concept_id, obs_datetime);
CREATE INDEX IF NOT EXISTS obs_encounter ON cdr.obs (site_id, encounter_id);
CREATE INDEX IF NOT EXISTS obs_order ON cdr.obs (site_id, order_id) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS orders_patient_day ON cdr.orders (site_id, patient_id, start_date);
CREATE INDEX IF NOT EXISTS encounter_patient_day ON cdr.encounter (site_id, patient_id, encounter_datetime);
CREATE INDEX IF NOT EXISTS patient_program_patient ON cdr.patient_program (site_id, patient_id);
CREATE INDEX IF NOT EXISTS patient_state_program ON cdr.patient_state (site_id, patient_program_id);
CREATE INDEX IF NOT EXISTS drug_order_drug ON cdr.drug_order (site_id, drug_inventory_id);
CREATE INDEX IF NOT EXISTS concept_name_lower ON cdr.concept_name (site_id, lower(name));
-- What the defaulter list reads of each defaulter: names, contacts, address, ARV number.
CREATE INDEX IF NOT EXISTS person_name_person ON cdr.person_name (site_id, person_id);
CREATE INDEX IF NOT EXISTS person_attribute_person ON cdr.person_attribute (site_id, person_id);
CREATE INDEX IF NOT EXISTS person_address_person ON cdr.person_address (site_id, person_id);
CREATE INDEX IF NOT EXISTS patient_identifier_patient ON cdr.patient_identifier (site_id, patient_id);

-- ------------------------------------------------------------------------------- the tables

-- ARV dispensations, one row per patient, drug and day, with the day the pills run out.
CREATE TABLE IF NOT EXISTS ids.arv_dispensations (
  site_id integer NOT NULL, patient_id integer NOT NULL, drug_id integer NOT NULL,
  dispensation_date date NOT NULL, quantity bigint NOT NULL, daily_dose double precision NOT NULL,
  pill_count double precision NOT NULL, expiry_date date NOT NULL,
  PRIMARY KEY (site_id, patient_id, dispensation_date, drug_id));

-- Program states of non-voided enrolments, for outcomes on any date.
CREATE TABLE IF NOT EXISTS ids.program_states (
  site_id integer NOT NULL, patient_state_id integer NOT NULL, patient_id integer NOT NULL,
  program_id integer, state integer, start_date date NOT NULL, end_date date,
  date_created timestamp,
  PRIMARY KEY (site_id, patient_state_id));
CREATE INDEX IF NOT EXISTS program_states_patient ON ids.program_states (site_id, patient_id, start_date);

-- Appointments: non-voided obs 5096 of APPOINTMENT encounters of the HIV program, when
-- recorded and the date given.
CREATE TABLE IF NOT EXISTS ids.appointments (
  site_id integer NOT NULL, obs_id integer NOT NULL, patient_id integer NOT NULL,
  recorded_at timestamp NOT NULL, appointment_date date NOT NULL,
  PRIMARY KEY (site_id, obs_id));
CREATE INDEX IF NOT EXISTS appointments_patient ON ids.appointments (site_id, patient_id, recorded_at);

-- Patient-days with at least one non-voided encounter (any patient; reports join art_status).
CREATE TABLE IF NOT EXISTS ids.patient_visits (
  site_id integer NOT NULL, patient_id integer NOT NULL, visit_date date NOT NULL,
  encounters bigint NOT NULL,
  PRIMARY KEY (site_id, patient_id, visit_date));
CREATE INDEX IF NOT EXISTS patient_visits_day ON ids.patient_visits (site_id, visit_date);

-- One row per non-voided patient whose person is not voided (the only patients any report
-- counts): demographics, enrolment (first ARV dispensation), earliest start (the earliest
-- "date antiretrovirals started" obs 2516 of a HIV CLINIC REGISTRATION encounter, else the
-- enrolment), transfer-in (a non-voided obs 3289 answered 'Transfer in'), the first death
-- state (died_on), and the timelines that give the other facts of the outcome on ANY date,
-- sorted so that width_bucket(date, days) (a binary search) is the index of the last entry on
-- or before it: per dispensation day its expiry (the legacy rule when every ARV of that day
-- sums to 6000 or more), legacy rule, drug set and MOH regimen (disp_*; the drug set as
-- text, '{22,969}', an array of arrays being rectangular in PostgreSQL; no regimen: NULL);
-- the outcome and its date under both definitions from each day they change (outcome_days
-- with moh_outcomes, moh_outcome_dates, pepfar_*: see def_art_status); the HIV-program states by
-- start date, date created and id (state_days, state_codes: the last one on or before a date
-- is the current state then); the visit days; the appointment dates by date and when set
-- (appt_dates, appt_set: the day each was recorded). Reports read a patient's history from
-- this row alone, whatever their end date: one scan, no probe per patient.
-- The cohort gates of art-rules.md section 1 are kept as the dates they open on, so that a
-- report applies them for its own end date (ids.cohort_enrolment, ids-reports.sql): a state 7
-- of the HIV program (on_art_state), the first reason for starting ART (obs 7563), the first
-- obs 3289 answered 'Drug refill' or 'External consultation' (refill_on), the first answered
-- 'New patient', the first HIV CLINIC REGISTRATION encounter, and the first dispensation on or
-- after that 'New patient' obs (what counts for enrolment of a refill client who registered).
-- months_at_start, start_tb and start_ks: the MOH cohort's age at initiation (whole months from
-- birth to the earliest ART start), TB and Kaposi's sarcoma at initiation
-- (ids.tb_at_start, ids.ks_at_start) when enrolled on the first dispensation: the usual path,
-- computed once here rather than per patient of every national cohort (at 100k patients the
-- three were about 30% of its time); the cohort computes them for another enrolment.
-- The clinical facts the MOH cohort, TX_PVLS and the regimens by weight read, as timelines
-- (sorted like the others: width_bucket(date, days) is the index of the last entry on or
-- before a date) and date-free facts:
-- - reinit_asked: the earliest obs 7937 'Ever registered at an ART clinic' answered Yes sits
--   in an HIV CLINIC REGISTRATION encounter holding an obs 7751 'Date ART last taken' more
--   than 14 days before it; reason_field: the field of the answer of the earliest obs 7563
--   (the reason for starting; NULL: another answer or free text);
-- - crit_*: 'Who stages criteria present' answers that count (their cohort field), by date;
-- - preg_* and bf_*: every 'Is patient pregnant?' and 'Breast feeding?' answer, Yes or not;
-- - tb_*: obs 7459 (TB status), their field (NULL: an answer no field names), each that
--   differs from the one before it;
-- - adh_*: per day with an obs 6987 'Drug order adherence' tied to a non-voided ARV order,
--   the day's class (every number 95-105: adherent, one outside: not, none: unknown), each
--   day whose class differs from the day before;
-- - vl_*: VL orders (lab orders of a named specimen) by start, routine or targeted, and the
--   latest result's class (low, high, NULL: none);
-- - weight_*: numeric 'Weight (kg)' obs, each that differs from the one before it.
-- Answers are found by name (ids.cohort_answers), as the engine finds them.
CREATE TABLE IF NOT EXISTS ids.art_status (
  site_id integer NOT NULL, patient_id integer NOT NULL, gender text NOT NULL, birthdate date,
  date_enrolled date, earliest_start_date date, transfer_in boolean NOT NULL, died_on date,
  on_art_state boolean NOT NULL DEFAULT false, reason_on date, refill_on date, new_patient_on date,
  registered_at timestamp, enrolled_after_new date, art_start_obs date, disp_days date[],
  disp_expiry date[], disp_legacy boolean[], disp_drugs text[], state_days date[],
  state_codes integer[], visit_days date[], appt_dates date[], appt_set date[],
  outcome_days date[], moh_outcomes smallint[], moh_outcome_dates date[],
  pepfar_outcomes smallint[], pepfar_outcome_dates date[], disp_regimens text[],
  reinit_asked boolean, reason_field text, crit_days date[], crit_fields text[],
  preg_days date[], preg_yes boolean[], bf_days date[], bf_yes boolean[], tb_days date[],
  tb_fields text[], adh_days date[], adh_class text[], vl_days date[], vl_kind text[],
  vl_result text[], weight_days date[], weight_values double precision[],
  months_at_start integer, start_tb text, start_ks text,
  PRIMARY KEY (site_id, patient_id));
-- Columns added after the first release (CREATE TABLE IF NOT EXISTS leaves an older table as
-- it was): in the same order as above, which is the order ids.def_art_status returns them in.
ALTER TABLE ids.art_status ADD COLUMN IF NOT EXISTS on_art_state boolean NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS reason_on date, ADD COLUMN IF NOT EXISTS refill_on date,
  ADD COLUMN IF NOT EXISTS new_patient_on date, ADD COLUMN IF NOT EXISTS registered_at timestamp,
  ADD COLUMN IF NOT EXISTS enrolled_after_new date, ADD COLUMN IF NOT EXISTS art_start_obs date,
  ADD COLUMN IF NOT EXISTS disp_days date[], ADD COLUMN IF NOT EXISTS disp_expiry date[],
  ADD COLUMN IF NOT EXISTS disp_legacy boolean[], ADD COLUMN IF NOT EXISTS disp_drugs text[],
  ADD COLUMN IF NOT EXISTS state_days date[], ADD COLUMN IF NOT EXISTS state_codes integer[],
  ADD COLUMN IF NOT EXISTS visit_days date[], ADD COLUMN IF NOT EXISTS appt_dates date[],
  ADD COLUMN IF NOT EXISTS appt_set date[], ADD COLUMN IF NOT EXISTS outcome_days date[],
  ADD COLUMN IF NOT EXISTS moh_outcomes smallint[],
  ADD COLUMN IF NOT EXISTS moh_outcome_dates date[],
  ADD COLUMN IF NOT EXISTS pepfar_outcomes smallint[],
  ADD COLUMN IF NOT EXISTS pepfar_outcome_dates date[],
  ADD COLUMN IF NOT EXISTS disp_regimens text[],
  ADD COLUMN IF NOT EXISTS reinit_asked boolean,
  ADD COLUMN IF NOT EXISTS reason_field text,
  ADD COLUMN IF NOT EXISTS crit_days date[],
  ADD COLUMN IF NOT EXISTS crit_fields text[],
  ADD COLUMN IF NOT EXISTS preg_days date[],
  ADD COLUMN IF NOT EXISTS preg_yes boolean[],
  ADD COLUMN IF NOT EXISTS bf_days date[],
  ADD COLUMN IF NOT EXISTS bf_yes boolean[],
  ADD COLUMN IF NOT EXISTS tb_days date[],
  ADD COLUMN IF NOT EXISTS tb_fields text[],
  ADD COLUMN IF NOT EXISTS adh_days date[],
  ADD COLUMN IF NOT EXISTS adh_class text[],
  ADD COLUMN IF NOT EXISTS vl_days date[],
  ADD COLUMN IF NOT EXISTS vl_kind text[],
  ADD COLUMN IF NOT EXISTS vl_result text[],
  ADD COLUMN IF NOT EXISTS weight_days date[],
  ADD COLUMN IF NOT EXISTS weight_values double precision[],
  ADD COLUMN IF NOT EXISTS months_at_start integer,
  ADD COLUMN IF NOT EXISTS start_tb text,
  ADD COLUMN IF NOT EXISTS start_ks text;
-- Columns of earlier releases that the timelines replace (the last dispensation, its expiry,
-- legacy rule and drug set, the latest state and when it started, the latest of those dates).
ALTER TABLE ids.art_status DROP COLUMN IF EXISTS last_dispensation_date,
  DROP COLUMN IF EXISTS expiry_date, DROP COLUMN IF EXISTS latest_state,
  DROP COLUMN IF EXISTS latest_state_date, DROP COLUMN IF EXISTS events_through,
  DROP COLUMN IF EXISTS legacy_expiry, DROP COLUMN IF EXISTS regimen_drugs;
CREATE INDEX IF NOT EXISTS art_status_enrolled ON ids.art_status (site_id, date_enrolled);

-- ids.clinical of earlier releases: its columns are art_status's now (a report reads one row
-- per patient, no join).
DROP TABLE IF EXISTS ids.clinical;

-- Visits per day per site: distinct patient-days of counted patients.
CREATE TABLE IF NOT EXISTS ids.visits_daily (
  site_id integer NOT NULL, visit_date date NOT NULL, visits bigint NOT NULL,
  PRIMARY KEY (site_id, visit_date));

-- Per site: when a batch was last applied (reports' as_of), how many, since when changes wait
-- in the queue (NULL: none), and when a rebuild that has not finished yet started.
CREATE TABLE IF NOT EXISTS ids.site_state (
  site_id integer NOT NULL, applied_at timestamptz, batches bigint NOT NULL DEFAULT 0,
  queued_since timestamptz, rebuild_started timestamptz,
  PRIMARY KEY (site_id));

-- The overflow queue: patients whose derived rows wait for a worker (big changes: resyncs,
-- initial loads, an ARV drug set change, rebuilds). Written in the apply transaction.
CREATE TABLE IF NOT EXISTS ids.dirty_patient (
  site_id integer NOT NULL, patient_id integer NOT NULL, since timestamptz NOT NULL,
  PRIMARY KEY (site_id, patient_id));

-- The last check of each site against a full recomputation.
CREATE TABLE IF NOT EXISTS ids.verify_log (
  site_id integer NOT NULL, checked_at timestamptz NOT NULL, diff_rows bigint NOT NULL,
  took_ms bigint NOT NULL,
  PRIMARY KEY (site_id));

-- The text of this file that the tables were last computed with (its SHA-256), and of
-- ids-reports.sql that the report functions were made from.
CREATE TABLE IF NOT EXISTS ids.definitions (
  name text PRIMARY KEY, sha256 text NOT NULL, applied_at timestamptz NOT NULL);

-- -------------------------------------------------------------------------- the definitions
--
-- The dirty set of a recompute is `patients` with, in parallel, `days`: a patient with a day
-- needs only the rows of that day of the day-keyed tables (arv_dispensations, appointments,
-- patient_visits: each of their rows depends on one patient's rows of one day), a patient
-- with NULL needs all of them (ids.scope keeps one entry per patient and day, NULL winning).
-- days NULL as a whole: every patient whole (rebuilds, verification). program_states and
-- art_status are always recomputed whole for every patient of the set.

-- The site's ARV drugs: drug_id whose concept is in concept set 1085.
CREATE OR REPLACE FUNCTION ids.arv_drugs(site integer) RETURNS integer[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT d.drug_id ORDER BY d.drug_id), '{}')
  FROM cdr.drug d
  JOIN cdr.concept_set s ON s.site_id = d.site_id AND s.concept_id = d.concept_id
  WHERE d.site_id = (SELECT site) AND s.concept_set = 1085
$$;

-- The (patient, day) pairs of a dirty set: distinct, and a patient needed whole (NULL day)
-- appears once, with NULL.
CREATE OR REPLACE FUNCTION ids.scope(patients integer[], days date[])
RETURNS TABLE (patient_id integer, day date) LANGUAGE sql IMMUTABLE AS $$
  WITH x AS (SELECT * FROM unnest(patients, days) x(patient_id, day) WHERE x.patient_id IS NOT NULL)
  SELECT DISTINCT x.patient_id, x.day FROM x
  WHERE x.day IS NULL OR NOT EXISTS (SELECT 1 FROM x y WHERE y.patient_id = x.patient_id AND y.day IS NULL)
$$;

-- Concepts the engine finds by name (art-rules.md: ids differ between facilities' metadata):
-- the ids of the site's non-voided concept names among `names`, compared case-insensitively as
-- MySQL's collation does.
CREATE OR REPLACE FUNCTION ids.concepts_named(site integer, names text[]) RETURNS integer[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT c.concept_id ORDER BY c.concept_id), '{}')
  FROM cdr.concept_name c
  WHERE c.site_id = (SELECT site) AND lower(c.name) = ANY (ARRAY(SELECT lower(n) FROM unnest(names) n))
    AND coalesce(c.voided, 0) = 0 AND c.concept_id IS NOT NULL
$$;

-- The answers the cohort tells apart (moh-reports.md), by group, lower-case name and the field
-- they count in: a name absent from a site's metadata counts nothing; any other reason for
-- starting, or free text, is unknown_other_reason_outside_guidelines.
CREATE OR REPLACE VIEW ids.cohort_answers (grp, name, field) AS VALUES
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
  ('tb', 'confirmed tb not on treatment', 'tb_confirmed_not_on_treatment');

-- The concepts the clinical facts of ids.art_status are found by, per site.
CREATE OR REPLACE FUNCTION ids.clinical_concepts(site integer)
RETURNS TABLE (yes integer[], pregnant integer[], breastfeeding integer[], criteria integer[],
               weight integer[], specimens integer[], reason integer[], routine integer[])
LANGUAGE sql STABLE AS $$
  SELECT ids.concepts_named(site, '{Yes}'), ids.concepts_named(site, '{Is patient pregnant?}'),
         ids.concepts_named(site, '{Breast feeding?}'),
         ids.concepts_named(site, '{Who stages criteria present}'),
         ids.concepts_named(site, '{Weight (kg)}'),
         ids.concepts_named(site, '{Blood,DBS (Free drop to DBS card),DBS (Using capillary tube),Plasma}'),
         ids.concepts_named(site, '{Reason for test}'), ids.concepts_named(site, '{Routine}')
$$;

-- The named concepts the stored definitions depend on, as one text: when a batch changes it
-- (a concept_name row), every patient of the site is recomputed.
CREATE OR REPLACE FUNCTION ids.definition_concepts(site integer) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT concat_ws('|', ids.concepts_named(site, '{Drug refill,External consultation}')::text,
                   ids.concepts_named(site, '{New patient}')::text,
                   ids.concepts_named(site, '{Transfer in}')::text,
                   (SELECT row(c.*)::text FROM ids.clinical_concepts(site) c),
                   (SELECT array_agg(a.grp || ':' || a.concept_id || ':' || a.field
                                     ORDER BY a.grp, a.concept_id, a.field)::text
                    FROM (SELECT DISTINCT m.grp, cn.concept_id, m.field FROM ids.cohort_answers m
                          CROSS JOIN LATERAL (
                            SELECT cn.concept_id FROM cdr.concept_name cn
                            WHERE cn.site_id = (SELECT site) AND lower(cn.name) = m.name
                              AND coalesce(cn.voided, 0) = 0 OFFSET 0) cn) a))
$$;

-- A number written as text (obs.value_text of a pill count), else NULL.
CREATE OR REPLACE FUNCTION ids.text_number(t text) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN t ~ '^\s*[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)\s*$' THEN btrim(t)::double precision END
$$;

-- A dispensation: a non-voided drug order (order_type_id 1) with quantity > 0 of an ARV drug.
-- Several orders of one drug on one day add up, typos included (a drug whose sum is 6000 or
-- more is left out of the expiry by the readers, art-rules.md section 2, and decides it alone
-- by the legacy rule when every ARV of the day is such); their daily dose is the largest valid
-- one (1 when none is valid: null, 0, negative or NaN). Pills brought back that day: the SUM
-- OF THREE SOURCES as the engine adds them, one obs counting twice when it is in two (kept for
-- parity): obs 2540 tied to an order of the drug (value_numeric plus value_text when it is a
-- number), obs of the drug's own concept, obs 2540 whose value_drug is the drug. Each source is
-- summed once (the engine's join multiplies the second and third when both have several obs:
-- a bug, art-rules.md section 6). expiry = day + ROUND((quantity + pills) / daily_dose) days,
-- halves up (numeric round), at most 100 years out.
CREATE OR REPLACE FUNCTION ids.def_arv_dispensations(site integer, patients integer[],
                                                     days date[] DEFAULT NULL)
RETURNS TABLE (site_id integer, patient_id integer, drug_id integer, dispensation_date date,
               quantity bigint, daily_dose double precision, pill_count double precision,
               expiry_date date)
LANGUAGE sql STABLE AS $$
  WITH d AS (SELECT * FROM ids.scope(patients, days)),
  -- the site's ARV drugs with their concepts (the second pill source), read once
  arv AS MATERIALIZED (
    SELECT a.drug_id, (SELECT dr.concept_id FROM cdr.drug dr
                       WHERE dr.site_id = (SELECT site) AND dr.drug_id = a.drug_id) AS concept_id
    FROM unnest(ids.arv_drugs(site)) a(drug_id)),
  dispensed AS (
    SELECT o.patient_id, o.start_date::date AS day, x.drug_inventory_id AS drug_id,
           min(a.concept_id) AS concept_id, sum(x.quantity)::bigint AS quantity,
           coalesce(max(x.equivalent_daily_dose) FILTER (
             WHERE x.equivalent_daily_dose > 0 AND x.equivalent_daily_dose <> 'NaN'), 1) AS daily_dose
    FROM d
    CROSS JOIN LATERAL (
      SELECT o.patient_id, o.start_date, o.order_id FROM cdr.orders o
      WHERE o.site_id = (SELECT site) AND o.patient_id = d.patient_id
        AND o.start_date >= coalesce(d.day, '-infinity') AND o.start_date < coalesce(d.day + 1, 'infinity')
        AND o.voided = 0 AND o.order_type_id = 1
      OFFSET 0) o
    CROSS JOIN LATERAL (
      SELECT x.drug_inventory_id, x.quantity, x.equivalent_daily_dose FROM cdr.drug_order x
      WHERE x.site_id = (SELECT site) AND x.order_id = o.order_id AND x.quantity > 0
      OFFSET 0) x
    JOIN arv a ON a.drug_id = x.drug_inventory_id
    GROUP BY 1, 2, 3
  )
  -- pills brought back that day for the drug, looked up per dispensation (index probes: the
  -- cost follows the dispensations, whatever the planner estimates): the day's obs 2540 read
  -- once for the first and third sources (an obs counts in both when it is in both), then
  -- the obs of the drug's own concept
  SELECT site, p.patient_id, p.drug_id, p.day, p.quantity, p.daily_dose, b.pills,
         p.day + least(greatest(round((p.quantity + b.pills)::numeric
                                      / p.daily_dose::numeric), -36525), 36525)::int
  FROM dispensed p
  CROSS JOIN LATERAL (
    SELECT (SELECT coalesce(sum(coalesce(o.value_numeric, 0)
                                + coalesce(ids.text_number(o.value_text), 0))
                              FILTER (WHERE o.order_id IS NOT NULL
                                        AND (SELECT x.drug_inventory_id FROM cdr.drug_order x
                                             WHERE x.site_id = (SELECT site) AND x.order_id = o.order_id)
                                            = p.drug_id), 0)
                 + coalesce(sum(coalesce(o.value_numeric, 0))
                              FILTER (WHERE o.value_drug = p.drug_id), 0)
            FROM cdr.obs o
            WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 2540
              AND o.obs_datetime >= p.day AND o.obs_datetime < p.day + 1
              AND o.voided = 0 AND o.value_numeric IS DISTINCT FROM 'NaN')
         + (SELECT coalesce(sum(coalesce(o.value_numeric, 0)), 0)
            FROM cdr.obs o
            WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id
              AND o.concept_id = p.concept_id
              AND o.obs_datetime >= p.day AND o.obs_datetime < p.day + 1
              AND o.voided = 0 AND o.value_numeric IS DISTINCT FROM 'NaN')
           AS pills
  ) b
$$;

CREATE OR REPLACE FUNCTION ids.def_program_states(site integer, patients integer[])
RETURNS TABLE (site_id integer, patient_state_id integer, patient_id integer, program_id integer,
               state integer, start_date date, end_date date, date_created timestamp)
LANGUAGE sql STABLE AS $$
  WITH d AS (SELECT DISTINCT unnest(patients) AS patient_id)
  SELECT site, s.patient_state_id, p.patient_id, p.program_id, s.state, s.start_date, s.end_date,
         s.date_created
  FROM d
  CROSS JOIN LATERAL (
    SELECT p.patient_id, p.program_id, p.patient_program_id FROM cdr.patient_program p
    WHERE p.site_id = (SELECT site) AND p.patient_id = d.patient_id AND p.voided = 0 OFFSET 0) p
  CROSS JOIN LATERAL (
    SELECT s.* FROM cdr.patient_state s
    WHERE s.site_id = (SELECT site) AND s.patient_program_id = p.patient_program_id
      AND s.voided = 0 AND s.start_date IS NOT NULL OFFSET 0) s
$$;

CREATE OR REPLACE FUNCTION ids.def_appointments(site integer, patients integer[],
                                                days date[] DEFAULT NULL)
RETURNS TABLE (site_id integer, obs_id integer, patient_id integer, recorded_at timestamp,
               appointment_date date)
LANGUAGE sql STABLE AS $$
  WITH d AS (SELECT * FROM ids.scope(patients, days))
  SELECT site, o.obs_id, o.person_id, o.obs_datetime, o.value_datetime::date
  FROM d
  CROSS JOIN LATERAL (
    SELECT o.* FROM cdr.obs o
    WHERE o.site_id = (SELECT site) AND o.person_id = d.patient_id AND o.concept_id = 5096
      AND o.obs_datetime >= coalesce(d.day, '-infinity') AND o.obs_datetime < coalesce(d.day + 1, 'infinity')
      AND o.voided = 0 AND o.value_datetime IS NOT NULL
      -- in an APPOINTMENT encounter (type 7) of the HIV program, as the engine reads them
      AND (SELECT en.encounter_type = 7 AND en.program_id = 1 FROM cdr.encounter en
           WHERE en.site_id = (SELECT site) AND en.encounter_id = o.encounter_id)
    OFFSET 0) o
$$;

CREATE OR REPLACE FUNCTION ids.def_patient_visits(site integer, patients integer[],
                                                  days date[] DEFAULT NULL)
RETURNS TABLE (site_id integer, patient_id integer, visit_date date, encounters bigint)
LANGUAGE sql STABLE AS $$
  WITH d AS (SELECT * FROM ids.scope(patients, days))
  SELECT site, e.patient_id, e.encounter_datetime::date, count(*)::bigint
  FROM d
  CROSS JOIN LATERAL (
    SELECT e.patient_id, e.encounter_datetime FROM cdr.encounter e
    WHERE e.site_id = (SELECT site) AND e.patient_id = d.patient_id
      AND e.encounter_datetime >= coalesce(d.day, '-infinity')
      AND e.encounter_datetime < coalesce(d.day + 1, 'infinity')
      AND e.voided = 0
    OFFSET 0) e
  GROUP BY 2, 3
$$;

-- Functions of earlier releases that read a patient's history by index probes (the
-- timelines of ids.art_status replace them).
DROP FUNCTION IF EXISTS ids.outcome_at(integer, integer, date, integer);
DROP FUNCTION IF EXISTS ids.history(integer, integer, date);
DROP FUNCTION IF EXISTS ids.expiry_on(integer, integer, date);

-- Days past the expiry after which a patient has defaulted: the definition's (60 MOH, 30
-- PEPFAR), or past 60 (61) when the legacy rule gave the expiry (art-rules.md section 6).
CREATE OR REPLACE FUNCTION ids.threshold(legacy boolean, default_days integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN legacy THEN 61 ELSE default_days END
$$;

-- The outcome precedence of the rules on a date: died (a state 3 or 127 started by then),
-- else the latest HIV-program state by then when it is transferred out (2) or treatment
-- stopped (6), else Pre-ART (latest state 1) or Unknown without an ARV dispensation by then,
-- else Defaulted when the date is `threshold` or more days past the expiry, else On ART.
CREATE OR REPLACE FUNCTION ids.outcome(died boolean, state integer, last_day date, expiry date,
                                       on_date date, threshold integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN died THEN 'Patient died'
    WHEN state = 2 THEN 'Patient transferred out'
    WHEN state = 6 THEN 'Treatment stopped'
    WHEN last_day IS NULL THEN CASE WHEN state = 1 THEN 'Pre-ART (continue)' ELSE 'Unknown' END
    WHEN on_date - expiry >= threshold THEN 'Defaulted'
    ELSE 'On antiretrovirals'
  END
$$;

-- The date of an outcome (art-rules.md section 3): the death state's start, the transfer-out
-- or stop state's start, the defaulter date, for On ART the current state's start else the
-- last dispensation; none for Unknown and Pre-ART.
CREATE OR REPLACE FUNCTION ids.outcome_date(outcome text, died_on date, state_date date,
                                            last_day date, expiry date, threshold integer)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE outcome
    WHEN 'Patient died' THEN died_on
    WHEN 'Patient transferred out' THEN state_date
    WHEN 'Treatment stopped' THEN state_date
    WHEN 'Defaulted' THEN expiry + threshold
    WHEN 'On antiretrovirals' THEN coalesce(state_date, last_day)
  END
$$;

-- The MOH regimens (moh-reports.md "Regimen distribution"): each combination's exact drug
-- set, sorted. def_art_status names each dispensation day's drug set by it (no match: NULL,
-- which reports count as 'unknown').
CREATE OR REPLACE VIEW ids.regimens (name, drugs) AS VALUES
    ('0A', '{22,969}'::int[]), ('0P', '{733,968}'), ('0P', '{22,733}'), ('0P', '{968,969}'),
    ('0P', '{968,1044}'), ('0P', '{22,1044}'), ('2A', '{731}'), ('2A', '{39,731}'),
    ('2P', '{732}'), ('2P', '{732,736}'), ('2P', '{39,732}'), ('2P', '{731,736}'),
    ('4A', '{11,39}'), ('4A', '{39,1213}'), ('4PA', '{30,39}'), ('4PP', '{30,736}'),
    ('5A', '{735}'), ('5A', '{1217}'), ('6A', '{22,734}'), ('7A', '{734,932}'),
    ('8A', '{39,932}'), ('9A', '{73,969}'), ('9PA', '{74,969}'), ('9PP', '{74,1044}'),
    ('10A', '{73,734}'), ('11A', '{39,73}'), ('11PA', '{39,74}'), ('11PP', '{74,736}'),
    ('12A', '{976,977,982}'), ('12A', '{976,977,983}'), ('12A', '{976,977,982,984}'),
    ('12A', '{734,976,977,982}'), ('12PA', '{982,1214,1215}'), ('12PP', '{980,1214,1215}'),
    ('12PP', '{736,980,1214,1215}'), ('13A', '{983}'), ('13A', '{734,982}'), ('13A', '{982,983}'),
    ('14A', '{39,982}'), ('14A', '{982,984}'), ('14PA', '{736,982}'), ('14PP', '{736,980}'),
    ('15A', '{969,982}'), ('15PA', '{982,1044}'), ('15PP', '{980,1044}'), ('16A', '{954,969}'),
    ('16P', '{1043,1044}'), ('16P', '{954,1044}'), ('16P', '{733,954}'), ('17A', '{11,969}'),
    ('17A', '{969,1213}'), ('17PA', '{30,969}'), ('17PP', '{30,1044}');

-- Months between two dates as MySQL's TIMESTAMPDIFF(MONTH, a, b) counts them: whole months,
-- truncated toward zero.
CREATE OR REPLACE FUNCTION ids.months_between(a date, b date) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN b >= a
    THEN (date_part('year', age(b::timestamp, a::timestamp)) * 12
          + date_part('month', age(b::timestamp, a::timestamp)))::int
    ELSE -(date_part('year', age(a::timestamp, b::timestamp)) * 12
           + date_part('month', age(a::timestamp, b::timestamp)))::int END
$$;

-- TB at ART initiation as the MOH cohort counts it, from the 'Who stages criteria present'
-- answers that count (crit_days, crit_fields of art_status) dated by the enrolment day: a
-- current episode (pulmonary or extrapulmonary) over one within the last two years over none;
-- and Kaposi's sarcoma among them (NULL: not). (array_position finds a field without copying
-- a slice: the criteria dated by the enrolment day are the first width_bucket(enrolled,
-- days) entries.)
CREATE OR REPLACE FUNCTION ids.tb_at_start(days date[], fields text[], enrolled date)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN array_position(fields, 'current_episode_of_tb') <= width_bucket(enrolled, days)
    THEN 'current_episode_of_tb'
    WHEN array_position(fields, 'tb_within_the_last_two_years') <= width_bucket(enrolled, days)
    THEN 'tb_within_the_last_two_years'
    ELSE 'no_tb' END
$$;

CREATE OR REPLACE FUNCTION ids.ks_at_start(days date[], fields text[], enrolled date)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN array_position(fields, 'kaposis_sarcoma') <= width_bucket(enrolled, days)
              THEN 'kaposis_sarcoma' END
$$;

-- Outcomes as the outcome timelines keep them (a smallint each), and back.
CREATE OR REPLACE FUNCTION ids.outcome_code(outcome text) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE outcome
    WHEN 'Unknown' THEN 0 WHEN 'On antiretrovirals' THEN 1 WHEN 'Defaulted' THEN 2
    WHEN 'Patient died' THEN 3 WHEN 'Patient transferred out' THEN 4
    WHEN 'Treatment stopped' THEN 5 WHEN 'Pre-ART (continue)' THEN 6 END::smallint
$$;

CREATE OR REPLACE FUNCTION ids.outcome_name(code smallint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE code
    WHEN 1 THEN 'On antiretrovirals' WHEN 2 THEN 'Defaulted' WHEN 3 THEN 'Patient died'
    WHEN 4 THEN 'Patient transferred out' WHEN 5 THEN 'Treatment stopped'
    WHEN 6 THEN 'Pre-ART (continue)' ELSE 'Unknown' END
$$;

-- Reads the patients' rows of ids.arv_dispensations, program_states, appointments and
-- patient_visits, so the recompute writes those first.
CREATE OR REPLACE FUNCTION ids.def_art_status(site integer, patients integer[])
RETURNS TABLE (site_id integer, patient_id integer, gender text, birthdate date,
               date_enrolled date, earliest_start_date date, transfer_in boolean,
               died_on date, on_art_state boolean, reason_on date, refill_on date,
               new_patient_on date, registered_at timestamp, enrolled_after_new date,
               art_start_obs date, disp_days date[],
               disp_expiry date[], disp_legacy boolean[], disp_drugs text[],
               state_days date[], state_codes integer[], visit_days date[],
               appt_dates date[], appt_set date[], outcome_days date[],
               moh_outcomes smallint[], moh_outcome_dates date[],
               pepfar_outcomes smallint[], pepfar_outcome_dates date[],
               disp_regimens text[], reinit_asked boolean, reason_field text,
               crit_days date[], crit_fields text[], preg_days date[], preg_yes boolean[],
               bf_days date[], bf_yes boolean[], tb_days date[], tb_fields text[],
               adh_days date[], adh_class text[], vl_days date[], vl_kind text[],
               vl_result text[], weight_days date[], weight_values double precision[],
               months_at_start integer, start_tb text, start_ks text)
LANGUAGE sql STABLE AS $$
  -- Every fact is a per-patient lookup (LATERAL, index probes): the cost follows the
  -- patients, whatever the planner estimates.
  WITH d AS (SELECT DISTINCT unnest(patients) AS patient_id),
  named AS MATERIALIZED (
    SELECT ids.concepts_named(site, '{Drug refill,External consultation}') AS refill,
           ids.concepts_named(site, '{New patient}') AS new_patient,
           ids.concepts_named(site, '{Transfer in}') AS transfer_in),
  n AS MATERIALIZED (
    SELECT c.*, ids.arv_drugs(site) AS arv,
           ARRAY[7563, 7459, 7937] || c.criteria || c.pregnant || c.breastfeeding
             || c.weight AS watched
    FROM ids.clinical_concepts(site) c),
  -- (a probe of the site's names per answer: never a scan of the nation's concept names)
  answer AS MATERIALIZED (
    SELECT DISTINCT ON (m.grp, cn.concept_id) m.grp, cn.concept_id, m.field
    FROM ids.cohort_answers m
    CROSS JOIN LATERAL (
      SELECT cn.concept_id FROM cdr.concept_name cn
      WHERE cn.site_id = (SELECT site) AND lower(cn.name) = m.name AND coalesce(cn.voided, 0) = 0
        AND cn.concept_id IS NOT NULL OFFSET 0) cn
    ORDER BY m.grp, cn.concept_id, m.field)
  SELECT site, p.patient_id,
         CASE upper(left(pe.gender, 1)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'U' END,
         pe.birthdate, x.days[1], coalesce(s.started_on, x.days[1]),
         t.transfer_in, sd.died_on, sd.on_art_state, g.reason_on, g.refill_on, g.new_patient_on, g.registered_at,
         -- the first dispensation day on or after the 'New patient' obs
         x.days[width_bucket(g.new_patient_on - 1, x.days) + 1],
         s.started_on, x.days, x.expiry, x.legacy, x.drugs, sd.days, sd.codes, v.days, ap.dates, ap.set_on,
         oc.days, oc.moh, oc.moh_on, oc.pepfar, oc.pepfar_on, x.regimens,
         ri.asked, ob.reason_field, ob.crit_days, ob.crit_fields, ob.preg_days, ob.preg_yes,
         ob.bf_days, ob.bf_yes, ob.tb_days, ob.tb_fields, ad.days, ad.class, vl.days, vl.kind,
         vl.result, ob.weight_days, ob.weight_values,
         ids.months_between(pe.birthdate, coalesce(s.started_on, x.days[1])),
         CASE WHEN x.days[1] IS NOT NULL
              THEN ids.tb_at_start(ob.crit_days, ob.crit_fields, x.days[1]) END,
         CASE WHEN x.days[1] IS NOT NULL
              THEN ids.ks_at_start(ob.crit_days, ob.crit_fields, x.days[1]) END
  FROM d
  CROSS JOIN named
  CROSS JOIN n
  CROSS JOIN LATERAL (SELECT p.* FROM cdr.patient p
                      WHERE p.site_id = (SELECT site) AND p.patient_id = d.patient_id OFFSET 0) p
  CROSS JOIN LATERAL (SELECT pe.* FROM cdr.person pe
                      WHERE pe.site_id = (SELECT site) AND pe.person_id = p.patient_id OFFSET 0) pe
  -- the dispensation days, each with its expiry (art-rules.md section 2): the earliest over
  -- its ARV drugs whose quantity that day is under 6000; when every one of them is 6000 or
  -- more, the engine's legacy function decides: the earliest over all of them, minus 2 days
  -- (legacy: the patient defaults past 60 days, ids.threshold). The drug set that names the
  -- regimen is the drugs under 6000.
  CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(t.day ORDER BY t.day), '{}') AS days,
           coalesce(array_agg(t.expiry ORDER BY t.day), '{}') AS expiry,
           coalesce(array_agg(t.legacy ORDER BY t.day), '{}') AS legacy,
           coalesce(array_agg(t.drugs::text ORDER BY t.day), '{}') AS drugs,
           coalesce(array_agg((SELECT r.name FROM ids.regimens r WHERE r.drugs = t.drugs)
                              ORDER BY t.day), '{}') AS regimens
    FROM (SELECT a.dispensation_date AS day,
                 coalesce(min(a.expiry_date) FILTER (WHERE a.quantity < 6000),
                          min(a.expiry_date) - 2) AS expiry,
                 bool_and(a.quantity >= 6000) AS legacy,
                 array_agg(a.drug_id ORDER BY a.drug_id) FILTER (WHERE a.quantity < 6000) AS drugs
          FROM ids.arv_dispensations a WHERE a.site_id = site AND a.patient_id = p.patient_id
          GROUP BY a.dispensation_date) t
  ) x
  CROSS JOIN LATERAL (
    SELECT min(o.value_datetime::date) AS started_on
    FROM cdr.obs o
    WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 2516
      AND o.voided = 0 AND o.value_datetime IS NOT NULL
      AND (SELECT en.voided = 0 AND en.encounter_type = 9 FROM cdr.encounter en
           WHERE en.site_id = (SELECT site) AND en.encounter_id = o.encounter_id)
  ) s
  CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM cdr.obs o WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id
                     AND o.concept_id = 3289 AND o.value_coded = ANY (named.transfer_in)
                     AND o.voided = 0) AS transfer_in
  ) t
  CROSS JOIN LATERAL (
    SELECT (SELECT min(o.obs_datetime)::date FROM cdr.obs o
             WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 7563
               AND o.voided = 0) AS reason_on,
           (SELECT min(o.obs_datetime)::date FROM cdr.obs o
             WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 3289
               AND o.value_coded = ANY (named.refill) AND o.voided = 0) AS refill_on,
           (SELECT min(o.obs_datetime)::date FROM cdr.obs o
             WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 3289
               AND o.value_coded = ANY (named.new_patient) AND o.voided = 0) AS new_patient_on,
           (SELECT min(en.encounter_datetime) FROM cdr.encounter en
             WHERE en.site_id = (SELECT site) AND en.patient_id = p.patient_id AND en.encounter_type = 9
               AND en.voided = 0) AS registered_at
  ) g
  -- the states: the first death (any program), and the HIV program's in the order that makes
  -- the last one on or before a date the current one (the latest start, then the latest
  -- created, then the highest id; a state without date_created counts as the latest created,
  -- as ORDER BY ... DESC puts NULLs first)
  CROSS JOIN LATERAL (
    SELECT min(s.start_date) FILTER (WHERE s.state IN (3, 127)) AS died_on,
           coalesce(bool_or(s.program_id = 1 AND s.state = 7), false) AS on_art_state,
           coalesce(array_agg(s.start_date ORDER BY s.start_date, s.date_created, s.patient_state_id)
                      FILTER (WHERE s.program_id = 1), '{}') AS days,
           coalesce(array_agg(s.state ORDER BY s.start_date, s.date_created, s.patient_state_id)
                      FILTER (WHERE s.program_id = 1), '{}') AS codes
    FROM ids.program_states s WHERE s.site_id = (SELECT site) AND s.patient_id = p.patient_id
  ) sd
  CROSS JOIN LATERAL (
    SELECT ARRAY(SELECT v.visit_date FROM ids.patient_visits v
                 WHERE v.site_id = (SELECT site) AND v.patient_id = p.patient_id
                 ORDER BY v.visit_date) AS days
  ) v
  -- appointments by date, then when set: the last one on or before a date is the latest
  -- appointment date by then (ties: the latest set)
  CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(a.appointment_date
                              ORDER BY a.appointment_date, a.recorded_at, a.obs_id), '{}') AS dates,
           coalesce(array_agg(a.recorded_at::date
                              ORDER BY a.appointment_date, a.recorded_at, a.obs_id), '{}') AS set_on
    FROM ids.appointments a WHERE a.site_id = (SELECT site) AND a.patient_id = p.patient_id
  ) ap
  -- The outcome timelines (art-rules.md section 3), MOH (60 days) and PEPFAR (30): the days
  -- on which an outcome or its date can change (a death, a state, a dispensation, the day
  -- a dispensation's pills have been out for a threshold), each with the outcome and date
  -- the rules give on it (ids.outcome, ids.outcome_date) under both definitions, a day kept
  -- only when one of them differs from the day before. Nothing the rules read changes
  -- between two such days, so the last entry on or before any date is the answer on that
  -- date (none: Unknown, no date). A report reads one entry instead of evaluating the rules
  -- per patient. (OFFSET 0: each level's values are computed once per day, not once per
  -- reference.)
  CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(o.day ORDER BY o.day), '{}') AS days,
           coalesce(array_agg(o.moh ORDER BY o.day), '{}') AS moh,
           coalesce(array_agg(o.moh_on ORDER BY o.day), '{}') AS moh_on,
           coalesce(array_agg(o.pepfar ORDER BY o.day), '{}') AS pepfar,
           coalesce(array_agg(o.pepfar_on ORDER BY o.day), '{}') AS pepfar_on
    FROM (SELECT o.*, lag(ROW(o.moh, o.moh_on, o.pepfar, o.pepfar_on)) OVER (ORDER BY o.day)
                        AS before
          FROM (SELECT f.day, ids.outcome_code(f.moh) AS moh,
                       ids.outcome_date(f.moh, f.died_on, f.state_date, f.last_day, f.expiry,
                                        f.t60) AS moh_on,
                       ids.outcome_code(f.pepfar) AS pepfar,
                       ids.outcome_date(f.pepfar, f.died_on, f.state_date, f.last_day, f.expiry,
                                        f.t30) AS pepfar_on
                FROM (SELECT f.*,
                             ids.outcome(f.died_on IS NOT NULL, f.state, f.last_day, f.expiry,
                                         f.day, f.t60) AS moh,
                             ids.outcome(f.died_on IS NOT NULL, f.state, f.last_day, f.expiry,
                                         f.day, f.t30) AS pepfar
                      FROM (SELECT c.day, x.days[c.di] AS last_day, x.expiry[c.di] AS expiry,
                                   ids.threshold(coalesce(x.legacy[c.di], false), 60) AS t60,
                                   ids.threshold(coalesce(x.legacy[c.di], false), 30) AS t30,
                                   sd.codes[c.si] AS state, sd.days[c.si] AS state_date,
                                   CASE WHEN sd.died_on <= c.day THEN sd.died_on END AS died_on
                            FROM (SELECT c.day, width_bucket(c.day, x.days) AS di,
                                         width_bucket(c.day, sd.days) AS si
                                  FROM (SELECT DISTINCT c.day
                                        FROM unnest(ARRAY[sd.died_on] || x.days || sd.days
                                                    || ARRAY(SELECT e + ids.threshold(l, t)
                                                             FROM unnest(x.expiry, x.legacy) u(e, l),
                                                                  (VALUES (30), (60)) d(t))) c(day)
                                        WHERE c.day IS NOT NULL) c
                                  OFFSET 0) c
                            OFFSET 0) f
                      OFFSET 0) f) o) o
    WHERE o.before IS DISTINCT FROM ROW(o.moh, o.moh_on, o.pepfar, o.pepfar_on)
  ) oc
  -- The clinical facts. Every read is a probe by patient (LATERAL ... OFFSET 0): one for the
  -- patient's obs of the watched concepts, one for their VL orders (then two per order) and
  -- one per adherence obs for its order.
  CROSS JOIN LATERAL (
    SELECT (array_agg(o.field ORDER BY o.obs_datetime, o.obs_id)
              FILTER (WHERE o.concept_id = 7563))[1] AS reason_field,
           coalesce(array_agg(o.obs_datetime::date ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.grp = 'criteria' AND o.field IS NOT NULL), '{}') AS crit_days,
           coalesce(array_agg(o.field ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.grp = 'criteria' AND o.field IS NOT NULL), '{}') AS crit_fields,
           coalesce(array_agg(o.obs_datetime::date ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.pregnant)), '{}') AS preg_days,
           coalesce(array_agg(o.yes ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.pregnant)), '{}') AS preg_yes,
           coalesce(array_agg(o.obs_datetime::date ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.breastfeeding)), '{}') AS bf_days,
           coalesce(array_agg(o.yes ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.breastfeeding)), '{}') AS bf_yes,
           coalesce(array_agg(o.obs_datetime::date ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = 7459 AND NOT o.repeated), '{}') AS tb_days,
           coalesce(array_agg(o.field ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = 7459 AND NOT o.repeated), '{}') AS tb_fields,
           coalesce(array_agg(o.obs_datetime::date ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.weight) AND NOT o.repeated
                                AND o.value_numeric IS NOT NULL), '{}') AS weight_days,
           coalesce(array_agg(o.value_numeric ORDER BY o.obs_datetime, o.obs_id)
                      FILTER (WHERE o.concept_id = ANY (n.weight) AND NOT o.repeated
                                AND o.value_numeric IS NOT NULL), '{}') AS weight_values
    -- (TB statuses and weights are read as the last one on or before a date: one equal to
    -- the one before it changes no answer and is left out, `repeated`)
    FROM (SELECT o.*,
                 coalesce(o.field IS NOT DISTINCT FROM lag(o.field) OVER w
                          AND o.value_numeric IS NOT DISTINCT FROM lag(o.value_numeric) OVER w
                          AND row_number() OVER w > 1, false) AS repeated
          FROM (
    SELECT o.concept_id, o.obs_datetime, o.obs_id, o.value_numeric,
                 coalesce(o.value_coded = ANY (n.yes), false) AS yes, g.grp,
                 (SELECT a.field FROM answer a
                   WHERE a.grp = g.grp AND a.concept_id = o.value_coded) AS field
          FROM cdr.obs o
          CROSS JOIN LATERAL (
            SELECT CASE WHEN o.concept_id = 7563 THEN 'reason' WHEN o.concept_id = 7459 THEN 'tb'
                        WHEN o.concept_id = ANY (n.criteria) THEN 'criteria' END AS grp) g
          WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id
            AND o.concept_id = ANY (n.watched) AND o.voided = 0
            AND o.obs_datetime IS NOT NULL
          OFFSET 0) o
          WINDOW w AS (PARTITION BY o.concept_id = 7459, o.concept_id = ANY (n.weight)
                                    AND o.value_numeric IS NOT NULL
                       ORDER BY o.obs_datetime, o.obs_id)) o
  ) ob
  CROSS JOIN LATERAL (
    SELECT EXISTS (
      SELECT 1 FROM (
        SELECT o.encounter_id, o.obs_datetime FROM cdr.obs o
        WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 7937
          AND o.voided = 0 AND o.value_coded = ANY (n.yes)
        ORDER BY o.obs_datetime, o.obs_id LIMIT 1) e
      WHERE (SELECT en.encounter_type = 9 AND en.voided = 0 FROM cdr.encounter en
             WHERE en.site_id = (SELECT site) AND en.encounter_id = e.encounter_id)
        AND EXISTS (SELECT 1 FROM cdr.obs l
                    WHERE l.site_id = (SELECT site) AND l.encounter_id = e.encounter_id
                      AND l.concept_id = 7751 AND l.voided = 0
                      AND l.value_datetime < e.obs_datetime - interval '14 days')) AS asked
  ) ri
  CROSS JOIN LATERAL (
    -- (read as the last day on or before a date: a day of the same class as the day before
    -- it changes no answer and is left out)
    SELECT coalesce(array_agg(a.day ORDER BY a.day) FILTER (WHERE NOT a.repeated), '{}') AS days,
           coalesce(array_agg(a.class ORDER BY a.day) FILTER (WHERE NOT a.repeated), '{}')
             AS class
    FROM (SELECT a.*, coalesce(a.class = lag(a.class) OVER (ORDER BY a.day), false) AS repeated
          FROM (
    SELECT o.obs_datetime::date AS day,
                 CASE WHEN count(o.value_numeric) = 0 THEN 'unknown_adherence'
                      WHEN bool_and(o.value_numeric BETWEEN 95 AND 105) THEN 'adherent_95_105'
                      ELSE 'not_adherent' END AS class
          FROM (SELECT o.obs_datetime, o.value_numeric, o.order_id FROM cdr.obs o
                WHERE o.site_id = (SELECT site) AND o.person_id = p.patient_id AND o.concept_id = 6987
                  AND o.voided = 0 AND o.obs_datetime IS NOT NULL OFFSET 0) o
          WHERE (SELECT od.voided = 0 AND od.order_type_id = 1 FROM cdr.orders od
                 WHERE od.site_id = (SELECT site) AND od.order_id = o.order_id)
            AND (SELECT x.drug_inventory_id FROM cdr.drug_order x
                 WHERE x.site_id = (SELECT site) AND x.order_id = o.order_id) = ANY (n.arv)
          GROUP BY 1) a) a
  ) ad
  CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(v.start_date::date ORDER BY v.start_date, v.order_id), '{}') AS days,
           coalesce(array_agg(v.kind ORDER BY v.start_date, v.order_id), '{}') AS kind,
           coalesce(array_agg(v.result ORDER BY v.start_date, v.order_id), '{}') AS result
    FROM (
      SELECT o.order_id, o.start_date,
             -- routine when the order's latest 'Reason for test' is missing or 'Routine'
             CASE WHEN coalesce((SELECT r.value_coded = ANY (n.routine) FROM cdr.obs r
                                  WHERE r.site_id = (SELECT site) AND r.order_id = o.order_id
                                    AND r.concept_id = ANY (n.reason) AND r.voided = 0
                                  ORDER BY r.obs_datetime DESC, r.obs_id DESC LIMIT 1), true)
                  THEN 'routine' ELSE 'targeted' END AS kind,
             -- its latest 'HIV viral load' (856): 'LDL' is low, a number under 1000 is low,
             -- else high; with the modifier '<' it is below the number, so low when that is
             -- 1000 or less (the engine counts '<1000' high, a bug: art-rules.md section 6)
             (SELECT CASE
                       WHEN upper(btrim(r.value_text)) = 'LDL' THEN 'low'
                       WHEN r.value_numeric IS NULL THEN NULL
                       WHEN r.value_modifier = '<' THEN
                         CASE WHEN r.value_numeric <= 1000 THEN 'low' ELSE 'high' END
                       WHEN r.value_numeric < 1000 THEN 'low' ELSE 'high' END
                FROM cdr.obs r
               WHERE r.site_id = (SELECT site) AND r.order_id = o.order_id AND r.concept_id = 856
                 AND r.voided = 0
               ORDER BY r.obs_datetime DESC, r.obs_id DESC LIMIT 1) AS result
      FROM (SELECT o.order_id, o.start_date FROM cdr.orders o
            WHERE o.site_id = (SELECT site) AND o.patient_id = p.patient_id AND o.order_type_id = 4
              AND o.voided = 0 AND o.concept_id = ANY (n.specimens)
              AND o.start_date IS NOT NULL OFFSET 0) o) v
  ) vl
  WHERE p.voided = 0 AND pe.voided = 0
$$;

-- Visits of counted patients on the given days of a site, from ids.patient_visits and
-- ids.art_status (so the recompute writes those first).
CREATE OR REPLACE FUNCTION ids.def_visits_daily(site integer, days date[])
RETURNS TABLE (site_id integer, visit_date date, visits bigint)
LANGUAGE sql STABLE AS $$
  SELECT site, v.visit_date, count(*)::bigint
  FROM ids.patient_visits v
  JOIN ids.art_status p ON p.site_id = site AND p.patient_id = v.patient_id
  WHERE v.site_id = site AND v.visit_date = ANY (days)
  GROUP BY 2
$$;

-- ---------------------------------------------------------------------- maintaining them

-- The visits of a dirty set's scope by day, and how many of them ids.visits_daily counts
-- (those of patients with an art_status row): a recompute adjusts visits_daily by the
-- change of these counts. Driven by the dirty set, one index probe per patient.
CREATE OR REPLACE FUNCTION ids.visit_counts(site integer, patients integer[], days date[])
RETURNS TABLE (visit_date date, n bigint) LANGUAGE sql STABLE AS $$
  SELECT v.visit_date, count(*) FILTER (WHERE c.counted)
  FROM ids.scope(patients, days) d
  CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM ids.art_status p
                      WHERE p.site_id = (SELECT site) AND p.patient_id = d.patient_id) AS counted) c
  CROSS JOIN LATERAL (SELECT v.visit_date FROM ids.patient_visits v
                      WHERE v.site_id = (SELECT site) AND v.patient_id = d.patient_id
                        AND (v.patient_id, v.visit_date) >= (d.patient_id, coalesce(d.day, '-infinity'))
                        AND (v.patient_id, v.visit_date) <= (d.patient_id, coalesce(d.day, 'infinity'))
                      OFFSET 0) v
  GROUP BY 1
$$;

-- Recomputes the derived rows of a dirty set of `site` (see "the definitions": `patients`,
-- `days`), in the order the definitions read each other, writing only the difference: rows of
-- the scope whose key the definition no longer gives are deleted, new and changed rows
-- upserted; an unchanged row is not touched. Then ids.visits_daily, adjusted by the change of
-- each day's count of the scope (a rebuild counts the site's days again when it ends:
-- ids.drain). The caller holds the site's lock (ids::SITE_LOCK) and commits this with the
-- data it derives from. Its work is by patient and day, through indexes: custom plans for each
-- dirty set, and no sequential scan even while the statistics of freshly filled tables say
-- they are empty (a recompute must never become a national scan). Every probe by key or by
-- patient of a table with more than one index starting with site_id (every cdr table: its
-- primary key and ours; the ids tables) gives the site as `(SELECT site)`: the planner then
-- takes 1/n_distinct of the rows for it, not the near-zero its statistics give a site they
-- have not seen yet, which made an index holding only the site look as good as the probe's
-- (a new site's first applies read all its obs once per patient: 18 s per batch, until the
-- receiver's keeper analysed the tables; ids.stale_tables). A probe of a patient's days in
-- ids.patient_visits bounds (patient_id, visit_date) as a row, which only the primary key can
-- serve: bounding visit_date alone, the planner took the smaller patient_visits_day index on
-- fresh statistics and read the whole site's day for each patient (a backlog's batch: about
-- 750 rows per probe, the day-count and clean-up statements 45% of the recompute).
CREATE OR REPLACE FUNCTION ids.recompute(site integer, patients integer[], days date[])
RETURNS void LANGUAGE plpgsql
SET random_page_cost = 1.1 SET plan_cache_mode = force_custom_plan SET enable_seqscan = off AS $$
DECLARE
  dirty integer[] := ARRAY(SELECT DISTINCT p FROM unnest(patients) p WHERE p IS NOT NULL);
  days_before date[];
  counts_before jsonb;
BEGIN
  SELECT coalesce(array_agg(c.visit_date), '{}'),
         coalesce(jsonb_object_agg(c.visit_date, c.n), '{}')
    INTO days_before, counts_before
    FROM ids.visit_counts(site, patients, days) c;

  WITH scope AS (SELECT * FROM ids.scope(patients, days)),
  n AS MATERIALIZED (SELECT * FROM ids.def_arv_dispensations(site, patients, days)),
  gone AS (
    DELETE FROM ids.arv_dispensations t WHERE t.site_id = site AND t.ctid = ANY (ARRAY(
      SELECT o.ctid FROM scope d
      CROSS JOIN LATERAL (SELECT o.ctid, o.* FROM ids.arv_dispensations o
                          WHERE o.site_id = site AND o.patient_id = d.patient_id
                            AND o.dispensation_date >= coalesce(d.day, '-infinity')
                            AND o.dispensation_date <= coalesce(d.day, 'infinity') OFFSET 0) o
      WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.patient_id = o.patient_id AND n.dispensation_date = o.dispensation_date AND n.drug_id = o.drug_id)))
  )
  INSERT INTO ids.arv_dispensations AS t SELECT * FROM n
    ON CONFLICT (site_id, patient_id, dispensation_date, drug_id) DO UPDATE SET
      quantity = EXCLUDED.quantity,
      daily_dose = EXCLUDED.daily_dose,
      pill_count = EXCLUDED.pill_count,
      expiry_date = EXCLUDED.expiry_date
      WHERE (t.quantity, t.daily_dose, t.pill_count, t.expiry_date)
        IS DISTINCT FROM (EXCLUDED.quantity, EXCLUDED.daily_dose, EXCLUDED.pill_count, EXCLUDED.expiry_date);
  WITH n AS MATERIALIZED (SELECT * FROM ids.def_program_states(site, dirty)),
  gone AS (
    DELETE FROM ids.program_states t WHERE t.site_id = site AND t.ctid = ANY (ARRAY(
      SELECT o.ctid FROM unnest(dirty) d(patient_id)
      CROSS JOIN LATERAL (SELECT o.ctid, o.* FROM ids.program_states o
                          WHERE o.site_id = (SELECT site) AND o.patient_id = d.patient_id OFFSET 0) o
      WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.patient_state_id = o.patient_state_id)))
  )
  INSERT INTO ids.program_states AS t SELECT * FROM n
    ON CONFLICT (site_id, patient_state_id) DO UPDATE SET
      patient_id = EXCLUDED.patient_id,
      program_id = EXCLUDED.program_id,
      state = EXCLUDED.state,
      start_date = EXCLUDED.start_date,
      end_date = EXCLUDED.end_date,
      date_created = EXCLUDED.date_created
      WHERE (t.patient_id, t.program_id, t.state, t.start_date, t.end_date, t.date_created)
        IS DISTINCT FROM (EXCLUDED.patient_id, EXCLUDED.program_id, EXCLUDED.state, EXCLUDED.start_date, EXCLUDED.end_date, EXCLUDED.date_created);
  WITH scope AS (SELECT * FROM ids.scope(patients, days)),
  n AS MATERIALIZED (SELECT * FROM ids.def_appointments(site, patients, days)),
  gone AS (
    DELETE FROM ids.appointments t WHERE t.site_id = site AND t.ctid = ANY (ARRAY(
      SELECT o.ctid FROM scope d
      CROSS JOIN LATERAL (SELECT o.ctid, o.* FROM ids.appointments o
                          WHERE o.site_id = (SELECT site) AND o.patient_id = d.patient_id
                            AND o.recorded_at >= coalesce(d.day, '-infinity')
                            AND o.recorded_at < coalesce(d.day + 1, 'infinity') OFFSET 0) o
      WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.obs_id = o.obs_id)))
  )
  INSERT INTO ids.appointments AS t SELECT * FROM n
    ON CONFLICT (site_id, obs_id) DO UPDATE SET
      patient_id = EXCLUDED.patient_id,
      recorded_at = EXCLUDED.recorded_at,
      appointment_date = EXCLUDED.appointment_date
      WHERE (t.patient_id, t.recorded_at, t.appointment_date)
        IS DISTINCT FROM (EXCLUDED.patient_id, EXCLUDED.recorded_at, EXCLUDED.appointment_date);
  WITH scope AS (SELECT * FROM ids.scope(patients, days)),
  n AS MATERIALIZED (SELECT * FROM ids.def_patient_visits(site, patients, days)),
  gone AS (
    DELETE FROM ids.patient_visits t WHERE t.site_id = site AND t.ctid = ANY (ARRAY(
      SELECT o.ctid FROM scope d
      CROSS JOIN LATERAL (SELECT o.ctid, o.* FROM ids.patient_visits o
                          WHERE o.site_id = (SELECT site) AND o.patient_id = d.patient_id
                            AND (o.patient_id, o.visit_date) >= (d.patient_id, coalesce(d.day, '-infinity'))
                            AND (o.patient_id, o.visit_date) <= (d.patient_id, coalesce(d.day, 'infinity'))
                          OFFSET 0) o
      WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.patient_id = o.patient_id AND n.visit_date = o.visit_date)))
  )
  INSERT INTO ids.patient_visits AS t SELECT * FROM n
    ON CONFLICT (site_id, patient_id, visit_date) DO UPDATE SET
      encounters = EXCLUDED.encounters
      WHERE (t.encounters)
        IS DISTINCT FROM (EXCLUDED.encounters);
  WITH n AS MATERIALIZED (SELECT * FROM ids.def_art_status(site, dirty)),
  gone AS (
    DELETE FROM ids.art_status t WHERE t.site_id = site AND t.ctid = ANY (ARRAY(
      SELECT o.ctid FROM unnest(dirty) d(patient_id)
      CROSS JOIN LATERAL (SELECT o.ctid, o.* FROM ids.art_status o
                          WHERE o.site_id = (SELECT site) AND o.patient_id = d.patient_id OFFSET 0) o
      WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.patient_id = o.patient_id)))
  )
  INSERT INTO ids.art_status AS t SELECT * FROM n
    ON CONFLICT (site_id, patient_id) DO UPDATE SET
      gender = EXCLUDED.gender,
      birthdate = EXCLUDED.birthdate,
      date_enrolled = EXCLUDED.date_enrolled,
      earliest_start_date = EXCLUDED.earliest_start_date,
      transfer_in = EXCLUDED.transfer_in,
      died_on = EXCLUDED.died_on,
      on_art_state = EXCLUDED.on_art_state,
      reason_on = EXCLUDED.reason_on,
      refill_on = EXCLUDED.refill_on,
      new_patient_on = EXCLUDED.new_patient_on,
      registered_at = EXCLUDED.registered_at,
      enrolled_after_new = EXCLUDED.enrolled_after_new,
      art_start_obs = EXCLUDED.art_start_obs,
      disp_days = EXCLUDED.disp_days,
      disp_expiry = EXCLUDED.disp_expiry,
      disp_legacy = EXCLUDED.disp_legacy,
      disp_drugs = EXCLUDED.disp_drugs,
      state_days = EXCLUDED.state_days,
      state_codes = EXCLUDED.state_codes,
      visit_days = EXCLUDED.visit_days,
      appt_dates = EXCLUDED.appt_dates,
      appt_set = EXCLUDED.appt_set,
      outcome_days = EXCLUDED.outcome_days,
      moh_outcomes = EXCLUDED.moh_outcomes,
      moh_outcome_dates = EXCLUDED.moh_outcome_dates,
      pepfar_outcomes = EXCLUDED.pepfar_outcomes,
      pepfar_outcome_dates = EXCLUDED.pepfar_outcome_dates,
      disp_regimens = EXCLUDED.disp_regimens,
      reinit_asked = EXCLUDED.reinit_asked,
      reason_field = EXCLUDED.reason_field,
      crit_days = EXCLUDED.crit_days,
      crit_fields = EXCLUDED.crit_fields,
      preg_days = EXCLUDED.preg_days,
      preg_yes = EXCLUDED.preg_yes,
      bf_days = EXCLUDED.bf_days,
      bf_yes = EXCLUDED.bf_yes,
      tb_days = EXCLUDED.tb_days,
      tb_fields = EXCLUDED.tb_fields,
      adh_days = EXCLUDED.adh_days,
      adh_class = EXCLUDED.adh_class,
      vl_days = EXCLUDED.vl_days,
      vl_kind = EXCLUDED.vl_kind,
      vl_result = EXCLUDED.vl_result,
      weight_days = EXCLUDED.weight_days,
      weight_values = EXCLUDED.weight_values,
      months_at_start = EXCLUDED.months_at_start,
      start_tb = EXCLUDED.start_tb,
      start_ks = EXCLUDED.start_ks
      WHERE (t.gender, t.birthdate, t.date_enrolled, t.earliest_start_date, t.transfer_in, t.died_on, t.on_art_state, t.reason_on, t.refill_on, t.new_patient_on, t.registered_at, t.enrolled_after_new, t.art_start_obs, t.disp_days, t.disp_expiry, t.disp_legacy, t.disp_drugs, t.state_days, t.state_codes, t.visit_days, t.appt_dates, t.appt_set, t.outcome_days, t.moh_outcomes, t.moh_outcome_dates, t.pepfar_outcomes, t.pepfar_outcome_dates, t.disp_regimens, t.reinit_asked, t.reason_field, t.crit_days, t.crit_fields, t.preg_days, t.preg_yes, t.bf_days, t.bf_yes, t.tb_days, t.tb_fields, t.adh_days, t.adh_class, t.vl_days, t.vl_kind, t.vl_result, t.weight_days, t.weight_values, t.months_at_start, t.start_tb, t.start_ks)
        IS DISTINCT FROM (EXCLUDED.gender, EXCLUDED.birthdate, EXCLUDED.date_enrolled, EXCLUDED.earliest_start_date, EXCLUDED.transfer_in, EXCLUDED.died_on, EXCLUDED.on_art_state, EXCLUDED.reason_on, EXCLUDED.refill_on, EXCLUDED.new_patient_on, EXCLUDED.registered_at, EXCLUDED.enrolled_after_new, EXCLUDED.art_start_obs, EXCLUDED.disp_days, EXCLUDED.disp_expiry, EXCLUDED.disp_legacy, EXCLUDED.disp_drugs, EXCLUDED.state_days, EXCLUDED.state_codes, EXCLUDED.visit_days, EXCLUDED.appt_dates, EXCLUDED.appt_set, EXCLUDED.outcome_days, EXCLUDED.moh_outcomes, EXCLUDED.moh_outcome_dates, EXCLUDED.pepfar_outcomes, EXCLUDED.pepfar_outcome_dates, EXCLUDED.disp_regimens, EXCLUDED.reinit_asked, EXCLUDED.reason_field, EXCLUDED.crit_days, EXCLUDED.crit_fields, EXCLUDED.preg_days, EXCLUDED.preg_yes, EXCLUDED.bf_days, EXCLUDED.bf_yes, EXCLUDED.tb_days, EXCLUDED.tb_fields, EXCLUDED.adh_days, EXCLUDED.adh_class, EXCLUDED.vl_days, EXCLUDED.vl_kind, EXCLUDED.vl_result, EXCLUDED.weight_days, EXCLUDED.weight_values, EXCLUDED.months_at_start, EXCLUDED.start_tb, EXCLUDED.start_ks);

  WITH after AS (SELECT * FROM ids.visit_counts(site, patients, days)), delta AS (
    SELECT coalesce(a.visit_date, b.key::date) AS visit_date,
           coalesce(a.n, 0) - coalesce(b.value::bigint, 0) AS n
    FROM after a FULL JOIN jsonb_each_text(counts_before) b ON b.key::date = a.visit_date
  )
  -- in day order: chunks of one site's queue run side by side (ids::Hold::Shared) and
  -- lock the day rows they both adjust in the same order, so they never deadlock
  INSERT INTO ids.visits_daily AS t (site_id, visit_date, visits)
    SELECT site, d.visit_date, d.n FROM delta d WHERE d.n <> 0 ORDER BY d.visit_date
    ON CONFLICT (site_id, visit_date) DO UPDATE SET visits = t.visits + EXCLUDED.visits;
  DELETE FROM ids.visits_daily t WHERE t.site_id = site AND t.visits <= 0
    AND t.visit_date = ANY (days_before);
END $$;

-- The rows a batch touched, as a dirty set (patient, day as text; NULL: the whole patient),
-- read as stored now: called before the batch's writes (old owners and days: a row can move
-- to another patient or day, or be deleted) and after them (new ones). A row without a date
-- marks its patient with the day 'infinity', which matches no row of a day-keyed table.
-- Encounters also reach the obs in them, and orders (and drug_order rows, keyed by order_id)
-- the obs tied to them (pills brought back). Every read is an index scan by the batch's keys
-- (`= ANY`, sequential and bitmap scans off): never a scan of the site, whatever the
-- statistics say of it (a site being loaded for the first time looks empty to the planner),
-- and about half the time of one probe per key.
CREATE OR REPLACE FUNCTION ids.touched(site integer, encounter_ids integer[], obs_ids integer[],
                                       order_ids integer[], patient_program_ids integer[],
                                       patient_state_ids integer[], person_ids integer[])
RETURNS TABLE (patient_id integer, day text) LANGUAGE sql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
  SELECT DISTINCT t.patient_id, t.day::text FROM (
    SELECT e.patient_id, coalesce(e.encounter_datetime::date, 'infinity') AS day
      FROM cdr.encounter e WHERE e.site_id = (SELECT site) AND e.encounter_id = ANY (encounter_ids)
    UNION ALL SELECT b.person_id, coalesce(b.obs_datetime::date, 'infinity')
      FROM cdr.obs b WHERE b.site_id = (SELECT site) AND b.encounter_id = ANY (encounter_ids)
    UNION ALL SELECT b.person_id, coalesce(b.obs_datetime::date, 'infinity')
      FROM cdr.obs b WHERE b.site_id = (SELECT site) AND b.obs_id = ANY (obs_ids)
    UNION ALL SELECT r.patient_id, coalesce(r.start_date::date, 'infinity')
      FROM cdr.orders r WHERE r.site_id = (SELECT site) AND r.order_id = ANY (order_ids)
    UNION ALL SELECT b.person_id, coalesce(b.obs_datetime::date, 'infinity')
      FROM cdr.obs b WHERE b.site_id = (SELECT site) AND b.order_id = ANY (order_ids)
    UNION ALL SELECT p.patient_id, NULL
      FROM cdr.patient_program p WHERE p.site_id = (SELECT site) AND p.patient_program_id = ANY (patient_program_ids)
    UNION ALL SELECT p.patient_id, NULL
      FROM cdr.patient_state s
      CROSS JOIN LATERAL (SELECT p.patient_id FROM cdr.patient_program p
        WHERE p.site_id = (SELECT site) AND p.patient_program_id = s.patient_program_id OFFSET 0) p
      WHERE s.site_id = (SELECT site) AND s.patient_state_id = ANY (patient_state_ids)
    UNION ALL SELECT unnest(person_ids), NULL
  ) t WHERE t.patient_id IS NOT NULL
$$;

-- Patients of a site with a dispensation-shaped order of one of `drugs` (for an ARV set change).
CREATE OR REPLACE FUNCTION ids.patients_with_drugs(site integer, drugs integer[])
RETURNS integer[] LANGUAGE sql STABLE AS $$
  SELECT coalesce(array_agg(DISTINCT o.patient_id), '{}')
  FROM cdr.drug_order x
  JOIN cdr.orders o ON o.site_id = x.site_id AND o.order_id = x.order_id
  WHERE x.site_id = (SELECT site) AND x.drug_inventory_id = ANY (drugs) AND o.patient_id IS NOT NULL
$$;

-- Every patient of a site any derived row can belong to: the patients of the base tables the
-- definitions read, and of the derived tables (so rows of patients gone from cdr are found).
CREATE OR REPLACE FUNCTION ids.site_patients(site integer) RETURNS integer[]
LANGUAGE sql STABLE AS $$
  SELECT coalesce(array_agg(x.patient_id ORDER BY x.patient_id), '{}') FROM (
    SELECT p.patient_id FROM cdr.patient p WHERE p.site_id = site
    UNION SELECT r.patient_id FROM cdr.orders r WHERE r.site_id = site AND r.patient_id IS NOT NULL
    UNION SELECT p.patient_id FROM cdr.patient_program p WHERE p.site_id = site AND p.patient_id IS NOT NULL
    UNION SELECT b.person_id FROM cdr.obs b WHERE b.site_id = site AND b.person_id IS NOT NULL
    UNION SELECT e.patient_id FROM cdr.encounter e WHERE e.site_id = site AND e.patient_id IS NOT NULL
    UNION SELECT t.patient_id FROM ids.art_status t WHERE t.site_id = site
    UNION SELECT t.patient_id FROM ids.arv_dispensations t WHERE t.site_id = site
    UNION SELECT t.patient_id FROM ids.program_states t WHERE t.site_id = site
    UNION SELECT t.patient_id FROM ids.appointments t WHERE t.site_id = site
    UNION SELECT t.patient_id FROM ids.patient_visits t WHERE t.site_id = site
  ) x
$$;

-- Queues `patients` of `site` for a worker (the overflow path). Atomic with the caller's data.
CREATE OR REPLACE FUNCTION ids.enqueue(site integer, patients integer[]) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO ids.dirty_patient (site_id, patient_id, since)
    SELECT site, p, now() FROM unnest(patients) p ON CONFLICT DO NOTHING;
  INSERT INTO ids.site_state AS s (site_id, queued_since)
    SELECT site, now() WHERE cardinality(patients) > 0
    ON CONFLICT (site_id) DO UPDATE SET queued_since = coalesce(s.queued_since, now());
$$;

-- A rebuild of a site: every patient of it queued, the rebuild marked started. Returns how
-- many patients were queued.
CREATE OR REPLACE FUNCTION ids.queue_site(site integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  patients integer[] := ids.site_patients(site);
BEGIN
  PERFORM ids.enqueue(site, patients);
  UPDATE ids.site_state s SET rebuild_started = now()
    WHERE s.site_id = site AND cardinality(patients) > 0;
  RETURN cardinality(patients);
END $$;

-- The tables of cdr and ids (partitions included) whose statistics do not know one of `sites`
-- although it has rows: their statistics were taken before the site's data came (a new
-- facility's initial load, a rebuild into empty tables), so the planner takes the site for
-- empty, and then every index that starts with site_id looks as good as the one a probe
-- needs: a probe by patient became a scan of the whole site (a 30k-patient rebuild ran 6x
-- slower). "Do not know": the planner expects fewer than a tenth of the rows the site has
-- (counted up to 1000), and at least 200 rows changed since the table's last ANALYZE, which
-- was a minute ago or more (a site too small to be sampled is not analysed again and again)
-- or when the table had fewer rows than have changed since (it is being filled: a rebuild
-- into tables analysed empty ran its first minute 20x slower). The caller ANALYZEs them,
-- outside any long transaction (ids::stats).
CREATE OR REPLACE FUNCTION ids.stale_tables(sites integer[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
  t text;
  s integer;
  plan json;
  estimate double precision;
  present bigint;
  stale text[] := '{}';
BEGIN
  FOR t IN
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'site_id' AND NOT a.attisdropped
    LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid
    WHERE n.nspname IN ('cdr', 'ids') AND c.relkind = 'r'
      AND c.relname NOT IN ('dirty_patient', 'site_state', 'verify_log')
      AND coalesce(st.n_mod_since_analyze, 0) >= 200
      AND (coalesce(greatest(st.last_analyze, st.last_autoanalyze), '-infinity')
           < now() - interval '1 minute'
           OR st.n_mod_since_analyze > greatest(c.reltuples, 0))
    ORDER BY 1
  LOOP
    FOREACH s IN ARRAY sites LOOP
      EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM %s WHERE site_id = %s', t, s) INTO plan;
      estimate := (plan->0->'Plan'->>'Plan Rows')::float8;
      -- (a site the planner expects 100 rows of or more cannot have ten times as many of
      -- the 1000 counted: the count is skipped, the common case of a receiver's check)
      CONTINUE WHEN estimate >= 100;
      EXECUTE format('SELECT count(*) FROM (SELECT 1 FROM %s WHERE site_id = %s LIMIT 1000) x',
                     t, s) INTO present;
      IF present >= 200 AND present > 10 * estimate THEN
        stale := stale || t;
        EXIT;
      END IF;
    END LOOP;
  END LOOP;
  RETURN stale;
END $$;

-- What a batch's apply transaction calls last, with the rows `ids.touched` found before and
-- after its writes: their patients are recomputed now when they are few (at most
-- inline_max), else queued whole; `queued` patients (an ARV set change) are queued. Records
-- that the site's data was applied. Returns 'inline', 'queued' or 'none'.
CREATE OR REPLACE FUNCTION ids.maintain(site integer, patients integer[], days text[],
                                        queued integer[], inline_max integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  path text := 'none';
  distinct_patients integer[] := ARRAY(SELECT DISTINCT p FROM unnest(patients) p);
BEGIN
  IF cardinality(queued) > 0 THEN
    PERFORM ids.enqueue(site, queued);
  END IF;
  IF cardinality(distinct_patients) > inline_max THEN
    PERFORM ids.enqueue(site, distinct_patients);
    path := 'queued';
  ELSIF cardinality(distinct_patients) > 0 THEN
    PERFORM ids.recompute(site, patients, days::date[]);
    path := 'inline';
  END IF;
  INSERT INTO ids.site_state AS s (site_id, applied_at, batches) VALUES (site, now(), 1)
    ON CONFLICT (site_id) DO UPDATE SET applied_at = now(), batches = s.batches + 1;
  RETURN path;
END $$;

-- A queue worker's step for one site: takes up to `chunk` of its oldest queued patients that
-- no other worker has taken (SKIP LOCKED), recomputes them, and keeps site_state.queued_since
-- the time of the oldest change still queued. The caller holds the site's lock, shared with
-- the site's other queue workers (their chunks hold other patients, and the day counts they
-- adjust add up) and exclusive of its applies. Returns how many were recomputed.
CREATE OR REPLACE FUNCTION ids.drain(site integer, chunk integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  taken integer[];
BEGIN
  WITH picked AS (
    SELECT q.ctid AS row FROM ids.dirty_patient q WHERE q.site_id = site
    ORDER BY q.since, q.patient_id LIMIT chunk FOR UPDATE SKIP LOCKED
  ), gone AS (
    DELETE FROM ids.dirty_patient q
    WHERE q.site_id = site AND q.ctid = ANY (ARRAY(SELECT picked.row FROM picked))
    RETURNING q.patient_id
  )
  SELECT coalesce(array_agg(gone.patient_id), '{}') INTO taken FROM gone;
  IF cardinality(taken) > 0 THEN
    PERFORM ids.recompute(site, taken, NULL);
  END IF;
  UPDATE ids.site_state s
    SET queued_since = (SELECT min(q.since) FROM ids.dirty_patient q WHERE q.site_id = site)
  WHERE s.site_id = site;
  RETURN cardinality(taken);
END $$;

-- The end of a site's rebuild, once its queue is empty (the caller holds the site's lock
-- exclusively: no chunk is under way): visits_daily counted again from scratch (so a rebuild
-- also repairs day counts that had drifted) and the rebuild marked done. Returns whether a
-- rebuild ended.
CREATE OR REPLACE FUNCTION ids.finish_rebuild(site integer) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM ids.site_state s
                 WHERE s.site_id = site AND s.rebuild_started IS NOT NULL)
     OR EXISTS (SELECT 1 FROM ids.dirty_patient q WHERE q.site_id = site) THEN
    RETURN false;
  END IF;
  DELETE FROM ids.visits_daily t WHERE t.site_id = site;
  INSERT INTO ids.visits_daily SELECT * FROM ids.def_visits_daily(site,
    ARRAY(SELECT DISTINCT v.visit_date FROM ids.patient_visits v WHERE v.site_id = site));
  UPDATE ids.site_state s SET rebuild_started = NULL, queued_since = NULL
    WHERE s.site_id = site;
  RETURN true;
END $$;

-- ---------------------------------------------------------------------------- verifying

-- The derived tables against a fresh computation of the same definitions over every patient
-- of the site, as a symmetric EXCEPT ALL: one row per differing row, `missing` (the
-- definition has it, the table not) or `extra`, with its key. Patients still queued (and the
-- days of their visits) are left out: their rows are known to wait. Run it in one REPEATABLE
-- READ snapshot.
CREATE OR REPLACE FUNCTION ids.verify_site(site integer)
RETURNS TABLE (table_name text, side text, key text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  queued integer[] := ARRAY(SELECT q.patient_id FROM ids.dirty_patient q WHERE q.site_id = site);
  patients integer[];
  days date[];
  spec record;
BEGIN
  patients := ARRAY(SELECT p FROM unnest(ids.site_patients(site)) p WHERE p <> ALL (queued));
  days := ARRAY(SELECT v.visit_date FROM ids.patient_visits v
                WHERE v.site_id = site AND v.patient_id = ANY (queued)
                UNION SELECT v.visit_date FROM ids.def_patient_visits(site, queued) v);
  FOR spec IN SELECT * FROM (VALUES
      ('arv_dispensations', 'patient_id, dispensation_date, drug_id'),
      ('program_states', 'patient_state_id'),
      ('appointments', 'obs_id'),
      ('patient_visits', 'patient_id, visit_date'),
      ('art_status', 'patient_id')) v(t, k) LOOP
    RETURN QUERY EXECUTE format(
      'WITH def AS (SELECT * FROM ids.%1$I($1, $2)),
            tbl AS (SELECT * FROM ids.%2$I t WHERE t.site_id = $1 AND t.patient_id <> ALL ($3))
       SELECT %3$L::text, ''missing'', row_to_json(x)::text FROM
         (SELECT %4$s FROM (SELECT * FROM def EXCEPT ALL SELECT * FROM tbl) m) x
       UNION ALL
       SELECT %3$L::text, ''extra'', row_to_json(x)::text FROM
         (SELECT %4$s FROM (SELECT * FROM tbl EXCEPT ALL SELECT * FROM def) e) x',
      'def_' || spec.t, spec.t, spec.t, spec.k)
    USING site, patients, queued;
  END LOOP;
  -- visits_daily: every day of the site, except the days of queued patients' visits
  RETURN QUERY
    WITH all_days AS (
      SELECT ARRAY(SELECT DISTINCT v.visit_date FROM ids.patient_visits v WHERE v.site_id = site
                   UNION SELECT t.visit_date FROM ids.visits_daily t WHERE t.site_id = site) AS d
    ), def AS (
      SELECT * FROM ids.def_visits_daily(site, (SELECT d FROM all_days)) v
      WHERE v.visit_date <> ALL (days)
    ), tbl AS (
      SELECT * FROM ids.visits_daily t WHERE t.site_id = site
        AND t.visit_date <> ALL (days)
    )
    SELECT 'visits_daily'::text, 'missing'::text, json_build_object('visit_date', m.visit_date)::text
      FROM (SELECT * FROM def EXCEPT ALL SELECT * FROM tbl) m
    UNION ALL
    SELECT 'visits_daily'::text, 'extra'::text, json_build_object('visit_date', e.visit_date)::text
      FROM (SELECT * FROM tbl EXCEPT ALL SELECT * FROM def) e;
END $$;

