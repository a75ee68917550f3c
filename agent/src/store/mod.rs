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
//! # Schema (versions 1 to 7, see `migrations.rs`)
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
//! | `stats` | `(function, version_key, minute_ms)` | per-minute counts, sums and mergeable duration/latency histograms ([`crate::stats::Histogram`]); `unsent` (V4) until the cloud has the bucket as it is |
//! | `counters` | `name` | exact row counts and estimated bytes of logs/invocations (triggers), cumulative retention drops; upload cursors, next batch number and drops before upload (V4) |
//! | `meta` | `key` | small settings (admin token id, device id, `mappings.revision`, ...) |
//! | `mappings` | `id`, unique `name` | event-source mappings (V2): function + qualifier, source kind + JSON, enabled, retries, destinations; `origin` (V3) |
//! | `event_queue` | `seq` | events accepted but not yet delivered (V2): paused mappings' backlogs, function destinations |
//! | `outbox` | `seq` | MQTT messages to publish (V2), deleted on the broker's ack; bounded, drops counted |
//! | `mqtt_dedup` | `(session, packet_id)` | marks of committed QoS 1/2 messages (V2): exactly-once across crashes |
//! | `dead_letters` | `id` | events whose delivery failed for good (V2); bounded by retention |
//! | `cloud_states` | `slot` | cloud sync (V3): the `current` desired state and the `previous` healthy one (rollback target) |
//! | `cloud_failures` | `deployment` | cloud sync (V3): deployments rolled back on this device, reported `failed` |
//! | `flows` | `name` | flow definitions (V7): JSON, enabled, revision |
//! | `flow_runs` | `id` | flow runs (V7): the definition they run, status, whole state as JSON (rewritten after every step); `waiting` (V8): nothing to do but wait for events |
//! | `flow_partials` | `flow, key` | partial AND matches of flow triggers (V8): one event slot per source, expiry time |
//! | `flow_waits` | `run, step` | runs waiting at `wait` steps (V8): correlation key, deadline, and the event that came, until the run takes it |
//! | `module_pins` | `sha256` | cloud sync (V3): modules of the rollback target, kept by garbage collection |
//! | `jobs` | `id` | batch jobs (V5): function + qualifier, state, parallelism, retries, task counters |
//! | `job_tasks` | `(job, idx)` | batch-job tasks (V5): payload, state, attempts, result or error, last invocation |
//! | `stream_partitions`, `stream_log`, `stream_files` | `(mapping, partition[, offset])`, `mapping` | ordered streams (V6): per-partition offsets and checkpoints, records not yet done, file readers' positions |
//!
//! Lifecycle changes (function created, latest updated, version published/deleted, alias set/
//! deleted, enabled/disabled, function deleted; mapping created, updated, paused, resumed,
//! deleted) write an info log line for the function in the same transaction as the change.
//!
//! # Files
//!
//! - [`db`]: the [`Store`] handle, [`StoreOptions`], durability ([`Synchronous`]), thread model
//! - [`error`]: the error type, [`StoreError`]
//! - `migrations` (private): the schema and its versioned migrations
//! - [`names`], [`qualifier`]: valid names; `latest` / version / alias qualifiers
//! - [`modules`]: content-addressed module bytes and their garbage collection
//! - [`functions`], [`versions`], [`alias`]: the function lifecycle
//! - [`resolve`]: which module and spec serve `NAME:QUALIFIER` for an event
//! - [`kv`]: per-function key-value store
//! - [`records`]: plain data the daemon hands over (invocation records, log lines, outcomes)
//! - [`commit`]: the batch commit point of invocations, with their delivery effects
//!   ([`CommitExtra`])
//! - [`mappings`]: event-source mappings, their sources and destinations
//! - [`queue`], [`outbox`], [`dedup`], [`dead_letters`]: delivery state (docs/triggers.md)
//! - [`invocations`], [`logs`], [`stats`]: reading records back
//! - [`retention`]: bounded history (age, rows, the disk budget), counted drops
//! - [`stream`]: the durable log of stream mappings, checkpoints, lag (V6)
//! - [`upload`]: telemetry upload cursors, batches and their acknowledgement (V4)
//! - [`meta`]: small persistent settings
//! - [`status`]: counts behind `GET /v1/status` (what the agent holds, what waits to leave)
//! - [`cloud`]: cloud-managed state (V3): activation in one transaction, rollback, health data
//! - [`jobs`]: batch jobs and their tasks (V5); a task's result commits with its invocation
//! - [`flows`]: flow definitions and durable flow runs (V7, docs/flows.md)
//! - [`flow_events`]: flows' trigger joins (partial AND matches) and waiting runs (V8)

pub mod alias;
pub mod cloud;
pub mod cloud_flows;
pub mod commit;
pub mod db;
pub mod dead_letters;
pub mod dedup;
pub mod error;
pub mod flow_events;
pub mod flows;
pub mod functions;
pub mod invocations;
pub mod jobs;
pub mod kv;
pub mod logs;
pub mod mappings;
pub mod meta;
mod migrations;
pub mod modules;
pub mod names;
pub mod outbox;
pub mod qualifier;
pub mod queue;
pub mod records;
pub mod resolve;
pub mod retention;
pub mod stats;
pub mod status;
pub mod stream;
pub mod upload;
pub mod versions;

#[cfg(test)]
pub(crate) mod test_support;

pub use alias::{pick_version, split_point, AliasInfo, AliasTarget, WeightedVersion};
pub use commit::CommitSummary;
pub use db::{Store, StoreOptions, Synchronous, DEFAULT_OUTBOX_MAX_ROWS, DEFAULT_PAGE_SIZE};
pub use dead_letters::{DeadLetter, DeadLetterFilter};
pub use error::{Result, StoreError};
pub use flows::{FlowInfo, FlowRun};
pub use functions::{DeletedFunction, FunctionDetail, FunctionSummary, Origin, Updated};
pub use invocations::InvocationFilter;
pub use jobs::{Job, JobState, NewJob, TaskInput, TaskOutcome, TaskUpdate};
pub use kv::{KvUsage, KvWrite};
pub use logs::LogFilter;
pub use mappings::{
    parse_cron, Batching, Destination, FileFormat, Mapping, MappingPatch, MappingToggled, Missed,
    NewMapping, PartitionKey, Source, DEFAULT_BATCH_SIZE,
};
pub use modules::sha256_hex;
pub use outbox::{OutboxMessage, OutboxRow};
pub use qualifier::Qualifier;
pub use queue::{function_target, mapping_target, QueueTarget, QueuedEvent, QueuedRow, Reply};
pub use records::{
    CommitExtra, InvocationLog, InvocationOutcome, InvocationRecord, Level, LogLine, LogRecord,
    Outcome,
};
pub use resolve::Resolved;
pub use retention::{Dropped, Retention, RowCounts};
pub use stats::{
    Figures, Fuel, StatsGroup, StatsPoint, StatsQuery, StatsReport, Summary, VersionKey,
};
pub use status::StoreCounts;
pub use upload::UploadStatus;
pub use versions::{Published, VersionInfo};

#[cfg(test)]
mod tests {
    use std::thread;

    use super::test_support::{outcome, record, temp_store};
    use super::*;

    #[test]
    fn everything_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .create_function("f", b"m1", "spec-1", Origin::Local)
                .unwrap();
            store.publish("f", "first").unwrap();
            store
                .update_function("f", Some(b"m2"), Some("spec-2"))
                .unwrap();
            store.publish("f", "second").unwrap();
            store
                .set_alias("f", "prod", &AliasTarget::weighted(1, 2, 0.25))
                .unwrap();
            store.set_enabled("f", false).unwrap();
            store.kv_set("f", b"k", b"v").unwrap();
            store
                .commit(&[outcome(record("f", "inv-1", Outcome::Success))])
                .unwrap();
            store.meta_set("device.id", "d1").unwrap();
        }
        let store = Store::open(&path).unwrap();
        let f = store.get_function("f").unwrap();
        assert!(!f.summary.enabled);
        assert_eq!(f.latest_spec, "spec-2");
        assert_eq!(f.summary.latest_revision, 2);
        assert_eq!(
            f.versions
                .iter()
                .map(|v| (v.version, v.description.as_str()))
                .collect::<Vec<_>>(),
            [(1, "first"), (2, "second")]
        );
        assert_eq!(f.aliases[0].target, AliasTarget::weighted(1, 2, 0.25));
        assert_eq!(store.kv_get("f", b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.invocation("inv-1").unwrap().outcome, Outcome::Success);
        assert_eq!(store.meta_get("device.id").unwrap().as_deref(), Some("d1"));
        assert_eq!(
            store
                .stats(&StatsQuery::default())
                .unwrap()
                .totals
                .invocations,
            1
        );
        // Numbering continues after a restart.
        store.update_function("f", Some(b"m3"), None).unwrap();
        assert_eq!(store.publish("f", "").unwrap().version, 3);
    }

    #[test]
    fn in_memory_store_serves_the_same_api() {
        let store = Store::open_in_memory().unwrap();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        store.publish("f", "").unwrap();
        store
            .set_alias("f", "prod", &AliasTarget::single(1))
            .unwrap();
        let mut item = outcome(record("f", "i", Outcome::Success));
        item.kv_writes = vec![KvWrite::set("k", "v")];
        store.commit(&[item]).unwrap();
        let resolved = store
            .resolve("f", &Qualifier::parse("prod").unwrap(), "e")
            .unwrap();
        assert_eq!(resolved.version, Some(1));
        assert_eq!(store.kv_get("f", b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.logs(&LogFilter::default()).unwrap().len(), 3);
        assert_eq!(store.prune(&Retention::default()).unwrap().logs, 0);
    }

    #[test]
    fn clones_work_concurrently_from_many_threads() {
        let (_dir, store) = temp_store();
        store.create_function("f", b"m", "", Origin::Local).unwrap();
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                thread::spawn(move || {
                    for i in 0..50 {
                        let mut item = outcome(record("f", &format!("t{t}-{i}"), Outcome::Success));
                        item.kv_writes = vec![KvWrite::set(format!("t{t}"), format!("{i}"))];
                        store.commit(&[item]).unwrap();
                    }
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let store = store.clone();
                thread::spawn(move || {
                    for _ in 0..50 {
                        store.logs(&LogFilter::default()).unwrap();
                        store.list_functions().unwrap();
                        store.resolve("f", &Qualifier::Latest, "e").unwrap();
                    }
                })
            })
            .collect();
        for handle in writers.into_iter().chain(readers) {
            handle.join().unwrap();
        }
        assert_eq!(store.row_counts().unwrap().invocations, 200);
        assert_eq!(store.kv_usage("f").unwrap().entries, 4);
        assert_eq!(store.kv_get("f", b"t3").unwrap(), Some(b"49".to_vec()));
    }
}
