//! One simulated ART clinic: its patients and the forms written for them each day.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

mod events;
mod lab;
mod rows;
mod staging;
mod visit;

use super::rng::Rng;
use rows::{at, dt, text, ObsValue};
use visit::{REGIMENS, WEIGHTS};

pub(super) const LOCATION: i64 = 101;
pub(super) const HIV_PROGRAM: i64 = 1;
const GIVEN_F: &[&str] = &[
    "Chikondi", "Mphatso", "Thandiwe", "Zoë", "Élise", "Tiyamike", "Chisomo", "Memory", "Dalitso",
    "Agnès",
];
const GIVEN_M: &[&str] = &[
    "Kondwani",
    "José",
    "Thokozani",
    "Blessings",
    "Chimwemwe",
    "Madalitso",
    "Gift",
    "André",
    "Yamikani",
    "Mavuto",
];
const FAMILY: &[&str] = &[
    "Banda",
    "Phiri",
    "Mwale",
    "Chirwa",
    "Nkhoma",
    "Kachingwe",
    "Mbewe",
    "Gondwe",
    "Müller",
    "Ngwira",
];
const DISTRICTS: &[&str] = &["Lilongwe", "Blantyre", "Zomba", "Mzuzu", "Kasungu", "Dedza"];
/// "Type of patient" (obs 3289) answers.
pub(super) const NEW_PATIENT: i64 = 7571;
const TRANSFER_IN: i64 = 7572;
const EXTERNAL_CONSULTATION: i64 = 9684;
const DRUG_REFILL: i64 = 9685;
pub(super) const COTRIMOXAZOLE: i64 = 297;
/// "Ever registered at an ART clinic" (answered Yes) and "Date ART last taken".
const EVER_REGISTERED: i64 = 7937;
const ART_LAST_TAKEN: i64 = 7751;
/// The answers 'Yes' and 'No'.
pub(super) const YES: i64 = 1065;
pub(super) const NO: i64 = 1066;

/// What the simulation wrote.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Counts {
    /// Patients registered.
    pub patients: u64,
    /// Patient-days with encounters.
    pub visits: u64,
    /// Encounters written.
    pub encounters: u64,
    /// Obs written.
    pub obs: u64,
    /// Drug orders written.
    pub orders: u64,
    /// Source transactions committed.
    pub transactions: u64,
}

/// Where a simulated patient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Registered, not yet on ART (HIV-program state 1); starts at the next visit.
    PreArt,
    /// On ART, coming to appointments.
    Active,
    /// Stopped coming without a word: defaults once the pills run out.
    Lost,
    /// HIV-program state 2, 6, 3 or 127; voided patients are `Voided`.
    Exited(i64),
    /// Registered in error and voided.
    Voided,
}

pub(super) struct Patient {
    pub(super) id: i64,
    pub(super) patient_program_id: i64,
    pub(super) next_visit: NaiveDate,
    pub(super) regimen: usize,
    pub(super) status: Status,
    /// The latest order of each ARV, for pill counts tied to the order.
    pub(super) last_orders: Vec<(i64, i64)>,
    /// A consultation encounter of an earlier visit, for late lab results.
    pub(super) last_consultation: Option<(i64, NaiveDateTime)>,
    /// The patient's weight (kg), none for a patient never weighed.
    pub(super) weight: Option<f64>,
    /// A drug-refill or external-consultation client who registers at the clinic on this day
    /// (or at the first visit after it).
    pub(super) registers_on: Option<NaiveDate>,
    /// Asked about pregnancy and breastfeeding at consultations.
    pub(super) female: bool,
    /// The day ART started (here or, for a transfer-in, elsewhere; a registration day for
    /// drug-refill and external clients).
    pub(super) started: NaiveDate,
}

/// The clinic: one connection, writing one transaction per form.
pub struct Clinic {
    pub(super) conn: Conn,
    pub(super) rng: Rng,
    pub(super) pace: Duration,
    pub(super) patients: Vec<Patient>,
    pub(super) counts: Counts,
    /// Patients returning after an interruption so far (their interruptions take 1, 4 and 8
    /// months in turn).
    returns: usize,
    /// No record is typed in more than this many days late (None: no limit).
    pub max_backdate_days: Option<i64>,
}

impl Clinic {
    /// A clinic writing through `conn`.
    pub fn new(conn: Conn, rng: Rng, pace: Duration) -> Self {
        Self {
            conn,
            rng,
            pace,
            patients: Vec::new(),
            counts: Counts::default(),
            returns: 0,
            max_backdate_days: None,
        }
    }

    /// What was written so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.conn.disconnect().await.ok();
    }

    /// One clinic day: new registrations, the follow-ups due, and the awkward cases.
    pub async fn day(&mut self, date: NaiveDate, registrations: u32) -> anyhow::Result<()> {
        for _ in 0..registrations {
            self.register(date).await?;
        }
        let due: Vec<usize> = (0..self.patients.len())
            .filter(|&i| {
                matches!(self.patients[i].status, Status::Active | Status::PreArt)
                    && self.patients[i].next_visit == date
            })
            .collect();
        for i in due {
            if self.patients[i].status == Status::Active && self.rng.chance(0.04) {
                // lost to follow-up: never comes back on their own
                self.patients[i].status = Status::Lost;
                continue;
            }
            if self.rng.chance(0.12) {
                // missed appointment: comes back some days later
                let p = &mut self.patients[i];
                p.next_visit = date + chrono::Duration::days(self.rng.range(1, 3));
                continue;
            }
            // Retrospective entry: a paper record of an earlier day typed in today.
            let visit_day = if self.rng.chance(0.1) {
                date - chrono::Duration::days(self.rng.range(1, 20))
            } else {
                date
            };
            self.follow_up(i, visit_day, date).await?;
        }
        // Late lab result on an old visit.
        if let Some(i) =
            self.pick_patient(|p| p.last_consultation.is_some_and(|(_, t)| t.date() < date))
        {
            let (encounter_id, when) = self.patients[i].last_consultation.unwrap_or_default();
            let pid = self.patients[i].id;
            let vl = self.rng.range(0, 5000) as f64;
            self.begin().await?;
            {
                self.obs_in(pid, 856, encounter_id, when, ObsValue::Numeric(vl))
                    .await?;
            }
            self.commit().await?;
        }
        // A void: an obs entered by mistake, or a whole encounter.
        if let Some(i) = self.pick_patient(|p| p.last_consultation.is_some()) {
            let (encounter_id, _) = self.patients[i].last_consultation.unwrap_or_default();
            let whole = self.rng.chance(0.3);
            let when = dt(at(date, 600));
            self.begin().await?;
            {
                if whole {
                    self.exec("UPDATE encounter SET voided = 1, voided_by = 1, date_voided = ?, void_reason = 'entered in error' WHERE encounter_id = ?", vec![when.clone(), Value::Int(encounter_id)]).await?;
                    self.exec("UPDATE obs SET voided = 1, voided_by = 1, date_voided = ?, void_reason = 'entered in error' WHERE encounter_id = ?", vec![when, Value::Int(encounter_id)]).await?;
                } else {
                    self.exec("UPDATE obs SET voided = 1, voided_by = 1, date_voided = ?, void_reason = 'wrong value' WHERE encounter_id = ? ORDER BY obs_id LIMIT 1", vec![when, Value::Int(encounter_id)]).await?;
                }
            }
            self.commit().await?;
        }
        // A hard delete (deletes still happen): a phone number removed.
        if let Some(i) = self.pick_patient(|_| true) {
            let pid = self.patients[i].id;
            self.begin().await?;
            {
                self.exec("DELETE FROM person_attribute WHERE person_id = ? AND person_attribute_type_id = 12", vec![Value::Int(pid)]).await?;
            }
            self.commit().await?;
        }
        // An outcome: death (state 3, or its alternate 127), transfer out or treatment stopped.
        // A death now and then falls in month 2 or 3 of ART (days since the start 31-60 or
        // 61-91), the cohort's buckets beside month 1 and later.
        if self.rng.chance(0.5) {
            let (state, from, to) = *self.rng.pick(&[
                (3, 0, i64::MAX),
                (127, 0, i64::MAX),
                (3, 31, 60),
                (127, 61, 91),
                (2, 0, i64::MAX),
                (2, 0, i64::MAX),
                (6, 0, i64::MAX),
                (6, 0, i64::MAX),
            ]);
            if let Some(i) = self.pick_patient(|p| {
                p.status == Status::Active && (from..=to).contains(&(date - p.started).num_days())
            }) {
                self.outcome(i, date, state).await?;
            }
        }
        // Re-initiation: a patient who stopped, transferred out or was lost comes back.
        if self.rng.chance(0.3) {
            if let Some(i) = self.pick_patient(|p| {
                matches!(
                    p.status,
                    Status::Lost | Status::Exited(2) | Status::Exited(6)
                )
            }) {
                self.reinitiate(i, date).await?;
            }
        }
        // A registration entered in error: the patient and person are voided.
        if self.rng.chance(0.1) {
            if let Some(i) = self.pick_patient(|p| p.status == Status::Active) {
                self.void_patient(i, date).await?;
            }
        }
        Ok(())
    }

    fn pick_patient(&mut self, want: impl Fn(&Patient) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.patients.len())
            .filter(|&i| want(&self.patients[i]))
            .collect();
        (!candidates.is_empty()).then(|| *self.rng.pick(&candidates))
    }

    /// Starts one form's transaction.
    pub(super) async fn begin(&mut self) -> anyhow::Result<()> {
        self.conn.query_drop("START TRANSACTION").await?;
        Ok(())
    }

    /// Commits it, then paces.
    pub(super) async fn commit(&mut self) -> anyhow::Result<()> {
        self.conn.query_drop("COMMIT").await?;
        self.counts.transactions += 1;
        if !self.pace.is_zero() {
            tokio::time::sleep(self.pace).await;
        }
        Ok(())
    }

    async fn register(&mut self, date: NaiveDate) -> anyhow::Result<()> {
        let female = self.rng.chance(0.6);
        let given = (*self.rng.pick(if female { GIVEN_F } else { GIVEN_M })).to_owned();
        let family = (*self.rng.pick(FAMILY)).to_owned();
        let age_days = self.rng.range(200, 70 * 365);
        let birthdate = date - chrono::Duration::days(age_days);
        // every regimen in turn, so that a small clinic has them all
        let regimen = self.patients.len() % REGIMENS.len();
        // 15% transfer in, 10% re-initiate (new, but started ART long ago), 10% wait in
        // Pre-ART, 7% drug-refill and 3% external-consultation clients (half of them register
        // later), 9% return after an interruption of 1, 4 or 8 months (an old paper record of
        // their last dispensation is entered today); 6% have no reason for starting ART; 5% are
        // never weighed.
        let kind = self.rng.range(0, 99);
        let (transfer_in, reinitiating, pre_art) = (
            kind < 15,
            (15..25).contains(&kind),
            (25..35).contains(&kind),
        );
        let client = match kind {
            35..=41 => Some(DRUG_REFILL),
            42..=44 => Some(EXTERNAL_CONSULTATION),
            _ => None,
        };
        let max_backdate = self.max_backdate_days;
        let returning = (45..54)
            .contains(&kind)
            .then(|| [1i64, 4, 8][self.returns % 3])
            .filter(|months| max_backdate.is_none_or(|d| months * 30 + 60 <= d));
        self.returns += usize::from(returning.is_some());
        let no_reason = self.rng.chance(0.06);
        let weight = (!self.rng.chance(0.05)).then(|| *self.rng.pick(WEIGHTS));
        let registers_on = match client {
            Some(_) if self.rng.chance(0.5) => {
                Some(date + chrono::Duration::days(self.rng.range(2, 12)))
            }
            _ => None,
        };
        let when = at(date, self.rng.range(0, 240));
        let ids;
        let mut started_on = date;
        self.begin().await?;
        {
            let r0 = self.rng.uuid();
            let pid = self.insert("INSERT INTO person (gender, birthdate, birthdate_estimated, date_created, uuid) VALUES (?, ?, ?, ?, ?)",
                vec![text(if female { "F" } else { "M" }), text(&birthdate.to_string()), Value::Int(0), dt(when), text(&r0)]).await?;
            // person_name is latin1: the accents travel as latin1 bytes.
            let r0 = self.rng.uuid();
            self.exec("INSERT INTO person_name (preferred, person_id, given_name, family_name, date_created, uuid) VALUES (1, ?, ?, ?, ?, ?)",
                vec![Value::Int(pid), text(&given), text(&family), dt(when), text(&r0)]).await?;
            let district = *self.rng.pick(DISTRICTS);
            let r0 = self.rng.uuid();
            self.exec("INSERT INTO person_address (person_id, preferred, address2, city_village, state_province, date_created, uuid) VALUES (?, 1, ?, ?, ?, ?, ?)",
                vec![Value::Int(pid), text(district), text("Area 25"), text(district), dt(when), text(&r0)]).await?;
            let phone = format!("+265 99{:07}", self.rng.range(0, 9_999_999));
            let r0 = self.rng.uuid();
            self.exec("INSERT INTO person_attribute (person_id, value, person_attribute_type_id, date_created, uuid) VALUES (?, ?, 12, ?, ?)",
                vec![Value::Int(pid), text(&phone), dt(when), text(&r0)]).await?;
            self.exec(
                "INSERT INTO patient (patient_id, date_created) VALUES (?, ?)",
                vec![Value::Int(pid), dt(when)],
            )
            .await?;
            let r0 = self.rng.uuid();
            self.exec("INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id, date_created, uuid) VALUES (?, ?, 4, 1, ?, ?, ?)",
                vec![Value::Int(pid), text(&format!("A25-ARV-{pid}")), Value::Int(LOCATION), dt(when), text(&r0)]).await?;
            let r0 = self.rng.uuid();
            let ppid = self.insert("INSERT INTO patient_program (patient_id, program_id, date_enrolled, location_id, date_created, uuid) VALUES (?, ?, ?, ?, ?, ?)",
                vec![Value::Int(pid), Value::Int(HIV_PROGRAM), dt(when), Value::Int(LOCATION), dt(when), text(&r0)]).await?;
            let r0 = self.rng.uuid();
            self.exec("INSERT INTO patient_state (patient_program_id, state, start_date, date_created, uuid) VALUES (?, ?, ?, ?, ?)",
                vec![Value::Int(ppid), Value::Int(if pre_art { 1 } else { 7 }), text(&date.to_string()), dt(when), text(&r0)]).await?;
            let attr = self.rng.uuid();
            let landmark = format!("near {} market", self.rng.pick(DISTRICTS));
            self.exec("INSERT INTO person_attribute (person_id, value, person_attribute_type_id, date_created, uuid) VALUES (?, ?, 19, ?, ?)",
                vec![Value::Int(pid), text(&landmark), dt(when), text(&attr)]).await?;
            if let Some(answer) = client {
                // a drug-refill or external-consultation client: no HIV CLINIC REGISTRATION
                let reception = self.encounter(pid, 51, when).await?;
                self.obs_in(pid, 3289, reception, when, ObsValue::Coded(answer))
                    .await?;
            } else {
                let reg = self.encounter(pid, 9, when).await?;
                let started = if transfer_in {
                    // (some started weeks ago elsewhere: their deaths fall in months 2 and 3)
                    when - chrono::Duration::days(*self.rng.pick(&[400, 400, 45, 75]))
                } else if reinitiating {
                    when - chrono::Duration::days(self.rng.range(100, 900))
                } else if let Some(months) = returning {
                    when - chrono::Duration::days(months * 30 + 60)
                } else {
                    when
                };
                self.obs_in(pid, 2516, reg, when, ObsValue::Datetime(started))
                    .await?;
                started_on = started.date();
                if transfer_in || reinitiating {
                    // "Ever registered at an ART clinic" Yes, and when ART was last taken: a
                    // re-initiation when more than 14 days ago (exactly 14 is not one)
                    let gap = if reinitiating {
                        *self.rng.pick(&[14, 15, 40, 200])
                    } else {
                        self.rng.range(0, 10)
                    };
                    self.obs_in(pid, EVER_REGISTERED, reg, when, ObsValue::Coded(YES))
                        .await?;
                    let last = when - chrono::Duration::days(gap);
                    self.obs_in(pid, ART_LAST_TAKEN, reg, when, ObsValue::Datetime(last))
                        .await?;
                }
                self.obs_in(
                    pid,
                    3289,
                    reg,
                    when,
                    ObsValue::Coded(if transfer_in {
                        TRANSFER_IN
                    } else {
                        NEW_PATIENT
                    }),
                )
                .await?;
            }
            if !no_reason {
                // (a returning patient's reason dates from their first start)
                let reason_at = returning.map_or(when, |months| {
                    when - chrono::Duration::days(months * 30 + 60)
                });
                let staging = self
                    .encounter_at(pid, 52, reason_at + chrono::Duration::minutes(5), when)
                    .await?;
                self.staging(pid, staging, reason_at).await?;
            }
            if let Some(months) = returning {
                // the paper record of the last dispensation before the interruption: 30 days
                // of pills, run out months + 1 before today, so the patient defaulted
                // (PEPFAR) `months` months ago
                let old = when - chrono::Duration::days(months * 30 + 60);
                let e = self.encounter_at(pid, 25, old, when).await?;
                let (drug, dose, _) = REGIMENS[regimen][0];
                self.order(pid, e, drug, old, 30, Some(dose), (30.0 * dose) as i64)
                    .await?;
            }
            self.counts.patients += 1;
            ids = (pid, ppid);
        }
        self.commit().await?;
        self.patients.push(Patient {
            id: ids.0,
            patient_program_id: ids.1,
            next_visit: date + chrono::Duration::days(self.rng.range(1, 4)),
            regimen,
            status: if pre_art {
                Status::PreArt
            } else {
                Status::Active
            },
            last_orders: Vec::new(),
            last_consultation: None,
            weight,
            registers_on,
            female,
            started: started_on,
        });
        if pre_art {
            return Ok(());
        }
        // The first ART visit happens on the registration day.
        let i = self.patients.len() - 1;
        self.follow_up(i, date, date).await
    }
}
