-- IDS analytics over schema cdr: materialized views with unique indexes, refreshed
-- CONCURRENTLY by the receiver (debounced, one refresher at a time through an advisory lock).
-- Applied by the receiver at start; idempotent.
CREATE SCHEMA IF NOT EXISTS ids;

CREATE TABLE IF NOT EXISTS ids.refresh_log (
  view_name text PRIMARY KEY,
  refreshed_at timestamptz NOT NULL,
  duration_ms bigint NOT NULL
);

-- Visits per day per site: distinct patient-days with non-voided encounters.
CREATE MATERIALIZED VIEW IF NOT EXISTS ids.visits_daily AS
  SELECT e.site_id, e.encounter_datetime::date AS visit_date, count(DISTINCT e.patient_id)::bigint AS visits
  FROM cdr.encounter e
  WHERE e.voided = 0
  GROUP BY e.site_id, e.encounter_datetime::date;
CREATE UNIQUE INDEX IF NOT EXISTS visits_daily_key ON ids.visits_daily (site_id, visit_date);
