//! `edgefn mapping ...`: registry mappings (the agent CLI's flags).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{seg, Client, Method};
use super::output::{fields, json as print_json, out, text, Table};
use super::CliError;

#[derive(Args, Debug, Default)]
pub struct SourceArgs {
    /// An MQTT topic filter.
    #[arg(long, group = "src")]
    mqtt: Option<String>,
    #[arg(long)]
    qos: Option<u8>,
    #[arg(long)]
    shared_group: Option<String>,
    /// A cron expression (6 fields with seconds, or 5), UTC.
    #[arg(long, group = "src")]
    cron: Option<String>,
    /// A fixed interval (`30s`, `5m`).
    #[arg(long, group = "src", value_parser = humantime::parse_duration)]
    every: Option<std::time::Duration>,
    /// An HTTP path on the device's HTTP trigger.
    #[arg(long, group = "src")]
    http: Option<String>,
    /// `skip` or `run-once` (schedules).
    #[arg(long)]
    missed: Option<String>,
    /// An ordered stream of the messages on an MQTT filter (QoS 1), in batches per partition.
    #[arg(long, group = "src", value_name = "FILTER")]
    stream_mqtt: Option<String>,
    /// An ordered stream of the lines of a CSV or JSON-lines file on the device (absolute path),
    /// read once or --follow'ed.
    #[arg(long, group = "src", value_name = "PATH")]
    stream_file: Option<String>,
    /// Streams: `topic` (MQTT default), `topic:N`, `json:/POINTER`, `none` (files' default).
    #[arg(long, value_name = "KEY")]
    partition_key: Option<String>,
    /// Streams: most records per invocation [default: 100].
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
    /// Streams: how long a partition waits for a fuller batch [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    batch_window: Option<std::time::Duration>,
    /// File streams: `csv` or `jsonl` [default: from the file's extension].
    #[arg(long, value_name = "csv|jsonl")]
    format: Option<String>,
    /// File streams: keep reading what is appended (like `tail -F`).
    #[arg(long)]
    follow: bool,
}

impl SourceArgs {
    /// The source's JSON, or `Ok(None)` when no source kind is given.
    fn source(&self) -> Result<Option<Value>, CliError> {
        let streams = self.partition_key.is_some()
            || self.batch_size.is_some()
            || self.batch_window.is_some()
            || self.format.is_some()
            || self.follow;
        if streams && self.stream_mqtt.is_none() && self.stream_file.is_none() {
            return Err(CliError::Usage(
                "--partition-key, --batch-size, --batch-window, --format and --follow apply to \
                 stream mappings (--stream-mqtt, --stream-file)"
                    .into(),
            ));
        }
        if self.stream_mqtt.is_some() && (self.format.is_some() || self.follow) {
            return Err(CliError::Usage(
                "--format and --follow apply to file streams (--stream-file)".into(),
            ));
        }
        let batching = |mut v: Value| {
            v["batch_size"] = json!(self.batch_size.unwrap_or(100));
            v["batch_window_ms"] = json!(self.batch_window.map_or(0, |d| d.as_millis() as u64));
            v
        };
        if let Some(f) = &self.stream_mqtt {
            let key = self.partition_key.clone().unwrap_or_else(|| "topic".into());
            return Ok(Some(batching(
                json!({"kind": "stream-mqtt", "filter": f, "partition_key": key}),
            )));
        }
        if let Some(p) = &self.stream_file {
            let format =
                match (&self.format, p.rsplit_once('.').map(|(_, e)| e)) {
                    (Some(f), _) => f.clone(),
                    (None, Some("csv")) => "csv".into(),
                    (None, Some("jsonl" | "ndjson" | "json")) => "jsonl".into(),
                    _ => return Err(CliError::Usage(
                        "give --format csv or --format jsonl (the file's extension does not say)"
                            .into(),
                    )),
                };
            let key = self.partition_key.clone().unwrap_or_else(|| "none".into());
            return Ok(Some(batching(json!({
                "kind": "stream-file", "path": p, "format": format, "follow": self.follow,
                "partition_key": key
            }))));
        }
        Ok(self.plain_source())
    }

    fn plain_source(&self) -> Option<Value> {
        let missed = self.missed.clone().unwrap_or_else(|| "skip".into());
        if let Some(f) = &self.mqtt {
            return Some(
                json!({"kind": "mqtt", "filter": f, "qos": self.qos.unwrap_or(1), "shared_group": self.shared_group}),
            );
        }
        if let Some(e) = &self.cron {
            return Some(json!({"kind": "cron", "expr": e, "missed": missed}));
        }
        if let Some(d) = self.every {
            return Some(
                json!({"kind": "every", "interval_ms": d.as_millis() as u64, "missed": missed}),
            );
        }
        self.http
            .as_ref()
            .map(|p| json!({"kind": "http", "path": p}))
    }
}

#[derive(Subcommand, Debug)]
pub enum MappingCmd {
    /// Create a mapping (prints its id).
    Create {
        /// `NAME[:QUALIFIER]` of a function, or `flow:NAME` (each event starts a flow run).
        #[arg(long)]
        function: String,
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        on_success: Option<String>,
        #[arg(long)]
        on_failure: Option<String>,
        #[arg(long)]
        retries: Option<u32>,
    },
    List {
        #[arg(long)]
        function: Option<String>,
    },
    Get {
        id: String,
    },
    /// Change the given fields (`--on-success none` removes a destination).
    Update {
        id: String,
        #[arg(long)]
        function: Option<String>,
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        on_success: Option<String>,
        #[arg(long)]
        on_failure: Option<String>,
        #[arg(long)]
        retries: Option<u32>,
    },
    Delete {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
}

fn dest(d: Option<String>) -> Option<Value> {
    d.map(|d| if d == "none" { Value::Null } else { json!(d) })
}

/// `NAME:QUALIFIER`, or `flow:NAME` for a mapping that starts flow runs.
fn target(m: &Value) -> String {
    let function = text(&m["function"]);
    if function.starts_with("flow:") {
        return function;
    }
    format!("{function}:{}", text(&m["qualifier"]))
}

fn print(v: &Value) {
    out(&fields(&[
        ("id", text(&v["id"])),
        ("name", text(&v["name"])),
        ("function", target(v)),
        ("source", v["source"].to_string()),
        ("enabled", text(&v["enabled"])),
        ("retries", text(&v["retries"])),
        ("on success", text(&v["on_success"])),
        ("on failure", text(&v["on_failure"])),
    ]))
}

pub fn run(c: &Client, json_out: bool, cmd: MappingCmd) -> Result<(), CliError> {
    let show = |v: Value| if json_out { print_json(&v) } else { print(&v) };
    match cmd {
        MappingCmd::Create {
            function,
            source,
            name,
            on_success,
            on_failure,
            retries,
        } => {
            let src = source.source()?.ok_or_else(|| {
                CliError::Usage(
                    "mapping create: give one of --mqtt, --cron, --every, --http, --stream-mqtt, \
                     --stream-file"
                        .into(),
                )
            })?;
            let mut body = json!({"function": function, "source": src});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(r) = retries {
                body["retries"] = json!(r);
            }
            if let Some(d) = dest(on_success) {
                body["on_success"] = d;
            }
            if let Some(d) = dest(on_failure) {
                body["on_failure"] = d;
            }
            let v = c.call(Method::Post, "/v1/mappings", Some(&body))?;
            if json_out {
                print_json(&v)
            } else {
                out(&format!("{}\n", text(&v["id"])))
            }
        }
        MappingCmd::List { function } => {
            let path = match function {
                Some(f) => format!("/v1/mappings?function={}", seg(&f)),
                None => "/v1/mappings".into(),
            };
            let v = c.get(&path)?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "FUNCTION", "SOURCE", "ENABLED"]);
            for m in v.as_array().into_iter().flatten() {
                t.row(vec![
                    text(&m["id"]),
                    text(&m["name"]),
                    target(m),
                    m["source"].to_string(),
                    text(&m["enabled"]),
                ]);
            }
            out(&t.render());
        }
        MappingCmd::Get { id } => show(c.get(&format!("/v1/mappings/{}", seg(&id)))?),
        MappingCmd::Update {
            id,
            function,
            source,
            name,
            on_success,
            on_failure,
            retries,
        } => {
            let mut body = json!({});
            if let Some(f) = function {
                body["function"] = json!(f);
            }
            if let Some(s) = source.source()? {
                body["source"] = s;
            }
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(r) = retries {
                body["retries"] = json!(r);
            }
            if let Some(d) = dest(on_success) {
                body["on_success"] = d;
            }
            if let Some(d) = dest(on_failure) {
                body["on_failure"] = d;
            }
            show(c.call(
                Method::Patch,
                &format!("/v1/mappings/{}", seg(&id)),
                Some(&body),
            )?)
        }
        MappingCmd::Delete { id } => {
            c.call(Method::Delete, &format!("/v1/mappings/{}", seg(&id)), None)?;
            if json_out {
                print_json(&json!({"deleted": true}))
            }
        }
        MappingCmd::Pause { id } => show(c.call(
            Method::Post,
            &format!("/v1/mappings/{}/pause", seg(&id)),
            None,
        )?),
        MappingCmd::Resume { id } => show(c.call(
            Method::Post,
            &format!("/v1/mappings/{}/resume", seg(&id)),
            None,
        )?),
    }
    Ok(())
}
