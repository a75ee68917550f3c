//! The agent's durable store: SQLite (bundled), WAL journal, versioned migrations.
//!
//! One [`Store`] handle (cheap to clone, `Send + Sync`) holds everything the agent must keep
//! across restarts and crashes: functions and their published versions, the module bytes they
//! run, aliases, each function's kv store, invocation and log records, and per-minute stats.
//! Every operation is one short transaction; a batch of finished invocations is committed in one
//! transaction by [`Store::commit`]. A `kill -9` at any moment leaves the store consistent and
//! every acknowledged commit in it; see [`Synchronous`] for what a power loss can cost.
//! Opening a store does no work proportional to its history.
//!
//! # Schema (version 1, see `migrations.rs`)
//!
//! | table | key | what for |
//! |---|---|---|
//! | `modules` | `sha256` | module bytes, content-addressed, stored once; deleted when no function's latest and no version refers to them |
//! | `functions` | `name` | `enabled`, `origin` (`local`/`cloud`), times, latest module hash + spec + revision, `last_version` (numbers are never reused), kv usage |
//! | `versions` | `(function, version)` | immutable (an UPDATE trigger refuses changes): module hash, spec, description |
//! | `aliases` | `(function, name)` | `version`, optional `also_version` + `weight` (both or neither, weight in [0, 1]); foreign keys keep aliased versions from disappearing |
//! | `kv` | `(function, key)` | the function's key-value store (bytes); triggers keep `functions.kv_entries/kv_bytes` exact |
//! | `invocations` | `seq`, unique `id` | one record per invocation (no foreign key: records outlive their function) |
//! | `logs` | `seq` (never reused) | log lines: time, level 0-4, optional function/version/invocation id, text; indexed by function, invocation and time |
//! | `stats` | `(function, version_key, minute_ms)` | per-minute counts, sums and mergeable duration/latency histograms ([`crate::stats::Histogram`]) |
//! | `counters` | `name` | exact row counts of logs/invocations (triggers) and cumulative retention drops |
//! | `meta` | `key` | small settings (admin token id, device id, ...) |
//!
//! Lifecycle changes (function created, latest updated, version published/deleted, alias set/
//! deleted, enabled/disabled, function deleted) write an info log line for the function in the
//! same transaction as the change.
//!
//! # Files
//!
//! - [`db`]: the [`Store`] handle, [`StoreOptions`], durability ([`Synchronous`]), thread model
//! - [`error`]: the error type, [`StoreError`]
//! - `migrations` (private): the schema and its versioned migrations
//! - [`names`], [`qualifier`]: valid names; `latest` / version / alias qualifiers
//! - [`modules`]: content-addressed module bytes and their garbage collection
//! - [`functions`], [`versions`], [`alias`]: the function lifecycle
//! - [`kv`]: per-function key-value store
//! - [`records`]: plain data the daemon hands over (invocation records, log lines, outcomes)
//! - [`logs`]: appending and querying log lines
//! - [`meta`]: small persistent settings

pub mod alias;
pub mod db;
pub mod error;
pub mod functions;
pub mod kv;
pub mod logs;
pub mod meta;
mod migrations;
pub mod modules;
pub mod names;
pub mod qualifier;
pub mod records;
pub mod versions;

#[cfg(test)]
mod test_support;

pub use alias::{pick_version, split_point, AliasInfo, AliasTarget, WeightedVersion};
pub use db::{Store, StoreOptions, Synchronous};
pub use error::{Result, StoreError};
pub use functions::{DeletedFunction, FunctionDetail, FunctionSummary, Origin, Updated};
pub use kv::{KvUsage, KvWrite};
pub use logs::LogFilter;
pub use modules::sha256_hex;
pub use qualifier::Qualifier;
pub use records::{
    InvocationLog, InvocationOutcome, InvocationRecord, Level, LogLine, LogRecord, Outcome,
};
pub use versions::{Published, VersionInfo};
