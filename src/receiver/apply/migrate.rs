//! PostgreSQL migrations: the bookkeeping tables, the `cdr` schema and the IDS file beside the
//! mapping, partitioned by site when asked; when the IDS definitions are new or changed, their
//! functions are made again and every site's patients are queued for recomputation.

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

/// Runs the schema files' statements (partitioned as `options` says), checks the layout,
/// and queues every site for recomputation when the IDS definitions are new or changed.
pub async fn run(
    client: &mut deadpool_postgres::Client,
    files: &[&str],
    ids_sql: &str,
    options: PgOptions,
) -> Result<(), String> {
    let hash = format!("{:x}", sha2::Sha256::digest(ids_sql.as_bytes()));
    let stored: Option<String> = client
        .query_opt(
            "SELECT sha256 FROM ids.definitions WHERE name = 'ids-tables.sql'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0));
    let changed = stored.as_deref() != Some(hash.as_str());
    if changed {
        // New definitions may change a function's signature, which CREATE OR REPLACE cannot:
        // drop the schema's functions and make them all again (the tables stay).
        client
            .batch_execute(
                "DO $$ DECLARE f regprocedure; BEGIN
                   FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
                            JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ids' LOOP
                     EXECUTE 'DROP FUNCTION ' || f;
                   END LOOP;
                 END $$",
            )
            .await
            .map_err(|e| format!("dropping the old IDS functions: {e}"))?;
    }
    for file in files {
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
    if changed {
        let sites = ids::sites(&*client).await.map_err(|e| e.to_string())?;
        let mut queued = 0;
        for &site in &sites {
            queued += ids::queue_rebuild(client, site, false)
                .await
                .map_err(|e| format!("queueing site {site} for recomputation: {e}"))?;
        }
        client
            .execute(
                "INSERT INTO ids.definitions (name, sha256, applied_at) VALUES ('ids-tables.sql', $1, now())
                 ON CONFLICT (name) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                &[&hash],
            )
            .await
            .map_err(|e| e.to_string())?;
        if !sites.is_empty() {
            tracing::info!(
                sites = sites.len(),
                patients = queued,
                "IDS definitions are new or changed: every patient queued for recomputation"
            );
        }
    }
    Ok(())
}

fn first_line(statement: &str) -> &str {
    statement.lines().next().unwrap_or("")
}
