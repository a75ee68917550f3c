//! The schema, as numbered migrations both backends apply in order (`schema_version` table).
//! Portable types only (see the module docs of [`super`]).

/// Migration `i + 1` is `MIGRATIONS[i]`: statements separated by `;`.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE revision (id BIGINT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO revision (id, value) VALUES (1, 0);
CREATE TABLE artifacts (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE functions (
    name TEXT PRIMARY KEY,
    enabled BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    latest_sha256 TEXT NOT NULL,
    latest_spec TEXT NOT NULL,
    latest_revision BIGINT NOT NULL,
    last_version BIGINT NOT NULL
);
CREATE TABLE versions (
    function TEXT NOT NULL,
    version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    spec TEXT NOT NULL,
    description TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    manifest TEXT NOT NULL,
    PRIMARY KEY (function, version)
);
CREATE TABLE aliases (
    function TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    also_version BIGINT,
    weight DOUBLE PRECISION,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE mappings (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL,
    qualifier TEXT NOT NULL,
    source TEXT NOT NULL,
    http_path TEXT,
    enabled BIGINT NOT NULL,
    retries BIGINT NOT NULL,
    on_success TEXT,
    on_failure TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE signing_keys (
    id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    cert TEXT NOT NULL,
    not_after_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    retired_ms BIGINT
);
CREATE TABLE device_groups (name TEXT PRIMARY KEY, created_ms BIGINT NOT NULL);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enroll_token_hash TEXT,
    enroll_expires_ms BIGINT,
    credential_hash TEXT,
    created_ms BIGINT NOT NULL,
    enrolled_ms BIGINT,
    last_seen_ms BIGINT,
    sequence BIGINT NOT NULL,
    content_hash TEXT NOT NULL,
    document TEXT,
    document_issued_ms BIGINT NOT NULL,
    applied_sequence BIGINT NOT NULL,
    applied_key_id TEXT
);
CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    device_id TEXT NOT NULL,
    PRIMARY KEY (group_name, device_id)
);
CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    group_name TEXT NOT NULL,
    content TEXT NOT NULL,
    batch_percent BIGINT NOT NULL,
    failure_percent BIGINT NOT NULL,
    health_wait_ms BIGINT NOT NULL,
    report_timeout_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    batches BIGINT NOT NULL,
    current_batch BIGINT NOT NULL,
    message TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE deployment_devices (
    deployment_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    batch BIGINT NOT NULL,
    state TEXT NOT NULL,
    released_ms BIGINT,
    applied_ms BIGINT,
    error TEXT,
    PRIMARY KEY (deployment_id, device_id)
)
"#,
    // 2: telemetry upload (docs/cloud-api.md, "Telemetry upload"). A batch is stored once per
    // (device, batch_seq); records are keyed by the device's own positions, so even a record
    // sent twice in different batches would be stored once. Stats buckets are the device's
    // cumulative per-minute buckets, replaced on upload.
    r#"
CREATE TABLE telemetry_batches (
    device_id TEXT NOT NULL,
    batch_seq BIGINT NOT NULL,
    logs_to BIGINT NOT NULL,
    invocations_to BIGINT NOT NULL,
    logs BIGINT NOT NULL,
    invocations BIGINT NOT NULL,
    stats BIGINT NOT NULL,
    wire_bytes BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, batch_seq)
);
CREATE TABLE device_telemetry (
    device_id TEXT PRIMARY KEY,
    last_batch_seq BIGINT NOT NULL,
    last_received_ms BIGINT NOT NULL,
    dropped_logs BIGINT NOT NULL,
    dropped_invocations BIGINT NOT NULL
);
CREATE TABLE device_logs (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    level BIGINT NOT NULL,
    function TEXT,
    version BIGINT,
    invocation_id TEXT,
    text TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX device_logs_by_time ON device_logs (time_ms);
CREATE INDEX device_logs_by_function ON device_logs (function, time_ms);
CREATE INDEX device_logs_by_invocation ON device_logs (invocation_id);
CREATE INDEX device_logs_by_received ON device_logs (received_ms);
CREATE TABLE device_invocations (
    device_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    function TEXT NOT NULL,
    version BIGINT,
    qualifier TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    event_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    event_time_ms BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    fuel_used BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX device_invocations_by_start ON device_invocations (start_ms);
CREATE INDEX device_invocations_by_id ON device_invocations (id);
CREATE TABLE device_stats (
    device_id TEXT NOT NULL,
    function TEXT NOT NULL,
    version_key TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    invocations BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    throttles BIGINT NOT NULL,
    retries BIGINT NOT NULL,
    fuel_sum BIGINT NOT NULL,
    duration_sum_us BIGINT NOT NULL,
    latency_sum_us BIGINT NOT NULL,
    duration_hist BYTEA NOT NULL,
    latency_hist BYTEA NOT NULL,
    PRIMARY KEY (device_id, function, version_key, minute_ms)
);
CREATE INDEX device_stats_by_minute ON device_stats (minute_ms)
"#,
    // 3: the lookups every device request and enrollment makes, so that none of them scans a table
    // that grows with the fleet (the credential and the one-time token are looked up by hash; a
    // device's groups and deployment states by device).
    r#"
CREATE UNIQUE INDEX devices_credential_hash ON devices (credential_hash);
CREATE UNIQUE INDEX devices_enroll_token_hash ON devices (enroll_token_hash);
CREATE INDEX group_members_device ON group_members (device_id);
CREATE INDEX deployment_devices_device ON deployment_devices (device_id);
CREATE INDEX deployments_status ON deployments (status)
"#,
    // 4: storage tuning only PostgreSQL has syntax for (see `POSTGRES_ONLY`); nothing portable.
    "",
    // 5: flows in the registry (`service/flows.rs`): the definition as JSON.
    r#"
CREATE TABLE flows (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
)
"#,
];

/// Statements PostgreSQL runs after the portable migration of the same number (1-based), in
/// the same transaction.
///
/// 4: a `devices` row carries the device's ~1.8 KB signed document, rewritten on every change,
/// so pages full of rows left no room to update one in place: each update wrote new entries
/// into every index of the table, and SSI's page-level predicate locks on those index pages made
/// concurrent updates of *different* devices fail with serialization errors (retried, slowly:
/// p99 1.5 s for polls during a 10,000-device rollout, docs/benchmarks.md). With free space in
/// every page, document updates are HOT (heap-only: no index writes). Applies to pages written
/// from now on.
pub const POSTGRES_ONLY: &[(usize, &str)] = &[(4, "ALTER TABLE devices SET (fillfactor = 40)")];

/// The statements of one migration.
pub fn statements(migration: &str) -> impl Iterator<Item = &str> {
    migration
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}
