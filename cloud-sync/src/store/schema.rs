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
    // 2: the lookups every device request and enrollment makes, so that none of them scans a table
    // that grows with the fleet (the credential and the one-time token are looked up by hash; a
    // device's groups and deployment states by device).
    r#"
CREATE UNIQUE INDEX devices_credential_hash ON devices (credential_hash);
CREATE UNIQUE INDEX devices_enroll_token_hash ON devices (enroll_token_hash);
CREATE INDEX group_members_device ON group_members (device_id);
CREATE INDEX deployment_devices_device ON deployment_devices (device_id);
CREATE INDEX deployments_status ON deployments (status)
"#,
];

/// The statements of one migration.
pub fn statements(migration: &str) -> impl Iterator<Item = &str> {
    migration
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}
