//! The MySQL operational mirror: the mapped tables with `site_id`, `lsn` and `_overflow`,
//! primary key `(site_id, source pk)`; batches recorded in `_stream_batches`, deletes in
//! `_stream_tombstones`, each site's batches counted (and its writers queued) in `_stream_sites`.

use std::collections::HashMap;
use std::fmt::Write as _;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, TxOpts, Value as My};
use serde_json::Value;

use super::literal::{push_escaped, push_literal, to_mysql};
use super::schema::{Catalog, BOOKKEEPING};
use super::{
    oldest_upsert, upsert_groups, Applied, ApplyError, Plan, PlannedRow, Split, TablePlan,
};
use crate::mapping::Mapping;
use crate::wire::Op;

const STORE: &str = "mysql";
/// Placeholders per statement stay well under MySQL's 65,535.
/// A multi-row INSERT is sent once it holds this many bytes (well under `max_allowed_packet`).
const MAX_STATEMENT_BYTES: usize = 4 << 20;
const MAX_ROWS_PER_STATEMENT: usize = 1_000;

const BOOKKEEPING_DDL: &str = "
CREATE TABLE IF NOT EXISTS _stream_batches (
  site_id INT NOT NULL, batch_id VARCHAR(200) NOT NULL, received_at DATETIME NOT NULL,
  rows_in INT NOT NULL, PRIMARY KEY (site_id, batch_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS _stream_sites (
  site_id INT NOT NULL PRIMARY KEY, batches BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS _stream_tombstones (
  site_id INT NOT NULL, table_name VARCHAR(64) NOT NULL, pk_json VARCHAR(512) NOT NULL,
  lsn BIGINT NOT NULL, PRIMARY KEY (site_id, table_name, pk_json),
  KEY tombstones_by_lsn (site_id, table_name, lsn)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
";

/// The index that finds a batch's possible tombstones by position, for mirrors created before
/// it (MySQL has no `ADD INDEX IF NOT EXISTS`).
const TOMBSTONE_INDEX: &str =
    "ALTER TABLE _stream_tombstones ADD KEY tombstones_by_lsn (site_id, table_name, lsn)";

/// The mirror.
pub struct MirrorStore {
    pool: Pool,
    catalog: Catalog,
    pks: HashMap<String, Vec<String>>,
}

fn unavailable(e: mysql_async::Error) -> ApplyError {
    ApplyError::Unavailable {
        store: STORE,
        message: sanitize(&e),
    }
}

/// An error text without the values a server message may quote.
fn sanitize(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => format!("server error {} (SQLSTATE {})", s.code, s.state),
        other => {
            let text = other.to_string();
            text.split('\'').step_by(2).collect::<Vec<_>>().join("'?'")
        }
    }
}

/// Whether a server error is about the data (not the connection or the server's state).
fn is_data_error(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => {
            s.state.starts_with("22")
                || (s.state.starts_with("23") && s.code != 1213)
                || matches!(s.code, 1264 | 1265 | 1292 | 1366 | 1406)
        }
        _ => false,
    }
}

fn classify(table: &str) -> impl Fn(mysql_async::Error) -> ApplyError + '_ {
    move |e| {
        if is_data_error(&e) {
            ApplyError::Rejected {
                store: STORE,
                table: table.to_owned(),
                message: sanitize(&e),
            }
        } else {
            unavailable(e)
        }
    }
}

impl MirrorStore {
    /// Connects, creates the database if missing, runs the mirror migrations, reads the catalog.
    /// Over TLS only when `ca_file` is given (verified against it and the URL's host).
    pub async fn connect(
        url: &str,
        ca_file: Option<&std::path::Path>,
        database: &str,
        mapping: &Mapping,
    ) -> Result<Self, ApplyError> {
        let setup = |m: String| ApplyError::Setup {
            store: STORE,
            message: m,
        };
        let opts =
            crate::store_tls::mysql_opts(url, ca_file).map_err(|e| setup(format!("mysql: {e}")))?;
        let mut conn = mysql_async::Conn::new(opts.clone())
            .await
            .map_err(unavailable)?;
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
        ))
        .await
        .map_err(unavailable)?;
        conn.disconnect().await.ok();
        let opts = OptsBuilder::from_opts(opts)
            .db_name(Some(database))
            .init(vec![
                "SET time_zone = '+00:00'",
                "SET sql_mode = 'NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO'",
                "SET NAMES utf8mb4",
            ]);
        let pool = Pool::new(opts);
        let mut conn = pool.get_conn().await.map_err(unavailable)?;
        let ddl = mapping
            .read_beside(&mapping.mirror_schema)
            .map_err(|e| setup(e.to_string()))?;
        for stmt in crate::mapping::split_sql(&format!("{ddl}\n{BOOKKEEPING_DDL}")) {
            conn.query_drop(stmt)
                .await
                .map_err(|e| setup(format!("migration failed: {}", sanitize(&e))))?;
        }
        let indexed: Option<i64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = '_stream_tombstones' AND INDEX_NAME = 'tombstones_by_lsn'",
                (database,),
            )
            .await
            .map_err(|e| setup(format!("migration failed: {}", sanitize(&e))))?;
        if indexed == Some(0) {
            conn.query_drop(TOMBSTONE_INDEX)
                .await
                .map_err(|e| setup(format!("migration failed: {}", sanitize(&e))))?;
        }
        let mut catalog = Catalog::default();
        for table in mapping.tables.keys() {
            let cols: Vec<(String, String)> = conn
                .exec(
                    "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    (database, table),
                )
                .await
                .map_err(unavailable)?;
            let cols: Vec<_> = cols
                .into_iter()
                .filter(|(c, _)| !BOOKKEEPING.contains(&c.as_str()))
                .collect();
            if cols.is_empty() {
                return Err(setup(format!(
                    "mirror table {table} is missing after migrations"
                )));
            }
            catalog.insert(table.clone(), cols);
        }
        let pks = mapping
            .tables
            .iter()
            .map(|(k, v)| (k.clone(), v.pk.clone()))
            .collect();
        Ok(Self { pool, catalog, pks })
    }

    /// Whether the mirror answers.
    pub async fn ping(&self) -> bool {
        match self.pool.get_conn().await {
            Ok(mut c) => c.ping().await.is_ok(),
            Err(_) => false,
        }
    }

    /// Applies a planned batch in one transaction.
    pub async fn apply(
        &self,
        site_id: i64,
        batch_id: &str,
        plan: &Plan,
    ) -> Result<Applied, ApplyError> {
        let mut conn = self.pool.get_conn().await.map_err(unavailable)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(unavailable)?;
        // The site's lock, the ledger row and the tombstones of every table in one round trip:
        // three statements in one text query, the values written as literals (the batch id
        // escaped). The site's row in `_stream_sites`, written first, is held to the end of the
        // transaction: a site's batches (a tailer sends two at a time; a retry can meet its
        // first attempt, on this receiver or another) are applied one after the other, each
        // reading the tombstones the one before committed.
        let mut sql = format!(
            "INSERT INTO _stream_sites (site_id, batches) VALUES ({site_id}, 1) ON DUPLICATE KEY UPDATE batches = batches + 1; \
             INSERT IGNORE INTO _stream_batches (site_id, batch_id, received_at, rows_in) VALUES ({site_id}, "
        );
        push_escaped(&mut sql, batch_id);
        let _ = write!(sql, ", UTC_TIMESTAMP(), {})", plan.rows_in);
        let ranges = tombstone_ranges(plan);
        if !ranges.is_empty() {
            let _ = write!(sql, "; SELECT table_name, pk_json, lsn FROM _stream_tombstones WHERE site_id = {site_id} AND ({ranges})");
        }
        let mut result = tx.query_iter(sql).await.map_err(unavailable)?;
        // (the lock's result, the ledger's, then the SELECT's)
        result
            .collect::<mysql_async::Row>()
            .await
            .map_err(unavailable)?;
        let fresh = result.affected_rows() > 0;
        result
            .collect::<mysql_async::Row>()
            .await
            .map_err(unavailable)?;
        let hits: Vec<(String, String, i64)> = if ranges.is_empty() {
            Vec::new()
        } else {
            result.collect().await.map_err(unavailable)?
        };
        drop(result);
        if !fresh {
            tx.rollback().await.map_err(unavailable)?;
            return Ok(Applied::Duplicate);
        }
        let mut tombstones: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for (table, pk_json, lsn) in hits {
            tombstones.entry(table).or_default().insert(pk_json, lsn);
        }
        let mut written = 0;
        for (table, rows) in &plan.tables {
            let tombstones = tombstones.remove(table.as_str()).unwrap_or_default();
            written += self
                .apply_table(&mut tx, site_id, table, rows, tombstones)
                .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Applied::Stored(written))
    }

    async fn apply_table(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        site_id: i64,
        table: &str,
        plan: &TablePlan,
        tombstones: HashMap<String, i64>,
    ) -> Result<u64, ApplyError> {
        let known = self.catalog.table(table);
        let pk = &self.pks[table];
        let err = classify(table);
        let rows = &plan.rows;
        // Upserts, grouped by the columns of the table they fill.
        let splits: Vec<Split> = plan.layouts.iter().map(|l| l.split(known)).collect();
        let mut written = 0;
        for (cols, group) in &upsert_groups(plan, &splits, &tombstones) {
            let names: Vec<&str> = cols.iter().map(|i| known.columns[*i].0.as_str()).collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|c| !pk.iter().any(|p| p == *c))
                .map(|c| format!("`{c}` = IF(VALUES(`lsn`) > `lsn`, VALUES(`{c}`), `{c}`)"))
                .chain([
                    "`_overflow` = IF(VALUES(`lsn`) > `lsn`, VALUES(`_overflow`), `_overflow`)"
                        .to_owned(),
                    "`lsn` = GREATEST(`lsn`, VALUES(`lsn`))".to_owned(),
                ])
                .collect();
            let col_list: Vec<String> = ["site_id", "lsn"]
                .iter()
                .copied()
                .chain(names.iter().copied())
                .chain(["_overflow"])
                .map(|c| format!("`{c}`"))
                .collect();
            let types: Vec<&str> = cols.iter().map(|i| known.columns[*i].1.as_str()).collect();
            let head = format!("INSERT INTO `{table}` ({}) VALUES ", col_list.join(","));
            let tail = format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "));
            // One text statement per 1000 rows or 4 MiB, its values written as literals by
            // mysql_common's own escaping (the session has backslash escapes on: `sql_mode`
            // is set at connect): MariaDB runs a large multi-row INSERT faster from text
            // than bound to a prepared statement's parameters.
            let mut sql = String::new();
            let mut in_statement = 0;
            for (n, row) in group.iter().enumerate() {
                if in_statement == 0 {
                    sql.clear();
                    sql.push_str(&head);
                    sql.push('(');
                } else {
                    sql.push_str(",(");
                }
                let _ = write!(sql, "{site_id},{}", row.lsn);
                let split = &splits[row.layout];
                for ((_, v), t) in split.known.iter().zip(&types) {
                    sql.push(',');
                    push_literal(&mut sql, &row.values[*v], Some(t));
                }
                sql.push(',');
                match split.overflow(&plan.layouts[row.layout], row) {
                    Some(o) => push_escaped(&mut sql, &Value::Object(o).to_string()),
                    None => sql.push_str("NULL"),
                }
                sql.push(')');
                in_statement += 1;
                if in_statement == MAX_ROWS_PER_STATEMENT
                    || sql.len() >= MAX_STATEMENT_BYTES
                    || n + 1 == group.len()
                {
                    sql.push_str(&tail);
                    tx.query_drop(std::mem::take(&mut sql))
                        .await
                        .map_err(&err)?;
                    written += in_statement as u64;
                    in_statement = 0;
                }
            }
        }
        // Deletes: remove older images, leave tombstones.
        let deletes: Vec<&PlannedRow> = rows.iter().filter(|r| r.op == Op::Delete).collect();
        if !deletes.is_empty() {
            let cond = pk
                .iter()
                .map(|c| format!("`{c}` = ?"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let sql = format!("DELETE FROM `{table}` WHERE site_id = ? AND {cond} AND lsn < ?");
            let params: Vec<Vec<My>> = deletes
                .iter()
                .map(|r| {
                    let mut p = vec![My::Int(site_id)];
                    p.extend(r.pk.iter().map(|v| to_mysql(v, None)));
                    p.push(My::Int(r.lsn));
                    p
                })
                .collect();
            tx.exec_batch(sql, params).await.map_err(&err)?;
            for part in deletes.chunks(MAX_ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO _stream_tombstones (site_id, table_name, pk_json, lsn) VALUES {} ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn))",
                    vec!["(?,?,?,?)"; part.len()].join(",")
                );
                let params: Vec<My> = part
                    .iter()
                    .flat_map(|r| {
                        [
                            My::Int(site_id),
                            My::Bytes(table.as_bytes().to_vec()),
                            My::Bytes(r.pk_json().into_bytes()),
                            My::Int(r.lsn),
                        ]
                    })
                    .collect();
                tx.exec_drop(sql, params).await.map_err(&err)?;
            }
            written += deletes.len() as u64;
        }
        Ok(written)
    }
}

/// Where the tombstones that may hide one of `plan`'s upserts are, as an SQL condition on
/// `_stream_tombstones` ("" when there are no upserts): per table, those at or after its
/// oldest upsert (one index range each, normally empty) rather than key by key.
fn tombstone_ranges(plan: &Plan) -> String {
    let mut ranges = String::new();
    for (table, t) in &plan.tables {
        if let Some(oldest) = oldest_upsert(&t.rows) {
            if !ranges.is_empty() {
                ranges.push_str(" OR ");
            }
            ranges.push_str("(table_name = ");
            push_escaped(&mut ranges, table);
            let _ = write!(ranges, " AND lsn >= {oldest})");
        }
    }
    ranges
}
