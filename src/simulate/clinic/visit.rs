//! A simulated patient's visit: reception and vitals, consultation, adherence (pills brought
//! back), treatment and dispensing, the next appointment; and the regimens and weights the
//! clinic draws from.

use chrono::{NaiveDate, NaiveDateTime};

use super::rows::{at, ObsValue};
use super::{Clinic, Status, COTRIMOXAZOLE, NEW_PATIENT, YES};

/// ARV regimens: (drug_id, daily dose, pack size) of each drug. The second dispenses two ARVs
/// on one day, each in its own number of packs, so their expiries differ. Then one drug set
/// of every regimen of the national table (moh-reports.md), and one that names none.
pub(super) const REGIMENS: &[&[(i64, f64, i64)]] = &[
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
/// Weights (kg) a patient is seen at: every band of the regimen distribution, 5-5.9 too.
pub(super) const WEIGHTS: &[f64] = &[
    3.5, 4.5, 5.5, 8.0, 12.0, 17.0, 22.0, 27.0, 32.0, 37.0, 45.0, 58.0, 66.0, 74.0,
];

impl Clinic {
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
            self.obs_in(pid, 6987, e, start, ObsValue::Coded(YES))
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
            self.tb_status(pid, e, start).await?;
            if self.rng.chance(0.15) {
                // a CD4 count: below 200, exactly "<200", or above
                let (value, modifier) = *self.rng.pick(&[
                    (150.0, None),
                    (200.0, Some("<")),
                    (200.0, None),
                    (480.0, None),
                ]);
                self.obs_on(
                    pid,
                    5497,
                    e,
                    start,
                    None,
                    ObsValue::Numeric(value),
                    modifier,
                )
                .await?;
            }
            if self.patients[i].female {
                self.maternal_status(pid, e, start).await?;
            }
            consultation = e;
        }
        self.commit().await?;
        self.patients[i].last_consultation = Some((consultation, start));
        if self.rng.chance(0.2) {
            let t = start + chrono::Duration::minutes(35);
            self.viral_load(pid, t, stamp(t)).await?;
        }
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
                    (Some(order_id), k @ 0..=4) => {
                        // tied to the order; now and then naming the drug too: counted twice
                        let value = if k == 4 {
                            ObsValue::Drug(drug, brought)
                        } else {
                            ObsValue::Numeric(brought)
                        };
                        self.obs_on(pid, 2540, e, start, Some(order_id), value, None)
                            .await?;
                        self.adherence(pid, e, start, order_id).await?;
                    }
                    (Some(order_id), 5) => {
                        // the count typed as text (a number, or not)
                        let typed = if self.rng.chance(0.7) {
                            format!("{brought}")
                        } else {
                            "some".into()
                        };
                        self.obs_on(
                            pid,
                            2540,
                            e,
                            start,
                            Some(order_id),
                            ObsValue::Text(typed),
                            None,
                        )
                        .await?;
                    }
                    (_, 6) => {
                        // an obs of the drug's own concept
                        let concept = self.drug_concept(drug).await?;
                        self.obs_in(pid, concept, e, start, ObsValue::Numeric(brought))
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
