-- The OpenMRS 1.7 subset that the Malawi ART EMR uses (../shared/reference/openmrs-emr.md),
-- plus the metadata rows an ART clinic needs. Loaded by `emr-stream simulate --init-schema`
-- into an empty database. person_name is latin1 on purpose: older facility databases are.
SET NAMES utf8mb4;

CREATE TABLE location (
  location_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(255) NOT NULL DEFAULT '',
  description VARCHAR(255), parent_location INT, creator INT NOT NULL DEFAULT 1,
  date_created DATETIME NOT NULL, retired TINYINT(1) NOT NULL DEFAULT 0, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE global_property (
  property VARCHAR(255) NOT NULL PRIMARY KEY, property_value TEXT, description TEXT, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE users (
  user_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, system_id VARCHAR(50) NOT NULL DEFAULT '',
  username VARCHAR(50), password VARCHAR(128), salt VARCHAR(128), secret_question VARCHAR(255),
  secret_answer VARCHAR(255), person_id INT, authentication_token VARCHAR(255), token_expiry_time DATETIME,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, retired TINYINT(1) NOT NULL DEFAULT 0,
  uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE concept (
  concept_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, retired TINYINT(1) NOT NULL DEFAULT 0,
  datatype_id INT NOT NULL DEFAULT 0, class_id INT NOT NULL DEFAULT 0, is_set TINYINT(1) NOT NULL DEFAULT 0,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE concept_name (
  concept_name_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, concept_id INT, name VARCHAR(255) NOT NULL DEFAULT '',
  locale VARCHAR(50) NOT NULL DEFAULT 'en', concept_name_type VARCHAR(50), locale_preferred TINYINT(1) DEFAULT 0,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, voided TINYINT(1) NOT NULL DEFAULT 0,
  uuid CHAR(38) NOT NULL UNIQUE, KEY (concept_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE concept_set (
  concept_set_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, concept_id INT NOT NULL DEFAULT 0,
  concept_set INT NOT NULL DEFAULT 0, sort_weight DOUBLE, creator INT NOT NULL DEFAULT 1,
  date_created DATETIME NOT NULL, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE drug (
  drug_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, concept_id INT NOT NULL DEFAULT 0, name VARCHAR(255),
  combination TINYINT(1) NOT NULL DEFAULT 0, dosage_form INT, dose_strength DOUBLE, units VARCHAR(50),
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, retired TINYINT(1) NOT NULL DEFAULT 0,
  uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE encounter_type (
  encounter_type_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50) NOT NULL DEFAULT '',
  description TEXT, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL,
  retired TINYINT(1) NOT NULL DEFAULT 0, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE program (
  program_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, concept_id INT NOT NULL DEFAULT 0,
  name VARCHAR(50) NOT NULL, description TEXT, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL,
  retired TINYINT(1) NOT NULL DEFAULT 0, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE program_workflow (
  program_workflow_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, program_id INT NOT NULL DEFAULT 0,
  concept_id INT NOT NULL DEFAULT 0, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL,
  retired TINYINT(1) NOT NULL DEFAULT 0, uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE program_workflow_state (
  program_workflow_state_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, program_workflow_id INT NOT NULL DEFAULT 0,
  concept_id INT NOT NULL DEFAULT 0, initial TINYINT(1) NOT NULL DEFAULT 0, terminal TINYINT(1) NOT NULL DEFAULT 0,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, retired TINYINT(1) NOT NULL DEFAULT 0,
  uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE person (
  person_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, gender VARCHAR(50) DEFAULT '', birthdate DATE,
  birthdate_estimated TINYINT(1) NOT NULL DEFAULT 0, dead TINYINT(1) NOT NULL DEFAULT 0, death_date DATETIME,
  cause_of_death INT, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, changed_by INT,
  date_changed DATETIME, voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME,
  void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE person_name (
  person_name_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, preferred TINYINT(1) NOT NULL DEFAULT 0,
  person_id INT, prefix VARCHAR(50), given_name VARCHAR(50), middle_name VARCHAR(50),
  family_name_prefix VARCHAR(50), family_name VARCHAR(50), family_name2 VARCHAR(50),
  family_name_suffix VARCHAR(50), degree VARCHAR(50), creator INT NOT NULL DEFAULT 1,
  date_created DATETIME NOT NULL, changed_by INT, date_changed DATETIME, voided TINYINT(1) NOT NULL DEFAULT 0,
  voided_by INT, date_voided DATETIME, void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE, KEY (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=latin1;

CREATE TABLE person_address (
  person_address_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, person_id INT, preferred TINYINT(1) NOT NULL DEFAULT 0,
  address1 VARCHAR(50), address2 VARCHAR(50), city_village VARCHAR(50), state_province VARCHAR(50),
  county_district VARCHAR(50), neighborhood_cell VARCHAR(50), township_division VARCHAR(50),
  region VARCHAR(50), country VARCHAR(50), postal_code VARCHAR(50), latitude VARCHAR(50), longitude VARCHAR(50),
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, changed_by INT, date_changed DATETIME,
  voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME, void_reason VARCHAR(255),
  uuid CHAR(38) NOT NULL UNIQUE, KEY (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE person_attribute (
  person_attribute_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, person_id INT NOT NULL DEFAULT 0,
  value VARCHAR(255) NOT NULL DEFAULT '', person_attribute_type_id INT NOT NULL DEFAULT 0,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, changed_by INT, date_changed DATETIME,
  voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME, void_reason VARCHAR(255),
  uuid CHAR(38) NOT NULL UNIQUE, KEY (person_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE patient (
  patient_id INT NOT NULL PRIMARY KEY, tribe INT, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL,
  changed_by INT, date_changed DATETIME, voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT,
  date_voided DATETIME, void_reason VARCHAR(255)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE patient_identifier (
  patient_identifier_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, patient_id INT NOT NULL DEFAULT 0,
  identifier VARCHAR(50) NOT NULL DEFAULT '', identifier_type INT NOT NULL DEFAULT 0,
  preferred TINYINT(1) NOT NULL DEFAULT 0, location_id INT, creator INT NOT NULL DEFAULT 1,
  date_created DATETIME NOT NULL, voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME,
  void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE, KEY (patient_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE relationship (
  relationship_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, person_a INT NOT NULL, relationship INT NOT NULL DEFAULT 0,
  person_b INT NOT NULL, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL,
  voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME, void_reason VARCHAR(255),
  uuid CHAR(38) NOT NULL UNIQUE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE patient_program (
  patient_program_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, patient_id INT NOT NULL DEFAULT 0,
  program_id INT NOT NULL DEFAULT 0, date_enrolled DATETIME, date_completed DATETIME, location_id INT,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, changed_by INT, date_changed DATETIME,
  voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME, void_reason VARCHAR(255),
  uuid CHAR(38) NOT NULL UNIQUE, KEY (patient_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE patient_state (
  patient_state_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, patient_program_id INT NOT NULL DEFAULT 0,
  state INT NOT NULL DEFAULT 0, start_date DATE, end_date DATE, creator INT NOT NULL DEFAULT 1,
  date_created DATETIME NOT NULL, changed_by INT, date_changed DATETIME, voided TINYINT(1) NOT NULL DEFAULT 0,
  voided_by INT, date_voided DATETIME, void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE,
  KEY (patient_program_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE encounter (
  encounter_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, encounter_type INT NOT NULL, patient_id INT NOT NULL DEFAULT 0,
  provider_id INT NOT NULL DEFAULT 0, location_id INT, form_id INT, encounter_datetime DATETIME NOT NULL,
  program_id INT, creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, changed_by INT,
  date_changed DATETIME, voided TINYINT(1) NOT NULL DEFAULT 0, voided_by INT, date_voided DATETIME,
  void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE, KEY (patient_id), KEY (encounter_datetime)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE obs (
  obs_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, person_id INT NOT NULL, concept_id INT NOT NULL DEFAULT 0,
  encounter_id INT, order_id INT, obs_datetime DATETIME NOT NULL, location_id INT, obs_group_id INT,
  accession_number VARCHAR(255), value_group_id INT, value_boolean TINYINT(1), value_coded INT,
  value_coded_name_id INT, value_drug INT, value_datetime DATETIME, value_numeric DOUBLE,
  value_modifier VARCHAR(2), value_text TEXT, value_complex VARCHAR(255), comments VARCHAR(255),
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, voided TINYINT(1) NOT NULL DEFAULT 0,
  voided_by INT, date_voided DATETIME, void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE,
  KEY (encounter_id), KEY (person_id, concept_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE orders (
  order_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, order_type_id INT NOT NULL DEFAULT 0, concept_id INT NOT NULL DEFAULT 0,
  orderer INT DEFAULT 0, instructions TEXT, start_date DATETIME, auto_expire_date DATETIME,
  discontinued TINYINT(1) NOT NULL DEFAULT 0, discontinued_date DATETIME, discontinued_by INT,
  discontinued_reason INT, patient_id INT NOT NULL, encounter_id INT, accession_number VARCHAR(255), obs_id INT,
  creator INT NOT NULL DEFAULT 1, date_created DATETIME NOT NULL, voided TINYINT(1) NOT NULL DEFAULT 0,
  voided_by INT, date_voided DATETIME, void_reason VARCHAR(255), uuid CHAR(38) NOT NULL UNIQUE,
  KEY (encounter_id), KEY (patient_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE drug_order (
  order_id INT NOT NULL PRIMARY KEY, drug_inventory_id INT, dose DOUBLE, equivalent_daily_dose DOUBLE,
  units VARCHAR(255), frequency VARCHAR(255), prn TINYINT(1) NOT NULL DEFAULT 0,
  complex TINYINT(1) NOT NULL DEFAULT 0, quantity INT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- ---------------------------------------------------------------- metadata
INSERT INTO location (location_id, name, description, date_created, uuid) VALUES
  (101, 'Area 25 Health Centre', 'ART clinic', '2010-01-01 00:00:00', 'loc-101-0000-0000-0000-000000000000');
INSERT INTO global_property (property, property_value, description, uuid) VALUES
  ('current_health_center_id', '101', 'the facility''s location_id', 'gp-0001-0000-0000-0000-000000000000');
INSERT INTO users (user_id, system_id, username, password, salt, secret_question, secret_answer, person_id,
  authentication_token, token_expiry_time, date_created, uuid) VALUES
  (1, 'admin', 'admin', 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'a1b2c3d4',
   'first pet', 'simba', NULL, 'tok-admin-secret', '2030-01-01 00:00:00', '2010-01-01 00:00:00',
   'usr-0001-0000-0000-0000-000000000000'),
  (2, 'clerk', 'clerk', '5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8', 'f5e6d7c8',
   'home village', 'chilomoni', NULL, 'tok-clerk-secret', '2030-01-01 00:00:00', '2010-01-01 00:00:00',
   'usr-0002-0000-0000-0000-000000000000');

INSERT INTO encounter_type (encounter_type_id, name, date_created, uuid) VALUES
  (5, 'REGISTRATION', '2010-01-01', 'et-0005'), (6, 'VITALS', '2010-01-01', 'et-0006'),
  (7, 'APPOINTMENT', '2010-01-01', 'et-0007'), (9, 'HIV CLINIC REGISTRATION', '2010-01-01', 'et-0009'),
  (13, 'LAB', '2010-01-01', 'et-0013'), (25, 'TREATMENT', '2010-01-01', 'et-0025'),
  (51, 'HIV RECEPTION', '2010-01-01', 'et-0051'), (52, 'HIV STAGING', '2010-01-01', 'et-0052'),
  (53, 'HIV CLINIC CONSULTATION', '2010-01-01', 'et-0053'), (54, 'DISPENSING', '2010-01-01', 'et-0054'),
  (57, 'LAB RESULTS', '2010-01-01', 'et-0057'), (68, 'ART ADHERENCE', '2010-01-01', 'et-0068'),
  (69, 'LAB ORDERS', '2010-01-01', 'et-0069'), (70, 'EXIT FROM HIV CARE', '2010-01-01', 'et-0070');

INSERT INTO program (program_id, concept_id, name, date_created, uuid) VALUES
  (1, 1482, 'HIV PROGRAM', '2010-01-01', 'prog-0001');
INSERT INTO program_workflow (program_workflow_id, program_id, concept_id, date_created, uuid) VALUES
  (1, 1, 1484, '2010-01-01', 'pw-0001');
INSERT INTO program_workflow_state (program_workflow_state_id, program_workflow_id, concept_id, initial, terminal, date_created, uuid) VALUES
  (1, 1, 1577, 1, 0, '2010-01-01', 'pws-0001'), (2, 1, 1744, 0, 1, '2010-01-01', 'pws-0002'),
  (3, 1, 1742, 0, 1, '2010-01-01', 'pws-0003'), (6, 1, 1743, 0, 1, '2010-01-01', 'pws-0006'),
  (7, 1, 1577, 1, 0, '2010-01-01', 'pws-0007'), (127, 1, 1742, 0, 1, '2010-01-01', 'pws-0127');

-- concepts: vitals, adherence, appointment, ART start, labs, ARV set 1085 and its members
INSERT INTO concept (concept_id, datatype_id, class_id, is_set, date_created, uuid) VALUES
  (5089, 1, 1, 0, '2010-01-01', 'c-5089'), (5090, 1, 1, 0, '2010-01-01', 'c-5090'),
  (5085, 1, 1, 0, '2010-01-01', 'c-5085'), (5086, 1, 1, 0, '2010-01-01', 'c-5086'),
  (5088, 1, 1, 0, '2010-01-01', 'c-5088'), (5087, 1, 1, 0, '2010-01-01', 'c-5087'),
  (2540, 1, 1, 0, '2010-01-01', 'c-2540'), (6781, 1, 1, 0, '2010-01-01', 'c-6781'),
  (2973, 1, 1, 0, '2010-01-01', 'c-2973'), (6987, 1, 1, 0, '2010-01-01', 'c-6987'),
  (5096, 6, 1, 0, '2010-01-01', 'c-5096'), (2516, 6, 1, 0, '2010-01-01', 'c-2516'),
  (7563, 2, 1, 0, '2010-01-01', 'c-7563'), (3289, 2, 1, 0, '2010-01-01', 'c-3289'),
  (856, 1, 1, 0, '2010-01-01', 'c-0856'), (5497, 1, 1, 0, '2010-01-01', 'c-5497'),
  (7459, 2, 1, 0, '2010-01-01', 'c-7459'), (1085, 4, 3, 1, '2010-01-01', 'c-1085'),
  (2833, 4, 3, 0, '2010-01-01', 'c-2833'), (2985, 4, 3, 0, '2010-01-01', 'c-2985'),
  (9662, 4, 3, 0, '2010-01-01', 'c-9662'), (916, 4, 3, 0, '2010-01-01', 'c-0916'),
  (2834, 1, 1, 0, '2010-01-01', 'c-2834'), (7571, 4, 11, 0, '2010-01-01', 'c-7571'),
  (7572, 4, 11, 0, '2010-01-01', 'c-7572');
INSERT INTO concept_name (concept_id, name, concept_name_type, locale_preferred, date_created, uuid) VALUES
  (5089, 'Weight (kg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5089'),
  (5090, 'Height (cm)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5090'),
  (5085, 'Systolic blood pressure', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5085'),
  (5086, 'Diastolic blood pressure', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5086'),
  (5088, 'Temperature (c)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5088'),
  (5087, 'Pulse', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5087'),
  (2540, 'Amount of drug brought to clinic', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2540'),
  (6781, 'Amount of drug remaining at home', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-6781'),
  (2973, 'Number of doses missed', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2973'),
  (6987, 'Drug order adherence', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-6987'),
  (5096, 'Appointment date', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5096'),
  (2516, 'Date antiretrovirals started', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2516'),
  (7563, 'Reason for ART eligibility', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7563'),
  (3289, 'Type of patient', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-3289'),
  (856, 'HIV viral load', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-0856'),
  (5497, 'CD4 count', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-5497'),
  (7459, 'TB status', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7459'),
  (1085, 'Antiretroviral drugs', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-1085'),
  (2833, 'Tenofovir Lamivudine Dolutegravir', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2833'),
  (2985, 'Zidovudine Lamivudine', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2985'),
  (9662, 'Dolutegravir', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9662'),
  (916, 'Cotrimoxazole', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-0916'),
  (2834, 'Amount dispensed', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2834'),
  (7571, 'New patient', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7571'),
  (7572, 'Transfer in', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7572');
INSERT INTO concept_set (concept_id, concept_set, sort_weight, date_created, uuid) VALUES
  (2833, 1085, 1, '2010-01-01', 'cs-1'), (2985, 1085, 2, '2010-01-01', 'cs-2'), (9662, 1085, 3, '2010-01-01', 'cs-3');
-- The answers the cohort tells apart by name: reasons for starting (7563), WHO staging criteria
-- (TB and Kaposi's sarcoma at initiation) and TB status (7459).
INSERT INTO concept (concept_id, datatype_id, class_id, is_set, date_created, uuid) VALUES
  (9620, 4, 11, 0, '2010-01-01', 'c-9620'),
  (9621, 4, 11, 0, '2010-01-01', 'c-9621'),
  (9622, 4, 11, 0, '2010-01-01', 'c-9622'),
  (9623, 4, 11, 0, '2010-01-01', 'c-9623'),
  (9624, 4, 11, 0, '2010-01-01', 'c-9624'),
  (9625, 4, 11, 0, '2010-01-01', 'c-9625'),
  (9626, 4, 11, 0, '2010-01-01', 'c-9626'),
  (9627, 4, 11, 0, '2010-01-01', 'c-9627'),
  (9628, 4, 11, 0, '2010-01-01', 'c-9628'),
  (9629, 4, 11, 0, '2010-01-01', 'c-9629'),
  (9630, 4, 11, 0, '2010-01-01', 'c-9630'),
  (2743, 2, 1, 0, '2010-01-01', 'c-2743'),
  (9640, 4, 11, 0, '2010-01-01', 'c-9640'),
  (9641, 4, 11, 0, '2010-01-01', 'c-9641'),
  (9642, 4, 11, 0, '2010-01-01', 'c-9642'),
  (9643, 4, 11, 0, '2010-01-01', 'c-9643'),
  (9644, 4, 11, 0, '2010-01-01', 'c-9644'),
  (7454, 4, 11, 0, '2010-01-01', 'c-7454'),
  (7455, 4, 11, 0, '2010-01-01', 'c-7455'),
  (7456, 4, 11, 0, '2010-01-01', 'c-7456'),
  (7458, 4, 11, 0, '2010-01-01', 'c-7458');
INSERT INTO concept_name (concept_id, name, concept_name_type, locale_preferred, date_created, uuid) VALUES
  (9620, 'WHO stage III adult', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9620'),
  (9621, 'WHO stage III peds', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9621'),
  (9622, 'WHO stage IV adult', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9622'),
  (9623, 'WHO stage IV peds', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9623'),
  (9624, 'Patient pregnant', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9624'),
  (9625, 'Breastfeeding', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9625'),
  (9626, 'Asymptomatic', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9626'),
  (9627, 'CD4 count less than or equal to 500', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9627'),
  (9628, 'HIV PCR', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9628'),
  (9629, 'Presumed severe HIV', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9629'),
  (9630, 'Unknown', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9630'),
  (2743, 'Who stages criteria present', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-2743'),
  (9640, 'Pulmonary tuberculosis (current)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9640'),
  (9641, 'Extrapulmonary tuberculosis (EPTB)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9641'),
  (9642, 'Pulmonary tuberculosis within the last 2 years', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9642'),
  (9643, 'Kaposis sarcoma', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9643'),
  (9644, 'Oral candidiasis', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9644'),
  (7454, 'TB NOT suspected', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7454'),
  (7455, 'TB suspected', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7455'),
  (7456, 'Confirmed TB on treatment', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7456'),
  (7458, 'Confirmed TB NOT on treatment', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7458');
INSERT INTO drug (drug_id, concept_id, name, combination, dose_strength, units, date_created, uuid) VALUES
  (983, 2833, 'TDF/3TC/DTG (300/300/50mg)', 1, 1, 'tab', '2010-01-01', 'drug-983'),
  (731, 2985, 'AZT/3TC (300/150mg)', 1, 1, 'tab', '2010-01-01', 'drug-731'),
  (982, 9662, 'DTG (50mg)', 0, 50, 'mg', '2010-01-01', 'drug-982'),
  (297, 916, 'Cotrimoxazole (960mg)', 0, 960, 'mg', '2010-01-01', 'drug-297');

-- 'Type of patient' answers the engine finds by name, and the national ARV drug list
-- (moh-reports.md: the drug ids of the regimen table), each drug with its own concept in set 1085.
INSERT INTO concept (concept_id, datatype_id, class_id, is_set, date_created, uuid) VALUES
  (9684, 4, 11, 0, '2010-01-01', 'c-9684'), (9685, 4, 11, 0, '2010-01-01', 'c-9685'),
  (6131, 2, 1, 0, '2010-01-01', 'c-6131'), (7965, 2, 1, 0, '2010-01-01', 'c-7965'),
  (1065, 4, 11, 0, '2010-01-01', 'c-1065'), (1066, 4, 11, 0, '2010-01-01', 'c-1066'),
  (7937, 2, 1, 0, '2010-01-01', 'c-7937'), (7751, 6, 1, 0, '2010-01-01', 'c-7751'),
  (9600, 4, 9, 0, '2010-01-01', 'c-9600'), (9601, 4, 9, 0, '2010-01-01', 'c-9601'),
  (9602, 4, 9, 0, '2010-01-01', 'c-9602'), (9603, 4, 9, 0, '2010-01-01', 'c-9603'),
  (9604, 4, 9, 0, '2010-01-01', 'c-9604'), (9610, 2, 1, 0, '2010-01-01', 'c-9610'),
  (9611, 4, 11, 0, '2010-01-01', 'c-9611'), (9612, 4, 11, 0, '2010-01-01', 'c-9612'),
  (20011, 4, 3, 0, '2010-01-01', 'c-20011'),
  (20022, 4, 3, 0, '2010-01-01', 'c-20022'),
  (20030, 4, 3, 0, '2010-01-01', 'c-20030'),
  (20039, 4, 3, 0, '2010-01-01', 'c-20039'),
  (20073, 4, 3, 0, '2010-01-01', 'c-20073'),
  (20074, 4, 3, 0, '2010-01-01', 'c-20074'),
  (20732, 4, 3, 0, '2010-01-01', 'c-20732'),
  (20733, 4, 3, 0, '2010-01-01', 'c-20733'),
  (20734, 4, 3, 0, '2010-01-01', 'c-20734'),
  (20735, 4, 3, 0, '2010-01-01', 'c-20735'),
  (20736, 4, 3, 0, '2010-01-01', 'c-20736'),
  (20932, 4, 3, 0, '2010-01-01', 'c-20932'),
  (20954, 4, 3, 0, '2010-01-01', 'c-20954'),
  (20968, 4, 3, 0, '2010-01-01', 'c-20968'),
  (20969, 4, 3, 0, '2010-01-01', 'c-20969'),
  (20976, 4, 3, 0, '2010-01-01', 'c-20976'),
  (20977, 4, 3, 0, '2010-01-01', 'c-20977'),
  (20980, 4, 3, 0, '2010-01-01', 'c-20980'),
  (20984, 4, 3, 0, '2010-01-01', 'c-20984'),
  (21043, 4, 3, 0, '2010-01-01', 'c-21043'),
  (21044, 4, 3, 0, '2010-01-01', 'c-21044'),
  (21213, 4, 3, 0, '2010-01-01', 'c-21213'),
  (21214, 4, 3, 0, '2010-01-01', 'c-21214'),
  (21215, 4, 3, 0, '2010-01-01', 'c-21215'),
  (21217, 4, 3, 0, '2010-01-01', 'c-21217');
INSERT INTO concept_name (concept_id, name, concept_name_type, locale_preferred, date_created, uuid) VALUES
  (9684, 'External consultation', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9684'),
  (9685, 'Drug refill', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9685'),
  (6131, 'Is patient pregnant?', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-6131'),
  (7965, 'Breast feeding?', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7965'),
  (1065, 'Yes', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-1065'),
  (7937, 'Ever registered at an ART clinic', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7937'),
  (7751, 'Date ART last taken', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-7751'),
  (1066, 'No', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-1066'),
  (9600, 'Blood', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9600'),
  (9601, 'DBS (Free drop to DBS card)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9601'),
  (9602, 'DBS (Using capillary tube)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9602'),
  (9603, 'Plasma', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9603'),
  (9604, 'Sputum', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9604'),
  (9610, 'Reason for test', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9610'),
  (9611, 'Routine', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9611'),
  (9612, 'Targeted', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-9612'),
  (20011, 'EFV (600mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20011'),
  (20022, 'NVP (200mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20022'),
  (20030, 'EFV (200mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20030'),
  (20039, 'AZT/3TC (300/150mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20039'),
  (20073, 'LPV/r (200/50mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20073'),
  (20074, 'LPV/r (100/25mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20074'),
  (20732, 'AZT/3TC/NVP (60/30/50mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20732'),
  (20733, 'ABC/3TC (60/30mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20733'),
  (20734, 'TDF/3TC (300/300mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20734'),
  (20735, 'TDF/3TC/EFV (300/300/600mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20735'),
  (20736, 'AZT/3TC (60/30mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20736'),
  (20932, 'ATV/r (300/100mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20932'),
  (20954, 'RAL (400mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20954'),
  (20968, 'NVP (50mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20968'),
  (20969, 'ABC/3TC (600/300mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20969'),
  (20976, 'DRV (600mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20976'),
  (20977, 'r (100mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20977'),
  (20980, 'DTG (10mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20980'),
  (20984, 'AZT/3TC (300/300mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-20984'),
  (21043, 'RAL (25mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21043'),
  (21044, 'ABC/3TC (120/60mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21044'),
  (21213, 'EFV (400mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21213'),
  (21214, 'DRV (150mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21214'),
  (21215, 'r (50mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21215'),
  (21217, 'TDF/3TC/EFV (300/300/400mg)', 'FULLY_SPECIFIED', 1, '2010-01-01', 'cn-21217');
INSERT INTO concept_set (concept_id, concept_set, sort_weight, date_created, uuid) VALUES
  (20011, 1085, 4, '2010-01-01', 'cs-4'),
  (20022, 1085, 5, '2010-01-01', 'cs-5'),
  (20030, 1085, 6, '2010-01-01', 'cs-6'),
  (20039, 1085, 7, '2010-01-01', 'cs-7'),
  (20073, 1085, 8, '2010-01-01', 'cs-8'),
  (20074, 1085, 9, '2010-01-01', 'cs-9'),
  (20732, 1085, 10, '2010-01-01', 'cs-10'),
  (20733, 1085, 11, '2010-01-01', 'cs-11'),
  (20734, 1085, 12, '2010-01-01', 'cs-12'),
  (20735, 1085, 13, '2010-01-01', 'cs-13'),
  (20736, 1085, 14, '2010-01-01', 'cs-14'),
  (20932, 1085, 15, '2010-01-01', 'cs-15'),
  (20954, 1085, 16, '2010-01-01', 'cs-16'),
  (20968, 1085, 17, '2010-01-01', 'cs-17'),
  (20969, 1085, 18, '2010-01-01', 'cs-18'),
  (20976, 1085, 19, '2010-01-01', 'cs-19'),
  (20977, 1085, 20, '2010-01-01', 'cs-20'),
  (20980, 1085, 21, '2010-01-01', 'cs-21'),
  (20984, 1085, 22, '2010-01-01', 'cs-22'),
  (21043, 1085, 23, '2010-01-01', 'cs-23'),
  (21044, 1085, 24, '2010-01-01', 'cs-24'),
  (21213, 1085, 25, '2010-01-01', 'cs-25'),
  (21214, 1085, 26, '2010-01-01', 'cs-26'),
  (21215, 1085, 27, '2010-01-01', 'cs-27'),
  (21217, 1085, 28, '2010-01-01', 'cs-28');
INSERT INTO drug (drug_id, concept_id, name, combination, dose_strength, units, date_created, uuid) VALUES
  (11, 20011, 'EFV (600mg)', 0, 1, 'tab', '2010-01-01', 'drug-11'),
  (22, 20022, 'NVP (200mg)', 0, 1, 'tab', '2010-01-01', 'drug-22'),
  (30, 20030, 'EFV (200mg)', 0, 1, 'tab', '2010-01-01', 'drug-30'),
  (39, 20039, 'AZT/3TC (300/150mg)', 1, 1, 'tab', '2010-01-01', 'drug-39'),
  (73, 20073, 'LPV/r (200/50mg)', 1, 1, 'tab', '2010-01-01', 'drug-73'),
  (74, 20074, 'LPV/r (100/25mg)', 1, 1, 'tab', '2010-01-01', 'drug-74'),
  (732, 20732, 'AZT/3TC/NVP (60/30/50mg)', 1, 1, 'tab', '2010-01-01', 'drug-732'),
  (733, 20733, 'ABC/3TC (60/30mg)', 1, 1, 'tab', '2010-01-01', 'drug-733'),
  (734, 20734, 'TDF/3TC (300/300mg)', 1, 1, 'tab', '2010-01-01', 'drug-734'),
  (735, 20735, 'TDF/3TC/EFV (300/300/600mg)', 1, 1, 'tab', '2010-01-01', 'drug-735'),
  (736, 20736, 'AZT/3TC (60/30mg)', 1, 1, 'tab', '2010-01-01', 'drug-736'),
  (932, 20932, 'ATV/r (300/100mg)', 1, 1, 'tab', '2010-01-01', 'drug-932'),
  (954, 20954, 'RAL (400mg)', 0, 1, 'tab', '2010-01-01', 'drug-954'),
  (968, 20968, 'NVP (50mg)', 0, 1, 'tab', '2010-01-01', 'drug-968'),
  (969, 20969, 'ABC/3TC (600/300mg)', 1, 1, 'tab', '2010-01-01', 'drug-969'),
  (976, 20976, 'DRV (600mg)', 0, 1, 'tab', '2010-01-01', 'drug-976'),
  (977, 20977, 'r (100mg)', 0, 1, 'tab', '2010-01-01', 'drug-977'),
  (980, 20980, 'DTG (10mg)', 0, 1, 'tab', '2010-01-01', 'drug-980'),
  (984, 20984, 'AZT/3TC (300/300mg)', 1, 1, 'tab', '2010-01-01', 'drug-984'),
  (1043, 21043, 'RAL (25mg)', 0, 1, 'tab', '2010-01-01', 'drug-1043'),
  (1044, 21044, 'ABC/3TC (120/60mg)', 1, 1, 'tab', '2010-01-01', 'drug-1044'),
  (1213, 21213, 'EFV (400mg)', 0, 1, 'tab', '2010-01-01', 'drug-1213'),
  (1214, 21214, 'DRV (150mg)', 0, 1, 'tab', '2010-01-01', 'drug-1214'),
  (1215, 21215, 'r (50mg)', 0, 1, 'tab', '2010-01-01', 'drug-1215'),
  (1217, 21217, 'TDF/3TC/EFV (300/300/400mg)', 1, 1, 'tab', '2010-01-01', 'drug-1217');
