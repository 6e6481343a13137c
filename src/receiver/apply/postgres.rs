//! PostgreSQL: the same rows in schema `cdr` (plus `cdr._stream_visits`, the ledger of visit
//! versions received). Upserts go through COPY (text format, written straight from the wire
//! values) into a staging table dropped at commit, then one `INSERT … ON CONFLICT` per column
//! set, so that PostgreSQL itself converts the wire values to the column types; deletes and
//! the ledgers go through `jsonb_populate_recordset`.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Pool;
use futures_util::SinkExt;
use serde_json::{Map, Value};

use super::schema::{Catalog, BOOKKEEPING};
use super::{
    copy, migrate, oldest_upsert, upsert_groups, Applied, ApplyError, Plan, PlannedRow, Split,
    TablePlan,
};
use crate::mapping::Mapping;
use crate::receiver::ids::{self, maintain};
use crate::wire::{Batch, Op};

const STORE: &str = "postgres";

/// PostgreSQL `cdr` and the IDS tables maintained with it (and the pool reports use).
pub struct PgStore {
    pool: Pool,
    catalog: Catalog,
    pks: HashMap<String, Vec<String>>,
    /// Recompute at most this many patients in a batch's transaction (more are queued);
    /// `None`: no IDS maintenance (benchmarks measure the apply without it).
    maintain: Option<i32>,
}

/// How the PostgreSQL store is laid out and maintained.
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Hash partitions by site_id for new tables (0: plain tables).
    pub partitions: u32,
    /// `ids.inline_max_patients`.
    pub inline_max_patients: i32,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            partitions: 0,
            inline_max_patients: crate::config::DEFAULT_INLINE_MAX_PATIENTS,
        }
    }
}

/// An IDS maintenance error: always retryable (a data error in a definition is a bug of
/// ours, never a reason to refuse the facility's visits).
fn ids_err(e: tokio_postgres::Error) -> ApplyError {
    tracing::error!(error = %e, "IDS maintenance failed");
    ApplyError::Unavailable {
        store: STORE,
        message: format!(
            "IDS maintenance: SQLSTATE {}",
            e.code().map(|c| c.code()).unwrap_or("-")
        ),
    }
}

fn pg_err(table: &str) -> impl Fn(tokio_postgres::Error) -> ApplyError + '_ {
    move |e| match e.code() {
        Some(code) if code.code().starts_with("22") || code.code().starts_with("23") => {
            ApplyError::Rejected {
                store: STORE,
                table: table.to_owned(),
                message: format!("SQLSTATE {}", code.code()),
            }
        }
        Some(code) => ApplyError::Unavailable {
            store: STORE,
            message: format!("SQLSTATE {}", code.code()),
        },
        None => ApplyError::Unavailable {
            store: STORE,
            message: e.to_string(),
        },
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> ApplyError {
    ApplyError::Unavailable {
        store: STORE,
        message: e.to_string(),
    }
}

impl PgStore {
    /// Connects, runs the cdr and IDS migrations (under an advisory lock; partitioned by site
    /// when `options.partitions` asks for it and the tables are new), queues every site for
    /// recomputation when the IDS definitions changed, and reads the catalog.
    pub async fn connect(
        pool: Pool,
        mapping: &Mapping,
        options: PgOptions,
    ) -> Result<Self, ApplyError> {
        let setup = |m: String| ApplyError::Setup {
            store: STORE,
            message: m,
        };
        let mut client = pool.get().await.map_err(pool_err)?;
        let cdr = mapping
            .read_beside(&mapping.cdr_schema)
            .map_err(|e| setup(e.to_string()))?;
        let ids_tables = mapping
            .read_beside(&mapping.ids_tables)
            .map_err(|e| setup(e.to_string()))?;
        let ids_reports = mapping
            .read_beside(&mapping.ids_reports)
            .map_err(|e| setup(e.to_string()))?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&migrate::LOCK])
            .await
            .map_err(pg_err("-"))?;
        let migrated = migrate::run(
            &mut client,
            &[migrate::BOOKKEEPING_DDL, &cdr],
            migrate::IdsFiles {
                tables: &ids_tables,
                reports: &ids_reports,
            },
            options,
        )
        .await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&migrate::LOCK])
            .await
            .ok();
        migrated.map_err(setup)?;
        let mut catalog = Catalog::default();
        for table in mapping.tables.keys() {
            let rows = client
                .query(
                    "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_schema = 'cdr' AND table_name = $1 ORDER BY ordinal_position",
                    &[table],
                )
                .await
                .map_err(pg_err(table))?;
            let cols: Vec<(String, String)> = rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|(c, _)| !BOOKKEEPING.contains(&c.as_str()))
                .collect();
            if cols.is_empty() {
                return Err(setup(format!("cdr.{table} is missing after migrations")));
            }
            catalog.insert(table.clone(), cols);
        }
        drop(client);
        let pks = mapping
            .tables
            .iter()
            .map(|(k, v)| (k.clone(), v.pk.clone()))
            .collect();
        Ok(Self {
            pool,
            catalog,
            pks,
            maintain: Some(options.inline_max_patients),
        })
    }

    /// Turns IDS maintenance off (for benchmarks that measure the apply alone: the IDS
    /// tables then fall behind and must be rebuilt).
    pub fn without_maintenance(mut self) -> Self {
        self.maintain = None;
        self
    }

    /// The pool (reports, views).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether PostgreSQL answers.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// Applies a planned batch in one transaction, and records in it that the site delivered
    /// the batch now, its oldest visit having waited `lag_seconds` at the facility (what
    /// `/status` shows).
    pub async fn apply(
        &self,
        site_id: i64,
        batch: &Batch,
        plan: &Plan,
        lag_seconds: Option<i32>,
    ) -> Result<Applied, ApplyError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err("-"))?;
        let site = site_id as i32;
        // First: the site's lock, so that this batch's recompute sees every committed change of
        // the site, and no other writer of the site runs meanwhile: a site's batches (a tailer
        // sends two at a time; a retry can meet its first attempt, on this receiver or
        // another) are applied one after the other, each reading the tombstones the one before
        // committed.
        ids::lock_site(&tx, site, ids::Hold::Alone)
            .await
            .map_err(pg_err("-"))?;
        // The ledger rows, the site's row, the owners before the writes, each table's
        // tombstones and the staging tables in one round trip (tokio-postgres pipelines the
        // statements of concurrent futures; the ledgers' statements are prepared once per
        // connection). The site's row is written in the batch's transaction: one commit per
        // batch, not two.
        let touched = touched(plan);
        let rows_in = plan.rows_in as i32;
        let ledger = async {
            let statement = tx.prepare_cached(BATCH_LEDGER).await?;
            tx.execute(&statement, &[&site, &batch.batch_id, &rows_in])
                .await
        };
        let owners = async {
            match self.maintain {
                Some(_) => maintain::owners(&tx, site, &touched)
                    .await
                    .map(Some)
                    .map_err(ids_err),
                None => Ok(None),
            }
        };
        let tombstones = futures_util::future::try_join_all(
            plan.tables
                .iter()
                .map(|(table, t)| tombstones(&tx, site, table, &t.rows)),
        );
        let staging = stages(plan);
        let stages = tx.batch_execute(&staging);
        let visits = visit_ledger(site_id, batch);
        let visits = async {
            let statement = tx.prepare_cached(VISIT_LEDGER).await?;
            tx.execute(&statement, &[&visits]).await
        };
        let visit_count = batch.visits.len() as i64;
        let seen = async {
            let statement = tx.prepare_cached(SITE_SEEN).await?;
            tx.execute(&statement, &[&site, &lag_seconds, &visit_count])
                .await
        };
        let (fresh, before, tombstones, staged, visits, seen) =
            tokio::join!(ledger, owners, tombstones, stages, visits, seen);
        if fresh.map_err(pg_err("_stream_batches"))? == 0 {
            tx.rollback().await.map_err(pg_err("-"))?;
            return Ok(Applied::Duplicate);
        }
        let (before, tombstones) = (before?, tombstones?);
        staged.map_err(pg_err("-"))?;
        visits.map_err(pg_err("_stream_visits"))?;
        seen.map_err(pg_err("_stream_sites"))?;
        let mut written = 0;
        for ((table, rows), tombstones) in plan.tables.iter().zip(tombstones) {
            written += self
                .apply_table(&tx, site_id, table, rows, tombstones)
                .await?;
        }
        if let (Some(inline_max), Some(before)) = (self.maintain, before) {
            maintain::finish(&tx, site, &touched, before, inline_max)
                .await
                .map_err(ids_err)?;
        }
        tx.commit().await.map_err(pg_err("-"))?;
        Ok(Applied::Stored(written))
    }

    async fn apply_table(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        site_id: i64,
        table: &str,
        plan: &TablePlan,
        tombstones: HashMap<String, i64>,
    ) -> Result<u64, ApplyError> {
        let known = self.catalog.table(table);
        let pk = &self.pks[table];
        let err = pg_err(table);
        let rows = &plan.rows;
        // Upserts, grouped by the columns of the table they fill; each group is one COPY
        // (text format, written straight from the wire values) into a staging table and one
        // INSERT … ON CONFLICT from it.
        let splits: Vec<Split> = plan.layouts.iter().map(|l| l.split(known)).collect();
        let mut written = 0;
        let stage = stage_name(table);
        for (i, (cols, group)) in upsert_groups(plan, &splits, &tombstones)
            .into_iter()
            .enumerate()
        {
            let mut buf = Vec::new();
            for row in &group {
                let layout = &plan.layouts[row.layout];
                copy::upsert(
                    &mut buf,
                    i,
                    site_id,
                    row,
                    layout,
                    &splits[row.layout],
                    known,
                );
            }
            let names: Vec<&str> = cols.iter().map(|i| known.columns[*i].0.as_str()).collect();
            let quoted: Vec<String> = ["site_id", "lsn"]
                .iter()
                .copied()
                .chain(names.iter().copied())
                .chain(["_overflow"])
                .map(|c| format!("\"{c}\""))
                .collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|c| !pk.iter().any(|p| p == *c))
                .map(|c| format!("\"{c}\" = EXCLUDED.\"{c}\""))
                .chain([
                    "\"_overflow\" = EXCLUDED.\"_overflow\"".to_owned(),
                    "\"lsn\" = EXCLUDED.\"lsn\"".to_owned(),
                ])
                .collect();
            let conflict: Vec<String> = std::iter::once("site_id")
                .chain(pk.iter().map(String::as_str))
                .map(|c| format!("\"{c}\""))
                .collect();
            let cols = quoted.join(",");
            let sink = tx
                .copy_in(&format!("COPY {stage} (_group,{cols}) FROM STDIN"))
                .await
                .map_err(&err)?;
            futures_util::pin_mut!(sink);
            sink.send(bytes::Bytes::from(buf)).await.map_err(&err)?;
            sink.finish().await.map_err(&err)?;
            // (a simple query: one round trip, where a statement without parameters run as a
            // prepared one takes two)
            tx.batch_execute(&format!(
                "INSERT INTO cdr.\"{table}\" AS t ({cols}) SELECT {cols} FROM {stage} WHERE _group = {i} \
                 ON CONFLICT ({conflict}) DO UPDATE SET {updates} WHERE t.lsn < EXCLUDED.lsn",
                conflict = conflict.join(","),
                updates = updates.join(", ")
            ))
            .await
            .map_err(&err)?;
            written += group.len() as u64;
        }
        let deletes: Vec<&PlannedRow> = rows.iter().filter(|r| r.op == Op::Delete).collect();
        if !deletes.is_empty() {
            let records: Vec<Value> = deletes
                .iter()
                .map(|r| {
                    let mut m = Map::new();
                    m.insert("site_id".into(), site_id.into());
                    m.insert("lsn".into(), r.lsn.into());
                    for (c, v) in pk.iter().zip(&r.pk) {
                        m.insert(c.clone(), v.clone());
                    }
                    Value::Object(m)
                })
                .collect();
            let on: Vec<String> = std::iter::once("site_id")
                .chain(pk.iter().map(String::as_str))
                .map(|c| format!("t.\"{c}\" = d.\"{c}\""))
                .collect();
            let sql = format!(
                "DELETE FROM cdr.\"{table}\" AS t USING jsonb_populate_recordset(NULL::cdr.\"{table}\", $1::text::jsonb) AS d WHERE {} AND t.lsn < d.lsn",
                on.join(" AND ")
            );
            tx.execute(&sql, &[&Value::Array(records).to_string()])
                .await
                .map_err(&err)?;
            let tombs: Vec<Value> = deletes.iter().map(|r| serde_json::json!({"site_id": site_id, "table_name": table, "pk_json": r.pk_json(), "lsn": r.lsn})).collect();
            tx.execute(
                "INSERT INTO cdr._stream_tombstones AS t SELECT * FROM jsonb_populate_recordset(NULL::cdr._stream_tombstones, $1::text::jsonb)
                 ON CONFLICT (site_id, table_name, pk_json) DO UPDATE SET lsn = GREATEST(t.lsn, EXCLUDED.lsn)",
                &[&Value::Array(tombs).to_string()],
            )
            .await
            .map_err(&err)?;
            written += deletes.len() as u64;
        }
        Ok(written)
    }
}

/// A batch's row in the batch ledger.
const BATCH_LEDGER: &str = "INSERT INTO cdr._stream_batches (site_id, batch_id, rows_in) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// The site delivered a batch ($3 visit versions; the oldest waited $2 seconds) now.
const SITE_SEEN: &str = "INSERT INTO cdr._stream_sites AS s (site_id, last_seen, lag_seconds, batches, visits_day, visits_today)
     VALUES ($1, now(), $2, 1, current_date, $3)
     ON CONFLICT (site_id) DO UPDATE SET last_seen = now(), lag_seconds = EXCLUDED.lag_seconds,
       batches = s.batches + 1, visits_day = current_date,
       visits_today = CASE WHEN s.visits_day = current_date THEN s.visits_today + $3 ELSE $3 END";

/// A batch's visit versions in the visit ledger.
const VISIT_LEDGER: &str = "INSERT INTO cdr._stream_visits AS t (site_id, stream_key, patient_id, program_id, visit_date, version, complete)
     SELECT site_id, stream_key, patient_id, program_id, visit_date, version, complete
     FROM jsonb_populate_recordset(NULL::cdr._stream_visits, $1::text::jsonb)
     ON CONFLICT (site_id, stream_key) DO UPDATE SET version = EXCLUDED.version, complete = EXCLUDED.complete, received_at = now()
     WHERE t.version < EXCLUDED.version";

/// The visit ledger's records of `batch` (JSON for `VISIT_LEDGER`): a batch can carry several
/// versions (or parts) of one visit, and gets one ledger row each, the highest version (ON
/// CONFLICT may not touch a row twice in one statement).
fn visit_ledger(site_id: i64, batch: &Batch) -> String {
    let mut latest: BTreeMap<&str, &crate::wire::Visit> = BTreeMap::new();
    for v in &batch.visits {
        let slot = latest.entry(v.stream_key.as_str()).or_insert(v);
        if v.version > slot.version {
            *slot = v;
        }
    }
    let visits: Vec<Value> = latest
        .values()
        .map(|v| serde_json::json!({"site_id": site_id, "stream_key": v.stream_key, "patient_id": v.patient_id, "program_id": v.program_id, "visit_date": v.visit_date, "version": v.version, "complete": v.complete}))
        .collect();
    Value::Array(visits).to_string()
}

/// The staging table of a cdr table's upserts: one per table and session, created by the first
/// batch that needs it (`stages`) and emptied at every commit, so a batch does not create and
/// drop catalog entries. `_group` tells apart the rows of different column sets. The receiver
/// loads its catalog at start and sessions do not outlive it, so a staging table always has the
/// columns the catalog names.
fn stage_name(table: &str) -> String {
    format!("pg_temp.\"_stage_{table}\"")
}

/// The statements creating the staging tables `plan`'s upserts need, where missing.
fn stages(plan: &Plan) -> String {
    let mut sql = String::new();
    for (table, t) in &plan.tables {
        if t.rows.iter().any(|r| r.op == Op::Upsert) {
            sql.push_str(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS \
                 SELECT 0 AS _group, * FROM cdr.\"{table}\" WITH NO DATA;",
                stage_name(table)
            ));
        }
    }
    sql
}

/// The tombstones of `table` that may hide one of `rows`' upserts: only those at or after the
/// oldest upsert can (one index range).
async fn tombstones(
    tx: &deadpool_postgres::Transaction<'_>,
    site: i32,
    table: &str,
    rows: &[PlannedRow],
) -> Result<HashMap<String, i64>, ApplyError> {
    let Some(oldest) = oldest_upsert(rows) else {
        return Ok(HashMap::new());
    };
    let statement = tx
        .prepare_cached(
            "SELECT pk_json, lsn FROM cdr._stream_tombstones WHERE site_id = $1 AND table_name = $2 AND lsn >= $3",
        )
        .await
        .map_err(pg_err(table))?;
    let found = tx
        .query(&statement, &[&site, &table, &oldest])
        .await
        .map_err(pg_err(table))?;
    Ok(found.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The integer keys of a plan's rows in the tables the IDS definitions read.
fn touched(plan: &Plan) -> maintain::Touched {
    let mut touched = maintain::Touched::default();
    for (table, t) in &plan.tables {
        if !maintain::Touched::reads(table) {
            continue;
        }
        for row in &t.rows {
            let id = row.pk.first().and_then(|v| match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            });
            if !id.is_some_and(|id| touched.add(table, id)) {
                tracing::warn!(
                    table,
                    "a row key that is not an integer: IDS ignores the row"
                );
            }
        }
    }
    touched
}
