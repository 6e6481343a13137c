//! The binlog adapter's errors, and which of them a reconnect may cure.

/// Errors of the binlog adapter, with the position where they happened.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// The MySQL connection or protocol failed (retryable: reconnect from the checkpoint).
    #[error("mysql error at {position}: {source}")]
    Mysql {
        /// Last known position.
        position: String,
        /// The driver error.
        #[source]
        source: mysql_async::Error,
    },
    /// An event could not be decoded.
    #[error("cannot decode {what} at {position} (table {table}): {source}")]
    Decode {
        /// The event kind.
        what: &'static str,
        /// Position of the event.
        position: String,
        /// Table, when known.
        table: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The source is not set up for the tailer; the message names the fix.
    #[error("source not usable: {0}")]
    Preflight(String),
    /// The stream contains something the tailer must not silently skip.
    #[error("refusing binlog at {position}: {reason}")]
    Refused {
        /// Position of the event.
        position: String,
        /// What and what to do.
        reason: String,
    },
}

impl BinlogError {
    /// Whether reconnecting from the checkpoint may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BinlogError::Mysql { .. })
    }
}

/// A stream error; the server's "cannot read the binlog" (1236: file purged, position
/// invalid) is final, everything else is retried from the checkpoint.
pub(super) fn stream_error(source: mysql_async::Error, file: &str) -> BinlogError {
    match &source {
        mysql_async::Error::Server(e) if e.code == 1236 => BinlogError::Refused {
            position: format!("{file}:?"),
            reason: format!(
                "the source cannot send its binlog from the checkpoint (error 1236, SQLSTATE {}): the file was \
                 purged or the position is invalid. Remedy: `emr-stream checkpoint reset --config <tailer.toml> \
                 --to-current --yes` and re-send the visits of the gap it reports",
                e.state
            ),
        },
        _ => BinlogError::Mysql { position: format!("{file}:?"), source },
    }
}
