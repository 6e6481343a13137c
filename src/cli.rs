//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Streams patient visits from an OpenMRS EMR's MySQL binlog to a central data repository.
#[derive(Debug, Parser)]
#[command(name = "emr-stream", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Facility sidecar: binlog → visits → outbox → receiver. Serves /metrics, /healthz, /status.
    Tailer {
        /// Tailer config (see config/tailer.example.toml).
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
    },
    /// Central service: POST /api/v1/stream, reports, /status, /metrics, /healthz, /readyz; keeps
    /// the IDS tables per patient (queue workers, background verifier).
    Receiver {
        /// Receiver config (see config/receiver.example.toml).
        #[arg(long, default_value = "config/receiver.toml")]
        config: PathBuf,
    },
    /// Writes realistic ART clinic activity into an EMR database (demo, tests, benchmarks).
    Simulate {
        /// EMR server, mysql://user:pass@host:port (env EMR_MYSQL_URL).
        #[arg(long, env = "EMR_MYSQL_URL")]
        mysql: String,
        /// The EMR database.
        #[arg(long, default_value = "openmrs")]
        database: String,
        /// Create the database and load the fixture EMR schema first (it must be empty).
        #[arg(long)]
        init_schema: bool,
        /// Patients registered over the period.
        #[arg(long, default_value_t = 50)]
        patients: u32,
        /// Clinic days to simulate.
        #[arg(long, default_value_t = 5)]
        days: u32,
        /// First clinic day, YYYY-MM-DD (default: the last day is today).
        #[arg(long)]
        start_date: Option<chrono::NaiveDate>,
        /// Random seed (same seed and start date, same rows).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Pause between transactions, milliseconds.
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
        /// Type in no paper record older than this many days (default: returns after
        /// interruptions of up to 8 months are entered with their old dispensation).
        #[arg(long)]
        max_backdate_days: Option<u32>,
    },
    /// Re-sends visits the binlog path missed: compares the source's visits of a window of days
    /// with what was shipped and queues the missing or changed ones. With the tailer stopped it
    /// sweeps itself (progress bar; the visits ship when the tailer runs); while the tailer runs
    /// it asks the tailer to sweep (progress in the tailer's log), which also sweeps nightly.
    /// Also the initial load of a facility's history: `--since` its first day. Resumes an
    /// interrupted run of the same window.
    Sweep {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// First visit day, YYYY-MM-DD (default: sweep.days ago).
        #[arg(long)]
        since: Option<chrono::NaiveDate>,
        /// Last visit day, YYYY-MM-DD (default: today).
        #[arg(long)]
        until: Option<chrono::NaiveDate>,
    },
    /// Checkpoint to the source's current position, then sweep since DATE (tailer stopped).
    Resync {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// First visit day to re-send, YYYY-MM-DD.
        #[arg(long)]
        since: chrono::NaiveDate,
        /// Do it (without: only say what would happen).
        #[arg(long)]
        yes: bool,
    },
    /// Inspects or moves the tailer's checkpoint (the tailer must be stopped).
    Checkpoint {
        /// show or reset.
        #[command(subcommand)]
        action: CheckpointAction,
    },
    /// Visits the receiver refused for good: list, show, retry or drop them (tailer stopped).
    Dead {
        /// list, show, retry or drop.
        #[command(subcommand)]
        action: DeadAction,
    },
    /// The IDS tables (central): rebuild or verify them against their definitions.
    Ids {
        /// rebuild or verify.
        #[command(subcommand)]
        action: IdsAction,
    },
    /// Reads a site token from standard input and prints its SHA-256 (for receiver.toml).
    HashToken,
}

/// `ids` actions.
#[derive(Debug, Subcommand)]
pub enum IdsAction {
    /// Recomputes every patient of a site (or of all sites) in chunks of 500, with a progress
    /// bar; reports are served throughout (each patient keeps its rows until recomputed), and
    /// an interrupted rebuild resumes where it stopped. Running receivers help drain it.
    Rebuild {
        /// Receiver config.
        #[arg(long, default_value = "config/receiver.toml")]
        config: PathBuf,
        /// Only this site.
        #[arg(long)]
        site: Option<i32>,
        /// Chunks recomputed side by side (PostgreSQL connections, each busy on one core).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
    },
    /// Compares the tables with a fresh computation of their definitions, site by site, in
    /// one snapshot each (patients still queued left out); prints each differing row's key as
    /// a JSON line and exits non-zero when any differs.
    Verify {
        /// Receiver config.
        #[arg(long, default_value = "config/receiver.toml")]
        config: PathBuf,
        /// Only this site.
        #[arg(long)]
        site: Option<i32>,
    },
}

/// `dead` actions.
#[derive(Debug, Subcommand)]
pub enum DeadAction {
    /// One line per dead letter: id, time, status, reason, rows per table (no patient data).
    List {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
    },
    /// One dead letter whole, with its visit (patient data).
    Show {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// Dead letter id (from `dead list`).
        id: u64,
    },
    /// Moves dead letters back to the outbox.
    Retry {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// Dead letter ids.
        ids: Vec<u64>,
        /// All of them.
        #[arg(long)]
        all: bool,
    },
    /// Deletes dead letters for good.
    Drop {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// Dead letter ids.
        ids: Vec<u64>,
        /// All of them.
        #[arg(long)]
        all: bool,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// `checkpoint` actions.
#[derive(Debug, Subcommand)]
pub enum CheckpointAction {
    /// Prints position, GTID, source server, lag, outbox size (JSON).
    Show {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
    },
    /// Moves the checkpoint; refuses while a tailer runs; prints the gap it opens.
    #[command(group(clap::ArgGroup::new("target").required(true).multiple(false)))]
    Reset {
        /// Tailer config.
        #[arg(long, default_value = "config/tailer.toml")]
        config: PathBuf,
        /// Move to this binlog position, FILE:POS.
        #[arg(long, group = "target")]
        to: Option<String>,
        /// Move to the source's current position.
        #[arg(long, group = "target")]
        to_current: bool,
        /// Move to just after the transaction with this MariaDB GTID (DOMAIN-SERVER-SEQ), found
        /// in the source's binlogs (as a replica's gtid_slave_pos names the last one applied).
        #[arg(long, group = "target")]
        gtid: Option<String>,
        /// Really do it (without, only say what would change).
        #[arg(long)]
        yes: bool,
    },
}
