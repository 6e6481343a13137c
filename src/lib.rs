//! emr-stream: streams patient visits from OpenMRS EMR binlogs to a central data repository.
//!
//! Data flow, facility side (`tailer`):
//! `binlog` (mysql_async adapter: row changes + positions) → `visit` (group into visits,
//! readiness) → `state` (sled: checkpoint, buffers, outbox, ledger, dead letters) → `ship`
//! (gzip + bearer token over HTTPS, retry / dead-letter).
//!
//! Central side (`receive`): `receive` (auth, caps, decode, validate) → `apply` (MySQL
//! mirror + PostgreSQL `cdr`, idempotent, `lsn`-guarded) → `ids` (materialized views,
//! reports).
//!
//! `mapping` says which tables and columns exist and how a row finds its visit; `config`
//! holds the TOML configs; `metrics` names every metric; `simulate` writes a realistic clinic.

pub mod apply;
pub mod binlog;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dead;
pub mod ids;
pub mod mapping;
pub mod metrics;
pub mod receive;
pub mod retry;
pub mod ship;
pub mod shutdown;
pub mod simulate;
pub mod state;
pub mod sweep;
pub mod tailer;
pub mod visit;
pub mod web;
