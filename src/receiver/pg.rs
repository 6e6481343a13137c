//! The receiver's PostgreSQL: the connection pool, and the schema files (`cdr`, `ids`) made
//! hash-partitioned by `site_id` when `postgres.partitions` asks for it.
//!
//! Partitioning rule (DESIGN.md "Scale"): every table of `cdr` and `ids` whose primary key
//! leads with `site_id` becomes `PARTITION BY HASH (site_id)` with N partitions; indexes made on
//! the parent reach every partition. The same keys are what Citus needs to distribute by site.

use std::path::Path;
use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// A pool of at most `size` (at least 2) connections to `url`, with JIT compilation off:
/// the receiver's statements (a recompute of a few patients, a report of one scan) run for
/// milliseconds to a second, and compiling them cost more than it saved (TX_CURR of 100k
/// patients: 0.32 s with JIT, 0.03 s without). Plain: for a server on this machine (the
/// tests, the benches); the receiver uses [`pool_with`].
pub fn pool(url: &str, size: usize) -> Result<Pool, String> {
    pool_with(url, size, None)
}

/// [`pool`], over TLS only when `ca_file` is given: the server's certificate must chain to
/// that CA and name the URL's host (`verify-full`).
pub fn pool_with(url: &str, size: usize, ca_file: Option<&Path>) -> Result<Pool, String> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| format!("bad postgres.url: {e}"))?;
    // Custom plans always: a report's statement is cached by name, and a generic plan cannot
    // fold its site and dates (its scans would keep every site's rows and every row's test).
    let ours = "-c jit=off -c plan_cache_mode=force_custom_plan";
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {ours}"),
        _ => ours.to_owned(),
    };
    config.options(&options);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match ca_file {
        Some(ca) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = crate::store_tls::pg_connector(ca).map_err(|e| format!("postgres.{e}"))?;
            Manager::from_config(config, tls, manager_config)
        }
        None => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(size.max(2))
        .build()
        .map_err(|e| e.to_string())
}

/// The statements of a schema file, with every `CREATE TABLE IF NOT EXISTS cdr.x (...)` or
/// `ids.x` whose primary key leads with `site_id` hash-partitioned into `partitions` tables
/// `x_p0` .. (unchanged when `partitions` is 0).
pub fn statements(sql: &str, partitions: u32) -> Vec<String> {
    let mut out = Vec::new();
    for statement in crate::mapping::split_sql(sql) {
        let table = statement
            .strip_prefix("CREATE TABLE IF NOT EXISTS ")
            .and_then(|rest| rest.split_once(' '))
            .map(|(name, _)| name.to_owned())
            .filter(|name| name.starts_with("cdr.") || name.starts_with("ids."));
        match table {
            Some(name) if partitions > 0 && statement.contains("PRIMARY KEY (site_id") => {
                out.push(format!("{statement} PARTITION BY HASH (site_id)"));
                for i in 0..partitions {
                    out.push(format!(
                        "CREATE TABLE IF NOT EXISTS {name}_p{i} PARTITION OF {name} \
                         FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
                    ));
                }
            }
            _ => out.push(statement),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keyed_by_site_are_partitioned_by_hash() {
        let sql = "CREATE SCHEMA IF NOT EXISTS cdr;
            CREATE TABLE IF NOT EXISTS cdr.obs (site_id integer NOT NULL, obs_id integer NOT NULL,
              PRIMARY KEY (site_id, obs_id));
            CREATE TABLE IF NOT EXISTS ids.definitions (name text PRIMARY KEY);
            CREATE INDEX IF NOT EXISTS obs_person ON cdr.obs (site_id, obs_id);";
        assert_eq!(statements(sql, 0).len(), 4);
        let parts = statements(sql, 2);
        assert_eq!(parts.len(), 6, "{parts:?}");
        assert!(parts[1].ends_with("PRIMARY KEY (site_id, obs_id)) PARTITION BY HASH (site_id)"));
        assert_eq!(
            parts[3],
            "CREATE TABLE IF NOT EXISTS cdr.obs_p1 PARTITION OF cdr.obs FOR VALUES WITH (MODULUS 2, REMAINDER 1)"
        );
        assert_eq!(
            parts[4],
            "CREATE TABLE IF NOT EXISTS ids.definitions (name text PRIMARY KEY)"
        );
    }
}
