//! `edgefn-agent status`: one look at a running agent: what it runs, what it is enrolled as, and
//! what is still waiting to leave it (outbox, queued events, telemetry not yet uploaded, records
//! dropped before upload).

use super::client::{api_path, AgentOpts, Client};
use super::output::{self, fields, size, span};
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    opts: AgentOpts,
}

/// The status document of docs/agent-api.md (`GET /v1/status`).
#[derive(Debug, Deserialize)]
struct Status {
    version: String,
    uptime_s: u64,
    store: StoreInfo,
    functions: u64,
    functions_enabled: u64,
    functions_cloud: u64,
    mappings: u64,
    mappings_paused: u64,
    outbox: u64,
    queued_events: u64,
    dead_letters: u64,
    device: Option<String>,
    cloud_failures: u64,
    cloud_sequence: Option<u64>,
    enrollment: Option<Enrollment>,
    upload: Upload,
    retention_dropped: RetentionDropped,
}

#[derive(Debug, Deserialize)]
struct Enrollment {
    cloud: String,
    device_name: String,
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct StoreInfo {
    path: Option<String>,
    schema_version: u32,
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct Upload {
    next_batch: u64,
    pending_logs: u64,
    pending_invocations: u64,
    dropped: Counts,
    record_bytes: u64,
    batches_uploaded: u64,
    failures: u64,
}

#[derive(Debug, Deserialize)]
struct Counts {
    logs: u64,
    invocations: u64,
}

#[derive(Debug, Deserialize)]
struct RetentionDropped {
    logs: u64,
    invocations: u64,
    stats_buckets: u64,
    dead_letters: u64,
    outbox: u64,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    let client = Client::new(opts)?;
    let v = client.get(&api_path(&["status"]), &[])?;
    if opts.json {
        output::json_document(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s: Status = client.decode(&v)?;
    output::out(&render(&s))?;
    Ok(ExitCode::SUCCESS)
}

fn render(s: &Status) -> String {
    let cloud = match (&s.enrollment, &s.device) {
        (None, None) => "not enrolled".to_owned(),
        (e, d) => format!(
            "enrolled as {} ({}) with {}{}, {}, {} deployment(s) rolled back here",
            e.as_ref().map_or("?", |e| e.device_name.as_str()),
            d.as_deref().unwrap_or("no device id yet"),
            e.as_ref().map_or("?", |e| e.cloud.as_str()),
            e.as_ref()
                .filter(|e| !e.groups.is_empty())
                .map_or_else(String::new, |e| format!(
                    " (groups {})",
                    e.groups.join(", ")
                )),
            s.cloud_sequence.map_or_else(
                || "no desired state yet".to_owned(),
                |q| format!("sequence {q}")
            ),
            s.cloud_failures
        ),
    };
    let u = &s.upload;
    let r = &s.retention_dropped;
    fields(&[
        ("agent", format!("{} (up {})", s.version, span(s.uptime_s))),
        (
            "store",
            format!(
                "{} (schema {}, {})",
                s.store.path.as_deref().unwrap_or("in memory"),
                s.store.schema_version,
                size(s.store.bytes)
            ),
        ),
        (
            "functions",
            format!(
                "{} ({} enabled, {} from the cloud)",
                s.functions, s.functions_enabled, s.functions_cloud
            ),
        ),
        (
            "mappings",
            format!("{} ({} paused)", s.mappings, s.mappings_paused),
        ),
        ("cloud", cloud),
        (
            "outbox",
            format!("{} message(s) waiting for the broker", s.outbox),
        ),
        (
            "queued",
            format!("{} event(s) not yet delivered", s.queued_events),
        ),
        ("dead letters", s.dead_letters.to_string()),
        (
            "upload",
            if s.enrollment.is_none() {
                "off (not enrolled)".to_owned()
            } else {
                format!(
                    "{} log line(s) + {} invocation record(s) waiting ({} kept), next batch {}; \
                 since start {} batch(es) sent, {} failed attempt(s)",
                    u.pending_logs,
                    u.pending_invocations,
                    size(u.record_bytes),
                    u.next_batch,
                    u.batches_uploaded,
                    u.failures
                )
            },
        ),
        (
            "dropped",
            format!(
                "before upload: {} log line(s), {} invocation record(s); by retention: {} log \
                 line(s), {} invocation record(s), {} stats bucket(s), {} dead letter(s), {} \
                 outbox message(s)",
                u.dropped.logs,
                u.dropped.invocations,
                r.logs,
                r.invocations,
                r.stats_buckets,
                r.dead_letters,
                r.outbox
            ),
        ),
    ])
}
