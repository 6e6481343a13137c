//! One simulated ART clinic: its patients and the forms written for them each day.

use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};

mod events;
mod rows;

use super::rng::Rng;
use rows::{at, dt, text, ObsValue};

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
/// ARV regimens: (drug_id, daily dose, pack size) of each drug. The second dispenses two ARVs
/// on one day, each in its own number of packs, so their expiries differ. Then one drug set
/// of every regimen of the national table (moh-reports.md), and one that names none.
const REGIMENS: &[&[(i64, f64, i64)]] = &[
    &[(983, 1.0, 30)],
    &[(731, 2.0, 60), (982, 1.0, 30)],
    &[(982, 1.0, 30)],
    &[(22, 2.0, 60), (969, 1.0, 30)],                    // 0A
    &[(733, 2.0, 60), (968, 2.0, 60)],                   // 0P
    &[(731, 2.0, 60)],                                   // 2A
    &[(732, 2.0, 60)],                                   // 2P
    &[(11, 1.0, 30), (39, 2.0, 60)],                     // 4A
    &[(30, 1.0, 30), (39, 2.0, 60)],                     // 4PA
    &[(30, 1.0, 30), (736, 2.0, 60)],                    // 4PP
    &[(735, 1.0, 30)],                                   // 5A
    &[(22, 2.0, 60), (734, 1.0, 30)],                    // 6A
    &[(734, 1.0, 30), (932, 1.0, 30)],                   // 7A
    &[(39, 2.0, 60), (932, 1.0, 30)],                    // 8A
    &[(73, 4.0, 120), (969, 1.0, 30)],                   // 9A
    &[(74, 4.0, 120), (969, 1.0, 30)],                   // 9PA
    &[(74, 4.0, 120), (1044, 2.0, 60)],                  // 9PP
    &[(73, 4.0, 120), (734, 1.0, 30)],                   // 10A
    &[(39, 2.0, 60), (73, 4.0, 120)],                    // 11A
    &[(39, 2.0, 60), (74, 4.0, 120)],                    // 11PA
    &[(74, 4.0, 120), (736, 2.0, 60)],                   // 11PP
    &[(976, 2.0, 60), (977, 2.0, 60), (982, 1.0, 30)],   // 12A
    &[(982, 1.0, 30), (1214, 2.0, 60), (1215, 2.0, 60)], // 12PA
    &[(980, 1.0, 30), (1214, 2.0, 60), (1215, 2.0, 60)], // 12PP
    &[(734, 1.0, 30), (982, 1.0, 30)],                   // 13A
    &[(39, 2.0, 60), (982, 1.0, 30)],                    // 14A
    &[(736, 2.0, 60), (982, 1.0, 30)],                   // 14PA
    &[(736, 2.0, 60), (980, 1.0, 30)],                   // 14PP
    &[(969, 1.0, 30), (982, 1.0, 30)],                   // 15A
    &[(982, 1.0, 30), (1044, 2.0, 60)],                  // 15PA
    &[(980, 1.0, 30), (1044, 2.0, 60)],                  // 15PP
    &[(954, 2.0, 60), (969, 1.0, 30)],                   // 16A
    &[(1043, 2.0, 60), (1044, 2.0, 60)],                 // 16P
    &[(969, 1.0, 30), (1213, 1.0, 30)],                  // 17A
    &[(30, 1.0, 30), (969, 1.0, 30)],                    // 17PA
    &[(30, 1.0, 30), (1044, 2.0, 60)],                   // 17PP
    &[(731, 2.0, 60), (983, 1.0, 30)],                   // no regimen
];
/// "Type of patient" (obs 3289) answers.
const NEW_PATIENT: i64 = 7571;
const TRANSFER_IN: i64 = 7572;
const EXTERNAL_CONSULTATION: i64 = 9684;
const DRUG_REFILL: i64 = 9685;
const COTRIMOXAZOLE: i64 = 297;
/// Weights (kg) a patient is seen at: every band of the regimen distribution, 5-5.9 too.
const WEIGHTS: &[f64] = &[
    3.5, 4.5, 5.5, 8.0, 12.0, 17.0, 22.0, 27.0, 32.0, 37.0, 45.0, 58.0, 66.0, 74.0,
];

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
}

/// The clinic: one connection, writing one transaction per form.
pub struct Clinic {
    pub(super) conn: Conn,
    pub(super) rng: Rng,
    pub(super) pace: Duration,
    pub(super) patients: Vec<Patient>,
    pub(super) counts: Counts,
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
        if self.rng.chance(0.5) {
            if let Some(i) = self.pick_patient(|p| p.status == Status::Active) {
                let state = *self.rng.pick(&[3, 127, 2, 2, 6, 6]);
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
        let returning = (45..54)
            .contains(&kind)
            .then(|| [1i64, 4, 8][self.patients.len() % 3]);
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
                    when - chrono::Duration::days(400)
                } else if reinitiating {
                    when - chrono::Duration::days(self.rng.range(100, 900))
                } else if let Some(months) = returning {
                    when - chrono::Duration::days(months * 30 + 60)
                } else {
                    when
                };
                self.obs_in(pid, 2516, reg, when, ObsValue::Datetime(started))
                    .await?;
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
                self.obs_in(
                    pid,
                    7563,
                    staging,
                    reason_at,
                    ObsValue::Text("WHO stage 3".into()),
                )
                .await?;
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
        });
        if pre_art {
            return Ok(());
        }
        // The first ART visit happens on the registration day.
        let i = self.patients.len() - 1;
        self.follow_up(i, date, date).await
    }

    /// A full ART visit on `visit_day`, typed in on `entry_day`.
    pub(super) async fn follow_up(
        &mut self,
        i: usize,
        visit_day: NaiveDate,
        entry_day: NaiveDate,
    ) -> anyhow::Result<()> {
        let pid = self.patients[i].id;
        let regimen = REGIMENS[self.patients[i].regimen];
        let start = at(visit_day, 60 + self.rng.range(0, 300));
        let created = at(entry_day, 600);
        let retro = visit_day < entry_day;
        let stamp = move |t: NaiveDateTime| if retro { created } else { t };
        if self.patients[i].status == Status::PreArt {
            self.set_state(i, visit_day, 7).await?;
            self.patients[i].status = Status::Active;
        }
        if self.patients[i]
            .registers_on
            .is_some_and(|d| d <= visit_day)
        {
            // the refill client registers: HIV CLINIC REGISTRATION, 'New patient'
            self.patients[i].registers_on = None;
            self.begin().await?;
            {
                let reg = self.encounter_at(pid, 9, start, stamp(start)).await?;
                self.obs_in(pid, 2516, reg, start, ObsValue::Datetime(start))
                    .await?;
                self.obs_in(pid, 3289, reg, start, ObsValue::Coded(NEW_PATIENT))
                    .await?;
            }
            self.commit().await?;
        }
        // HIV RECEPTION and VITALS
        self.begin().await?;
        {
            let e = self.encounter_at(pid, 51, start, stamp(start)).await?;
            self.obs_in(pid, 6987, e, start, ObsValue::Coded(1065))
                .await?;
            let v = self
                .encounter_at(pid, 6, start + chrono::Duration::minutes(10), stamp(start))
                .await?;
            if let Some(kg) = self.patients[i].weight {
                let weight = kg + self.rng.range(0, 4) as f64 / 10.0;
                self.obs_in(pid, 5089, v, start, ObsValue::Numeric(weight))
                    .await?;
            }
            let r0 = self.rng.range(140, 190);
            self.obs_in(pid, 5090, v, start, ObsValue::Numeric(r0 as f64))
                .await?;
            let r0 = self.rng.range(95, 160);
            self.obs_in(pid, 5085, v, start, ObsValue::Numeric(r0 as f64))
                .await?;
            let r0 = self.rng.range(60, 100);
            self.obs_in(pid, 5086, v, start, ObsValue::Numeric(r0 as f64))
                .await?;
            let r0 = self.rng.range(355, 385);
            self.obs_in(pid, 5088, v, start, ObsValue::Numeric(r0 as f64 / 10.0))
                .await?;
        }
        self.commit().await?;
        // HIV CLINIC CONSULTATION
        let consultation;
        self.begin().await?;
        {
            let e = self
                .encounter_at(pid, 53, start + chrono::Duration::minutes(30), stamp(start))
                .await?;
            let r0 = *self.rng.pick(&[7454, 7455, 7456]);
            self.obs_in(pid, 7459, e, start, ObsValue::Coded(r0))
                .await?;
            if self.rng.chance(0.15) {
                // a CD4 count: below 200, exactly "<200", or above
                let (value, modifier) = *self.rng.pick(&[
                    (150.0, None),
                    (200.0, Some("<")),
                    (200.0, None),
                    (480.0, None),
                ]);
                self.obs_value(pid, 5497, e, start, Some(value), None, modifier)
                    .await?;
            }
            consultation = e;
        }
        self.commit().await?;
        self.patients[i].last_consultation = Some((consultation, start));
        // ART ADHERENCE: pills brought back, per drug; tied to the drug's last order (as the
        // EMR does) or naming the drug.
        let last_orders = self.patients[i].last_orders.clone();
        self.begin().await?;
        {
            let e = self
                .encounter_at(pid, 68, start + chrono::Duration::minutes(40), stamp(start))
                .await?;
            for &(drug, _, _) in regimen {
                let brought = self.rng.range(0, 8) as f64;
                let order = last_orders.iter().find(|(d, _)| *d == drug).map(|o| o.1);
                // the three sources the engine adds up (art-rules.md section 2)
                match (order, self.rng.range(0, 9)) {
                    (Some(order_id), 0..=3) => {
                        self.obs_for_order(
                            pid,
                            2540,
                            e,
                            start,
                            order_id,
                            Some(brought),
                            None,
                            None,
                        )
                        .await?;
                    }
                    (Some(order_id), 4) => {
                        // tied to the order and naming the drug: counted twice
                        self.obs_for_order(
                            pid,
                            2540,
                            e,
                            start,
                            order_id,
                            Some(brought),
                            None,
                            Some(drug),
                        )
                        .await?;
                    }
                    (Some(order_id), 5) => {
                        // the count typed as text (a number, or not)
                        let typed = if self.rng.chance(0.7) {
                            format!("{brought}")
                        } else {
                            "some".into()
                        };
                        self.obs_for_order(pid, 2540, e, start, order_id, None, Some(&typed), None)
                            .await?;
                    }
                    (_, 6) => {
                        // an obs of the drug's own concept
                        let concept: Option<i64> = self
                            .conn
                            .exec_first("SELECT concept_id FROM drug WHERE drug_id = ?", (drug,))
                            .await?;
                        self.obs_value(
                            pid,
                            concept.unwrap_or(0),
                            e,
                            start,
                            Some(brought),
                            None,
                            None,
                        )
                        .await?;
                    }
                    _ => {
                        self.obs_in(pid, 2540, e, start, ObsValue::Drug(drug, brought))
                            .await?;
                    }
                }
            }
            let r0 = self.rng.range(0, 3);
            self.obs_in(pid, 2973, e, start, ObsValue::Numeric(r0 as f64))
                .await?;
        }
        self.commit().await?;
        // TREATMENT (orders) and DISPENSING: each ARV in its own number of packs; now and then
        // a dose left empty or a quantity typo (6000+) beside the real order, for one ARV or
        // for all of them.
        let cpt = self.rng.chance(0.5);
        // now and then every ARV of the day has a typo beside it (the engine's legacy rule)
        let typo_all = self.rng.chance(0.04);
        let mut orders = Vec::new();
        self.begin().await?;
        {
            let t = start + chrono::Duration::minutes(50);
            let e = self.encounter_at(pid, 25, t, stamp(t)).await?;
            let d = self
                .encounter_at(pid, 54, t + chrono::Duration::minutes(5), stamp(t))
                .await?;
            for &(drug, dose, pack) in regimen {
                let quantity = pack * *self.rng.pick(&[1i64, 2, 3]);
                let days = (quantity as f64 / dose).round() as i64;
                let recorded_dose = match self.rng.range(0, 19) {
                    0 => None,
                    1 => Some(0.0),
                    _ => Some(dose),
                };
                let order_id = self
                    .order(pid, e, drug, t, days, recorded_dose, quantity)
                    .await?;
                orders.push((drug, order_id));
                if typo_all || self.rng.chance(0.03) {
                    self.order(pid, e, drug, t, days, Some(dose), 6000 + quantity)
                        .await?;
                }
                self.obs_in(pid, 2834, d, t, ObsValue::Drug(drug, quantity as f64))
                    .await?;
            }
            if cpt {
                self.order(pid, e, COTRIMOXAZOLE, t, 30, Some(1.0), 30)
                    .await?;
            }
        }
        self.commit().await?;
        self.patients[i].last_orders = orders;
        // APPOINTMENT: the next visit
        let interval = self.rng.range(1, 3);
        let next = visit_day.max(entry_day) + chrono::Duration::days(interval);
        self.begin().await?;
        {
            let t = start + chrono::Duration::minutes(60);
            let e = self.encounter_at(pid, 7, t, stamp(t)).await?;
            self.obs_in(pid, 5096, e, t, ObsValue::Datetime(at(next, 0)))
                .await?;
            self.counts.visits += 1;
        }
        self.commit().await?;
        self.patients[i].next_visit = next;
        Ok(())
    }
}
