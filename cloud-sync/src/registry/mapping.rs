//! Mapping sources and destinations (docs/agent-api.md "Mappings"), validated as the agent
//! validates them. The cron check parses the expression (croner, as the agent); unlike the
//! agent it does not also refuse expressions that never fire.

use serde::{Deserialize, Serialize};

use super::topic::{check_filter, check_topic};
use crate::protocol::names::{check_name, Qualifier};

/// Shortest interval of an `every` source, in milliseconds.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Most retries a mapping may ask for.
pub const MAX_RETRIES: u32 = 100;

fn default_qos() -> u8 {
    1
}

/// What a schedule does about runs missed while the agent was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    #[default]
    Skip,
    RunOnce,
}

/// Where a mapping's events come from (the agent's JSON shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    Mqtt {
        filter: String,
        #[serde(default = "default_qos")]
        qos: u8,
        #[serde(default)]
        shared_group: Option<String>,
    },
    Cron {
        expr: String,
        #[serde(default)]
        missed: Missed,
    },
    Every {
        interval_ms: u64,
        #[serde(default)]
        missed: Missed,
    },
    Http {
        path: String,
    },
}

impl Source {
    /// The HTTP path of an `http` source (unique among mappings).
    pub fn http_path(&self) -> Option<&str> {
        match self {
            Source::Http { path } => Some(path),
            _ => None,
        }
    }

    /// `mqtt sensors/+ (qos 1)`, `cron */10 * * * * *`, `every 30000ms`, `http /convert`.
    pub fn describe(&self) -> String {
        match self {
            Source::Mqtt {
                filter,
                qos,
                shared_group: Some(g),
            } => format!("mqtt $share/{g}/{filter} (qos {qos})"),
            Source::Mqtt { filter, qos, .. } => format!("mqtt {filter} (qos {qos})"),
            Source::Cron { expr, .. } => format!("cron {expr}"),
            Source::Every { interval_ms, .. } => format!("every {interval_ms}ms"),
            Source::Http { path } => format!("http {path}"),
        }
    }

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
            Source::Cron { expr, .. } => {
                use croner::parser::{CronParser, Seconds, Year};
                CronParser::builder()
                    .seconds(Seconds::Optional)
                    .year(Year::Disallowed)
                    .build()
                    .parse(expr)
                    .map(|_| ())
                    .map_err(|e| format!("bad cron expression {expr:?}: {e}"))
            }
            Source::Every { interval_ms, .. } => {
                if *interval_ms < MIN_INTERVAL_MS {
                    return Err(format!(
                        "interval {interval_ms}ms is too short: at least {MIN_INTERVAL_MS}ms"
                    ));
                }
                Ok(())
            }
            Source::Http { path } => {
                let bad = |reason: &str| Err(format!("bad HTTP path {path:?}: {reason}"));
                if !path.starts_with('/') {
                    return bad("must start with `/`");
                }
                if path.contains(['?', '#']) {
                    return bad("no query or fragment (`?`, `#`) allowed");
                }
                if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return bad("no spaces or control characters allowed");
                }
                if path.len() > 1024 {
                    return bad("longer than 1024 bytes");
                }
                Ok(())
            }
        }
    }
}

/// Checks a destination (`topic:TOPIC` or `function:NAME[:QUALIFIER]`) and returns its
/// canonical text (`function:f:latest` becomes `function:f`).
pub fn check_destination(text: &str) -> Result<String, String> {
    let bad = |reason: String| format!("bad destination {text:?}: {reason}");
    if let Some(topic) = text.strip_prefix("topic:") {
        check_topic(topic).map_err(|r| bad(r.to_string()))?;
        return Ok(text.to_owned());
    }
    if let Some(rest) = text.strip_prefix("function:") {
        let (name, qualifier) = rest.split_once(':').unwrap_or((rest, "latest"));
        check_name(name).map_err(bad)?;
        Qualifier::parse(qualifier).map_err(bad)?;
        return Ok(if qualifier == "latest" {
            format!("function:{name}")
        } else {
            format!("function:{name}:{qualifier}")
        });
    }
    Err(bad(
        "expected `topic:TOPIC` or `function:NAME[:QUALIFIER]`".into()
    ))
}
