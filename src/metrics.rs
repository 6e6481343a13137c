//! Every metric name, declared once and described once. Names follow
//! `emr_<part>_<name>_<unit>[_total]`; labels are low-cardinality (table, op, outcome,
//! status, site); values are emitted per batch, never per row.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Binlog events read. Label: none.
pub const TAILER_EVENTS: &str = "emr_tailer_binlog_events_total";
/// Row changes of mapped tables read. Labels: table, op.
pub const TAILER_ROWS: &str = "emr_tailer_binlog_rows_total";
/// Source transactions recorded.
pub const TAILER_TRANSACTIONS: &str = "emr_tailer_transactions_total";
/// Seconds between the source's commit and the tailer recording it (0 on heartbeat).
pub const TAILER_LAG: &str = "emr_tailer_lag_seconds";
/// File sequence of the checkpoint.
pub const TAILER_CHECKPOINT_FILE: &str = "emr_tailer_checkpoint_file_sequence";
/// Offset of the checkpoint in its file.
pub const TAILER_CHECKPOINT_POS: &str = "emr_tailer_checkpoint_position_bytes";
/// Open visit buffers.
pub const TAILER_OPEN_VISITS: &str = "emr_tailer_open_visits";
/// Visit versions moved to the outbox. Label: complete.
pub const TAILER_VISITS_READY: &str = "emr_tailer_visits_ready_total";
/// Binlog reconnects after errors.
pub const TAILER_RECONNECTS: &str = "emr_tailer_reconnects_total";
/// Free space of the state directory's disk.
pub const TAILER_STATE_FREE: &str = "emr_tailer_state_free_bytes";
/// 1 while capture is paused because the state disk is low on space.
pub const TAILER_CAPTURE_PAUSED: &str = "emr_tailer_capture_paused";
/// Outbox entries.
pub const OUTBOX_VISITS: &str = "emr_outbox_visits";
/// Outbox size in bytes (uncompressed JSON).
pub const OUTBOX_BYTES: &str = "emr_outbox_bytes";
/// Age of the oldest outbox entry.
pub const OUTBOX_OLDEST: &str = "emr_outbox_oldest_age_seconds";
/// Ship requests. Label: outcome (stored, duplicate, retry, rejected).
pub const SHIP_REQUESTS: &str = "emr_ship_requests_total";
/// Ship request duration.
pub const SHIP_DURATION: &str = "emr_ship_request_duration_seconds";
/// Bytes of request bodies before compression.
pub const SHIP_BYTES_RAW: &str = "emr_ship_bytes_raw_total";
/// Bytes of request bodies as sent (gzip).
pub const SHIP_BYTES_COMPRESSED: &str = "emr_ship_bytes_compressed_total";
/// Visit versions shipped (receiver answered 2xx/409).
pub const SHIP_VISITS: &str = "emr_ship_visits_total";
/// Dead letters held.
pub const DEAD_LETTERS: &str = "emr_dead_letters";
/// Receiver requests. Label: status.
pub const RECEIVER_REQUESTS: &str = "emr_receiver_requests_total";
/// Rows applied. Labels: table, store.
pub const RECEIVER_ROWS_APPLIED: &str = "emr_receiver_rows_applied_total";
/// Batch apply duration. Label: store.
pub const RECEIVER_APPLY_DURATION: &str = "emr_receiver_apply_duration_seconds";
/// IDS maintenance time of a batch (in its apply transaction) or of a queue chunk. Label:
/// path (inline, queued, none, worker).
pub const IDS_MAINTAIN_DURATION: &str = "emr_ids_maintain_duration_seconds";
/// Patients whose derived rows a batch touched. Label: path (inline, queued, none).
pub const IDS_DIRTY_PATIENTS: &str = "emr_ids_dirty_patients_total";
/// Queued patients recomputed by workers.
pub const IDS_QUEUE_DRAINED: &str = "emr_ids_queue_drained_total";
/// Patients waiting in the queue. Label: site.
pub const IDS_QUEUE_PATIENTS: &str = "emr_ids_queue_patients";
/// Age of the oldest queued change of a site (0 when none). Label: site.
pub const IDS_QUEUE_AGE: &str = "emr_ids_queue_oldest_age_seconds";
/// Rows that differed from a full recomputation at a site's last check. Label: site.
pub const IDS_VERIFY_DIFF_ROWS: &str = "emr_ids_verify_diff_rows";
/// Seconds since a site was last checked. Label: site.
pub const IDS_VERIFY_AGE: &str = "emr_ids_verify_age_seconds";
/// Unix time a site last sent a batch. Label: site.
pub const SITE_LAST_SEEN: &str = "emr_receiver_site_last_seen_timestamp_seconds";

/// Seconds the oldest visit of a site's last batch waited at the facility, by site.
pub const SITE_LAG: &str = "emr_receiver_site_lag_seconds";
/// Sweeps completed (nightly or on demand).
pub const SWEEP_RUNS: &str = "emr_sweep_runs_total";
/// Visits a sweep compared with the ledger.
pub const SWEEP_VISITS_CHECKED: &str = "emr_sweep_visits_checked_total";
/// Visits a sweep queued again (never shipped, or changed).
pub const SWEEP_VISITS_RESENT: &str = "emr_sweep_visits_resent_total";

/// Installs the Prometheus recorder and describes every metric; render with the handle.
pub fn install() -> PrometheusHandle {
    const BUCKETS: [f64; 12] = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let builder = PrometheusBuilder::new();
    let builder = builder
        .set_buckets(&BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let handle = builder
        .install_recorder()
        .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
    describe();
    handle
}

/// Registers the tailer's counters at zero (and its dead letters at their count) so that a
/// scrape shows every series from the start, not only after the first increment.
pub fn zero_tailer(dead_letters: usize) {
    for name in [
        SWEEP_RUNS,
        SWEEP_VISITS_CHECKED,
        SWEEP_VISITS_RESENT,
        TAILER_EVENTS,
        TAILER_TRANSACTIONS,
        TAILER_VISITS_READY,
        TAILER_RECONNECTS,
        SHIP_BYTES_RAW,
        SHIP_BYTES_COMPRESSED,
        SHIP_VISITS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for outcome in ["stored", "duplicate", "retry", "rejected"] {
        metrics::counter!(SHIP_REQUESTS, "outcome" => outcome).increment(0);
    }
    metrics::gauge!(DEAD_LETTERS).set(dead_letters as f64);
    metrics::gauge!(TAILER_CAPTURE_PAUSED).set(0.0);
}

fn describe() {
    describe_counter!(SWEEP_RUNS, "missed-visit sweeps completed");
    describe_counter!(
        SWEEP_VISITS_CHECKED,
        "visits a sweep compared with the ledger"
    );
    describe_counter!(SWEEP_VISITS_RESENT, "visits a sweep queued again");
    describe_counter!(TAILER_EVENTS, "binlog events read");
    describe_counter!(
        TAILER_ROWS,
        "row changes of mapped tables read, by table and op"
    );
    describe_counter!(TAILER_TRANSACTIONS, "source transactions recorded");
    describe_gauge!(
        TAILER_LAG,
        Unit::Seconds,
        "seconds between source commit and tailer"
    );
    describe_gauge!(
        TAILER_CHECKPOINT_FILE,
        "binlog file sequence of the checkpoint"
    );
    describe_gauge!(
        TAILER_CHECKPOINT_POS,
        Unit::Bytes,
        "offset of the checkpoint"
    );
    describe_gauge!(TAILER_OPEN_VISITS, "open visit buffers");
    describe_counter!(TAILER_VISITS_READY, "visit versions moved to the outbox");
    describe_counter!(TAILER_RECONNECTS, "binlog reconnects after errors");
    describe_gauge!(
        TAILER_STATE_FREE,
        Unit::Bytes,
        "free space of the state directory's disk"
    );
    describe_gauge!(
        TAILER_CAPTURE_PAUSED,
        "1 while capture waits for space on the state disk (state.min_free_mib)"
    );
    describe_gauge!(OUTBOX_VISITS, "visit versions waiting in the outbox");
    describe_gauge!(OUTBOX_BYTES, Unit::Bytes, "bytes waiting in the outbox");
    describe_gauge!(
        OUTBOX_OLDEST,
        Unit::Seconds,
        "age of the oldest outbox entry"
    );
    describe_counter!(SHIP_REQUESTS, "ship requests by outcome");
    describe_histogram!(SHIP_DURATION, Unit::Seconds, "ship request duration");
    describe_counter!(
        SHIP_BYTES_RAW,
        Unit::Bytes,
        "request body bytes before gzip"
    );
    describe_counter!(
        SHIP_BYTES_COMPRESSED,
        Unit::Bytes,
        "request body bytes sent"
    );
    describe_counter!(SHIP_VISITS, "visit versions the receiver accepted");
    describe_gauge!(DEAD_LETTERS, "dead letters held");
    describe_counter!(RECEIVER_REQUESTS, "receiver requests by status");
    describe_counter!(RECEIVER_ROWS_APPLIED, "rows applied by table and store");
    describe_histogram!(
        RECEIVER_APPLY_DURATION,
        Unit::Seconds,
        "batch apply duration per store, with the wait for the site's batch before it"
    );
    describe_histogram!(
        IDS_MAINTAIN_DURATION,
        Unit::Seconds,
        "IDS maintenance time of a batch or a queue chunk, by path"
    );
    describe_counter!(
        IDS_DIRTY_PATIENTS,
        "patients whose derived rows batches touched, by path"
    );
    describe_counter!(IDS_QUEUE_DRAINED, "queued patients recomputed by workers");
    describe_gauge!(
        IDS_QUEUE_PATIENTS,
        "patients waiting in the IDS queue, by site"
    );
    describe_gauge!(
        IDS_QUEUE_AGE,
        Unit::Seconds,
        "age of the oldest queued IDS change, by site"
    );
    describe_gauge!(
        IDS_VERIFY_DIFF_ROWS,
        "IDS rows that differed from a full recomputation at the site's last check"
    );
    describe_gauge!(
        IDS_VERIFY_AGE,
        Unit::Seconds,
        "seconds since the site's IDS tables were last verified"
    );
    describe_gauge!(
        SITE_LAG,
        Unit::Seconds,
        "how long the oldest visit of a site's last batch waited at the facility"
    );
    describe_gauge!(
        SITE_LAST_SEEN,
        Unit::Seconds,
        "unix time a site last sent a batch"
    );
}
