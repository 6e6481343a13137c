//! Wire batches as a tailer sends them: one visit per patient (4 encounters, an ARV order of
//! one or two drugs, 11 obs: pills brought back, appointment, vitals, TB status, adherence),
//! 19 rows a visit, with ids above everything the fill wrote.

use serde_json::{json, Value};

/// Ids of new rows start here (the fill stays far below).
const BASE: i64 = 1_500_000_000;

/// Makes batches; every call gives fresh row ids and lsns.
pub struct Batches {
    next_id: i64,
    next_lsn: u64,
    batch_no: u64,
}

impl Batches {
    pub fn new() -> Self {
        Self {
            next_id: BASE,
            next_lsn: 1 << 40,
            batch_no: 0,
        }
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn row(&mut self, table: &str, pk: Value, data: Value) -> Value {
        self.next_lsn += 1;
        json!({"table": table, "op": "upsert", "lsn": self.next_lsn, "pk": pk, "data": data})
    }

    /// A batch of `site` with one visit on `day` for each of `patients`; (body, rows).
    pub fn visits(&mut self, site: i64, patients: &[i64], day: &str) -> (Vec<u8>, usize) {
        let at = format!("{day} 09:00:00");
        let mut visits = Vec::new();
        let mut rows_in = 0;
        for &p in patients {
            let mut rows = Vec::new();
            let mut encounters = Vec::new();
            for kind in [51, 53, 25, 7] {
                let e = self.id();
                encounters.push(e);
                rows.push(self.row(
                    "encounter",
                    json!({"encounter_id": e}),
                    json!({
                    "encounter_type": kind, "patient_id": p, "provider_id": 1, "location_id": site,
                    "encounter_datetime": at, "program_id": 1, "creator": 1, "date_created": at,
                    "voided": 0, "uuid": format!("bench-e-{e}")}),
                ));
            }
            for drug in if p % 3 == 0 {
                vec![983, 982]
            } else {
                vec![983]
            } {
                let o = self.id();
                rows.push(self.row(
                    "orders",
                    json!({"order_id": o}),
                    json!({
                    "order_type_id": 1, "concept_id": 2833, "orderer": 1, "start_date": at,
                    "patient_id": p, "encounter_id": encounters[2], "voided": 0, "creator": 1,
                    "date_created": at, "uuid": format!("bench-o-{o}")}),
                ));
                rows.push(self.row(
                    "drug_order",
                    json!({"order_id": o}),
                    json!({
                    "drug_inventory_id": drug, "dose": 1.0, "equivalent_daily_dose": 1.0,
                    "units": "tab(s)", "frequency": "OD", "quantity": 90}),
                ));
            }
            for (concept, encounter, value) in [
                (2540, 1, json!({"value_drug": 983, "value_numeric": 3.0})),
                (
                    5096,
                    3,
                    json!({"value_datetime": format!("{day} 00:00:00")}),
                ),
                (5089, 0, json!({"value_numeric": 61.5})),
                (5090, 0, json!({"value_numeric": 165.0})),
                (5085, 0, json!({"value_numeric": 120.0})),
                (5086, 0, json!({"value_numeric": 80.0})),
                (5088, 0, json!({"value_numeric": 36.6})),
                (7459, 1, json!({"value_coded": 7454})),
                (6987, 1, json!({"value_coded": 1065})),
                (2973, 1, json!({"value_numeric": 0.0})),
                (2834, 2, json!({"value_drug": 983, "value_numeric": 90.0})),
            ] {
                let o = self.id();
                let mut data = json!({"person_id": p, "concept_id": concept,
                    "encounter_id": encounters[encounter], "obs_datetime": at, "location_id": site,
                    "creator": 1, "date_created": at, "voided": 0, "uuid": format!("bench-b-{o}")});
                for (k, v) in value.as_object().unwrap() {
                    data[k] = v.clone();
                }
                rows.push(self.row("obs", json!({"obs_id": o}), data));
            }
            rows_in += rows.len();
            visits.push(
                json!({"stream_key": format!("{site}:{p}:1:{day}"), "patient_id": p,
                "program_id": 1, "visit_date": day, "version": 1, "complete": true, "rows": rows}),
            );
        }
        self.batch_no += 1;
        let body = json!({"schema_version": 1, "site_id": site,
            "batch_id": format!("bench-ids-{}", self.batch_no), "visits": visits});
        (body.to_string().into_bytes(), rows_in)
    }
}
