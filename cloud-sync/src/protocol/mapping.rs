//! Event-source mappings' rules, shared by the agent's store and the cloud's registry so that
//! both accept the same mappings and refuse the others with the same words
//! (docs/agent-api.md "Mappings", docs/triggers.md): the [`Source`] kinds (`mqtt`, `cron`,
//! `every`, `http`, `stream-mqtt`, `stream-file`) with their JSON shapes and checks, cron parsing
//! ([`parse_cron`]), [`Destination`]s, mapping names, retries and targets (a function name or
//! `flow:NAME`, [`check_target`]).
//!
//! What needs other mappings (unique names and HTTP paths) or the registry (the target exists)
//! is checked by each side's store.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::names::{name_reason, qualifier_reason};
pub use super::partition::{FileFormat, PartitionKey};
use super::topic::{check_filter, check_topic};

/// Prefix of mapping ids.
pub const MAPPING_ID_PREFIX: &str = "m-";

/// A mapping whose `function` is `flow:NAME` starts runs of flow NAME (docs/flows.md).
pub const FLOW_TARGET: &str = "flow:";

/// Shortest interval of an `every` source, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 100;

/// Most retries a mapping may ask for (with backoff capped at 10 s, about a quarter of an hour).
pub const MAX_RETRIES: u32 = 100;

/// Longest HTTP path of an `http` source.
pub const MAX_HTTP_PATH_LEN: usize = 1024;

/// The current time in Unix milliseconds (for [`parse_cron`]'s "never fires" check).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a mapping's target (`NAME` of a function, or `flow:NAME`) is not a valid name, as
/// `invalid name "NAME": REASON`.
pub fn check_target(target: &str) -> Result<(), String> {
    let name = target.strip_prefix(FLOW_TARGET).unwrap_or(target);
    name_reason(name).map_err(|r| format!("invalid name {name:?}: {r}"))
}

/// A mapping's name (when it is not its id): a name's charset, not starting with `m-`.
pub fn check_mapping_name(name: &str) -> Result<(), String> {
    name_reason(name).map_err(|r| format!("bad mapping name {name:?}: {r}"))?;
    if name.starts_with(MAPPING_ID_PREFIX) {
        return Err(format!(
            "bad mapping name {name:?}: names starting with `{MAPPING_ID_PREFIX}` are reserved \
             for mapping ids"
        ));
    }
    Ok(())
}

/// A mapping's retries (at most [`MAX_RETRIES`]).
pub fn check_retries(retries: u32) -> Result<(), String> {
    if retries > MAX_RETRIES {
        return Err(format!(
            "{retries} retries is too many: at most {MAX_RETRIES}"
        ));
    }
    Ok(())
}

/// What a schedule does about runs it missed while the agent was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Fire only future runs (default).
    #[default]
    Skip,
    /// Fire one catch-up event at start-up (time = the last missed scheduled time).
    RunOnce,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run-once",
        }
    }
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Missed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Missed::Skip),
            "run-once" => Ok(Missed::RunOnce),
            _ => Err(format!(
                "missed-run policy {s:?}: expected `skip` or `run-once`"
            )),
        }
    }
}

fn default_qos() -> u8 {
    1
}

/// Where a mapping's events come from. JSON: `{"kind": "mqtt", "filter": ..., "qos": 1,
/// "shared_group": null}`, `{"kind": "cron", "expr": ..., "missed": "skip"}`,
/// `{"kind": "every", "interval_ms": ..., "missed": "skip"}`, `{"kind": "http", "path": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Messages on an MQTT topic filter (wildcards allowed), subscribed at `qos` (default 1),
    /// optionally as a shared subscription (`$share/GROUP/FILTER`).
    Mqtt {
        filter: String,
        #[serde(default = "default_qos")]
        qos: u8,
        #[serde(default)]
        shared_group: Option<String>,
    },
    /// A cron expression with seconds (6 fields; 5 fields mean second 0), in UTC.
    Cron {
        expr: String,
        #[serde(default)]
        missed: Missed,
    },
    /// A fixed interval (at least [`MIN_INTERVAL_MS`]).
    Every {
        interval_ms: u64,
        #[serde(default)]
        missed: Missed,
    },
    /// `POST PATH` on the HTTP trigger listener (synchronous).
    Http { path: String },
    /// An ordered stream of the messages on an MQTT filter (subscribed at QoS 1), partitioned
    /// by a topic level or a JSON field of the payload (docs/triggers.md, "Streams").
    #[serde(rename = "stream-mqtt")]
    StreamMqtt {
        filter: String,
        #[serde(default = "PartitionKey::whole_topic")]
        partition_key: PartitionKey,
        #[serde(default = "default_batch_size")]
        batch_size: u32,
        #[serde(default)]
        batch_window_ms: u64,
    },
    /// An ordered stream of the lines of a file (CSV or JSON lines), read once or followed.
    #[serde(rename = "stream-file")]
    StreamFile {
        /// Absolute path.
        path: String,
        format: FileFormat,
        #[serde(default)]
        follow: bool,
        #[serde(default)]
        partition_key: PartitionKey,
        #[serde(default = "default_batch_size")]
        batch_size: u32,
        #[serde(default)]
        batch_window_ms: u64,
    },
}

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}

/// Records per batch of a stream mapping unless set.
pub const DEFAULT_BATCH_SIZE: u32 = 100;

/// Most records per batch.
pub const MAX_BATCH_SIZE: u32 = 10_000;

/// Longest batch window (5 minutes).
pub const MAX_BATCH_WINDOW_MS: u64 = 300_000;

/// Batch size and window of a stream mapping ([`Source::batching`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    pub size: u32,
    pub window_ms: u64,
}

impl Source {
    /// `mqtt`, `cron`, `every` or `http` (the `source_kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Mqtt { .. } => "mqtt",
            Source::Cron { .. } => "cron",
            Source::Every { .. } => "every",
            Source::Http { .. } => "http",
            Source::StreamMqtt { .. } => "stream-mqtt",
            Source::StreamFile { .. } => "stream-file",
        }
    }

    /// The HTTP path of an `http` source (unique among mappings).
    pub fn http_path(&self) -> Option<&str> {
        match self {
            Source::Http { path } => Some(path),
            _ => None,
        }
    }

    /// Batch size and window of a stream source (`None` for other kinds).
    pub fn batching(&self) -> Option<Batching> {
        match self {
            Source::StreamMqtt {
                batch_size,
                batch_window_ms,
                ..
            }
            | Source::StreamFile {
                batch_size,
                batch_window_ms,
                ..
            } => Some(Batching {
                size: *batch_size,
                window_ms: *batch_window_ms,
            }),
            _ => None,
        }
    }

    /// Whether this is a stream source.
    pub fn is_stream(&self) -> bool {
        self.batching().is_some()
    }

    /// The missed-run policy of a schedule (`None` for MQTT and HTTP).
    pub fn missed(&self) -> Option<Missed> {
        match self {
            Source::Cron { missed, .. } | Source::Every { missed, .. } => Some(*missed),
            _ => None,
        }
    }

    /// The filter to subscribe to: `$share/GROUP/FILTER` for a shared subscription.
    pub fn subscription(&self) -> Option<String> {
        match self {
            Source::Mqtt {
                filter,
                shared_group: Some(group),
                ..
            } => Some(format!("$share/{group}/{filter}")),
            Source::Mqtt { filter, .. } | Source::StreamMqtt { filter, .. } => Some(filter.clone()),
            _ => None,
        }
    }

    /// Checks the source on its own (HTTP path uniqueness is checked by the store).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Source::Mqtt {
                filter,
                qos,
                shared_group,
            } => {
                check_filter(filter)
                    .map_err(|r| format!("bad MQTT topic filter {filter:?}: {r}"))?;
                if filter.starts_with("$share/") {
                    return Err(format!(
                        "bad MQTT topic filter {filter:?}: give the filter without `$share/GROUP/` \
                         and the group as the shared group"
                    ));
                }
                if *qos > 2 {
                    return Err(format!("bad MQTT qos {qos}: expected 0, 1 or 2"));
                }
                if let Some(group) = shared_group {
                    if group.is_empty() {
                        return Err("empty shared subscription group name".into());
                    }
                    if group.contains(['/', '+', '#']) || group.chars().any(char::is_control) {
                        return Err(format!(
                            "bad shared subscription group {group:?}: `/`, `+`, `#` and control \
                             characters are not allowed"
                        ));
                    }
                }
                Ok(())
            }
            Source::Cron { expr, .. } => parse_cron(expr).map(|_| ()),
            Source::Every { interval_ms, .. } => {
                if *interval_ms < MIN_INTERVAL_MS {
                    return Err(format!(
                        "interval {interval_ms}ms is too short: at least {MIN_INTERVAL_MS}ms"
                    ));
                }
                if *interval_ms > i64::MAX as u64 {
                    return Err(format!("interval {interval_ms}ms is too long"));
                }
                Ok(())
            }
            Source::Http { path } => validate_http_path(path),
            Source::StreamMqtt {
                filter,
                partition_key,
                ..
            } => {
                check_filter(filter)
                    .map_err(|r| format!("bad MQTT topic filter {filter:?}: {r}"))?;
                if filter.starts_with("$share/") {
                    return Err(format!(
                        "bad MQTT topic filter {filter:?}: a stream cannot be a shared \
                         subscription (its order would be split between agents)"
                    ));
                }
                partition_key.validate_for_mqtt(filter)?;
                self.validate_batching()
            }
            Source::StreamFile {
                path,
                partition_key,
                ..
            } => {
                if !std::path::Path::new(path).is_absolute() {
                    return Err(format!("bad stream file {path:?}: give an absolute path"));
                }
                if path.chars().any(char::is_control) {
                    return Err(format!(
                        "bad stream file {path:?}: control characters are not allowed"
                    ));
                }
                if matches!(
                    partition_key,
                    PartitionKey::Topic | PartitionKey::TopicLevel(_)
                ) {
                    return Err(format!(
                        "partition key `{partition_key}` is for MQTT streams: a file's records \
                         are partitioned by a JSON field (`json:/POINTER`) or not at all"
                    ));
                }
                self.validate_batching()
            }
        }
    }

    fn validate_batching(&self) -> Result<(), String> {
        let Some(b) = self.batching() else {
            return Ok(());
        };
        if b.size == 0 || b.size > MAX_BATCH_SIZE {
            return Err(format!(
                "batch size {} is out of range: 1 to {MAX_BATCH_SIZE}",
                b.size
            ));
        }
        if b.window_ms > MAX_BATCH_WINDOW_MS {
            return Err(format!(
                "batch window {}ms is too long: at most {MAX_BATCH_WINDOW_MS}ms (5m)",
                b.window_ms
            ));
        }
        Ok(())
    }
}

/// `mqtt sensors/+ (qos 1)`, `cron */10 * * * * *`, `every 30s`, `http /convert`.
impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Mqtt {
                filter,
                qos,
                shared_group,
            } => {
                write!(f, "mqtt {filter} (qos {qos}")?;
                if let Some(g) = shared_group {
                    write!(f, ", shared group {g}")?;
                }
                f.write_str(")")
            }
            Source::Cron { expr, missed } => {
                write!(f, "cron {expr}")?;
                if *missed != Missed::Skip {
                    write!(f, " (missed: {missed})")?;
                }
                Ok(())
            }
            Source::Every {
                interval_ms,
                missed,
            } => {
                let d = std::time::Duration::from_millis(*interval_ms);
                write!(f, "every {}", humantime::format_duration(d))?;
                if *missed != Missed::Skip {
                    write!(f, " (missed: {missed})")?;
                }
                Ok(())
            }
            Source::Http { path } => write!(f, "http {path}"),
            Source::StreamMqtt {
                filter,
                partition_key,
                batch_size,
                batch_window_ms,
            } => {
                write!(
                    f,
                    "stream mqtt {filter} (key {partition_key}, batch {batch_size}"
                )?;
                window(f, *batch_window_ms)
            }
            Source::StreamFile {
                path,
                format,
                follow,
                partition_key,
                batch_size,
                batch_window_ms,
            } => {
                let how = if *follow { ", follow" } else { "" };
                write!(
                    f,
                    "stream file {path} ({format}{how}, key {partition_key}, batch {batch_size}"
                )?;
                window(f, *batch_window_ms)
            }
        }
    }
}

/// `, window 2s)` or `)`.
fn window(f: &mut fmt::Formatter<'_>, ms: u64) -> fmt::Result {
    if ms > 0 {
        let d = std::time::Duration::from_millis(ms);
        write!(f, ", window {})", humantime::format_duration(d))
    } else {
        f.write_str(")")
    }
}

/// Parses a cron expression the way schedule mappings use it: 6 fields with seconds
/// (`*/10 * * * * *`), or 5 fields (minute resolution; the second is 0); no year field;
/// names (`MON`, `JAN`) and nicknames (`@hourly`) allowed. Refuses expressions that never fire
/// (`0 0 0 30 2 *`). Evaluate the result in UTC.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    let bad = |reason: String| format!("bad cron expression {expr:?}: {reason}");
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| bad(e.to_string()))?;
    let start = chrono::DateTime::from_timestamp_millis(now_ms()).unwrap_or_default();
    cron.find_next_occurrence(&start, false)
        .map_err(|_| bad("it never fires".into()))?;
    Ok(cron)
}

fn validate_http_path(path: &str) -> Result<(), String> {
    let bad = |reason: &str| format!("bad HTTP path {path:?}: {reason}");
    if !path.starts_with('/') {
        return Err(bad("must start with `/`"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("no query or fragment (`?`, `#`) allowed"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("no spaces or control characters allowed"));
    }
    if path.len() > MAX_HTTP_PATH_LEN {
        return Err(bad("longer than 1024 bytes"));
    }
    Ok(())
}

/// Where a result goes: `topic:TOPIC` (publish it) or `function:NAME[:QUALIFIER]` (invoke it).
/// JSON and SQL hold its text form; a function destination without a qualifier means `latest`,
/// and [`Display`](fmt::Display) leaves `:latest` out (`function:f:latest` reads back as
/// `function:f`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Destination {
    Topic(String),
    Function { name: String, qualifier: String },
}

impl Destination {
    /// Parses `topic:a/b` or `function:NAME[:QUALIFIER]`, validating the topic (no wildcards),
    /// the function name and the qualifier.
    pub fn parse(text: &str) -> Result<Destination, String> {
        let bad = |reason: String| format!("bad destination {text:?}: {reason}");
        if let Some(topic) = text.strip_prefix("topic:") {
            check_topic(topic).map_err(|r| bad(r.to_string()))?;
            return Ok(Destination::Topic(topic.to_owned()));
        }
        if let Some(rest) = text.strip_prefix("function:") {
            let (name, qualifier) = match rest.split_once(':') {
                Some((n, q)) => (n, q),
                None => (rest, "latest"),
            };
            name_reason(name).map_err(|r| bad(format!("invalid name {name:?}: {r}")))?;
            qualifier_reason(qualifier)
                .map_err(|r| bad(format!("invalid qualifier {qualifier:?}: {r}")))?;
            return Ok(Destination::Function {
                name: name.to_owned(),
                qualifier: qualifier.to_owned(),
            });
        }
        Err(bad(
            "expected `topic:TOPIC` or `function:NAME[:QUALIFIER]`".into()
        ))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Topic(t) => write!(f, "topic:{t}"),
            Destination::Function { name, qualifier } if qualifier == "latest" => {
                write!(f, "function:{name}")
            }
            Destination::Function { name, qualifier } => write!(f, "function:{name}:{qualifier}"),
        }
    }
}

impl FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Destination::parse(s)
    }
}

impl From<Destination> for String {
    fn from(d: Destination) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Destination {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Destination::parse(&s)
    }
}
