//! The `emr-stream` binary: parse the command line, set up tracing and metrics, dispatch.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// mimalloc: the tailer makes many small allocations (rows, JSON maps, sled nodes); glibc
/// malloc spent a third of the capture loop's time on them (perf, scripts/bench-e2e.sh).
/// Built with `no_thp`: with transparent huge pages its arenas grew RSS in 2 MiB steps (idle
/// tailer 60 MiB, 20 MiB without; tests/delivery.rs's outage test: 166 MiB, 105 MiB without).
/// The `system-alloc` feature leaves the system's malloc in place, for heap profilers that hook
/// it (heaptrack: `CARGO_FEATURES=system-alloc TAILER_WRAP="heaptrack -o F" scripts/bench-e2e.sh`).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use emr_stream::cli::{CheckpointAction, Cli, Command, DeadAction, IdsAction};
use emr_stream::config::{ReceiverConfig, TailerConfig};
use emr_stream::tailer::{checkpoint, dead};
use emr_stream::{metrics, receiver, shutdown, simulate, tailer};

/// mimalloc's option `purge_delay` (its number in `mi_option_t`; libmimalloc-sys names only
/// some of the options).
#[cfg(not(feature = "system-alloc"))]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The tailer gives freed memory back to the system at once instead of after mimalloc's 1 s:
/// it frees in bursts (a shipped batch, a moved group of visits, a rewritten sled leaf), and a
/// second's worth of them was part of its peak RSS. scripts/bench-e2e.sh, `AGAIN=1`, five
/// alternating runs of `MIMALLOC_PURGE_DELAY` 0 and 100 (the value before): peak RSS 95.8–99.3
/// against 109.6–115.7 MiB, CPU 3.19–3.29 against 2.93–3.31 s per 100k rows. (Before ready
/// visits moved several per sled transaction, 0 cost 10–20% more CPU, and 100 was chosen.) The
/// environment variable still overrides it.
#[cfg(not(feature = "system-alloc"))]
fn tailer_allocator_options() {
    // (mimalloc reads every option, environment included, when the process loads: setting
    // its default now would change nothing)
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options (an integer in its option table, which it
        // reads without locks by design); no pointer is passed and no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(feature = "system-alloc")]
fn tailer_allocator_options() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Tailer { .. }) {
        // The tailer sits beside the EMR: its capture runs on a thread of its own
        // (`tailer::run`), and one worker thread runs the mover, the shipper, the status pages
        // and the sweeps. A worker per core only added a thread's worth of allocator pages.
        // With a 100 ms purge delay then (`tailer_allocator_options`): scripts/bench-e2e.sh
        // peak RSS 132–137 → 119–122 MiB, capture and CPU per row within the noise (three
        // alternating pairs; README).
        builder.worker_threads(1);
        tailer_allocator_options();
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Tailer { config } => {
            let config = TailerConfig::load(&config)?;
            let (trigger, listener) = shutdown::channel();
            shutdown::on_signals(trigger);
            tailer::run(config, metrics::install(), listener).await
        }
        Command::Receiver { config } => {
            let config = ReceiverConfig::load(&config)?;
            let (trigger, listener) = shutdown::channel();
            shutdown::on_signals(trigger);
            receiver::run(config, metrics::install(), listener).await
        }
        Command::Simulate {
            mysql,
            database,
            init_schema,
            patients,
            days,
            start_date,
            seed,
            pace_ms,
            max_backdate_days,
        } => {
            anyhow::ensure!(days > 0, "--days must be at least 1");
            let counts = simulate::run(simulate::SimulateOptions {
                url: mysql,
                database,
                init_schema,
                patients,
                days,
                start_date,
                seed,
                pace: Duration::from_millis(pace_ms),
                max_backdate_days,
            })
            .await?;
            println!("{}", serde_json::to_string(&counts)?);
            Ok(())
        }
        Command::Checkpoint {
            action: CheckpointAction::Show { config },
        } => checkpoint::show(&config).await,
        Command::Checkpoint {
            action:
                CheckpointAction::Reset {
                    config,
                    to,
                    to_current,
                    gtid,
                    yes,
                },
        } => {
            let target = match (to, gtid, to_current) {
                (Some(to), _, _) => checkpoint::ResetTarget::To(
                    emr_stream::position::BinlogPosition::parse(&to)
                        .ok_or_else(|| anyhow::anyhow!("--to must be FILE:POS"))?,
                ),
                (None, Some(gtid), _) => checkpoint::ResetTarget::Gtid(
                    checkpoint::Gtid::parse(&gtid).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--gtid must be a MariaDB GTID DOMAIN-SERVER-SEQ, e.g. 0-1-4711"
                        )
                    })?,
                ),
                (None, None, _) => checkpoint::ResetTarget::Current,
            };
            checkpoint::reset(&config, target, yes).await
        }
        Command::Sweep {
            config,
            since,
            until,
        } => {
            let config = emr_stream::config::TailerConfig::load(&config)?;
            let default = emr_stream::tailer::sweep::last_days(config.sweep.days);
            let window = emr_stream::tailer::sweep::Window {
                since: since.unwrap_or(default.since),
                until: until.unwrap_or(default.until),
            };
            let summary = emr_stream::tailer::sweep::command(&config, window).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Resync { config, since, yes } => {
            checkpoint::reset(&config, checkpoint::ResetTarget::Current, yes).await?;
            let config = emr_stream::config::TailerConfig::load(&config)?;
            let window = emr_stream::tailer::sweep::Window {
                since,
                until: chrono::Local::now().date_naive(),
            };
            let summary = emr_stream::tailer::sweep::command(&config, window).await?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Dead { action } => match action {
            DeadAction::List { config } => dead::list(&config),
            DeadAction::Show { config, id } => dead::show(&config, id),
            DeadAction::Retry { config, ids, all } => dead::retry(&config, &ids, all),
            DeadAction::Drop {
                config,
                ids,
                all,
                yes,
            } => dead::drop(&config, &ids, all, yes),
        },
        Command::Ids { action } => match action {
            IdsAction::Rebuild {
                config,
                site,
                workers,
            } => {
                receiver::commands::rebuild(&ReceiverConfig::load(&config)?, site, workers.into())
                    .await
            }
            IdsAction::Verify { config, site } => {
                receiver::commands::verify(&ReceiverConfig::load(&config)?, site).await
            }
        },
        Command::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", receiver::auth::hash_token(token));
            Ok(())
        }
    }
}

#[cfg(all(test, not(feature = "system-alloc")))]
mod tests {
    #[test]
    fn the_tailer_purges_freed_memory_at_once() {
        super::tailer_allocator_options();
        // SAFETY: reads one of mimalloc's integer options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert_eq!(delay, expected);
    }
}
