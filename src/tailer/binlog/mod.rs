//! The mysql_async adapter: connect as a replica, check the source (preflight), follow its
//! binlog from a position, and turn row events of the mapped tables into row changes with
//! their positions and transaction boundaries.
//!
//! mysql_async gaps handled here (DESIGN.md): the first fake ROTATE carries 4 checksum bytes
//! glued to the file name; MariaDB GTID events (162) are parsed by hand; signed MEDIUMINT is
//! sign-extended (`value`); compressed/encrypted MariaDB events are refused; positions are
//! tracked here, not by the driver.
//!
//! Invariant: `Step::Commit` carries the position *after* a whole source transaction; rows are
//! only ever returned between a transaction's start and its commit.

pub mod columns;
mod error;
mod gtid;
pub mod images;
mod preflight;
pub mod value;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::Op;
use futures_util::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, Pool};

pub use crate::position::{file_sequence, lsn, BinlogPosition, MAX_EPOCH};
use error::stream_error;
pub use error::BinlogError;
pub use preflight::{
    binlog_files, preflight, preflight_with_grace, read_site_id, server_position, SourceInfo,
};
use value::ColumnDesc;

/// One row of a mapped table, changed by the source.
#[derive(Debug, Clone)]
pub struct RowChange {
    /// Source table.
    pub table: String,
    /// Upsert or delete.
    pub op: Op,
    /// All columns of the row (after image, or before image for deletes), as wire JSON.
    pub image: images::Image,
    /// Position right after the event that carried it.
    pub position: BinlogPosition,
    /// When the statement ran on the source (unix seconds).
    pub timestamp: u32,
}

/// One step of the stream.
#[derive(Debug)]
pub enum Step {
    /// Row changes of the current transaction.
    Rows(Vec<RowChange>),
    /// A transaction (or DDL statement) ended; the checkpoint may move to `position`.
    Commit {
        /// Position after the transaction.
        position: BinlogPosition,
        /// MariaDB GTID of the transaction, `domain-server-seq`.
        gtid: Option<String>,
        /// Source commit time (unix seconds).
        timestamp: u32,
        /// A DDL statement on the replicated database ended here.
        ddl: bool,
    },
    /// The source said it is alive and has nothing new (heartbeat).
    Heartbeat,
    /// An event that changes nothing for us.
    Skip,
}

/// MariaDB event types mysql_async does not parse.
const MARIADB_GTID: u8 = 162;
const MARIADB_START_ENCRYPTION: u8 = 164;
const MARIADB_COMPRESSED_FIRST: u8 = 165;
const MARIADB_COMPRESSED_LAST: u8 = 171;
const ROTATE_EVENT: u8 = 4;

/// Connection options for the source (over TLS when `source.ca_file` is set).
pub fn source_opts(source: &crate::config::SourceConfig) -> Result<Opts, BinlogError> {
    crate::store_tls::mysql_opts(source.url.expose(), source.ca_file.as_deref())
        .map_err(|e| BinlogError::Preflight(format!("source: {e}")))
}

/// A table map's columns as learnt at its first rows: the table, the columns' descriptions,
/// and their layout for decoding images straight to JSON.
struct Known {
    table: String,
    descs: Arc<[ColumnDesc]>,
    layout: Option<images::Layout>,
    /// The body of the last table map event found to match (compared first, as bytes).
    map: Vec<u8>,
}

/// Follows the source's binlog from a position.
pub struct BinlogReader {
    stream: BinlogStream,
    database: String,
    mapped: HashMap<String, Vec<String>>,
    file: String,
    seen_format: bool,
    gtid: Option<String>,
    standalone: bool,
    /// Per table id: what is known of its columns.
    columns: HashMap<u64, Known>,
    names: HashMap<String, Vec<columns::CatalogColumn>>,
    lookup: Pool,
}

impl BinlogReader {
    /// Registers as replica `server_id` and requests the binlog from `start`.
    pub async fn connect(
        opts: Opts,
        lookup: Pool,
        server_id: u32,
        start: &BinlogPosition,
        database: &str,
        mapped: HashMap<String, Vec<String>>,
        heartbeat: Duration,
    ) -> Result<Self, BinlogError> {
        let mysql = |source| BinlogError::Mysql {
            position: start.to_string(),
            source,
        };
        let mut conn = Conn::new(opts).await.map_err(mysql)?;
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(mysql)?;
        let period = heartbeat.as_nanos().clamp(1_000_000, 4_294_967_000_000_000);
        conn.query_drop(format!("SET @master_heartbeat_period = {period}"))
            .await
            .map_err(mysql)?;
        let request = BinlogStreamRequest::new(server_id)
            .with_filename(start.file.as_bytes())
            .with_pos(start.pos);
        let stream = conn.get_binlog_stream(request).await.map_err(mysql)?;
        Ok(Self {
            stream,
            database: database.to_owned(),
            mapped,
            file: start.file.clone(),
            seen_format: false,
            gtid: None,
            standalone: false,
            columns: HashMap::new(),
            names: HashMap::new(),
            lookup,
        })
    }

    fn here(&self, pos: u32) -> BinlogPosition {
        BinlogPosition {
            file: self.file.clone(),
            pos: pos as u64,
        }
    }

    /// The next step; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<Step>, BinlogError> {
        let event = match self.stream.next().await {
            None => return Ok(None),
            Some(Err(source)) => return Err(stream_error(source, &self.file)),
            Some(Ok(event)) => event,
        };
        let header = event.header();
        let raw_type = header.event_type_raw();
        let end = self.here(header.log_pos());
        let decode = |what, source| BinlogError::Decode {
            what,
            position: end.to_string(),
            table: String::new(),
            source,
        };
        if raw_type == MARIADB_START_ENCRYPTION
            || (MARIADB_COMPRESSED_FIRST..=MARIADB_COMPRESSED_LAST).contains(&raw_type)
        {
            return Err(BinlogError::Refused {
                position: end.to_string(),
                reason: format!(
                    "MariaDB event type {raw_type} (compressed or encrypted binlog) cannot be \
                     decoded: set log_bin_compress=OFF and encrypt_binlog=OFF on the source"
                ),
            });
        }
        if raw_type == MARIADB_GTID {
            let (gtid, standalone) = gtid::parse_mariadb(event.data(), header.server_id())
                .ok_or_else(|| {
                    decode(
                        "GTID event",
                        std::io::Error::new(std::io::ErrorKind::InvalidData, "short GTID event"),
                    )
                })?;
            self.gtid = Some(gtid);
            self.standalone = standalone;
            return Ok(Some(Step::Skip));
        }
        if raw_type == ROTATE_EVENT {
            if let Ok(Some(EventData::RotateEvent(rotate))) = event.read_data() {
                let mut name = rotate.name_raw().to_vec();
                // The fake ROTATE sent on connect precedes the format description, so the
                // driver leaves its 4 checksum bytes glued to the name.
                if !self.seen_format
                    && name.len() > 4
                    && file_sequence(&String::from_utf8_lossy(&name)).is_none()
                {
                    name.truncate(name.len() - 4);
                }
                self.file = String::from_utf8_lossy(&name).into_owned();
            }
            return Ok(Some(Step::Skip));
        }
        let data = match event.read_data().map_err(|e| decode("event", e))? {
            Some(data) => data,
            None => return Ok(Some(Step::Skip)),
        };
        match data {
            EventData::FormatDescriptionEvent(_) => {
                self.seen_format = true;
                Ok(Some(Step::Skip))
            }
            EventData::HeartbeatEvent => Ok(Some(Step::Heartbeat)),
            EventData::XidEvent(_) => Ok(Some(self.commit(end, header.timestamp(), false))),
            EventData::QueryEvent(query) => {
                let sql = query.query();
                let verb = sql
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                match verb.as_str() {
                    "BEGIN" => Ok(Some(Step::Skip)),
                    "COMMIT" => Ok(Some(self.commit(end, header.timestamp(), false))),
                    _ => {
                        // DDL and other statements: each is its own transaction.
                        let ours = query.schema() == self.database || sql.contains(&self.database);
                        if ours {
                            self.names.clear();
                            self.columns.clear();
                        }
                        Ok(Some(self.commit(end, header.timestamp(), ours)))
                    }
                }
            }
            EventData::TableMapEvent(tme) => {
                // A table map comes with every transaction that writes the table: what was
                // learnt of its columns stays while the map says the same (table, types and
                // metadata); DDL clears it all (above).
                let raw = event.data();
                let same = self.columns.get_mut(&tme.table_id()).is_some_and(|k| {
                    if k.map == raw {
                        return true;
                    }
                    let same = k.table == tme.table_name()
                        && match &k.layout {
                            Some(layout) => layout.matches(&tme),
                            None => images::Layout::of(&tme).is_none(),
                        };
                    if same {
                        k.map = raw.to_vec();
                    }
                    same
                });
                if !same {
                    self.columns.remove(&tme.table_id());
                }
                Ok(Some(Step::Skip))
            }
            EventData::RowsEvent(rows) => self.rows(rows, end, header.timestamp()).await.map(Some),
            _ => Ok(Some(Step::Skip)),
        }
    }

    fn commit(&mut self, position: BinlogPosition, timestamp: u32, ddl: bool) -> Step {
        self.standalone = false;
        Step::Commit {
            position,
            gtid: self.gtid.take(),
            timestamp,
            ddl,
        }
    }

    async fn rows(
        &mut self,
        rows: RowsEventData<'_>,
        end: BinlogPosition,
        timestamp: u32,
    ) -> Result<Step, BinlogError> {
        let table_id = rows.table_id();
        let decode_error = |table: &str, source| BinlogError::Decode {
            what: "row",
            position: end.to_string(),
            table: table.to_owned(),
            source,
        };
        let no_table_map = || BinlogError::Decode {
            what: "rows event",
            position: end.to_string(),
            table: format!("id {table_id}"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no table map"),
        };
        let (table, first_sight) = {
            let Some(tme) = self.stream.get_tme(table_id) else {
                return Err(no_table_map());
            };
            if tme.database_name() != self.database.as_str()
                || !self.mapped.contains_key(tme.table_name().as_ref())
            {
                return Ok(Step::Skip);
            }
            let table = tme.table_name().into_owned();
            let first_sight = if self.columns.contains_key(&table_id) {
                None
            } else {
                // The first rows of this table map: one row decoded by mysql_common gives the
                // names, charsets and signedness it logs.
                let sample = rows
                    .rows(tme)
                    .next()
                    .transpose()
                    .map_err(|e| decode_error(&table, e))?;
                let sample = sample.as_ref().and_then(|(b, a)| a.as_ref().or(b.as_ref()));
                Some((
                    columns::from_table_map(tme, sample),
                    images::Layout::of(tme),
                ))
            };
            (table, first_sight)
        };
        if let Some((mut descs, layout)) = first_sight {
            if descs.iter().any(|d| d.name.starts_with('@')) {
                let names = self.catalog(&table, &end).await?;
                if names.len() != descs.len() {
                    return Err(decode_error(
                        &table,
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "binlog has {} columns, information_schema {}",
                                descs.len(),
                                names.len()
                            ),
                        ),
                    ));
                }
                for (d, n) in descs.iter_mut().zip(names) {
                    d.name = n.name;
                    if d.labels.is_none() {
                        d.labels = n.labels;
                    }
                }
            }
            self.columns.insert(
                table_id,
                Known {
                    table: table.clone(),
                    descs: descs.into(),
                    layout,
                    map: Vec::new(),
                },
            );
        }
        let Some(Known { descs, layout, .. }) = self.columns.get(&table_id) else {
            return Err(no_table_map());
        };
        // Straight to JSON when the layout allows it, else through mysql_common's rows.
        let decoded: Vec<images::Images> = match layout
            .as_ref()
            .and_then(|l| images::decode(&rows, l, descs))
        {
            Some(decoded) => decoded.map_err(|e| decode_error(&table, e))?,
            None => {
                let tme = self.stream.get_tme(table_id).ok_or_else(no_table_map)?;
                images::through_mysql_common(&rows, tme, descs)
                    .map_err(|e| decode_error(&table, e))?
            }
        };
        let pk = self.mapped.get(&table).cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(decoded.len());
        let mut counts = [0u64; 3]; // insert, update, delete
        for (before, after) in decoded {
            counts[match (&before, &after) {
                (None, _) => 0,
                (Some(_), Some(_)) => 1,
                (Some(_), None) => 2,
            }] += 1;
            match (before, after) {
                (Some(image), None) => out.push(RowChange {
                    table: table.clone(),
                    op: Op::Delete,
                    image,
                    position: end.clone(),
                    timestamp,
                }),
                (before, Some(image)) => {
                    let key_changed = before
                        .as_ref()
                        .is_some_and(|b| pk.iter().any(|c| b.raw(c) != image.raw(c)));
                    if let (true, Some(before)) = (key_changed, before) {
                        out.push(RowChange {
                            table: table.clone(),
                            op: Op::Delete,
                            image: before,
                            position: end.clone(),
                            timestamp,
                        });
                    }
                    out.push(RowChange {
                        table: table.clone(),
                        op: Op::Upsert,
                        image,
                        position: end.clone(),
                        timestamp,
                    });
                }
                (None, None) => {}
            }
        }
        for (op, n) in ["insert", "update", "delete"].into_iter().zip(counts) {
            if n > 0 {
                metrics::counter!(crate::metrics::TAILER_ROWS, "table" => table.clone(), "op" => op)
                    .increment(n);
            }
        }
        Ok(Step::Rows(out))
    }

    /// Columns from information_schema, for sources that do not log names.
    async fn catalog(
        &mut self,
        table: &str,
        at: &BinlogPosition,
    ) -> Result<Vec<columns::CatalogColumn>, BinlogError> {
        if let Some(n) = self.names.get(table) {
            return Ok(n.clone());
        }
        let cols = columns::from_information_schema(&self.lookup, &self.database, table)
            .await
            .map_err(|source| BinlogError::Mysql {
                position: at.to_string(),
                source,
            })?;
        self.names.insert(table.to_owned(), cols.clone());
        Ok(cols)
    }
}
