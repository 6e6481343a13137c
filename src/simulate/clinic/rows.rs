//! The clinic's row writers: one INSERT or UPDATE each, used between `begin` and `commit`.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use mysql_async::prelude::Queryable;
use mysql_async::Value;

use super::{Clinic, HIV_PROGRAM, LOCATION};

pub(super) enum ObsValue {
    Numeric(f64),
    Coded(i64),
    Datetime(NaiveDateTime),
    Text(String),
    Drug(i64, f64),
}

pub(super) fn at(date: NaiveDate, minutes: i64) -> NaiveDateTime {
    date.and_time(NaiveTime::from_hms_opt(7, 30, 0).unwrap_or_default())
        + chrono::Duration::minutes(minutes)
}

pub(super) fn dt(t: NaiveDateTime) -> Value {
    Value::Bytes(t.format("%Y-%m-%d %H:%M:%S").to_string().into_bytes())
}

pub(super) fn text(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// Row writers, used between `begin` and `commit`.
impl Clinic {
    pub(super) async fn exec(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<()> {
        self.conn.exec_drop(sql, params).await?;
        Ok(())
    }

    pub(super) async fn insert(&mut self, sql: &str, params: Vec<Value>) -> anyhow::Result<i64> {
        self.conn.exec_drop(sql, params).await?;
        Ok(self.conn.last_insert_id().unwrap_or(0) as i64)
    }

    pub(super) async fn encounter(
        &mut self,
        pid: i64,
        kind: i64,
        when: NaiveDateTime,
    ) -> anyhow::Result<i64> {
        self.encounter_at(pid, kind, when, when).await
    }

    pub(super) async fn encounter_at(
        &mut self,
        pid: i64,
        kind: i64,
        when: NaiveDateTime,
        created: NaiveDateTime,
    ) -> anyhow::Result<i64> {
        self.counts.encounters += 1;
        let uuid = self.rng.uuid();
        self.insert(
            "INSERT INTO encounter (encounter_type, patient_id, provider_id, location_id, encounter_datetime, program_id, date_created, uuid) VALUES (?, ?, 1, ?, ?, ?, ?, ?)",
            vec![Value::Int(kind), Value::Int(pid), Value::Int(LOCATION), dt(when), Value::Int(HIV_PROGRAM), dt(created), text(&uuid)],
        )
        .await
    }

    pub(super) async fn obs_in(
        &mut self,
        pid: i64,
        concept: i64,
        encounter: i64,
        when: NaiveDateTime,
        value: ObsValue,
    ) -> anyhow::Result<i64> {
        self.obs_on(pid, concept, encounter, when, None, value, None)
            .await
    }

    /// An obs, tied to an order (pills of that order brought back, a lab order's reason or
    /// result) or not, with a value modifier (a lab result such as "<200") or not.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn obs_on(
        &mut self,
        pid: i64,
        concept: i64,
        encounter: i64,
        when: NaiveDateTime,
        order_id: Option<i64>,
        value: ObsValue,
        modifier: Option<&str>,
    ) -> anyhow::Result<i64> {
        self.counts.obs += 1;
        let (mut numeric, mut coded, mut datetime, mut txt, mut drug) = (
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
            Value::NULL,
        );
        match value {
            ObsValue::Numeric(v) => numeric = Value::Double(v),
            ObsValue::Coded(v) => coded = Value::Int(v),
            ObsValue::Datetime(v) => datetime = dt(v),
            ObsValue::Text(v) => txt = text(&v),
            ObsValue::Drug(d, v) => {
                drug = Value::Int(d);
                numeric = Value::Double(v);
            }
        }
        let uuid = self.rng.uuid();
        self.insert(
            "INSERT INTO obs (person_id, concept_id, encounter_id, order_id, obs_datetime, location_id, value_coded, value_drug, value_datetime, value_numeric, value_text, value_modifier, date_created, uuid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![Value::Int(pid), Value::Int(concept), Value::Int(encounter), order_id.map_or(Value::NULL, Value::Int), dt(when), Value::Int(LOCATION), coded, drug, datetime, numeric, txt, modifier.map_or(Value::NULL, text), dt(when), text(&uuid)],
        )
        .await
    }

    /// The concept of a drug (0 for a drug the EMR does not have).
    pub(super) async fn drug_concept(&mut self, drug: i64) -> anyhow::Result<i64> {
        let concept: Option<i64> = self
            .conn
            .exec_first("SELECT concept_id FROM drug WHERE drug_id = ?", (drug,))
            .await?;
        Ok(concept.unwrap_or(0))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn order(
        &mut self,
        pid: i64,
        encounter: i64,
        drug: i64,
        when: NaiveDateTime,
        days: i64,
        dose: Option<f64>,
        quantity: i64,
    ) -> anyhow::Result<i64> {
        self.counts.orders += 1;
        let concept = self.drug_concept(drug).await?;
        let uuid = self.rng.uuid();
        let order_id = self
            .insert(
                "INSERT INTO orders (order_type_id, concept_id, orderer, instructions, start_date, auto_expire_date, patient_id, encounter_id, date_created, uuid) VALUES (1, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                vec![Value::Int(concept), text(&format!("{} tablet(s) daily", dose.unwrap_or(1.0))), dt(when), dt(when + chrono::Duration::days(days)), Value::Int(pid), Value::Int(encounter), dt(when), text(&uuid)],
            )
            .await?;
        self.exec(
            "INSERT INTO drug_order (order_id, drug_inventory_id, dose, equivalent_daily_dose, units, frequency, quantity) VALUES (?, ?, ?, ?, 'tab(s)', 'OD', ?)",
            vec![Value::Int(order_id), Value::Int(drug), dose.map_or(Value::NULL, Value::Double), dose.map_or(Value::NULL, Value::Double), Value::Int(quantity)],
        )
        .await?;
        Ok(order_id)
    }
}
