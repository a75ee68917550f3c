//! edgefn-agent: the edge agent.
//!
//! - [`runtime`]: loads, validates and runs ABI v1 functions on wasmi with limits.
//! - [`paths`]: the default data directory and the files in it (daemon and CLI agree).
//! - [`store`]: the durable SQLite store (functions, versions, aliases, kv, records, stats).
//! - [`stats`]: mergeable histograms behind the stats buckets and metrics.
//! - [`daemon`]: the long-running agent: pools, invocation path, group commit, metrics.
//! - [`flows`]: workflows: definitions, the run state machine, the actor driving runs.
//! - [`api`]: the admin HTTP API over the daemon (docs/agent-api.md).
//! - [`jobs`]: batch jobs: input files to tasks, the runner actor, results.
//! - [`sync`]: cloud sync: enrollment, the desired state (verify, stage, activate), health
//!   and rollback, status reports, nudges (docs/cloud-api.md).
//! - `broker`: the embedded MQTT 3.1.1 broker (rumqttd; feature `embedded-broker`).
//! - [`memory`]: glibc malloc settings (arena cap, trimming) for small gateways.
//! - [`systemd`]: readiness and watchdog notifications under a `Type=notify` unit.
//! - `cli`: the `edgefn-agent` command line (the binary's only consumer).

pub mod api;
#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod config;
pub mod daemon;
pub mod flows;
pub mod jobs;
pub mod memory;
pub mod paths;
pub mod pool;
pub mod runtime;
pub mod spec;
pub mod stats;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod triggers;
