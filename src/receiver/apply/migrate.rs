//! PostgreSQL migrations: the bookkeeping tables, the `cdr` schema and the two IDS files beside
//! the mapping, partitioned by site when asked. When the IDS definitions (`ids-tables.sql`) are
//! new or changed, every function of schema `ids` is made again and every site's patients are
//! queued for recomputation; when only the report functions (`ids-reports.sql`) changed, those
//! are made again and nothing is queued (nothing stored depends on them).

use sha2::Digest;

use super::PgOptions;
use crate::receiver::{ids, pg};

/// Advisory lock key of the migrations (one receiver migrates at a time).
pub const LOCK: i64 = 0x656d_7201;

pub const BOOKKEEPING_DDL: &str = "
CREATE SCHEMA IF NOT EXISTS cdr;
CREATE TABLE IF NOT EXISTS cdr._stream_batches (
  site_id integer NOT NULL, batch_id text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),
  rows_in integer NOT NULL, PRIMARY KEY (site_id, batch_id));
CREATE TABLE IF NOT EXISTS cdr._stream_tombstones (
  site_id integer NOT NULL, table_name text NOT NULL, pk_json text NOT NULL, lsn bigint NOT NULL,
  PRIMARY KEY (site_id, table_name, pk_json));
CREATE INDEX IF NOT EXISTS tombstones_by_lsn ON cdr._stream_tombstones (site_id, table_name, lsn);
CREATE TABLE IF NOT EXISTS cdr._stream_visits (
  site_id integer NOT NULL, stream_key text NOT NULL, patient_id bigint NOT NULL, program_id bigint NOT NULL,
  visit_date date NOT NULL, version bigint NOT NULL, complete boolean NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (site_id, stream_key));
CREATE TABLE IF NOT EXISTS cdr._stream_sites (
  site_id integer PRIMARY KEY, last_seen timestamptz NOT NULL, lag_seconds integer,
  batches bigint NOT NULL, visits_day date NOT NULL, visits_today bigint NOT NULL);
";

/// The two IDS files: the tables with their definitions, and the report functions that read them.
pub struct IdsFiles<'a> {
    pub tables: &'a str,
    pub reports: &'a str,
}

/// Runs the schema files' statements (partitioned as `options` says), then the IDS files,
/// checks the layout, and queues every site for recomputation when the IDS definitions are new
/// or changed.
pub async fn run(
    client: &mut deadpool_postgres::Client,
    files: &[&str],
    ids_files: IdsFiles<'_>,
    options: PgOptions,
) -> Result<(), String> {
    let tables = Recorded::read(client, TABLES, ids_files.tables).await;
    let reports = Recorded::read(client, REPORTS, ids_files.reports).await;
    if tables.changed {
        // New definitions may change a function's signature, which CREATE OR REPLACE cannot:
        // drop the schema's functions and make them all again (the tables stay).
        drop_functions(client, &[]).await?;
    } else if reports.changed {
        // Only the report functions: drop every function the definitions do not make (so a
        // report function renamed or removed goes too) and make the reports' again.
        drop_functions(client, &function_names(ids_files.tables)).await?;
    }
    for file in files.iter().chain([&ids_files.tables, &ids_files.reports]) {
        for statement in pg::statements(file, options.partitions) {
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| format!("migration failed: {e} in: {}", first_line(&statement)))?;
        }
    }
    let partitioned: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table t JOIN pg_class c ON c.oid = t.partrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'cdr' AND c.relname = 'obs')",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    if options.partitions > 0 && !partitioned {
        return Err(format!(
            "postgres.partitions = {} but the cdr tables already exist unpartitioned: partitioning \
             applies when the tables are created (use a new database, or set partitions = 0)",
            options.partitions
        ));
    }
    if tables.changed {
        let sites = ids::sites(&*client).await.map_err(|e| e.to_string())?;
        let mut queued = 0;
        for &site in &sites {
            queued += ids::queue_rebuild(client, site, false)
                .await
                .map_err(|e| format!("queueing site {site} for recomputation: {e}"))?;
        }
        tables.record(client).await?;
        if !sites.is_empty() {
            tracing::info!(
                sites = sites.len(),
                patients = queued,
                "IDS definitions are new or changed: every patient queued for recomputation"
            );
        }
    }
    if reports.changed {
        reports.record(client).await?;
        tracing::info!("IDS report functions are new or changed: made again");
    }
    Ok(())
}

/// The names under which the IDS files' hashes are recorded in `ids.definitions`.
const TABLES: &str = "ids-tables.sql";
const REPORTS: &str = "ids-reports.sql";

/// One IDS file's hash, and whether it differs from the one `ids.definitions` records.
struct Recorded {
    name: &'static str,
    hash: String,
    changed: bool,
}

impl Recorded {
    async fn read(client: &deadpool_postgres::Client, name: &'static str, text: &str) -> Self {
        let hash = format!("{:x}", sha2::Sha256::digest(text.as_bytes()));
        // (no schema yet, or no table: as if never recorded)
        let stored: Option<String> = client
            .query_opt(
                "SELECT sha256 FROM ids.definitions WHERE name = $1",
                &[&name],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        let changed = stored.as_deref() != Some(hash.as_str());
        Recorded {
            name,
            hash,
            changed,
        }
    }

    async fn record(&self, client: &deadpool_postgres::Client) -> Result<(), String> {
        client
            .execute(
                "INSERT INTO ids.definitions (name, sha256, applied_at) VALUES ($1, $2, now())
                 ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                &[&self.name, &self.hash],
            )
            .await
            .map(drop)
            .map_err(|e| format!("recording {}: {e}", self.name))
    }
}

/// Drops every function of schema `ids` (every overload) whose name is not in `keep`.
async fn drop_functions(client: &deadpool_postgres::Client, keep: &[String]) -> Result<(), String> {
    let failed = |e: tokio_postgres::Error| format!("dropping the old IDS functions: {e}");
    let functions = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = 'ids' AND NOT p.proname = ANY($1)",
            &[&keep],
        )
        .await
        .map_err(failed)?;
    for f in functions {
        // (regprocedure's text is the quoted, schema-qualified signature)
        let signature: String = f.get(0);
        client
            .batch_execute(&format!("DROP FUNCTION IF EXISTS {signature}"))
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// The names of the functions an IDS file makes (`CREATE OR REPLACE FUNCTION ids.NAME(`).
fn function_names(sql: &str) -> Vec<String> {
    sql.lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix("CREATE OR REPLACE FUNCTION ids.")
        })
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_owned())
        .collect()
}

fn first_line(statement: &str) -> &str {
    statement.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_of_the_definitions() {
        let names = function_names(include_str!("../../../mappings/ids-tables.sql"));
        assert!(names.iter().any(|n| n == "def_art_status"), "{names:?}");
        assert!(names.iter().any(|n| n == "recompute"), "{names:?}");
        let reports = function_names(include_str!("../../../mappings/ids-reports.sql"));
        assert!(reports.iter().any(|n| n == "cohort"), "{reports:?}");
        assert!(
            reports.iter().all(|n| !names.contains(n)),
            "{reports:?} in both"
        );
    }
}
