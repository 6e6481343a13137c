//! Checks the source before following it, and reads what the tailer needs from it: the
//! current position, the binlog files it still has, the site id.
//!
//! Every refusal names the setting and the fix.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::{BinlogError, BinlogPosition};

/// What preflight learned about the source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// `@@server_id` of the source.
    pub server_id: u32,
    /// `@@version`.
    pub version: String,
    /// Binlog files the source still has, oldest first, with their sizes.
    pub files: Vec<(String, u64)>,
    /// Whether column names are in the binlog (`binlog_row_metadata=FULL`).
    pub full_metadata: bool,
}

fn mysql(source: mysql_async::Error) -> BinlogError {
    BinlogError::Mysql {
        position: "preflight".into(),
        source,
    }
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, BinlogError> {
    let row: Option<Row> = conn
        .exec_first("SHOW GLOBAL VARIABLES WHERE Variable_name = ?", (name,))
        .await
        .map_err(mysql)?;
    Ok(row.and_then(|r| r.get::<Option<String>, _>(1).flatten()))
}

/// Whether a replica with `replica_id` is registered on the source.
async fn replica_registered(conn: &mut Conn, replica_id: u32) -> bool {
    let replicas: Vec<Row> = conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
    replicas
        .iter()
        .any(|r| r.get::<u32, _>(0) == Some(replica_id))
}

/// Refuses a source the tailer cannot follow exactly; `replica_id` is the tailer's server id.
/// A registration under `replica_id` that outlives `grace` is another live replica (a stopped
/// tailer's registration ends once the source's next heartbeat finds its socket closed).
pub async fn preflight_with_grace(
    conn: &mut Conn,
    replica_id: u32,
    grace: std::time::Duration,
) -> Result<SourceInfo, BinlogError> {
    let deadline = tokio::time::Instant::now() + grace;
    while replica_registered(conn, replica_id).await {
        if tokio::time::Instant::now() >= deadline {
            return Err(BinlogError::Preflight(format!(
                "another replica is connected with server_id {replica_id}: stop it or set a different source.server_id"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    preflight(conn, replica_id).await
}

/// Refuses a source the tailer cannot follow exactly; `replica_id` is the tailer's server id.
pub async fn preflight(conn: &mut Conn, replica_id: u32) -> Result<SourceInfo, BinlogError> {
    let refuse = |m: String| Err(BinlogError::Preflight(m));
    let is =
        |v: &Option<String>, want: &str| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(want));
    let log_bin = variable(conn, "log_bin").await?;
    if !is(&log_bin, "ON") {
        return refuse(
            "binary logging is off: start the source with log_bin (e.g. --log-bin=binlog)".into(),
        );
    }
    let format = variable(conn, "binlog_format").await?;
    if !is(&format, "ROW") {
        return refuse(format!(
            "binlog_format is {}: set binlog_format=ROW on the source (SET GLOBAL binlog_format='ROW' and in my.cnf)",
            format.unwrap_or_default()
        ));
    }
    let image = variable(conn, "binlog_row_image").await?;
    if image.is_some() && !is(&image, "FULL") {
        return refuse(format!(
            "binlog_row_image is {}: set binlog_row_image=FULL on the source",
            image.unwrap_or_default()
        ));
    }
    for (name, fix) in [
        ("log_bin_compress", "set log_bin_compress=OFF"),
        ("encrypt_binlog", "set encrypt_binlog=OFF"),
        (
            "binlog_transaction_compression",
            "set binlog_transaction_compression=OFF",
        ),
    ] {
        if is(&variable(conn, name).await?, "ON") {
            return refuse(format!(
                "{name} is ON: the tailer cannot read such binlogs; {fix} on the source"
            ));
        }
    }
    let server_id: u32 = variable(conn, "server_id")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if server_id == replica_id {
        return refuse(format!(
            "the source's server_id is {server_id}, the same as source.server_id: give the tailer another id"
        ));
    }
    let replicas: Vec<Row> = conn.query("SHOW SLAVE HOSTS").await.unwrap_or_default();
    if replicas
        .iter()
        .any(|r| r.get::<u32, _>(0) == Some(replica_id))
    {
        return refuse(format!(
            "another replica is connected with server_id {replica_id}: stop it or set a different source.server_id"
        ));
    }
    let metadata = variable(conn, "binlog_row_metadata").await?;
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(mysql)?
        .unwrap_or_default();
    Ok(SourceInfo {
        server_id,
        version,
        files: binlog_files(conn).await?,
        full_metadata: is(&metadata, "FULL"),
    })
}

/// The binlog files the source has, oldest first, with their sizes in bytes.
pub async fn binlog_files(conn: &mut Conn) -> Result<Vec<(String, u64)>, BinlogError> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await.map_err(mysql)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0))))
        .collect())
}

/// The source's current write position (`SHOW MASTER STATUS`).
pub async fn server_position(conn: &mut Conn) -> Result<BinlogPosition, BinlogError> {
    let row: Option<Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(mysql)?;
    let row = row.ok_or_else(|| {
        BinlogError::Preflight("SHOW MASTER STATUS is empty: is log_bin on?".into())
    })?;
    Ok(BinlogPosition {
        file: row.get::<String, _>(0).unwrap_or_default(),
        pos: row.get::<u64, _>(1).unwrap_or(4),
    })
}

/// The EMR's site id: global property `current_health_center_id`.
pub async fn read_site_id(conn: &mut Conn, database: &str) -> Result<i64, BinlogError> {
    let sql = format!(
        "SELECT property_value FROM `{database}`.global_property WHERE property = 'current_health_center_id'"
    );
    let value: Option<Option<String>> = conn.query_first(sql).await.map_err(mysql)?;
    value
        .flatten()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            BinlogError::Preflight(format!(
                "{database}.global_property has no numeric current_health_center_id: set it, or set source.site_id"
            ))
        })
}
