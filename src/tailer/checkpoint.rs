//! The checkpoint seen from outside the tailer: whether the source still has what it points
//! at, and the `checkpoint show | reset` commands (run while the tailer is stopped).
//!
//! Invariant: the tailer never jumps ahead silently. A checkpoint whose binlog is gone, or that
//! belongs to another server, stops the tailer with the remedy; moving it is an explicit
//! `checkpoint reset --yes`, which bumps the `lsn` epoch when positions go back so that the
//! receiver still orders new rows after old ones.

use std::path::Path;

use anyhow::Context;
use serde_json::json;

use crate::config::TailerConfig;
use crate::tailer::binlog::{self, BinlogPosition, SourceInfo, MAX_EPOCH};
use crate::tailer::state::{Checkpoint, State};

/// Why a checkpoint cannot be resumed from, with the remedy; `Ok` when it can.
pub fn check_resumable(cp: &Checkpoint, info: &SourceInfo) -> Result<(), String> {
    let remedy = "Remedy: `emr-stream checkpoint reset --config <tailer.toml> --to-current --yes` (it prints the \
                  day from which visits must be re-sent).";
    if cp.server_id != 0 && cp.server_id != info.server_id {
        return Err(format!(
            "the checkpoint belongs to source server_id {} but the source now has server_id {}: the tailer \
             is pointed at another server. {remedy}",
            cp.server_id, info.server_id
        ));
    }
    let first = info.files.first().map(|f| f.0.as_str()).unwrap_or("none");
    let last = info.files.last().map(|f| f.0.as_str()).unwrap_or("none");
    match info.files.iter().find(|(f, _)| *f == cp.position.file) {
        Some((_, size)) if cp.position.pos > *size && info.files.last().map(|f| &f.0) != Some(&cp.position.file) => Err(format!(
            "the checkpoint {} lies beyond the end of {} ({size} bytes): the source's binlogs were reset. {remedy}",
            cp.position, cp.position.file
        )),
        Some(_) => Ok(()),
        None => {
            let purged = info.files.first().and_then(|(f, _)| binlog::file_sequence(f)).is_some_and(|s| s > cp.position.sequence());
            let what = if purged {
                "was purged from the source"
            } else {
                "does not exist on the source (were its binlogs reset?)"
            };
            Err(format!(
                "the checkpoint's binlog file {} {what} (the source has {first} .. {last}). Rows written since \
                 the checkpoint can no longer be read from the binlog. {remedy}",
                cp.position.file
            ))
        }
    }
}

fn open_stopped(config: &TailerConfig) -> anyhow::Result<State> {
    State::open(&config.state.dir).map_err(|e| match e {
        crate::tailer::state::StateError::Locked(_) => anyhow::anyhow!(
            "the state in {} is in use: stop the tailer first",
            config.state.dir.display()
        ),
        other => other.into(),
    })
}

fn commit_day(timestamp: u32) -> String {
    chrono::DateTime::from_timestamp(timestamp as i64, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `emr-stream checkpoint show`: position, GTID, server, lag, outbox (JSON on stdout).
pub async fn show(config_path: &Path) -> anyhow::Result<()> {
    let config = TailerConfig::load(config_path)?;
    let state = open_stopped(&config)?;
    let cp = state.checkpoint()?;
    let (outbox, outbox_bytes, oldest) = state.outbox_stats()?;
    let mut out = json!({
        "state_dir": config.state.dir.display().to_string(),
        "checkpoint": cp.as_ref().map(|c| c.position.to_string()),
        "gtid": cp.as_ref().and_then(|c| c.gtid.clone()),
        "epoch": cp.as_ref().map(|c| c.epoch),
        "source_server_id": cp.as_ref().map(|c| c.server_id),
        "source_commit_day": cp.as_ref().map(|c| commit_day(c.timestamp)),
        "open_visits": state.open_visit_count(),
        "outbox_visits": outbox,
        "outbox_bytes": outbox_bytes,
        "outbox_oldest_ms": oldest,
        "dead_letters": state.dead_letters()?.len(),
    });
    match source_now(&config).await {
        Ok((position, info)) => {
            out["source_position"] = json!(position.to_string());
            if let Some(cp) = &cp {
                out["resumable"] = json!(check_resumable(cp, &info)
                    .err()
                    .unwrap_or_else(|| "yes".into()));
                out["lag_seconds"] = json!(if position > cp.position {
                    (crate::clock::now_ms() / 1000).saturating_sub(cp.timestamp as u64)
                } else {
                    0
                });
            }
        }
        Err(e) => out["source_error"] = json!(format!("{e:#}")),
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn source_now(config: &TailerConfig) -> anyhow::Result<(BinlogPosition, SourceInfo)> {
    let mut conn = mysql_async::Conn::new(binlog::source_opts(&config.source)?)
        .await
        .context("cannot connect to the source")?;
    // A tailer stopped moments ago stays registered until the source's next heartbeat to it.
    let grace = std::time::Duration::from_secs(3 * config.source.heartbeat_secs.max(1) + 5);
    let info = binlog::preflight_with_grace(&mut conn, config.source.server_id, grace).await?;
    let position = binlog::server_position(&mut conn).await?;
    conn.disconnect().await.ok();
    Ok((position, info))
}

/// Where `checkpoint reset` moves the checkpoint.
#[derive(Debug, Clone)]
pub enum ResetTarget {
    /// An explicit position.
    To(BinlogPosition),
    /// Just after the transaction with this GTID.
    Gtid(Gtid),
    /// The source's current position.
    Current,
}

/// A MariaDB GTID: replication domain, originating server, sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Server that originated the transaction.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

impl Gtid {
    /// `DOMAIN-SERVER-SEQ`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().splitn(3, '-');
        let gtid = Self {
            domain: parts.next()?.parse().ok()?,
            server: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
        };
        Some(gtid)
    }
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// The sequence number a `Gtid_list` event's text (`[0-1-5,1-2-9]`) gives `domain`, if any.
fn gtid_list_seq(info: &str, domain: u32) -> Option<u64> {
    info.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(Gtid::parse)
        .find(|g| g.domain == domain)
        .map(|g| g.seq)
}

/// Where the transaction after `gtid` starts: the binlog file whose starting GTID state is
/// below it is read event by event (SHOW BINLOG EVENTS, streamed) for its GTID event, and the
/// position is that of the next transaction's GTID event (or the next file's start).
pub async fn position_after_gtid(
    conn: &mut mysql_async::Conn,
    gtid: Gtid,
    files: &[(String, u64)],
) -> anyhow::Result<BinlogPosition> {
    use mysql_async::prelude::Queryable;
    // Each MariaDB binlog opens with a Gtid_list event: the GTID state before the file.
    let mut candidate = None;
    for (i, (file, _)) in files.iter().enumerate().rev() {
        let head: Vec<(String, String)> = conn
            .exec_map(
                format!("SHOW BINLOG EVENTS IN '{}' LIMIT 4", file.replace('\'', "")),
                (),
                |row: mysql_async::Row| {
                    let kind: String = row.get("Event_type").unwrap_or_default();
                    let info: String = row.get("Info").unwrap_or_default();
                    (kind, info)
                },
            )
            .await
            .with_context(|| format!("cannot read binlog {file}"))?;
        let before = head
            .iter()
            .find(|(kind, _)| kind == "Gtid_list")
            .and_then(|(_, info)| gtid_list_seq(info, gtid.domain));
        if before.is_none_or(|s| s < gtid.seq) {
            candidate = Some(i);
            break;
        }
    }
    let Some(start) = candidate else {
        anyhow::bail!(
            "GTID {gtid} is older than the source's first binlog {}: it was purged",
            files.first().map(|f| f.0.as_str()).unwrap_or("none")
        );
    };
    let needle = format!("GTID {gtid}");
    for (i, (file, _)) in files.iter().enumerate().skip(start) {
        let mut found = false;
        let mut result = conn
            .query_iter(format!(
                "SHOW BINLOG EVENTS IN '{}'",
                file.replace('\'', "")
            ))
            .await
            .with_context(|| format!("cannot read binlog {file}"))?;
        let mut after = None;
        while let Some(row) = result.next().await? {
            let kind: String = row.get("Event_type").unwrap_or_default();
            if kind != "Gtid" {
                continue;
            }
            if found {
                let pos: u64 = row.get("Pos").unwrap_or(4);
                after = Some(pos);
                break;
            }
            let info: String = row.get("Info").unwrap_or_default();
            found = info
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .ends_with(&needle)
                || info.contains(&format!("{needle} "));
        }
        result.drop_result().await?;
        match (found, after) {
            (true, Some(pos)) => {
                return Ok(BinlogPosition {
                    file: file.clone(),
                    pos,
                })
            }
            (true, None) => {
                // The file's last transaction: continue at the next file, or the current end.
                return match files.get(i + 1) {
                    Some((next, _)) => Ok(BinlogPosition {
                        file: next.clone(),
                        pos: 4,
                    }),
                    None => Ok(binlog::server_position(conn).await?),
                };
            }
            _ => {}
        }
    }
    anyhow::bail!(
        "GTID {gtid} is not in the source's binlogs (was it written by this server's domain?)"
    )
}

/// `emr-stream checkpoint reset`: refuses while a tailer runs; without `yes` only says what it
/// would do.
pub async fn reset(config_path: &Path, target: ResetTarget, yes: bool) -> anyhow::Result<()> {
    let config = TailerConfig::load(config_path)?;
    let state = open_stopped(&config)?;
    let old = state.checkpoint()?;
    let (current, info) = source_now(&config).await?;
    let mut gtid = None;
    let position = match target {
        ResetTarget::Current => current,
        ResetTarget::Gtid(g) => {
            let mut conn = mysql_async::Conn::new(binlog::source_opts(&config.source)?)
                .await
                .context("cannot connect to the source")?;
            let found = position_after_gtid(&mut conn, g, &info.files).await;
            conn.disconnect().await.ok();
            gtid = Some(g.to_string());
            found?
        }
        ResetTarget::To(p) => {
            anyhow::ensure!(
                info.files.iter().any(|(f, _)| *f == p.file),
                "the source has no binlog file {} (it has {})",
                p.file,
                info.files
                    .iter()
                    .map(|f| f.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            p
        }
    };
    let went_back = old
        .as_ref()
        .is_some_and(|o| o.server_id != info.server_id || position < o.position);
    let epoch = old
        .as_ref()
        .map(|o| o.epoch + u64::from(went_back))
        .unwrap_or(0);
    anyhow::ensure!(
        epoch <= MAX_EPOCH,
        "lsn epoch exhausted ({MAX_EPOCH} resets)"
    );
    let from = old
        .as_ref()
        .map(|o| o.position.to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "checkpoint: {from} -> {position} (epoch {epoch}, source server_id {})",
        info.server_id
    );
    if !yes {
        anyhow::bail!("nothing changed: add --yes to move the checkpoint");
    }
    let cp = Checkpoint {
        position,
        gtid,
        epoch,
        server_id: info.server_id,
        timestamp: (crate::clock::now_ms() / 1000) as u32,
    };
    state.set_checkpoint(&cp)?;
    if let Some(old) = old {
        // A month before the last transaction read: retrospective entries typed in during the
        // gap carry earlier visit days (paper records entered weeks late).
        let since = if old.timestamp > 0 {
            format!(
                " --since {}",
                commit_day(old.timestamp.saturating_sub(31 * 86_400))
            )
        } else {
            String::new()
        };
        println!(
            "the binlog between {} and {} will not be read: re-send the visits changed there with\n  emr-stream sweep --config {}{since}",
            old.position,
            cp.position,
            config_path.display(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtids_parse_and_gtid_lists_give_a_domain_seq() {
        let g = Gtid::parse("0-1-4711").unwrap();
        assert_eq!((g.domain, g.server, g.seq), (0, 1, 4711));
        assert_eq!(g.to_string(), "0-1-4711");
        for bad in ["", "0-1", "a-b-c", "0-1-2-3", "3E11FA47-71CA:23"] {
            assert!(Gtid::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(gtid_list_seq("[0-1-5,1-2-9]", 1), Some(9));
        assert_eq!(gtid_list_seq("[0-1-5]", 0), Some(5));
        assert_eq!(gtid_list_seq("[]", 0), None);
    }

    fn info(files: &[(&str, u64)]) -> SourceInfo {
        SourceInfo {
            server_id: 1,
            version: String::new(),
            files: files.iter().map(|(f, s)| (f.to_string(), *s)).collect(),
            full_metadata: true,
        }
    }

    fn cp(at: &str, server_id: u32) -> Checkpoint {
        Checkpoint {
            position: BinlogPosition::parse(at).unwrap(),
            gtid: None,
            epoch: 0,
            server_id,
            timestamp: 0,
        }
    }

    #[test]
    fn purged_reset_and_foreign_checkpoints_are_refused_with_remedy() {
        let files = info(&[("binlog.000005", 1000), ("binlog.000006", 500)]);
        let e = check_resumable(&cp("binlog.000002:400", 1), &files).unwrap_err();
        assert!(
            e.contains("purged") && e.contains("checkpoint reset"),
            "{e}"
        );
        let e = check_resumable(&cp("binlog.000009:4", 1), &files).unwrap_err();
        assert!(e.contains("reset"), "{e}");
        let e = check_resumable(&cp("binlog.000005:4000", 1), &files).unwrap_err();
        assert!(e.contains("beyond the end"), "{e}");
        let e = check_resumable(&cp("binlog.000005:400", 7), &files).unwrap_err();
        assert!(e.contains("another server"), "{e}");
        assert!(check_resumable(&cp("binlog.000005:400", 1), &files).is_ok());
        // the newest file grows: a position past its listed size is fine
        assert!(check_resumable(&cp("binlog.000006:900", 1), &files).is_ok());
    }
}
