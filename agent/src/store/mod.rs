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
//! # Files
//!
//! - [`db`]: the [`Store`] handle, [`StoreOptions`], durability ([`Synchronous`]), thread model
//! - [`error`]: the error type, [`StoreError`]
//! - `migrations` (private): the schema and its versioned migrations
//! - [`names`], [`qualifier`]: valid names; `latest` / version / alias qualifiers

pub mod db;
pub mod error;
mod migrations;
pub mod names;
pub mod qualifier;

#[cfg(test)]
mod test_support;

pub use db::{Store, StoreOptions, Synchronous};
pub use error::{Result, StoreError};
pub use qualifier::Qualifier;
