//! Versioned schema migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. [`MIGRATIONS`] is append-only:
//! a released script is never edited, a schema change is a new script at the end. Each script runs
//! in its own IMMEDIATE transaction together with the `user_version` bump, so a crash leaves the
//! database at exactly one schema version. Opening an up-to-date store reads two pragmas and does
//! nothing else.

use rusqlite::{Connection, TransactionBehavior};

use super::error::{Result, StoreError};

/// `PRAGMA application_id` of an edgefn store ("edgf"), so that pointing the agent at some other
/// SQLite file fails clearly instead of migrating it.
pub(crate) const APPLICATION_ID: i32 = 0x6564_6766;

/// The migrations, in order. Index `i` brings the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8];

/// Applies every migration not yet applied; returns the resulting schema version.
pub(crate) fn migrate(conn: &mut Connection, path: &str) -> Result<u32> {
    let supported = MIGRATIONS.len() as u32;
    let current = check_identity(conn, path, supported)?;
    // Up to date (the common case): no write lock taken, nothing written.
    for (index, script) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as u32 + 1;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Check again under the write lock: another process may have migrated meanwhile.
        if check_identity(&tx, path, supported)? >= target {
            continue; // dropping `tx` ends the (empty) transaction
        }
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", target)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
    }
    check_identity(conn, path, supported)
}

/// The schema version, after checking the file is an edgefn store this agent understands.
fn check_identity(conn: &Connection, path: &str, supported: u32) -> Result<u32> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let fresh = version == 0
        && app_id == 0
        && conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })? == 0;
    if !fresh && app_id != APPLICATION_ID {
        return Err(StoreError::NotAStore {
            path: path.to_owned(),
            found: app_id,
        });
    }
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported,
        });
    }
    Ok(version)
}

/// Schema version 1. See the module docs of `store` for what each table is for.
const V1: &str = r#"
-- Small settings of the agent (admin token id, device id, ...).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Integer counters: exact row counts (maintained by triggers, so retention never needs a
-- count(*) over history) and what retention dropped (cumulative, reported to users and the cloud).
CREATE TABLE counters (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES
    ('rows.logs', 0), ('rows.invocations', 0),
    ('dropped.logs', 0), ('dropped.invocations', 0), ('dropped.stats', 0);

-- Module bytes, content-addressed: stored once however many functions and versions use them.
-- A rowid table on purpose: large blobs do not belong in a WITHOUT ROWID b-tree.
CREATE TABLE modules (
    sha256     TEXT PRIMARY KEY NOT NULL CHECK (length(sha256) = 64),
    size       INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE TABLE functions (
    name            TEXT PRIMARY KEY NOT NULL,
    enabled         INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    origin          TEXT NOT NULL CHECK (origin IN ('local', 'cloud')),
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    latest_sha256   TEXT NOT NULL REFERENCES modules (sha256),
    latest_spec     TEXT NOT NULL,
    -- Bumped on every change of latest, so warm `latest` instances can tell they are stale.
    latest_revision INTEGER NOT NULL,
    -- Highest version number ever published: numbers of deleted versions are never reused.
    last_version    INTEGER NOT NULL DEFAULT 0,
    -- Maintained by the kv triggers: O(1) quota checks.
    kv_entries      INTEGER NOT NULL DEFAULT 0,
    kv_bytes        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX functions_by_module ON functions (latest_sha256);

CREATE TABLE versions (
    function    TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    sha256      TEXT NOT NULL REFERENCES modules (sha256),
    spec        TEXT NOT NULL,
    description TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (function, version)
) WITHOUT ROWID;
CREATE INDEX versions_by_module ON versions (sha256);
CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions
BEGIN
    SELECT RAISE(ABORT, 'published versions are immutable');
END;

CREATE TABLE aliases (
    function     TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    also_version INTEGER,
    weight       REAL,
    updated_ms   INTEGER NOT NULL,
    PRIMARY KEY (function, name),
    FOREIGN KEY (function, version) REFERENCES versions (function, version),
    FOREIGN KEY (function, also_version) REFERENCES versions (function, version),
    CHECK ((also_version IS NULL) = (weight IS NULL)),
    CHECK (weight IS NULL OR (weight >= 0.0 AND weight <= 1.0))
) WITHOUT ROWID;

CREATE TABLE kv (
    function TEXT NOT NULL REFERENCES functions (name) ON DELETE CASCADE,
    key      BLOB NOT NULL CHECK (typeof(key) = 'blob'),
    value    BLOB NOT NULL CHECK (typeof(value) = 'blob'),
    PRIMARY KEY (function, key)
) WITHOUT ROWID;
CREATE TRIGGER kv_usage_insert AFTER INSERT ON kv
BEGIN
    UPDATE functions SET kv_entries = kv_entries + 1,
                         kv_bytes = kv_bytes + length(NEW.key) + length(NEW.value)
     WHERE name = NEW.function;
END;
CREATE TRIGGER kv_usage_update AFTER UPDATE ON kv
BEGIN
    UPDATE functions SET kv_bytes = kv_bytes - length(OLD.key) - length(OLD.value)
                                             + length(NEW.key) + length(NEW.value)
     WHERE name = NEW.function;
END;
CREATE TRIGGER kv_usage_delete AFTER DELETE ON kv
BEGIN
    UPDATE functions SET kv_entries = kv_entries - 1,
                         kv_bytes = kv_bytes - length(OLD.key) - length(OLD.value)
     WHERE name = OLD.function;
END;

-- No foreign key to functions: records outlive their function and age out by retention.
-- AUTOINCREMENT: `seq` never goes backwards, even after retention deleted the newest rows.
CREATE TABLE invocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    function      TEXT NOT NULL,
    version       INTEGER,
    qualifier     TEXT NOT NULL,
    source        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    event_time_ms INTEGER NOT NULL,
    start_ms      INTEGER NOT NULL,
    duration_us   INTEGER NOT NULL,
    fuel_used     INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    error         TEXT
);
CREATE INDEX invocations_by_function ON invocations (function, seq);
CREATE INDEX invocations_by_start ON invocations (start_ms);
CREATE TRIGGER invocations_count_insert AFTER INSERT ON invocations
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'rows.invocations';
END;
CREATE TRIGGER invocations_count_delete AFTER DELETE ON invocations
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'rows.invocations';
END;

-- AUTOINCREMENT: `logs --follow` resumes after a seq, which must never be handed out twice.
CREATE TABLE logs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms       INTEGER NOT NULL,
    level         INTEGER NOT NULL CHECK (level BETWEEN 0 AND 4),
    function      TEXT,
    version       INTEGER,
    invocation_id TEXT,
    text          TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs (function, seq);
CREATE INDEX logs_by_invocation ON logs (invocation_id, seq) WHERE invocation_id IS NOT NULL;
CREATE INDEX logs_by_time ON logs (time_ms);
CREATE TRIGGER logs_count_insert AFTER INSERT ON logs
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'rows.logs';
END;
CREATE TRIGGER logs_count_delete AFTER DELETE ON logs
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'rows.logs';
END;

-- Per-minute statistics per function and version key ('latest' or the version number).
-- Histograms are `stats::Histogram` blobs, merged (never averaged) over any window.
CREATE TABLE stats (
    function        TEXT NOT NULL,
    version_key     TEXT NOT NULL,
    minute_ms       INTEGER NOT NULL,
    invocations     INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    throttles       INTEGER NOT NULL,
    retries         INTEGER NOT NULL,
    fuel_sum        INTEGER NOT NULL,
    duration_sum_us INTEGER NOT NULL,
    latency_sum_us  INTEGER NOT NULL,
    duration_hist   BLOB NOT NULL,
    latency_hist    BLOB NOT NULL,
    PRIMARY KEY (function, version_key, minute_ms)
) WITHOUT ROWID;
CREATE INDEX stats_by_minute ON stats (minute_ms);
"#;

/// Schema version 2: event-source mappings and delivery (docs/triggers.md): mappings, the
/// durable event queue, the MQTT outbox, MQTT dedup marks and dead letters.
const V2: &str = r#"
INSERT INTO counters (name, value) VALUES
    ('rows.outbox', 0), ('dropped.outbox', 0),
    ('rows.dead_letters', 0), ('dropped.dead_letters', 0);

-- No foreign key to functions: a mapping outlives its function (its events then fail delivery).
-- `source` is the JSON of the source (`{"kind": "mqtt", "filter": ..., ...}`); `source_kind`
-- repeats its kind for indexing. Destinations are their text form (`topic:T`, `function:F[:Q]`).
CREATE TABLE mappings (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    function    TEXT NOT NULL,
    qualifier   TEXT NOT NULL,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('mqtt', 'cron', 'every', 'http')),
    source      TEXT NOT NULL CHECK (json_valid(source)),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    retries     INTEGER NOT NULL DEFAULT 2 CHECK (retries >= 0),
    on_success  TEXT,
    on_failure  TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX mappings_by_function ON mappings (function);
-- One mapping per HTTP path (the store checks first, to name the mapping that has it).
CREATE UNIQUE INDEX mappings_http_path ON mappings (json_extract(source, '$.path'))
    WHERE source_kind = 'http';

-- Events accepted but not yet delivered: a paused mapping's backlog ('mapping:<id>') and
-- function destinations ('function:<name>:<qualifier>'). `event` is a postcard QueuedEvent.
CREATE TABLE event_queue (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT NOT NULL,
    event      BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX event_queue_by_target ON event_queue (target, seq);

-- MQTT messages to publish; a row is deleted when the broker acknowledged it.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT NOT NULL,
    payload     BLOB NOT NULL,
    qos         INTEGER NOT NULL CHECK (qos BETWEEN 0 AND 2),
    correlation BLOB,
    message_id  TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TRIGGER outbox_count_insert AFTER INSERT ON outbox
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'rows.outbox';
END;
CREATE TRIGGER outbox_count_delete AFTER DELETE ON outbox
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'rows.outbox';
END;

-- Packet ids of committed QoS 1/2 messages, per MQTT session: exactly-once across crashes.
CREATE TABLE mqtt_dedup (
    session      TEXT NOT NULL,
    packet_id    INTEGER NOT NULL CHECK (packet_id BETWEEN 1 AND 65535),
    committed_ms INTEGER NOT NULL,
    PRIMARY KEY (session, packet_id)
) WITHOUT ROWID;

-- Events whose delivery failed for good. `event` is a postcard QueuedEvent.
CREATE TABLE dead_letters (
    id         TEXT PRIMARY KEY NOT NULL,
    mapping_id TEXT,
    function   TEXT NOT NULL,
    qualifier  TEXT NOT NULL,
    event      BLOB NOT NULL,
    attempts   INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    error      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_mapping ON dead_letters (mapping_id, created_ms);
CREATE INDEX dead_letters_by_time ON dead_letters (created_ms);
CREATE TRIGGER dead_letters_count_insert AFTER INSERT ON dead_letters
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'rows.dead_letters';
END;
CREATE TRIGGER dead_letters_count_delete AFTER DELETE ON dead_letters
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'rows.dead_letters';
END;
"#;

/// Schema version 3: cloud sync (docs/architecture.md, "Cloud sync"). Functions already have
/// an `origin`; mappings get one. The applied desired states (the current one and the last good
/// one, kept for a rollback), deployments that failed on this device, and the modules of the
/// last good state, pinned so that garbage collection keeps them.
const V3: &str = r#"
ALTER TABLE mappings ADD COLUMN origin TEXT NOT NULL DEFAULT 'local'
    CHECK (origin IN ('local', 'cloud'));

-- `current`: the desired state the device runs (health `pending` during its health window);
-- `previous`: the last healthy state before it, the target of a rollback. `state` is the JSON
-- of `store::cloud::CloudState` (taken from a verified document).
CREATE TABLE cloud_states (
    slot         TEXT PRIMARY KEY NOT NULL CHECK (slot IN ('current', 'previous')),
    sequence     INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (json_valid(state)),
    activated_ms INTEGER NOT NULL,
    health       TEXT NOT NULL CHECK (health IN ('pending', 'healthy'))
) WITHOUT ROWID;

-- Deployments rolled back on this device, with why (status reports say `failed`).
CREATE TABLE cloud_failures (
    deployment TEXT PRIMARY KEY NOT NULL,
    error      TEXT NOT NULL,
    sequence   INTEGER NOT NULL,
    failed_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Modules garbage collection keeps although no function or version refers to them.
CREATE TABLE module_pins (
    sha256 TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;
"#;

/// Schema version 4: telemetry upload (docs/architecture.md, "Telemetry upload"). No outbox
/// table: the upload reads the log and invocation tables after two cursors, so a record is
/// written once however it travels. Stats buckets get an `unsent` flag (set by the upsert that
/// already rewrites the row). Counters: the cursors, the next batch number, bytes of records
/// (the disk budget's measure, kept by the same triggers that keep the row counts, in the same
/// UPDATE), and records deleted before they were uploaded.
const V4: &str = r#"
INSERT INTO counters (name, value) VALUES
    ('upload.logs_acked', 0), ('upload.invocations_acked', 0), ('upload.next_batch', 1),
    ('upload.dropped.logs', 0), ('upload.dropped.invocations', 0),
    ('upload.dropped_acked.logs', 0), ('upload.dropped_acked.invocations', 0),
    ('bytes.logs', (SELECT coalesce(sum(24 + octet_length(text) + coalesce(octet_length(function), 0)
                                        + coalesce(octet_length(invocation_id), 0)), 0) FROM logs)),
    ('bytes.invocations', (SELECT coalesce(sum(64 + octet_length(id) + octet_length(function)
                                        + octet_length(qualifier) + octet_length(source)
                                        + octet_length(subject) + octet_length(event_id)
                                        + coalesce(octet_length(error), 0)), 0) FROM invocations));

ALTER TABLE stats ADD COLUMN unsent INTEGER NOT NULL DEFAULT 1;
CREATE INDEX stats_unsent ON stats (minute_ms) WHERE unsent = 1;

DROP TRIGGER logs_count_insert;
CREATE TRIGGER logs_count_insert AFTER INSERT ON logs
BEGIN
    UPDATE counters SET value = value + CASE name WHEN 'rows.logs' THEN 1
        ELSE 24 + octet_length(NEW.text) + coalesce(octet_length(NEW.function), 0)
                + coalesce(octet_length(NEW.invocation_id), 0) END
     WHERE name IN ('rows.logs', 'bytes.logs');
END;
DROP TRIGGER logs_count_delete;
CREATE TRIGGER logs_count_delete AFTER DELETE ON logs
BEGIN
    UPDATE counters SET value = value - CASE name WHEN 'rows.logs' THEN 1
        ELSE 24 + octet_length(OLD.text) + coalesce(octet_length(OLD.function), 0)
                + coalesce(octet_length(OLD.invocation_id), 0) END
     WHERE name IN ('rows.logs', 'bytes.logs');
    UPDATE counters SET value = value + 1 WHERE name = 'upload.dropped.logs'
       AND OLD.seq > (SELECT value FROM counters WHERE name = 'upload.logs_acked');
END;
DROP TRIGGER invocations_count_insert;
CREATE TRIGGER invocations_count_insert AFTER INSERT ON invocations
BEGIN
    UPDATE counters SET value = value + CASE name WHEN 'rows.invocations' THEN 1
        ELSE 64 + octet_length(NEW.id) + octet_length(NEW.function) + octet_length(NEW.qualifier)
                + octet_length(NEW.source) + octet_length(NEW.subject)
                + octet_length(NEW.event_id) + coalesce(octet_length(NEW.error), 0) END
     WHERE name IN ('rows.invocations', 'bytes.invocations');
END;
DROP TRIGGER invocations_count_delete;
CREATE TRIGGER invocations_count_delete AFTER DELETE ON invocations
BEGIN
    UPDATE counters SET value = value - CASE name WHEN 'rows.invocations' THEN 1
        ELSE 64 + octet_length(OLD.id) + octet_length(OLD.function) + octet_length(OLD.qualifier)
                + octet_length(OLD.source) + octet_length(OLD.subject)
                + octet_length(OLD.event_id) + coalesce(octet_length(OLD.error), 0) END
     WHERE name IN ('rows.invocations', 'bytes.invocations');
    UPDATE counters SET value = value + 1 WHERE name = 'upload.dropped.invocations'
       AND OLD.seq > (SELECT value FROM counters WHERE name = 'upload.invocations_acked');
END;
"#;

/// Schema version 5: batch jobs (docs/architecture.md, "Batch jobs"; `store/jobs.rs`). A job's
/// tasks are stored with it at submission; a task's state and result change in the transaction
/// that commits its invocation record, and the job's counters with them.
const V5: &str = r#"
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY NOT NULL,
    function    TEXT NOT NULL,
    qualifier   TEXT NOT NULL,
    -- running -> succeeded | failed; running -> cancelling -> cancelled.
    state       TEXT NOT NULL
                CHECK (state IN ('running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
    parallelism INTEGER NOT NULL CHECK (parallelism >= 1),
    retries     INTEGER NOT NULL CHECK (retries >= 0),
    -- Where the tasks came from: 'jsonl', 'csv' or 'items'.
    input       TEXT NOT NULL,
    tasks       INTEGER NOT NULL CHECK (tasks >= 1),
    -- Kept by the task commits (same transaction), so progress is one row read.
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
) WITHOUT ROWID;
CREATE INDEX jobs_active ON jobs (state) WHERE state IN ('running', 'cancelling');

-- A rowid table: payloads and results are blobs of any size.
CREATE TABLE job_tasks (
    job           TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL CHECK (idx >= 0),
    state         TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    -- 1: the payload is JSON text (content type application/json); 0: plain text.
    json          INTEGER NOT NULL CHECK (json IN (0, 1)),
    payload       BLOB NOT NULL,
    -- Attempts committed so far (a retry after a restart goes on from here).
    attempts      INTEGER NOT NULL DEFAULT 0,
    result        BLOB,
    error         TEXT,
    invocation_id TEXT,
    finished_ms   INTEGER,
    PRIMARY KEY (job, idx)
);
CREATE INDEX job_tasks_failed ON job_tasks (job, idx) WHERE state = 'failed';
"#;

/// Schema version 6: ordered streams (docs/triggers.md, "Streams"; `store/stream.rs`). The
/// mappings table is rebuilt because its `source_kind` CHECK lists the kinds (SQLite cannot
/// change a CHECK in place); rows, indexes and the `origin` column are kept.
const V6: &str = r#"
CREATE TABLE mappings_v6 (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    function    TEXT NOT NULL,
    qualifier   TEXT NOT NULL,
    source_kind TEXT NOT NULL CHECK (source_kind IN ('mqtt', 'cron', 'every', 'http',
                                                     'stream-mqtt', 'stream-file')),
    source      TEXT NOT NULL CHECK (json_valid(source)),
    enabled     INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    retries     INTEGER NOT NULL DEFAULT 2 CHECK (retries >= 0),
    on_success  TEXT,
    on_failure  TEXT,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    origin      TEXT NOT NULL DEFAULT 'local' CHECK (origin IN ('local', 'cloud'))
) WITHOUT ROWID;
INSERT INTO mappings_v6 (id, name, function, qualifier, source_kind, source, enabled, retries,
                         on_success, on_failure, created_ms, updated_ms, origin)
    SELECT id, name, function, qualifier, source_kind, source, enabled, retries,
           on_success, on_failure, created_ms, updated_ms, origin FROM mappings;
DROP TABLE mappings;
ALTER TABLE mappings_v6 RENAME TO mappings;
CREATE INDEX mappings_by_function ON mappings (function);
CREATE UNIQUE INDEX mappings_http_path ON mappings (json_extract(source, '$.path'))
    WHERE source_kind = 'http';

-- Per partition of a stream mapping: the last offset given out and the last one done.
CREATE TABLE stream_partitions (
    mapping    TEXT NOT NULL,
    partition  TEXT NOT NULL,
    appended   INTEGER NOT NULL,
    checkpoint INTEGER NOT NULL CHECK (checkpoint <= appended),
    PRIMARY KEY (mapping, partition)
) WITHOUT ROWID;

-- Records appended and not yet done (deleted when the checkpoint passes them).
CREATE TABLE stream_log (
    mapping   TEXT NOT NULL,
    partition TEXT NOT NULL,
    offset    INTEGER NOT NULL,
    subject   TEXT NOT NULL,
    time_ms   INTEGER NOT NULL,
    payload   BLOB NOT NULL,
    PRIMARY KEY (mapping, partition, offset)
);

-- Where a file source's reader is; written with the records read up to there.
CREATE TABLE stream_files (
    mapping  TEXT PRIMARY KEY NOT NULL,
    path     TEXT NOT NULL,
    file_id  TEXT NOT NULL,
    position INTEGER NOT NULL,
    line     INTEGER NOT NULL,
    header   TEXT,
    finished INTEGER NOT NULL CHECK (finished IN (0, 1))
) WITHOUT ROWID;
"#;

/// Schema version 7: flows (docs/flows.md; `store/flows.rs`): definitions and durable
/// runs. A run keeps the definition it started with (an update applies to new runs) and its
/// whole state as JSON, rewritten after every step (`flows/run.rs`).
const V7: &str = r#"
CREATE TABLE flows (
    name       TEXT PRIMARY KEY NOT NULL,
    definition TEXT NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1,
    revision   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE flow_runs (
    id         TEXT PRIMARY KEY NOT NULL,
    flow       TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    definition TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    state      TEXT NOT NULL,
    trigger    TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX flow_runs_by_flow ON flow_runs (flow, id);
CREATE INDEX flow_runs_running ON flow_runs (status) WHERE status = 'running';
"#;

/// Schema version 8: flows' event sources (docs/flows.md). Partial AND matches of flow
/// triggers, runs waiting at `wait` steps (and the event that resolved a wait, until the run
/// takes it), whether a run has nothing to do but wait, and how many partial matches expired.
const V8: &str = r#"
CREATE TABLE flow_partials (
    flow       TEXT NOT NULL,
    key        TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    events     TEXT NOT NULL,
    first_ms   INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (flow, key)
) WITHOUT ROWID;
CREATE INDEX flow_partials_expiry ON flow_partials (expires_ms);

CREATE TABLE flow_waits (
    run         TEXT NOT NULL,
    step        TEXT NOT NULL,
    flow        TEXT NOT NULL,
    key         TEXT,
    deadline_ms INTEGER NOT NULL,
    event_index INTEGER,
    event       TEXT,
    PRIMARY KEY (run, step)
) WITHOUT ROWID;
CREATE INDEX flow_waits_open ON flow_waits (flow, step, key) WHERE event IS NULL;

ALTER TABLE flows ADD COLUMN partials_expired INTEGER NOT NULL DEFAULT 0;
ALTER TABLE flow_runs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_database_migrates_to_the_latest_version_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            migrate(&mut conn, ":memory:").unwrap(),
            MIGRATIONS.len() as u32
        );
        // Idempotent: a second run applies nothing (and would fail if it re-ran CREATE TABLE).
        assert_eq!(
            migrate(&mut conn, ":memory:").unwrap(),
            MIGRATIONS.len() as u32
        );
    }

    #[test]
    fn a_version_1_store_migrates_to_version_2_keeping_its_data() {
        use crate::store::{NewMapping, Source, Store};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A store as the previous agent left it: only V1 applied, with some data.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
        }
        // A function and a log line, written with the V1 schema only.
        {
            let conn = Connection::open(&path).unwrap();
            assert_eq!(check_identity(&conn, "v1", 1).unwrap(), 1);
            conn.execute_batch(
                "INSERT INTO modules (sha256, size, bytes, created_ms)
                     VALUES (printf('%064d', 0), 1, x'00', 0);
                 INSERT INTO functions (name, enabled, origin, created_ms, updated_ms,
                                        latest_sha256, latest_spec, latest_revision)
                     VALUES ('f', 1, 'local', 0, 0, printf('%064d', 0), '', 1);
                 INSERT INTO logs (time_ms, level, text) VALUES (0, 2, 'old line');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert_eq!(store.integrity_check().unwrap(), ["ok"]);
        assert!(store.get_function("f").unwrap().summary.enabled);
        assert_eq!(store.row_counts().unwrap().logs, 1, "counters kept");
        // The V2 tables work.
        let m = store
            .create_mapping(&NewMapping::new("f", Source::Http { path: "/f".into() }))
            .unwrap();
        assert_eq!(store.get_mapping(&m.id).unwrap(), m);
        assert_eq!(store.outbox_count().unwrap(), 0);
        assert_eq!(store.queue_count().unwrap(), 0);
        assert_eq!(store.dropped_totals().unwrap().outbox, 0);
        drop(store);
        // Reopening applies nothing more.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.list_mappings(None).unwrap(), [m]);
    }

    #[test]
    fn newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, "x").unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&mut conn, "x"),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn foreign_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 3;")
            .unwrap();
        assert!(matches!(
            migrate(&mut conn, "x"),
            Err(StoreError::NotAStore { found: 0, .. })
        ));
        conn.pragma_update(None, "application_id", 42).unwrap();
        assert!(matches!(
            migrate(&mut conn, "x"),
            Err(StoreError::NotAStore { found: 42, .. })
        ));
        // Some other application's tables without any version markers: also not ours.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x);").unwrap();
        assert!(matches!(
            migrate(&mut conn, "x"),
            Err(StoreError::NotAStore { found: 0, .. })
        ));
    }
}
