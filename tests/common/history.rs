//! Generated histories of a site, as wire batches: the rows of a small ART clinic written,
//! amended, voided and unvoided, hard-deleted, moved to another patient or another day, a
//! drug_order sent before its order, an ARV drug entering concept set 1085, and a resync (every
//! current row sent again in one big batch). Deterministic for a seed. Only what the IDS
//! definitions read is modelled; every row is sent with its whole current image.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// What kinds of events a history holds (the test asserts each happened).
#[derive(Debug, Default, Clone)]
pub struct Cases {
    pub visits: u64,
    pub amendments: u64,
    pub voids: u64,
    pub unvoids: u64,
    pub deletes: u64,
    pub moves: u64,
    pub day_moves: u64,
    pub early_drug_orders: u64,
    pub arv_set_changes: u64,
    pub resyncs: u64,
    pub outcomes: u64,
}

/// A deterministic xorshift generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

/// One site's history.
pub struct History {
    pub site: i64,
    rng: Rng,
    lsn: u64,
    next_id: i64,
    batch_no: u64,
    /// (table, id) → current image (pk column included); deleted rows are gone.
    rows: BTreeMap<(&'static str, i64), Value>,
    patients: Vec<i64>,
    /// drug_order rows sent before their order: the order to send later.
    held_orders: Vec<(i64, Value)>,
    /// The latest order of each (patient, drug).
    last_order: BTreeMap<(i64, i64), i64>,
    pub cases: Cases,
}

const PK: [(&str, &str); 10] = [
    ("person", "person_id"),
    ("patient", "patient_id"),
    ("patient_program", "patient_program_id"),
    ("patient_state", "patient_state_id"),
    ("encounter", "encounter_id"),
    ("obs", "obs_id"),
    ("orders", "order_id"),
    ("drug_order", "order_id"),
    ("drug", "drug_id"),
    ("concept_set", "concept_set_id"),
];

fn pk_of(table: &str) -> &'static str {
    PK.iter()
        .find(|(t, _)| *t == table)
        .map(|(_, k)| *k)
        .unwrap()
}

fn day(n: u64) -> String {
    (chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Duration::days(n as i64))
        .to_string()
}

impl History {
    pub fn new(site: i64, seed: u64) -> Self {
        let mut h = Self {
            site,
            rng: Rng::new(seed),
            lsn: 1_000,
            next_id: site * 1_000_000,
            batch_no: 0,
            rows: BTreeMap::new(),
            patients: Vec::new(),
            held_orders: Vec::new(),
            last_order: BTreeMap::new(),
            cases: Cases::default(),
        };
        // the site's drugs: two ARVs in set 1085, and drug 297 (not yet an ARV)
        for (drug, concept) in [(983, 2833), (982, 9662), (297, 916)] {
            h.rows.insert(
                ("drug", drug),
                json!({"drug_id": drug, "concept_id": concept}),
            );
        }
        for (id, concept) in [(1, 2833), (2, 9662)] {
            h.rows.insert(
                ("concept_set", id),
                json!({"concept_set_id": id, "concept_id": concept, "concept_set": 1085}),
            );
        }
        h
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn put(&mut self, out: &mut Vec<Value>, table: &'static str, id: i64, image: Value) {
        self.rows.insert((table, id), image.clone());
        out.push(self.wire(table, id, "upsert", image));
    }

    fn wire(&mut self, table: &str, id: i64, op: &str, image: Value) -> Value {
        self.lsn += 1;
        let pk = pk_of(table);
        let mut data = image;
        data.as_object_mut().unwrap().remove(pk);
        if op == "delete" {
            data = json!({});
        }
        json!({"table": table, "op": op, "lsn": self.lsn, "pk": {pk: id}, "data": data})
    }

    fn register(&mut self, out: &mut Vec<Value>, on: u64) -> i64 {
        let p = self.id();
        let gender = if p % 2 == 0 { "F" } else { "M" };
        let birthdate = format!("19{}-0{}-15", 50 + p % 49, 1 + p % 9);
        self.put(
            out,
            "person",
            p,
            json!({"person_id": p, "gender": gender, "birthdate": birthdate, "voided": 0}),
        );
        self.put(out, "patient", p, json!({"patient_id": p, "voided": 0}));
        let program = self.id();
        self.put(
            out,
            "patient_program",
            program,
            json!({"patient_program_id": program, "patient_id": p, "program_id": 1, "voided": 0}),
        );
        let state = self.id();
        self.put(out, "patient_state", state, json!({"patient_state_id": state, "patient_program_id": program,
            "state": 7, "start_date": day(on), "date_created": format!("{} 08:00:00", day(on)), "voided": 0}));
        let reg = self.id();
        let at = format!("{} 08:00:00", day(on));
        self.put(out, "encounter", reg, json!({"encounter_id": reg, "encounter_type": 9, "patient_id": p, "encounter_datetime": at, "voided": 0}));
        for (concept, value) in [
            (
                2516,
                json!({"value_datetime": format!("{} 00:00:00", day(on.saturating_sub(self.rng.below(400))))}),
            ),
            (
                3289,
                json!({"value_coded": if self.rng.chance(0.2) { 7572 } else { 7571 }}),
            ),
        ] {
            let o = self.id();
            let mut image = json!({"obs_id": o, "person_id": p, "concept_id": concept, "encounter_id": reg,
                "obs_datetime": at, "voided": 0});
            for (k, v) in value.as_object().unwrap() {
                image[k] = v.clone();
            }
            self.put(out, "obs", o, image);
        }
        self.patients.push(p);
        p
    }

    fn visit(&mut self, out: &mut Vec<Value>, p: i64, on: u64) {
        self.cases.visits += 1;
        let at = format!("{} 09:00:00", day(on));
        let mut encounters = Vec::new();
        for kind in [53, 25, 7] {
            let e = self.id();
            encounters.push(e);
            self.put(out, "encounter", e, json!({"encounter_id": e, "encounter_type": kind, "patient_id": p, "encounter_datetime": at, "voided": 0}));
        }
        for drug in if self.rng.chance(0.3) {
            vec![983, 297]
        } else {
            vec![983]
        } {
            let o = self.id();
            let order = json!({"order_id": o, "order_type_id": 1, "patient_id": p, "encounter_id": encounters[1], "start_date": at, "voided": 0});
            let quantity =
                30 * (1 + self.rng.below(3)) as i64 + if self.rng.chance(0.05) { 6000 } else { 0 };
            let drug_order = json!({"order_id": o, "drug_inventory_id": drug,
                "equivalent_daily_dose": if self.rng.chance(0.1) { Value::Null } else { json!(1.0) }, "quantity": quantity});
            if self.rng.chance(0.15) {
                // the drug_order arrives first; its order in a later batch
                self.cases.early_drug_orders += 1;
                self.put(out, "drug_order", o, drug_order);
                self.held_orders.push((o, order));
            } else {
                self.put(out, "orders", o, order);
                self.put(out, "drug_order", o, drug_order);
            }
            if self.rng.chance(0.5) {
                // pills brought back: tied to the patient's previous order of the drug (as the
                // EMR does, so the obs and its order have different days), or naming the drug
                let b = self.id();
                let previous = self.last_order.get(&(p, drug)).copied();
                let tied = previous.is_some() && self.rng.chance(0.6);
                let o = previous.unwrap_or(o);
                let pills = self.rng.below(8) as f64;
                self.put(out, "obs", b, json!({"obs_id": b, "person_id": p, "concept_id": 2540, "encounter_id": encounters[0],
                    "order_id": if tied { json!(o) } else { Value::Null }, "value_drug": if tied { Value::Null } else { json!(drug) },
                    "value_numeric": pills, "obs_datetime": at, "voided": 0}));
            }
            self.last_order.insert((p, drug), o);
        }
        let a = self.id();
        let next = day(on + 30 + self.rng.below(60));
        self.put(
            out,
            "obs",
            a,
            json!({"obs_id": a, "person_id": p, "concept_id": 5096, "encounter_id": encounters[2],
            "value_datetime": format!("{next} 00:00:00"), "obs_datetime": at, "voided": 0}),
        );
    }

    fn pick(&mut self, table: &str) -> Option<(i64, Value)> {
        let ids: Vec<i64> = self
            .rows
            .keys()
            .filter(|(t, _)| *t == table)
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            return None;
        }
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        self.rows
            .get(&(pk_table(table), id))
            .cloned()
            .map(|v| (id, v))
    }

    /// The next batch of day `on`: a registration now and then, orders held back from the
    /// last batch, and 1–4 events; (batch id, body).
    pub fn batch(&mut self, on: u64) -> (String, Vec<u8>) {
        let mut out = Vec::new();
        if self.patients.len() < 3 || self.rng.chance(0.25) {
            let p = self.register(&mut out, on);
            self.visit(&mut out, p, on);
        }
        for (o, order) in std::mem::take(&mut self.held_orders) {
            self.put(&mut out, "orders", o, order);
        }
        for _ in 0..1 + self.rng.below(4) {
            self.event(&mut out, on);
        }
        self.body(out)
    }

    fn event(&mut self, out: &mut Vec<Value>, on: u64) {
        let table = [
            "encounter",
            "obs",
            "orders",
            "drug_order",
            "patient",
            "patient_program",
            "patient_state",
        ][self.rng.below(7) as usize];
        match self.rng.below(10) {
            0..=2 => {
                let p = self.patients[self.rng.below(self.patients.len() as u64) as usize];
                self.visit(out, p, on);
            }
            3 => {
                // amendment: a quantity, a value, a datetime (the row moves to another day)
                if let Some((id, mut image)) = self.pick(table) {
                    let changed = match table {
                        "drug_order" if self.rng.chance(0.5) => {
                            // the drug corrected: pills tied to this order count for the other
                            let drug = if image["drug_inventory_id"] == 983 {
                                982
                            } else {
                                983
                            };
                            image["drug_inventory_id"] = json!(drug);
                            true
                        }
                        "drug_order" => {
                            image["quantity"] = json!(30 * (1 + self.rng.below(4)) as i64);
                            true
                        }
                        "obs" => {
                            image["value_numeric"] = json!(self.rng.below(9) as f64);
                            true
                        }
                        "encounter" | "orders" => {
                            let col = if table == "encounter" {
                                "encounter_datetime"
                            } else {
                                "start_date"
                            };
                            image[col] = json!(format!(
                                "{} 10:00:00",
                                day(on.saturating_sub(self.rng.below(20)))
                            ));
                            self.cases.day_moves += 1;
                            true
                        }
                        _ => false,
                    };
                    if changed {
                        self.cases.amendments += 1;
                        self.put(out, pk_table(table), id, image);
                    }
                }
            }
            4 | 5 => {
                // void or unvoid
                if let Some((id, mut image)) = self.pick(table) {
                    if image.get("voided").is_some() {
                        let voided = image["voided"] == 1;
                        image["voided"] = json!(if voided { 0 } else { 1 });
                        if voided {
                            self.cases.unvoids += 1
                        } else {
                            self.cases.voids += 1
                        }
                        self.put(out, pk_table(table), id, image);
                    }
                }
            }
            6 => {
                // a hard delete
                if let Some((id, image)) = self.pick(table) {
                    self.rows.remove(&(pk_table(table), id));
                    self.cases.deletes += 1;
                    out.push(self.wire(pk_table(table), id, "delete", image));
                }
            }
            7 => {
                // a row moves to another patient (a merge)
                let col = match table {
                    "encounter" | "orders" | "patient_program" => Some("patient_id"),
                    "obs" => Some("person_id"),
                    _ => None,
                };
                if let (Some(col), Some((id, mut image))) = (col, self.pick(table)) {
                    let p = self.patients[self.rng.below(self.patients.len() as u64) as usize];
                    if image[col] != json!(p) {
                        image[col] = json!(p);
                        self.cases.moves += 1;
                        self.put(out, pk_table(table), id, image);
                    }
                }
            }
            8 => {
                // an outcome: a new state (died, transferred out, stopped) or back on ART
                if let Some((_, program)) = self.pick("patient_program") {
                    let s = self.id();
                    let state = [3, 127, 2, 6, 7][self.rng.below(5) as usize];
                    self.cases.outcomes += 1;
                    self.put(out, "patient_state", s, json!({"patient_state_id": s,
                        "patient_program_id": program["patient_program_id"], "state": state,
                        "start_date": day(on), "date_created": format!("{} 11:00:00", day(on)), "voided": 0}));
                }
            }
            _ => {
                // the ARV set changes: drug 297 enters set 1085, or leaves it again
                let key = ("concept_set", 3);
                if self.rows.contains_key(&key) {
                    self.rows.remove(&key);
                    out.push(self.wire("concept_set", 3, "delete", json!({})));
                } else {
                    self.put(
                        out,
                        "concept_set",
                        3,
                        json!({"concept_set_id": 3, "concept_id": 916, "concept_set": 1085}),
                    );
                }
                self.cases.arv_set_changes += 1;
            }
        }
    }

    /// A resync: every current row again, newer positions, one batch.
    pub fn resync(&mut self) -> (String, Vec<u8>) {
        self.cases.resyncs += 1;
        let rows: Vec<((&'static str, i64), Value)> = self.rows.clone().into_iter().collect();
        let mut out = Vec::new();
        for ((table, id), image) in rows {
            out.push(self.wire(table, id, "upsert", image));
        }
        self.body(out)
    }

    fn body(&mut self, rows: Vec<Value>) -> (String, Vec<u8>) {
        self.batch_no += 1;
        let id = format!("hist-{}-{}", self.site, self.batch_no);
        let body = json!({"schema_version": 1, "site_id": self.site, "batch_id": id,
            "visits": [{"stream_key": format!("{}:0:0:2024-01-01", self.site), "patient_id": 0,
                        "program_id": 0, "visit_date": "2024-01-01", "version": self.batch_no,
                        "complete": true, "rows": rows}]});
        (id, body.to_string().into_bytes())
    }
}

fn pk_table(table: &str) -> &'static str {
    PK.iter()
        .find(|(t, _)| *t == table)
        .map(|(t, _)| *t)
        .unwrap()
}
