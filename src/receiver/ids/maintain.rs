//! Maintenance in the apply transaction: which patients a batch touched, and their derived
//! rows recomputed before the batch commits (or queued, when they are many).
//!
//! The dirty set is the union of the owners of the batch's rows, with the days they belong to,
//! as stored **before** the writes (a row can move to another patient or day, or be deleted:
//! the old owner's rows of that day must go) and **after** them (`ids.touched`): directly for
//! encounter, obs, orders, patient_program, patient, person; through `orders` for drug_order
//! and through `patient_program` for patient_state (a drug_order that arrives before its order
//! has no owner yet: the order's arrival marks the patient and day, and the recompute then
//! finds the drug_order). Day-keyed tables are recomputed for those days only; program states
//! and the status row for the whole patient. A change of the
//! site's ARV drug set (drug, concept_set) dirties the patients with orders of the drugs that
//! entered or left it, through the queue; a change of the concepts the definitions find by
//! name (concept_name: 'Drug refill', 'New patient', ...) queues every patient of the site.

use std::time::Instant;

use deadpool_postgres::GenericClient;

use crate::metrics as m;

/// The primary keys of a batch's rows in the tables the IDS definitions read.
#[derive(Debug, Default, Clone)]
pub struct Touched {
    /// encounter_id
    pub encounter: Vec<i32>,
    /// obs_id
    pub obs: Vec<i32>,
    /// order_id, of orders and drug_order rows
    pub orders: Vec<i32>,
    /// patient_program_id
    pub patient_program: Vec<i32>,
    /// patient_state_id
    pub patient_state: Vec<i32>,
    /// patient_id / person_id of patient and person rows
    pub persons: Vec<i32>,
    /// A drug, concept_set or concept_name row changed: the ARV drug set, or the concepts
    /// the definitions find by name, may have.
    pub reference: bool,
}

impl Touched {
    /// Records a row of `table` with integer key `id`; rows of tables the definitions do not
    /// read are ignored. Returns false for a key that does not fit an integer column.
    pub fn add(&mut self, table: &str, id: i64) -> bool {
        let Ok(id) = i32::try_from(id) else {
            return false;
        };
        match table {
            "encounter" => self.encounter.push(id),
            "obs" => self.obs.push(id),
            "orders" | "drug_order" => self.orders.push(id),
            "patient_program" => self.patient_program.push(id),
            "patient_state" => self.patient_state.push(id),
            "patient" | "person" => self.persons.push(id),
            "drug" | "concept_set" | "concept_name" => self.reference = true,
            _ => {}
        }
        true
    }

    /// Whether `table` is one the definitions read.
    pub fn reads(table: &str) -> bool {
        matches!(
            table,
            "encounter"
                | "obs"
                | "orders"
                | "drug_order"
                | "patient_program"
                | "patient_state"
                | "patient"
                | "person"
                | "drug"
                | "concept_set"
                | "concept_name"
        )
    }
}

/// The dirty set the touched rows give as stored now (patient, and day `YYYY-MM-DD`, or
/// `None` for the whole patient), and the ARV drug set when it may change.
#[derive(Debug, Default)]
pub struct Owners {
    dirty: Vec<(i32, Option<String>)>,
    arv_drugs: Option<Vec<i32>>,
    named: Option<String>,
}

/// Reads the dirty set of `touched` (call before the writes, and [`finish`] after them).
pub async fn owners(
    tx: &impl GenericClient,
    site_id: i32,
    touched: &Touched,
) -> Result<Owners, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT patient_id, day FROM ids.touched($1, $2, $3, $4, $5, $6, $7)",
            &[
                &site_id,
                &touched.encounter,
                &touched.obs,
                &touched.orders,
                &touched.patient_program,
                &touched.patient_state,
                &touched.persons,
            ],
        )
        .await?;
    let (arv_drugs, named) = if touched.reference {
        let row = tx
            .query_one(
                "SELECT ids.arv_drugs($1), ids.definition_concepts($1)",
                &[&site_id],
            )
            .await?;
        (Some(row.get(0)), Some(row.get(1)))
    } else {
        (None, None)
    };
    Ok(Owners {
        dirty: rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        arv_drugs,
        named,
    })
}

/// What maintenance did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Nothing derived depends on the batch.
    None,
    /// Recomputed in the apply transaction.
    Inline,
    /// Queued for a worker (more than `inline_max` patients).
    Queued,
}

/// After the writes: the new owners, the union with `before`, recomputed in this transaction
/// when at most `inline_max`, else queued; patients of drugs that entered or left the ARV set
/// are queued. Records the site's apply time (`ids.site_state`).
pub async fn finish(
    tx: &impl GenericClient,
    site_id: i32,
    touched: &Touched,
    before: Owners,
    inline_max: i32,
) -> Result<(Path, usize), tokio_postgres::Error> {
    let started = Instant::now();
    let after = owners(tx, site_id, touched).await?;
    let mut dirty = before.dirty;
    dirty.extend(after.dirty);
    dirty.sort_unstable();
    dirty.dedup();
    let (patients, days): (Vec<i32>, Vec<Option<String>>) = dirty.into_iter().unzip();
    let mut distinct = patients.clone();
    distinct.dedup();
    let changed_drugs: Vec<i32> = match (&before.arv_drugs, &after.arv_drugs) {
        (Some(old), Some(new)) => old
            .iter()
            .filter(|d| !new.contains(d))
            .chain(new.iter().filter(|d| !old.contains(d)))
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    let renamed = before.named.is_some() && before.named != after.named;
    let queued: Vec<i32> = if renamed {
        tracing::info!(
            site_id,
            "a concept the IDS definitions find by name changed: queueing every patient of the site"
        );
        tx.query_one("SELECT ids.site_patients($1)", &[&site_id])
            .await?
            .get(0)
    } else if changed_drugs.is_empty() {
        Vec::new()
    } else {
        tracing::info!(
            site_id,
            drugs = changed_drugs.len(),
            "the site's ARV drug set changed: queueing the patients with orders of those drugs"
        );
        tx.query_one(
            "SELECT ids.patients_with_drugs($1, $2)",
            &[&site_id, &changed_drugs],
        )
        .await?
        .get(0)
    };
    let path: String = tx
        .query_one(
            "SELECT ids.maintain($1, $2, $3, $4, $5)",
            &[&site_id, &patients, &days, &queued, &inline_max],
        )
        .await?
        .get(0);
    let path = match path.as_str() {
        "inline" => Path::Inline,
        "queued" => Path::Queued,
        _ => Path::None,
    };
    let label = match path {
        Path::Inline => "inline",
        Path::Queued => "queued",
        Path::None => "none",
    };
    metrics::histogram!(m::IDS_MAINTAIN_DURATION, "path" => label)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(m::IDS_DIRTY_PATIENTS, "path" => label).increment(distinct.len() as u64);
    if !queued.is_empty() {
        metrics::counter!(m::IDS_DIRTY_PATIENTS, "path" => "queued").increment(queued.len() as u64);
    }
    Ok((path, distinct.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_in_their_table_s_list() {
        let mut t = Touched::default();
        assert!(t.add("obs", 5));
        assert!(t.add("drug_order", 7));
        assert!(t.add("orders", 8));
        assert!(t.add("person", 3));
        assert!(t.add("person_name", 9));
        assert!(!t.add("obs", 1 << 40));
        assert!(!t.reference);
        t.add("concept_set", 1);
        assert_eq!((t.obs, t.orders, t.persons), (vec![5], vec![7, 8], vec![3]));
        assert!(t.reference);
        assert!(Touched::reads("patient_state") && !Touched::reads("person_name"));
    }
}
