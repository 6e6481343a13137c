//! The synthetic national CDR, generated inside PostgreSQL: `{P}` patients, `{V}` visits each
//! (4 encounters, 1–2 ARV orders, pills brought back, an appointment, a TB status and an
//! adherence per visit, 10% with an outcome, 15% transfer-ins, 3% drug-refill clients, 95% with
//! a reason for starting ART, a weight, a pregnancy answer for women, a VL order with a
//! result). Site 1 holds `{BIG}` patients (the big site a rebuild is timed
//! on); the others are spread over sites 2 .. `{S}` (about 1,250 patients each, as the
//! national network has).

/// `{P}`, `{V}`, `{BIG}`, `{S}` are replaced before it runs.
pub const FILL: &str = "
CREATE FUNCTION pg_temp.site_of(p integer) RETURNS integer LANGUAGE sql IMMUTABLE AS
  'SELECT CASE WHEN p <= {BIG} THEN 1 ELSE 2 + p % ({S} - 1) END';
INSERT INTO cdr.drug (site_id, lsn, drug_id, concept_id, name)
  SELECT s, 1, d.id, d.concept, d.name FROM generate_series(1, {S}) s,
  (VALUES (983, 2833, 'TDF/3TC/DTG'), (982, 9662, 'DTG'), (297, 916, 'Cotrimoxazole')) d(id, concept, name);
INSERT INTO cdr.concept_set (site_id, lsn, concept_set_id, concept_id, concept_set)
  SELECT s, 1, c.id, c.concept, 1085 FROM generate_series(1, {S}) s, (VALUES (1, 2833), (2, 9662)) c(id, concept);
INSERT INTO cdr.concept_name (site_id, lsn, concept_name_id, concept_id, name, voided)
  SELECT s, 1, c.id, c.concept, c.name, 0 FROM generate_series(1, {S}) s,
  (VALUES (1, 7571, 'New patient'), (2, 7572, 'Transfer in'), (3, 9685, 'Drug refill'),
          (4, 5497, 'CD4 count'), (5, 5089, 'Weight (kg)'), (6, 1065, 'Yes'),
          (7, 6131, 'Is patient pregnant?'), (8, 7456, 'TB NOT suspected'), (9, 1002, 'Blood'),
          (10, 2001, 'Routine'), (11, 9688, 'Reason for test')) c(id, concept, name);
INSERT INTO cdr.person (site_id, lsn, person_id, gender, birthdate, voided)
  SELECT pg_temp.site_of(p), 1, p, CASE WHEN p % 5 < 3 THEN 'F' ELSE 'M' END,
         date '1950-01-01' + (p * 37) % 25000, (p % 500 = 0)::int
  FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient (site_id, lsn, patient_id, voided)
  SELECT pg_temp.site_of(p), 1, p, 0 FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient_program (site_id, lsn, patient_program_id, patient_id, program_id, date_enrolled, voided)
  SELECT pg_temp.site_of(p), 1, p, p, 1, date '2023-01-01' + p % 90, 0 FROM generate_series(1, {P}) p;
INSERT INTO cdr.patient_state (site_id, lsn, patient_state_id, patient_program_id, state, start_date, date_created, voided)
  SELECT pg_temp.site_of(p), 1, p, p, 7, date '2023-01-01' + p % 90, timestamp '2023-01-01', 0
  FROM generate_series(1, {P}) p
  UNION ALL
  SELECT pg_temp.site_of(p), 1, {P} + p, p, (ARRAY[2, 3, 6])[1 + p % 3], date '2023-06-01' + p % 400,
         timestamp '2023-06-01', 0
  FROM generate_series(1, {P}) p WHERE p % 10 = 0;
INSERT INTO cdr.encounter (site_id, lsn, encounter_id, encounter_type, patient_id, encounter_datetime, program_id, voided)
  SELECT pg_temp.site_of(p), 1, ((p - 1) * {V} + k) * 4 + j, (ARRAY[51, 53, 25, 7])[j + 1], p,
         timestamp '2023-01-01 08:00' + ((p % 90) + k * 30) * interval '1 day' + j * interval '10 min', 1, 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 3) j;
INSERT INTO cdr.orders (site_id, lsn, order_id, order_type_id, patient_id, encounter_id, start_date, voided)
  SELECT pg_temp.site_of(p), 1, ((p - 1) * {V} + k) * 2 + d, 1, p, ((p - 1) * {V} + k) * 4 + 2,
         timestamp '2023-01-01 08:20' + ((p % 90) + k * 30) * interval '1 day', 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 1) d
  WHERE d = 0 OR p % 3 = 0;
INSERT INTO cdr.drug_order (site_id, lsn, order_id, drug_inventory_id, equivalent_daily_dose, quantity)
  SELECT o.site_id, 1, o.order_id, CASE o.order_id % 2 WHEN 0 THEN 983 ELSE 982 END, 1,
         30 * (1 + (o.order_id / 2) % 3)
  FROM cdr.orders o;
INSERT INTO cdr.obs (site_id, lsn, obs_id, person_id, concept_id, encounter_id, obs_datetime,
                     value_drug, value_numeric, value_datetime, value_coded, voided)
  SELECT pg_temp.site_of(p), 1, ((p - 1) * {V} + k) * 2 + j, p, CASE j WHEN 0 THEN 2540 ELSE 5096 END,
         ((p - 1) * {V} + k) * 4 + CASE j WHEN 0 THEN 1 ELSE 3 END,
         timestamp '2023-01-01 08:10' + ((p % 90) + k * 30) * interval '1 day',
         CASE j WHEN 0 THEN 983 END, CASE j WHEN 0 THEN (p + k) % 7 END,
         CASE j WHEN 1 THEN timestamp '2023-01-01' + ((p % 90) + k * 30 + 30) * interval '1 day' END,
         NULL, 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k, generate_series(0, 1) j
  UNION ALL
  SELECT pg_temp.site_of(p), 1, 2 * {P} * {V} + p, p, 3289, (p - 1) * {V} * 4,
         timestamp '2023-01-01 08:00' + (p % 90) * interval '1 day', NULL, NULL, NULL,
         CASE WHEN p % 100 < 15 THEN 7572 WHEN p % 100 < 18 THEN 9685 ELSE 7571 END, 0
  FROM generate_series(1, {P}) p
  UNION ALL
  -- a reason for starting ART (5% have none) and a weight, at the first visit
  SELECT pg_temp.site_of(p), 1, 2 * {P} * {V} + {P} * c.n + p, p, c.concept,
         (p - 1) * {V} * 4 + 1, timestamp '2023-01-01 08:05' + (p % 90) * interval '1 day',
         NULL, CASE c.concept WHEN 5089 THEN 3 + p % 70 END, NULL, NULL, 0
  FROM generate_series(1, {P}) p, (VALUES (1, 7563), (2, 5089)) c(n, concept)
  WHERE c.concept <> 7563 OR p % 20 <> 0;
-- the clinical facts: a TB status and an adherence (tied to the visit's ARV order) at every
-- visit (one visit in 8 not adherent), a pregnancy answer for women at the first, a routine
-- VL order with a result at the seventh visit
INSERT INTO cdr.orders (site_id, lsn, order_id, order_type_id, concept_id, patient_id, encounter_id, start_date, voided)
  SELECT pg_temp.site_of(p), 1, 3 * {P} * {V} + p, 4, 1002, p, ((p - 1) * {V} + k) * 4 + 2,
         timestamp '2023-01-01 08:25' + ((p % 90) + k * 30) * interval '1 day', 0
  FROM generate_series(1, {P}) p, (SELECT least(6, {V} - 1) AS k) k;
INSERT INTO cdr.obs (site_id, lsn, obs_id, person_id, concept_id, encounter_id, order_id, obs_datetime,
                     value_numeric, value_coded, voided)
  SELECT pg_temp.site_of(p), 1, 4 * {P} * {V} + (p - 1) * {V} + k + 1, p, 7459,
         ((p - 1) * {V} + k) * 4 + 1, NULL,
         timestamp '2023-01-01 08:12' + ((p % 90) + k * 30) * interval '1 day', NULL, 7456, 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k
  UNION ALL
  SELECT pg_temp.site_of(p), 1, 5 * {P} * {V} + (p - 1) * {V} + k + 1, p, 6987,
         ((p - 1) * {V} + k) * 4 + 2, ((p - 1) * {V} + k) * 2,
         timestamp '2023-01-01 08:22' + ((p % 90) + k * 30) * interval '1 day',
         CASE WHEN (p * 7 + k) % 8 = 0 THEN 90 ELSE 100 END, NULL, 0
  FROM generate_series(1, {P}) p, generate_series(0, {V} - 1) k
  UNION ALL
  SELECT pg_temp.site_of(p), 1, 6 * {P} * {V} + p, p, 856, ((p - 1) * {V} + k) * 4 + 2,
         3 * {P} * {V} + p, timestamp '2023-01-01 08:26' + ((p % 90) + k * 30) * interval '1 day',
         (p % 7) * 400, NULL, 0
  FROM generate_series(1, {P}) p, (SELECT least(6, {V} - 1) AS k) k
  UNION ALL
  SELECT pg_temp.site_of(p), 1, 6 * {P} * {V} + {P} + p, p, 6131, (p - 1) * {V} * 4 + 1, NULL,
         timestamp '2023-01-01 08:06' + (p % 90) * interval '1 day', NULL,
         CASE WHEN p % 7 = 0 THEN 1065 ELSE 1066 END, 0
  FROM generate_series(1, {P}) p WHERE p % 5 < 3;
INSERT INTO ids.site_state (site_id) SELECT generate_series(1, {S});
";

/// The secondary indexes of cdr, dropped during the fill (building them after is faster) and
/// made again by the receiver's migrations.
pub const CDR_INDEXES: [&str; 8] = [
    "cdr.obs_person_day",
    "cdr.obs_encounter",
    "cdr.obs_order",
    "cdr.orders_patient_day",
    "cdr.encounter_patient_day",
    "cdr.patient_program_patient",
    "cdr.patient_state_program",
    "cdr.drug_order_drug",
];

/// The fill for `patients` patients with `visits` visits each.
pub fn sql(patients: u64, visits: u64) -> (String, u64, u64) {
    let big = (patients * 3 / 10).min(30_000);
    let sites = ((patients - big) / 1_250).max(2) + 1;
    let sql = FILL
        .replace("{P}", &patients.to_string())
        .replace("{V}", &visits.to_string())
        .replace("{BIG}", &big.to_string())
        .replace("{S}", &sites.to_string());
    (sql, big, sites)
}
