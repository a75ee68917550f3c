//! `edgefn-agent mapping create|list|get|update|delete|pause|resume`: event-source mappings on a
//! running agent (docs/triggers.md).
//!
//! Flag values clap can check on its own (QoS range, durations, `--missed`, one source kind)
//! are usage errors (exit 2); everything else (filters, cron expressions, intervals, paths,
//! destinations, the function) is validated by the agent, so the CLI and the API give the same
//! messages (exit 1).

use super::client::{api_path, AgentOpts, Body, Client, Method};
use super::output::{self, fields, time_ms, Table};
use anyhow::bail;
use clap::Subcommand;
use edgefn_agent::store::{
    Destination, FileFormat, Mapping, Missed, PartitionKey, Source, DEFAULT_BATCH_SIZE,
};
use serde_json::{json, Map, Value};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct MappingArgs {
    #[command(subcommand)]
    cmd: MappingCmd,
    #[command(flatten)]
    opts: AgentOpts,
}

#[derive(Debug, Subcommand)]
enum MappingCmd {
    /// Map an event source (MQTT filter, cron schedule, interval, HTTP path, or an ordered
    /// stream from MQTT or a file) to a function; prints the new mapping's id.
    Create(CreateArgs),
    /// List the mappings (of one function with --function).
    List {
        /// Only the mappings of this function.
        #[arg(long, value_name = "NAME")]
        function: Option<String>,
    },
    /// Show a mapping.
    Get {
        /// The mapping's id (or name).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Change a mapping: only the settings given change. A new source kind replaces the source;
    /// --qos, --shared-group and --missed alone adjust the current one.
    Update(UpdateArgs),
    /// Delete a mapping (and the events queued for it while paused).
    Delete {
        /// The mapping's id (or name).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Stop delivery: MQTT events are queued durably, schedules do not fire, HTTP answers 409,
    /// streams keep appending and stop consuming (their lag grows).
    Pause {
        /// The mapping's id (or name).
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Start delivery again: queued events first, in arrival order.
    Resume {
        /// The mapping's id (or name).
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// The source flags (one kind at most; `create` requires one).
#[derive(Debug, Clone, Default, clap::Args)]
#[group(id = "source", multiple = false)]
struct SourceKind {
    /// MQTT topic filter (wildcards `+` and `#` allowed).
    #[arg(long, value_name = "FILTER")]
    mqtt: Option<String>,
    /// Cron expression with seconds, in UTC: `*/10 * * * * *` (5 fields: second 0).
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// Fixed interval: 100ms, 30s, 5m, 1h30m (at least 100ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    every: Option<u64>,
    /// HTTP path on the trigger listener (`POST PATH` invokes the function).
    #[arg(long, value_name = "PATH")]
    http: Option<String>,
    /// An ordered stream of the messages on an MQTT filter (QoS 1), in batches per partition.
    #[arg(long, value_name = "FILTER")]
    stream_mqtt: Option<String>,
    /// An ordered stream of the lines of a CSV or JSON-lines file, read once or --follow'ed.
    #[arg(long, value_name = "PATH")]
    stream_file: Option<String>,
}

/// Settings of a source kind.
#[derive(Debug, Clone, Default, clap::Args)]
struct SourceSettings {
    /// MQTT subscription QoS [default: 1].
    #[arg(long, value_name = "0|1|2", value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: Option<u8>,
    /// Subscribe as a shared subscription of this group (`$share/G/FILTER`); in `update`, an
    /// empty value removes it.
    #[arg(long, value_name = "G")]
    shared_group: Option<String>,
    /// What a schedule does about runs missed while the agent was down [default: skip].
    #[arg(long, value_name = "POLICY", value_enum)]
    missed: Option<MissedArg>,
    /// Streams: how a record's partition is found: `topic` (MQTT default), `topic:N` (level N
    /// from 1), `json:/POINTER` (a payload field), `none` (one partition; files' default).
    #[arg(long, value_name = "KEY", value_parser = parse_key)]
    partition_key: Option<PartitionKey>,
    /// Streams: most records per invocation [default: 100].
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
    /// Streams: how long a partition waits for a fuller batch (0s: deliver what is there)
    /// [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    batch_window: Option<u64>,
    /// File streams: `csv` (a header row, then rows) or `jsonl` (one JSON value per line)
    /// [default: from the file's extension].
    #[arg(long, value_name = "csv|jsonl", value_parser = parse_format)]
    format: Option<FileFormat>,
    /// File streams: keep reading what is appended (like `tail -F`), instead of reading once.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    follow: Option<bool>,
}

fn parse_key(text: &str) -> Result<PartitionKey, String> {
    text.parse()
}

fn parse_format(text: &str) -> Result<FileFormat, String> {
    text.parse()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MissedArg {
    /// Fire only future runs.
    Skip,
    /// Fire one catch-up event at start-up.
    RunOnce,
}

impl From<MissedArg> for Missed {
    fn from(m: MissedArg) -> Missed {
        match m {
            MissedArg::Skip => Missed::Skip,
            MissedArg::RunOnce => Missed::RunOnce,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").args(["mqtt", "cron", "every", "http", "stream_mqtt", "stream_file"]).required(true)))]
struct CreateArgs {
    /// The function to invoke, with an optional qualifier (version or alias) [default: latest];
    /// or `flow:NAME` to start a run of a flow per event.
    #[arg(long, value_name = "NAME[:QUALIFIER]")]
    function: String,
    #[command(flatten)]
    kind: SourceKind,
    #[command(flatten)]
    settings: SourceSettings,
    #[command(flatten)]
    delivery: Delivery,
}

#[derive(Debug, clap::Args)]
struct UpdateArgs {
    /// The mapping's id (or name).
    #[arg(value_name = "ID")]
    id: String,
    /// Point the mapping at another function (and qualifier).
    #[arg(long, value_name = "NAME[:QUALIFIER]")]
    function: Option<String>,
    #[command(flatten)]
    kind: SourceKind,
    #[command(flatten)]
    settings: SourceSettings,
    #[command(flatten)]
    delivery: Delivery,
}

#[derive(Debug, Clone, Default, clap::Args)]
struct Delivery {
    /// A unique name for the mapping (usable instead of its id; a schedule's event subject)
    /// [default: the id].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where a successful result goes: `topic:TOPIC` or `function:NAME[:QUALIFIER]` (`none` in
    /// `update` removes it).
    #[arg(long, value_name = "DEST")]
    on_success: Option<String>,
    /// Where a failed event goes after the last retry (default: a dead letter); same forms.
    #[arg(long, value_name = "DEST")]
    on_failure: Option<String>,
    /// Async retries after the first attempt, with exponential backoff [default: 2].
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
}

/// `--every`: a humantime duration as milliseconds.
fn parse_every(text: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 30s, 5m, 1h30m)"))?;
    u64::try_from(d.as_millis()).map_err(|_| "duration too long".to_string())
}

/// `--function NAME[:QUALIFIER]` → body fields.
fn function_fields(body: &mut Map<String, Value>, text: &str) {
    if text.starts_with("flow:") {
        // A flow target (`flow:NAME`) keeps its prefix; the agent starts runs of the flow.
        body.insert("function".into(), json!(text));
        return;
    }
    let (name, qualifier) = text.split_once(':').unwrap_or((text, "latest"));
    body.insert("function".into(), json!(name));
    body.insert("qualifier".into(), json!(qualifier));
}

impl SourceKind {
    fn given(&self) -> bool {
        self.mqtt.is_some()
            || self.cron.is_some()
            || self.every.is_some()
            || self.http.is_some()
            || self.stream_mqtt.is_some()
            || self.stream_file.is_some()
    }
}

impl SourceSettings {
    fn given(&self) -> bool {
        self.qos.is_some() || self.shared_group.is_some() || self.missed.is_some() || self.stream()
    }

    /// Whether a stream setting is given.
    fn stream(&self) -> bool {
        self.partition_key.is_some()
            || self.batch_size.is_some()
            || self.batch_window.is_some()
            || self.format.is_some()
            || self.follow.is_some()
    }
}

/// The source the flags describe, starting from `current` when it is of the same kind (so
/// `update --mqtt NEW` keeps the QoS) or from the defaults otherwise.
fn build_source(
    kind: &SourceKind,
    settings: &SourceSettings,
    current: Option<&Source>,
) -> anyhow::Result<Source> {
    let mut source = match (kind, current) {
        (
            SourceKind { mqtt: Some(f), .. },
            Some(Source::Mqtt {
                qos, shared_group, ..
            }),
        ) => Source::Mqtt {
            filter: f.clone(),
            qos: *qos,
            shared_group: shared_group.clone(),
        },
        (SourceKind { mqtt: Some(f), .. }, _) => Source::Mqtt {
            filter: f.clone(),
            qos: 1,
            shared_group: None,
        },
        (SourceKind { cron: Some(e), .. }, c) => Source::Cron {
            expr: e.clone(),
            missed: c.and_then(Source::missed).unwrap_or_default(),
        },
        (
            SourceKind {
                every: Some(ms), ..
            },
            c,
        ) => Source::Every {
            interval_ms: *ms,
            missed: c.and_then(Source::missed).unwrap_or_default(),
        },
        (SourceKind { http: Some(p), .. }, _) => Source::Http { path: p.clone() },
        (
            SourceKind {
                stream_mqtt: Some(f),
                ..
            },
            c,
        ) => {
            let b = c.and_then(Source::batching);
            Source::StreamMqtt {
                filter: f.clone(),
                partition_key: match c {
                    Some(Source::StreamMqtt { partition_key, .. }) => partition_key.clone(),
                    _ => PartitionKey::Topic,
                },
                batch_size: b.map_or(DEFAULT_BATCH_SIZE, |b| b.size),
                batch_window_ms: b.map_or(0, |b| b.window_ms),
            }
        }
        (
            SourceKind {
                stream_file: Some(p),
                ..
            },
            c,
        ) => {
            let b = c.and_then(Source::batching);
            let (format, follow, key) = match c {
                Some(Source::StreamFile {
                    format,
                    follow,
                    partition_key,
                    ..
                }) => (Some(*format), *follow, partition_key.clone()),
                _ => (None, false, PartitionKey::None),
            };
            let format = match settings.format.or_else(|| format_of(p)).or(format) {
                Some(f) => f,
                None => {
                    bail!("give --format csv or --format jsonl (the file's extension does not say)")
                }
            };
            Source::StreamFile {
                path: absolute(p)?,
                format,
                follow,
                partition_key: key,
                batch_size: b.map_or(DEFAULT_BATCH_SIZE, |b| b.size),
                batch_window_ms: b.map_or(0, |b| b.window_ms),
            }
        }
        (_, Some(c)) => c.clone(),
        (_, None) => {
            bail!("give a source: --mqtt, --cron, --every, --http, --stream-mqtt or --stream-file")
        }
    };
    let stream_only = "--partition-key, --batch-size, --batch-window, --format and --follow \
                       apply to stream mappings (--stream-mqtt, --stream-file)";
    match &mut source {
        Source::Mqtt {
            qos, shared_group, ..
        } => {
            if settings.missed.is_some() {
                bail!("--missed applies to schedules (--cron, --every), not to MQTT mappings");
            }
            if settings.stream() {
                bail!("{stream_only}");
            }
            if let Some(q) = settings.qos {
                *qos = q;
            }
            if let Some(g) = &settings.shared_group {
                *shared_group = (!g.is_empty()).then(|| g.clone());
            }
        }
        Source::Cron { missed, .. } | Source::Every { missed, .. } => {
            if settings.qos.is_some() || settings.shared_group.is_some() {
                bail!("--qos and --shared-group apply to MQTT mappings (--mqtt), not to schedules");
            }
            if settings.stream() {
                bail!("{stream_only}");
            }
            if let Some(m) = settings.missed {
                *missed = m.into();
            }
        }
        Source::Http { .. } => {
            if settings.given() {
                bail!(
                    "--qos, --shared-group, --missed and stream settings do not apply to HTTP \
                     mappings"
                );
            }
        }
        Source::StreamMqtt {
            partition_key,
            batch_size,
            batch_window_ms,
            ..
        } => {
            if settings.qos.is_some() || settings.shared_group.is_some() {
                bail!("--qos and --shared-group do not apply to streams (QoS 1, not shared)");
            }
            if settings.missed.is_some() {
                bail!("--missed applies to schedules (--cron, --every), not to streams");
            }
            if settings.format.is_some() || settings.follow.is_some() {
                bail!("--format and --follow apply to file streams (--stream-file)");
            }
            if let Some(k) = &settings.partition_key {
                *partition_key = k.clone();
            }
            if let Some(n) = settings.batch_size {
                *batch_size = n;
            }
            if let Some(w) = settings.batch_window {
                *batch_window_ms = w;
            }
        }
        Source::StreamFile {
            format,
            follow,
            partition_key,
            batch_size,
            batch_window_ms,
            ..
        } => {
            if settings.qos.is_some()
                || settings.shared_group.is_some()
                || settings.missed.is_some()
            {
                bail!("--qos, --shared-group and --missed do not apply to file streams");
            }
            if let Some(f) = settings.format {
                *format = f;
            }
            if let Some(f) = settings.follow {
                *follow = f;
            }
            if let Some(k) = &settings.partition_key {
                *partition_key = k.clone();
            }
            if let Some(n) = settings.batch_size {
                *batch_size = n;
            }
            if let Some(w) = settings.batch_window {
                *batch_window_ms = w;
            }
        }
    }
    Ok(source)
}

/// The format a file's extension names.
fn format_of(path: &str) -> Option<FileFormat> {
    let ext = std::path::Path::new(path).extension()?.to_str()?;
    match ext.to_ascii_lowercase().as_str() {
        "csv" => Some(FileFormat::Csv),
        "jsonl" | "ndjson" => Some(FileFormat::Jsonl),
        _ => None,
    }
}

/// The agent runs elsewhere: a relative path is taken from the CLI's working directory.
fn absolute(path: &str) -> anyhow::Result<String> {
    let p = std::path::Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    abs.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the path {path:?} is not UTF-8"))
}

/// `--on-success`/`--on-failure`/`--name`/`--retries` → body fields (`none` → null when
/// `allow_none`, to remove a destination).
fn delivery_fields(body: &mut Map<String, Value>, d: &Delivery, allow_none: bool) {
    if let Some(n) = &d.name {
        body.insert("name".into(), json!(n));
    }
    if let Some(r) = d.retries {
        body.insert("retries".into(), json!(r));
    }
    for (key, dest) in [("on_success", &d.on_success), ("on_failure", &d.on_failure)] {
        if let Some(text) = dest {
            let value = if allow_none && text == "none" {
                Value::Null
            } else {
                json!(text)
            };
            body.insert(key.into(), value);
        }
    }
}

pub fn run(args: MappingArgs) -> anyhow::Result<ExitCode> {
    let opts = &args.opts;
    match args.cmd {
        MappingCmd::Create(c) => {
            // Usage problems first, before any connection.
            let source = build_source(&c.kind, &c.settings, None)?;
            let mut body = Map::new();
            function_fields(&mut body, &c.function);
            body.insert("source".into(), serde_json::to_value(&source)?);
            delivery_fields(&mut body, &c.delivery, false);
            let client = Client::new(opts)?;
            let v = client.send(
                Method::Post,
                &api_path(&["mappings"]),
                Body::Json(&Value::Object(body)),
            )?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let m: Mapping = client.decode(&v)?;
                // stdout is the id alone, for scripts: `ID=$(edgefn-agent mapping create ...)`.
                output::out(&format!("{}\n", m.id))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MappingCmd::List { function } => {
            let client = Client::new(opts)?;
            let query: Vec<(&str, String)> =
                function.into_iter().map(|f| ("function", f)).collect();
            let v = client.get(&api_path(&["mappings"]), &query)?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                let list: Vec<Mapping> = client.decode(&v)?;
                if list.is_empty() {
                    eprintln!("no mappings");
                } else {
                    output::out(&render_list(&list))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        MappingCmd::Get { id } => {
            let client = Client::new(opts)?;
            let v = client.get(&api_path(&["mappings", &id]), &[])?;
            if opts.json {
                output::json_document(&v)?;
            } else {
                output::out(&render_mapping(&client.decode(&v)?))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MappingCmd::Update(u) => update(opts, u),
        MappingCmd::Delete { id } => {
            let client = Client::new(opts)?;
            client.send(Method::Delete, &api_path(&["mappings", &id]), Body::Empty)?;
            if opts.json {
                output::json_document(&json!({"deleted": true, "mapping": id}))?;
            } else {
                output::out(&format!("deleted mapping {id}\n"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        MappingCmd::Pause { id } => toggle(opts, &id, "pause", "paused"),
        MappingCmd::Resume { id } => toggle(opts, &id, "resume", "resumed"),
    }
}

fn update(opts: &AgentOpts, u: UpdateArgs) -> anyhow::Result<ExitCode> {
    let mut body = Map::new();
    if let Some(f) = &u.function {
        function_fields(&mut body, f);
    }
    delivery_fields(&mut body, &u.delivery, true);
    if !u.kind.given() && !u.settings.given() && body.is_empty() {
        bail!(
            "nothing to update: give --function, a source (--mqtt, --cron, --every, --http, \
             --stream-mqtt, --stream-file), --qos, --shared-group, --missed, --partition-key, \
             --batch-size, --batch-window, --format, --follow, --name, --on-success, \
             --on-failure or --retries"
        );
    }
    let client = Client::new(opts)?;
    let path = api_path(&["mappings", &u.id]);
    if u.kind.given() || u.settings.given() {
        // The current source: to keep its settings, or to adjust them.
        let current: Mapping = client.decode(&client.get(&path, &[])?)?;
        let source = build_source(&u.kind, &u.settings, Some(&current.source))?;
        body.insert("source".into(), serde_json::to_value(&source)?);
    }
    let v = client.send(Method::Patch, &path, Body::Json(&Value::Object(body)))?;
    if opts.json {
        output::json_document(&v)?;
    } else {
        let m: Mapping = client.decode(&v)?;
        output::out(&format!("updated mapping {}\n", label(&m)))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn toggle(opts: &AgentOpts, id: &str, verb: &str, done: &str) -> anyhow::Result<ExitCode> {
    let client = Client::new(opts)?;
    let v = client.send(
        Method::Post,
        &api_path(&["mappings", id, verb]),
        Body::Empty,
    )?;
    if opts.json {
        output::json_document(&v)?;
    } else {
        let m: Mapping = client.decode(&v)?;
        output::out(&format!("{done} mapping {}\n", label(&m)))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `m-...` or `m-... (name)`.
fn label(m: &Mapping) -> String {
    if m.name == m.id {
        m.id.clone()
    } else {
        format!("{} ({})", m.id, m.name)
    }
}

fn dest(d: &Option<Destination>) -> String {
    d.as_ref().map_or_else(|| "-".into(), ToString::to_string)
}

fn state(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "paused"
    }
}

fn render_list(list: &[Mapping]) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "FUNCTION",
        "SOURCE",
        "STATE",
        "RETRIES",
        "ON-SUCCESS",
        "ON-FAILURE",
    ])
    .right(&[5]);
    for m in list {
        t.row(&[
            m.id.clone(),
            if m.name == m.id {
                "-".into()
            } else {
                m.name.clone()
            },
            m.target(),
            m.source.to_string(),
            state(m.enabled).into(),
            m.retries.to_string(),
            dest(&m.on_success),
            dest(&m.on_failure),
        ]);
    }
    t.render()
}

fn render_mapping(m: &Mapping) -> String {
    let mut pairs = vec![
        ("id", m.id.clone()),
        ("name", m.name.clone()),
        ("function", m.target()),
        ("source", m.source.to_string()),
    ];
    if let Some(sub) = m.source.subscription() {
        pairs.push(("subscription", sub));
    }
    pairs.extend([
        ("state", state(m.enabled).to_string()),
        ("retries", m.retries.to_string()),
        ("on-success", dest(&m.on_success)),
        (
            "on-failure",
            m.on_failure
                .as_ref()
                .map_or_else(|| "- (dead letter)".into(), ToString::to_string),
        ),
        ("created", time_ms(m.created_ms.max(0) as u64)),
        ("updated", time_ms(m.updated_ms.max(0) as u64)),
    ]);
    fields(&pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<MappingCmd, clap::Error> {
        let mut all = vec!["edgefn-agent", "mapping"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            crate::cli::Command::Mapping(m) => Ok(m.cmd),
            other => panic!("{other:?}"),
        }
    }

    fn create(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        match parse(&all)? {
            MappingCmd::Create(c) => Ok(c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_needs_exactly_one_source() {
        assert!(create(&["--function", "f"]).is_err());
        assert!(create(&["--function", "f", "--mqtt", "a", "--http", "/a"]).is_err());
        assert!(create(&["--function", "f", "--cron", "* * * * * *", "--every", "1s"]).is_err());
        let c = create(&["--function", "f:prod", "--every", "1m 30s"]).unwrap();
        assert_eq!(c.kind.every, Some(90_000));
        assert!(create(&["--function", "f", "--every", "5 parsecs"]).is_err());
        assert!(create(&["--function", "f", "--mqtt", "a", "--qos", "3"]).is_err());
        assert!(create(&["--function", "f", "--cron", "x", "--missed", "later"]).is_err());
        assert!(create(&["--mqtt", "a"]).is_err(), "--function is required");
    }

    #[test]
    fn sources_from_flags() {
        let c = create(&[
            "--function",
            "f",
            "--mqtt",
            "a/+",
            "--qos",
            "2",
            "--shared-group",
            "g",
        ])
        .unwrap();
        assert_eq!(
            build_source(&c.kind, &c.settings, None).unwrap(),
            Source::Mqtt {
                filter: "a/+".into(),
                qos: 2,
                shared_group: Some("g".into())
            }
        );
        let c = create(&[
            "--function",
            "f",
            "--cron",
            "0 * * * * *",
            "--missed",
            "run-once",
        ])
        .unwrap();
        assert_eq!(
            build_source(&c.kind, &c.settings, None).unwrap(),
            Source::Cron {
                expr: "0 * * * * *".into(),
                missed: Missed::RunOnce
            }
        );
        // Settings of another kind are usage errors.
        for args in [
            &["--function", "f", "--mqtt", "a", "--missed", "skip"][..],
            &["--function", "f", "--every", "1s", "--qos", "1"],
            &["--function", "f", "--http", "/a", "--shared-group", "g"],
        ] {
            let c = create(args).unwrap();
            assert!(
                build_source(&c.kind, &c.settings, None).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn stream_sources_from_flags() {
        let c = create(&[
            "--function",
            "f",
            "--stream-mqtt",
            "plant/+/power",
            "--partition-key",
            "topic:2",
            "--batch-size",
            "50",
            "--batch-window",
            "2s",
        ])
        .unwrap();
        assert_eq!(
            build_source(&c.kind, &c.settings, None).unwrap(),
            Source::StreamMqtt {
                filter: "plant/+/power".into(),
                partition_key: PartitionKey::TopicLevel(2),
                batch_size: 50,
                batch_window_ms: 2000,
            }
        );
        let c = create(&["--function", "f", "--stream-file", "/d/in.csv", "--follow"]).unwrap();
        assert_eq!(
            build_source(&c.kind, &c.settings, None).unwrap(),
            Source::StreamFile {
                path: "/d/in.csv".into(),
                format: FileFormat::Csv,
                follow: true,
                partition_key: PartitionKey::None,
                batch_size: DEFAULT_BATCH_SIZE,
                batch_window_ms: 0,
            }
        );
        assert!(create(&[
            "--function",
            "f",
            "--stream-mqtt",
            "a",
            "--partition-key",
            "x"
        ])
        .is_err());
        // Update: only the batch size of the current stream changes.
        let current = build_source(&c.kind, &c.settings, None).unwrap();
        let u = match parse(&["update", "m-1", "--batch-size", "7"]).unwrap() {
            MappingCmd::Update(u) => u,
            other => panic!("{other:?}"),
        };
        match build_source(&u.kind, &u.settings, Some(&current)).unwrap() {
            Source::StreamFile {
                batch_size, follow, ..
            } => assert_eq!((batch_size, follow), (7, true)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_keeps_or_adjusts_the_current_source() {
        let current = Source::Mqtt {
            filter: "a".into(),
            qos: 2,
            shared_group: Some("g".into()),
        };
        let upd = |args: &[&str]| match parse(&[&["update", "m-1"], args].concat()).unwrap() {
            MappingCmd::Update(u) => u,
            other => panic!("{other:?}"),
        };
        let u = upd(&["--mqtt", "b"]);
        assert_eq!(
            build_source(&u.kind, &u.settings, Some(&current)).unwrap(),
            Source::Mqtt {
                filter: "b".into(),
                qos: 2,
                shared_group: Some("g".into())
            }
        );
        let u = upd(&["--qos", "0", "--shared-group", ""]);
        assert_eq!(
            build_source(&u.kind, &u.settings, Some(&current)).unwrap(),
            Source::Mqtt {
                filter: "a".into(),
                qos: 0,
                shared_group: None
            }
        );
        let u = upd(&["--http", "/x"]);
        assert_eq!(
            build_source(&u.kind, &u.settings, Some(&current)).unwrap(),
            Source::Http { path: "/x".into() }
        );
        let u = upd(&["--missed", "run-once"]);
        assert!(build_source(&u.kind, &u.settings, Some(&current)).is_err());
        let every = Source::Every {
            interval_ms: 1000,
            missed: Missed::RunOnce,
        };
        let u = upd(&["--every", "2s"]);
        assert_eq!(
            build_source(&u.kind, &u.settings, Some(&every)).unwrap(),
            Source::Every {
                interval_ms: 2000,
                missed: Missed::RunOnce
            }
        );
    }

    #[test]
    fn none_removes_a_destination_only_in_update() {
        let d = Delivery {
            on_success: Some("none".into()),
            on_failure: Some("topic:x".into()),
            ..Delivery::default()
        };
        let mut body = Map::new();
        delivery_fields(&mut body, &d, true);
        assert_eq!(
            Value::Object(body),
            json!({"on_success": null, "on_failure": "topic:x"})
        );
        let mut body = Map::new();
        delivery_fields(&mut body, &d, false);
        assert_eq!(body["on_success"], "none");
    }
}
