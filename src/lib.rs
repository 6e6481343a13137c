//! emr-stream: streams patient visits from OpenMRS EMR binlogs to a central data repository.
//!
//! Two processes, one crate; the folders tell the data flow.
//!
//! - [`tailer`], the facility sidecar, and only it: `binlog` (mysql_async adapter: row changes
//!   and positions) → `visit` (group into visits, readiness) → `state` (sled: checkpoint,
//!   buffers, outbox, ledger, dead letters) → `ship` (gzip + bearer token over HTTPS, retry /
//!   dead-letter); `sweep` (missed-visit sweep, initial load), `checkpoint` and `dead`
//!   (operator commands), `http` (metrics, health, status page).
//! - [`receiver`], the central service, and only it: `receive` (auth, caps, decode, validate)
//!   → `apply` (MySQL mirror + PostgreSQL `cdr`, idempotent, `lsn`-guarded) → `ids` (the
//!   per-patient analytics) → `reports`; `status` (the sites page).
//! - Shared by both: [`wire`] (the stream contract, written once), [`mapping`] (which tables
//!   and columns exist, how a row finds its visit), [`position`] (binlog positions and the
//!   `lsn` every row carries), [`config`], [`metrics`] (every metric name), [`cli`], [`web`]
//!   (small HTTP helpers), [`store_tls`] (TLS to the databases), [`retry`], [`shutdown`], [`clock`], [`progress`] (bars and plain progress lines).
//! - [`simulate`] writes a realistic ART clinic into an EMR database (demo, tests, benches).
//!
//! Nothing in `tailer` imports from `receiver` or back.

pub mod cli;
pub mod clock;
pub mod config;
pub mod mapping;
pub mod metrics;
pub mod position;
pub mod progress;
pub mod receiver;
pub mod retry;
pub mod shutdown;
pub mod simulate;
pub mod store_tls;
pub mod tailer;
pub mod web;
pub mod wire;
