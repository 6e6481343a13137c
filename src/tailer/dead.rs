//! `emr-stream dead list|show|retry|drop`: the visits the receiver refused for good, visible
//! and re-drivable. Runs against a stopped tailer's state. `list` prints no patient data (no
//! stream keys, no values): ids, times, HTTP status, the receiver's reason, row counts.

use std::path::Path;

use serde_json::{json, Value};

use crate::clock::now_ms;
use crate::config::TailerConfig;
use crate::tailer::state::{DeadLetter, State, StateError};

fn open(config_path: &Path) -> anyhow::Result<State> {
    let config = TailerConfig::load(config_path)?;
    State::open(&config.state.dir).map_err(|e| match e {
        StateError::Locked(_) => anyhow::anyhow!(
            "the state in {} is in use: stop the tailer first (or use its /status page)",
            config.state.dir.display()
        ),
        other => other.into(),
    })
}

/// A dead letter without patient data: id, time, status, reason, version, rows per table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadSummary {
    /// Its id (`dead retry ID`).
    pub id: u64,
    /// When it was refused (RFC 3339).
    pub at: Option<String>,
    /// The receiver's HTTP status.
    pub status: u16,
    /// The receiver's reason (it names fields, never values).
    pub reason: String,
    /// The visit version.
    pub version: u64,
    /// Rows per table.
    pub rows: std::collections::BTreeMap<String, u64>,
}

/// The summary of dead letter `id`.
pub fn summary(id: u64, letter: &DeadLetter) -> DeadSummary {
    let visit: Value = serde_json::from_str(letter.visit.get()).unwrap_or(Value::Null);
    let mut rows = std::collections::BTreeMap::<String, u64>::new();
    for row in visit["rows"].as_array().into_iter().flatten() {
        *rows
            .entry(row["table"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    DeadSummary {
        id,
        at: chrono::DateTime::from_timestamp_millis(letter.at_ms as i64).map(|t| t.to_rfc3339()),
        status: letter.status,
        reason: letter.reason.clone(),
        version: letter.version,
        rows,
    }
}

/// Prints every dead letter's summary, one JSON object per line.
pub fn list(config: &Path) -> anyhow::Result<()> {
    let state = open(config)?;
    let letters = state.dead_letters()?;
    for (id, letter) in &letters {
        println!("{}", serde_json::to_string(&summary(*id, letter))?);
    }
    eprintln!("{} dead letter(s)", letters.len());
    Ok(())
}

/// Prints one dead letter whole, visit included (patient data: for the facility's eyes).
pub fn show(config: &Path, id: u64) -> anyhow::Result<()> {
    let state = open(config)?;
    let (_, letter) = state
        .dead_letters()?
        .into_iter()
        .find(|(i, _)| *i == id)
        .ok_or_else(|| anyhow::anyhow!("no dead letter {id} (see `emr-stream dead list`)"))?;
    let mut out = serde_json::to_value(summary(id, &letter))?;
    out["stream_key"] = json!(letter.stream_key);
    out["visit"] = serde_json::from_str(letter.visit.get())?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn select(state: &State, ids: &[u64], all: bool) -> anyhow::Result<Vec<u64>> {
    anyhow::ensure!(all || !ids.is_empty(), "name dead letter ids, or --all");
    Ok(if all {
        state.dead_letters()?.into_iter().map(|(i, _)| i).collect()
    } else {
        ids.to_vec()
    })
}

/// Puts dead letters back at the end of the outbox.
pub fn retry(config: &Path, ids: &[u64], all: bool) -> anyhow::Result<()> {
    let state = open(config)?;
    let ids = select(&state, ids, all)?;
    let n = state.dead_retry(&ids, now_ms())?;
    state.flush()?;
    println!("{n} dead letter(s) moved back to the outbox; the tailer ships them when it runs");
    Ok(())
}

/// Deletes dead letters for good.
pub fn drop(config: &Path, ids: &[u64], all: bool, yes: bool) -> anyhow::Result<()> {
    let state = open(config)?;
    let ids = select(&state, ids, all)?;
    anyhow::ensure!(
        yes,
        "this deletes {} visit version(s) for good: add --yes",
        ids.len()
    );
    let n = state.dead_drop(&ids)?;
    state.flush()?;
    println!("{n} dead letter(s) deleted");
    Ok(())
}
