//! `emr-stream sweep` and `resync`: with the tailer stopped the command sweeps itself; while
//! a tailer holds the state it asks that tailer (`POST /sweep` on its loopback address).

use mysql_async::Conn;

use super::{Summary, Sweeper, Window};
use crate::mapping::Mapping;
use crate::progress::Progress;
use crate::tailer::state::{State, StateError};

/// The file in the state directory that holds the running tailer's HTTP address.
pub const ADDR_FILE: &str = "http.addr";
/// The header `POST /sweep` needs: a browser cannot send a custom header to another origin
/// without a CORS preflight the tailer never grants, so no web page can start a sweep.
pub const ADMIN_HEADER: &str = "x-emr-admin";

/// `emr-stream sweep`: sweeps `window` with the tailer stopped; the visits it queues ship when
/// the tailer runs. Shows its progress on stderr (a bar on a terminal, plain lines otherwise);
/// the caller prints the summary.
pub async fn command(
    config: &crate::config::TailerConfig,
    window: Window,
) -> anyhow::Result<Summary> {
    use anyhow::Context;
    anyhow::ensure!(window.since <= window.until, "--since is after --until");
    let mapping = Mapping::load(&config.mapping)?;
    let state = match State::open(&config.state.dir) {
        Ok(state) => state,
        Err(StateError::Locked(_)) => return through_tailer(config, &window).await,
        Err(e) => return Err(e.into()),
    };
    let checkpoint = state.checkpoint()?.context(
        "no checkpoint yet: start the tailer once, or `emr-stream checkpoint reset --to-current --yes`",
    )?;
    let opts = crate::tailer::binlog::source_opts(&config.source)?;
    let site_id = match config.source.site_id {
        Some(id) => id,
        None => {
            let mut conn = Conn::new(opts.clone())
                .await
                .context("cannot connect to the source")?;
            let id =
                crate::tailer::binlog::read_site_id(&mut conn, &config.source.database).await?;
            conn.disconnect().await.ok();
            id
        }
    };
    let sweeper = Sweeper::new(
        mapping,
        state.clone(),
        opts,
        config.source.database.clone(),
        site_id,
        checkpoint.epoch,
        config.sweep.rows_per_sec,
    );
    let days = (window.until - window.since).num_days() as u64 + 1;
    let progress = Progress::new(
        format!("sweep {}..{}", window.since, window.until),
        "days",
        days,
    );
    let summary = sweeper
        .run(&window, &mut |done, _total, s| {
            progress.set(
                done,
                format_args!(
                    "{} visits checked, {} re-sent",
                    s.visits_checked, s.visits_resent
                ),
            );
        })
        .await;
    progress.finish();
    let summary = summary?;
    state.flush()?;
    Ok(summary)
}

/// The tailer's nightly sweep: waits for `config.at` local time, sweeps the last
/// `config.days` days, and again the next night, until shutdown.
/// The tailer holds the state: ask it (on its loopback HTTP endpoint) to sweep, and wait.
async fn through_tailer(
    config: &crate::config::TailerConfig,
    window: &Window,
) -> anyhow::Result<Summary> {
    let recorded = std::fs::read_to_string(config.state.dir.join(ADDR_FILE))
        .ok()
        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok());
    let mut addr = recorded.unwrap_or(config.http.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    eprintln!(
        "the tailer is running (its state in {} is in use): asking it at {addr} to sweep {} .. {}; progress is in its log",
        config.state.dir.display(),
        window.since,
        window.until
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/sweep"))
        .header(ADMIN_HEADER, "sweep")
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(window)?)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the state in {} is in use, but no tailer answers at {addr} ({e}): stop whatever holds the state and try again",
                config.state.dir.display()
            )
        })?;
    let status = answer.status();
    let body = answer.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "the tailer answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    Ok(serde_json::from_slice(&body)?)
}
