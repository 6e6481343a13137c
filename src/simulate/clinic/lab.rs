//! Viral load and maternal status, the cases TX_PVLS tells apart (moh-reports.md): VL lab
//! orders on every specimen (and one that is not a VL specimen), routine, targeted or without a
//! reason, with results LDL, below and above 1000, with `<` modifiers, and none; pregnancy and
//! breastfeeding answered Yes or No. The engine finds these concepts by name.

use chrono::NaiveDateTime;
use mysql_async::Value;

use super::rows::{dt, text, ObsValue};
use super::{Clinic, NO, YES};

/// Specimens of a lab order (`orders.concept_id`): the four the engine counts, and sputum.
const SPECIMENS: &[i64] = &[BLOOD, 9601, 9602, 9603, 9604];
const BLOOD: i64 = 9600;
/// 'Reason for test' and its answers.
const REASON_FOR_TEST: i64 = 9610;
const ROUTINE: i64 = 9611;
const TARGETED: i64 = 9612;
/// 'HIV viral load'.
const VIRAL_LOAD: i64 = 856;
const LAB_ORDERS: i64 = 69;
const PREGNANT: i64 = 6131;
const BREASTFEEDING: i64 = 7965;

/// A VL result: a number with its modifier, or "LDL" (lower than detectable).
#[derive(Clone, Copy)]
enum VlResult {
    Number(f64, Option<&'static str>),
    Ldl,
}

/// The results a VL order gets: LDL, below and above 1000, "<1000" and "<40", and ">10000".
const RESULTS: &[VlResult] = &[
    VlResult::Ldl,
    VlResult::Number(400.0, None),
    VlResult::Number(999.0, Some("=")),
    VlResult::Number(1000.0, None),
    VlResult::Number(1000.0, Some("<")),
    VlResult::Number(40.0, Some("<")),
    VlResult::Number(1500.0, None),
    VlResult::Number(25000.0, None),
    VlResult::Number(10000.0, Some(">")),
];

impl Clinic {
    /// A VL lab order at `when` in a LAB ORDERS encounter: a specimen, a reason (none, routine
    /// or targeted) and, most of the time, a result on the order.
    pub(super) async fn viral_load(
        &mut self,
        pid: i64,
        when: NaiveDateTime,
        created: NaiveDateTime,
    ) -> anyhow::Result<()> {
        let specimen = if self.rng.chance(0.5) {
            BLOOD
        } else {
            *self.rng.pick(SPECIMENS)
        };
        let reason = *self
            .rng
            .pick(&[None, Some(ROUTINE), Some(ROUTINE), Some(TARGETED)]);
        let result = (!self.rng.chance(0.2)).then(|| *self.rng.pick(RESULTS));
        self.begin().await?;
        {
            let e = self.encounter_at(pid, LAB_ORDERS, when, created).await?;
            self.counts.orders += 1;
            let uuid = self.rng.uuid();
            let order_id = self
                .insert(
                    "INSERT INTO orders (order_type_id, concept_id, orderer, start_date, patient_id, encounter_id, date_created, uuid) VALUES (4, ?, 1, ?, ?, ?, ?, ?)",
                    vec![Value::Int(specimen), dt(when), Value::Int(pid), Value::Int(e), dt(created), text(&uuid)],
                )
                .await?;
            if let Some(reason) = reason {
                let reason = ObsValue::Coded(reason);
                self.obs_on(pid, REASON_FOR_TEST, e, when, Some(order_id), reason, None)
                    .await?;
            }
            if let Some(result) = result {
                let (value, modifier) = match result {
                    VlResult::Number(v, modifier) => (ObsValue::Numeric(v), modifier),
                    VlResult::Ldl => (ObsValue::Text("LDL".into()), None),
                };
                self.obs_on(pid, VIRAL_LOAD, e, when, Some(order_id), value, modifier)
                    .await?;
            }
        }
        self.commit().await
    }

    /// Pregnancy and breastfeeding asked at a consultation of a woman (each now and then).
    pub(super) async fn maternal_status(
        &mut self,
        pid: i64,
        encounter: i64,
        when: NaiveDateTime,
    ) -> anyhow::Result<()> {
        for question in [PREGNANT, BREASTFEEDING] {
            if self.rng.chance(0.3) {
                let answer = if self.rng.chance(0.4) { YES } else { NO };
                self.obs_in(pid, question, encounter, when, ObsValue::Coded(answer))
                    .await?;
            }
        }
        Ok(())
    }
}
