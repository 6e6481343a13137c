//! `emr-stream simulate`: writes realistic ART clinic days into an EMR database, one
//! transaction per form, as the EMR does: registrations (person, names with accents in a
//! latin1 table, address, phone, identifiers, HIV program enrolment and state), follow-up
//! visits through HIV RECEPTION → VITALS → HIV CLINIC CONSULTATION → ART ADHERENCE →
//! TREATMENT → DISPENSING → APPOINTMENT, ARV orders with `drug_order` quantities and doses, and
//! the awkward cases: retrospective (backdated) entry, voided encounters and obs, late lab
//! results on an old visit, deleted rows, deaths and transfers out.
//!
//! Deterministic: the same `--seed` and `--start-date` write the same rows.

mod clinic;
mod rng;

use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder};

use clinic::Clinic;
pub use clinic::Counts;
pub use rng::Rng;

/// The fixture EMR schema and metadata (scripts/emr-schema.sql).
pub const EMR_SCHEMA: &str = include_str!("../../scripts/emr-schema.sql");

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// `mysql://user:pass@host:port` of the EMR server.
    pub url: String,
    /// The EMR database.
    pub database: String,
    /// Create the database and load the fixture schema first (refuses a non-empty database).
    pub init_schema: bool,
    /// Patients registered over the period.
    pub patients: u32,
    /// Clinic days.
    pub days: u32,
    /// First clinic day (default: so that the last day is today).
    pub start_date: Option<NaiveDate>,
    /// RNG seed.
    pub seed: u64,
    /// Pause between transactions (to let a test act mid-stream).
    pub pace: Duration,
    /// Type in no paper record older than this many days (None: the returns after long
    /// interruptions are entered with their old dispensation, months back).
    pub max_backdate_days: Option<u32>,
}

/// Loads the fixture schema into `database` (created if missing; must have no tables).
pub async fn init_schema(url: &str, database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        crate::config::is_identifier(database),
        "database name must be a plain identifier"
    );
    let opts = Opts::from_url(url).context("bad --mysql url")?;
    let mut conn = mysql_async::Conn::new(opts.clone())
        .await
        .context("cannot connect to the EMR server")?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
    ))
    .await?;
    let tables: Option<i64> = conn
        .exec_first(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (database,),
        )
        .await?;
    anyhow::ensure!(
        tables.unwrap_or(0) == 0,
        "database {database} already has tables; --init-schema wants an empty one"
    );
    conn.query_drop(format!("USE `{database}`")).await?;
    for stmt in crate::mapping::split_sql(EMR_SCHEMA) {
        conn.query_drop(stmt)
            .await
            .context("loading the EMR schema")?;
    }
    conn.disconnect().await.ok();
    Ok(())
}

/// Runs the simulation; returns what it wrote.
pub async fn run(options: SimulateOptions) -> anyhow::Result<Counts> {
    if options.init_schema {
        init_schema(&options.url, &options.database).await?;
    }
    let opts = OptsBuilder::from_opts(Opts::from_url(&options.url).context("bad --mysql url")?)
        .db_name(Some(options.database.clone()))
        .init(vec!["SET NAMES utf8mb4"]);
    let conn = mysql_async::Conn::new(opts)
        .await
        .context("cannot connect to the EMR database")?;
    let start = options.start_date.unwrap_or_else(|| {
        chrono::Local::now().date_naive()
            - chrono::Duration::days(options.days.saturating_sub(1) as i64)
    });
    let mut clinic = Clinic::new(conn, Rng::new(options.seed), options.pace);
    clinic.max_backdate_days = options.max_backdate_days.map(i64::from);
    for day in 0..options.days {
        let date = start + chrono::Duration::days(day as i64);
        let registrations =
            options.patients / options.days + u32::from(day < options.patients % options.days);
        clinic
            .day(date, registrations)
            .await
            .with_context(|| format!("simulating {date}"))?;
    }
    let counts = clinic.counts();
    clinic.close().await;
    Ok(counts)
}
