//! The function spec: a TOML document stored with each version (limits, scaling, config,
//! permissions). Unknown keys are errors, so a typo never silently means "default".
//!
//! ```toml
//! # Everything is optional; these are the defaults.
//! min_instances = 0        # instances kept warm from start-up
//! max_concurrency = 1      # instances running in parallel
//! max_queue = 64           # invocations waiting for an instance before further ones are throttled
//!
//! [limits]
//! fuel = 100000000         # per invocation (~ Wasm instructions)
//! memory_mb = 16           # linear memory per instance
//! timeout_ms = 1000        # wall clock per invocation
//! max_event_bytes = 262144 # largest encoded event
//!
//! [config]                 # values the function reads with config_get
//! threshold = 30
//!
//! [permissions]
//! publish = ["alerts/#"]   # topic filters the function may publish to; absent = any topic
//!
//! [destinations]           # when this function runs as another's `function:` destination
//! on_success = "function:notify"   # or "topic:T"; absent = the chain ends here
//! on_failure = "topic:alerts/failed"  # absent = a dead letter
//! retries = 2              # attempts after the first
//! ```

use crate::runtime::Limits;
use crate::store::Destination;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A parsed, validated function spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Runtime limits.
    pub limits: Limits,
    /// Instances kept warm.
    pub min_instances: usize,
    /// Instances running in parallel.
    pub max_concurrency: usize,
    /// Invocations allowed to wait for an instance.
    pub max_queue: usize,
    /// Config values (`config_get`).
    pub config: BTreeMap<String, String>,
    /// Publish permissions (`None` = any topic).
    pub publish_allow: Option<Vec<String>>,
    /// Where the result goes when the function was invoked by a `function:` destination (it
    /// has no mapping of its own to say so): this is what lets destinations chain.
    pub destinations: ChainDestinations,
}

/// The `[destinations]` of a spec (AWS Lambda's "asynchronous invocation" settings, per version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDestinations {
    /// Where a success's response goes.
    pub on_success: Option<Destination>,
    /// Where a failure goes after the retries (`None` = a dead letter).
    pub on_failure: Option<Destination>,
    /// Attempts after the first.
    pub retries: u32,
}

impl Default for ChainDestinations {
    fn default() -> Self {
        ChainDestinations {
            on_success: None,
            on_failure: None,
            retries: 2,
        }
    }
}

impl Default for FunctionSpec {
    fn default() -> Self {
        FunctionSpec {
            limits: Limits::default(),
            min_instances: 0,
            max_concurrency: 1,
            max_queue: 64,
            config: BTreeMap::new(),
            publish_allow: None,
            destinations: ChainDestinations::default(),
        }
    }
}

/// Why a spec is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// Not valid TOML or an unknown/mistyped key.
    #[error("bad function spec: {0}")]
    Parse(String),
    /// A value outside its range.
    #[error("bad function spec: {0}")]
    Invalid(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    min_instances: Option<usize>,
    max_concurrency: Option<usize>,
    max_queue: Option<usize>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    destinations: RawDestinations,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDestinations {
    on_success: Option<String>,
    on_failure: Option<String>,
    retries: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fuel: Option<u64>,
    memory_mb: Option<usize>,
    timeout_ms: Option<u64>,
    max_event_bytes: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    publish: Option<Vec<String>>,
}

impl FunctionSpec {
    /// Parses and validates a spec; an empty text is the default spec.
    pub fn parse(text: &str) -> Result<FunctionSpec, SpecError> {
        let raw: Raw = toml::from_str(text).map_err(|e| SpecError::Parse(located(text, &e)))?;
        let d = FunctionSpec::default();
        let mut limits = Limits::default();
        let bad = |m: String| Err(SpecError::Invalid(m));
        if let Some(f) = raw.limits.fuel {
            if f == 0 {
                return bad("limits.fuel must be > 0".into());
            }
            limits.fuel = f;
        }
        if let Some(m) = raw.limits.memory_mb {
            if !(1..=4096).contains(&m) {
                return bad(format!("limits.memory_mb must be 1..=4096, got {m}"));
            }
            limits.memory_bytes = m << 20;
        }
        if let Some(t) = raw.limits.timeout_ms {
            if !(1..=3_600_000).contains(&t) {
                return bad(format!("limits.timeout_ms must be 1..=3600000, got {t}"));
            }
            limits.timeout = Duration::from_millis(t);
        }
        if let Some(e) = raw.limits.max_event_bytes {
            if !(16..=64 << 20).contains(&e) {
                return bad(format!(
                    "limits.max_event_bytes must be 16..=67108864, got {e}"
                ));
            }
            limits.max_event_bytes = e;
        }
        let max_concurrency = raw.max_concurrency.unwrap_or(d.max_concurrency);
        if !(1..=256).contains(&max_concurrency) {
            return bad(format!(
                "max_concurrency must be 1..=256, got {max_concurrency}"
            ));
        }
        let min_instances = raw.min_instances.unwrap_or(d.min_instances);
        if min_instances > max_concurrency {
            return bad(format!(
                "min_instances ({min_instances}) cannot exceed max_concurrency ({max_concurrency})"
            ));
        }
        let mut config = BTreeMap::new();
        for (k, v) in raw.config {
            let v = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return bad(format!(
                        "config.{k} must be a string, number or boolean, got {}",
                        other.type_str()
                    ))
                }
            };
            config.insert(k, v);
        }
        if let Some(filters) = &raw.permissions.publish {
            for f in filters {
                if let Err(e) = crate::runtime::topic::check_filter(f) {
                    return bad(format!("permissions.publish: `{f}`: {e}"));
                }
            }
        }
        let destination = |key: &str, text: &Option<String>| match text {
            None => Ok(None),
            Some(t) => Destination::parse(t)
                .map(Some)
                .map_err(|e| SpecError::Invalid(format!("destinations.{key}: {e}"))),
        };
        let retries = raw.destinations.retries.unwrap_or(2);
        if retries > 10 {
            return bad(format!(
                "destinations.retries must be 0..=10, got {retries}"
            ));
        }
        let destinations = ChainDestinations {
            on_success: destination("on_success", &raw.destinations.on_success)?,
            on_failure: destination("on_failure", &raw.destinations.on_failure)?,
            retries,
        };
        Ok(FunctionSpec {
            limits,
            min_instances,
            max_concurrency,
            max_queue: raw.max_queue.unwrap_or(d.max_queue),
            config,
            publish_allow: raw.permissions.publish,
            destinations,
        })
    }
}

/// A TOML error with the line it is about: the message alone (`invalid type: string "lots",
/// expected u64`) does not say which key.
fn located(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(start) = e.span().map(|s| s.start) else {
        return message.to_string();
    };
    let before = text.get(..start).unwrap_or(text);
    let number = before.matches('\n').count() + 1;
    match text.lines().nth(number - 1).map(str::trim) {
        Some(line) if !line.is_empty() => format!("line {number} `{line}`: {message}"),
        _ => format!("line {number}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_is_the_default() {
        assert_eq!(FunctionSpec::parse("").unwrap(), FunctionSpec::default());
    }

    #[test]
    fn full_spec_parses() {
        let s = FunctionSpec::parse(
            "min_instances = 2\nmax_concurrency = 4\nmax_queue = 10\n[limits]\nfuel = 5\nmemory_mb = 2\ntimeout_ms = 50\nmax_event_bytes = 1024\n[config]\nthreshold = 30\nname = \"x\"\non = true\n[permissions]\npublish = [\"a/#\"]\n",
        )
        .unwrap();
        assert_eq!(
            (s.min_instances, s.max_concurrency, s.max_queue),
            (2, 4, 10)
        );
        assert_eq!(
            (
                s.limits.fuel,
                s.limits.memory_bytes,
                s.limits.max_event_bytes
            ),
            (5, 2 << 20, 1024)
        );
        assert_eq!(s.limits.timeout, Duration::from_millis(50));
        assert_eq!(s.config["threshold"], "30");
        assert_eq!(s.config["on"], "true");
        assert_eq!(s.publish_allow, Some(vec!["a/#".to_string()]));
    }

    #[test]
    fn mistakes_are_named() {
        let e = FunctionSpec::parse("max_concurency = 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_concurency"), "{e}");
        let e = FunctionSpec::parse("[limits]\nmemory_mb = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory_mb"), "{e}");
        let e = FunctionSpec::parse("min_instances = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_instances"), "{e}");
        let e = FunctionSpec::parse("[permissions]\npublish = [\"a/#/b\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/#/b"), "{e}");
        let e = FunctionSpec::parse("[config]\nx = [1]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.x"), "{e}");
        assert!(FunctionSpec::parse("not toml =").is_err());
        let e = FunctionSpec::parse("max_queue = 1\n[limits]\nfuel = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3 `fuel = \"lots\"`"), "{e}");
        let e = FunctionSpec::parse("[destinations]\non_success = \"queue:x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destinations.on_success"), "{e}");
        let e = FunctionSpec::parse("[destinations]\nretries = 11")
            .unwrap_err()
            .to_string();
        assert!(e.contains("destinations.retries"), "{e}");
    }

    #[test]
    fn destinations_parse() {
        let s = FunctionSpec::parse(
            "[destinations]\non_success = \"function:g:live\"\non_failure = \"topic:a/b\"\nretries = 0\n",
        )
        .unwrap();
        assert_eq!(
            s.destinations,
            ChainDestinations {
                on_success: Some(Destination::Function {
                    name: "g".into(),
                    qualifier: "live".into()
                }),
                on_failure: Some(Destination::Topic("a/b".into())),
                retries: 0,
            }
        );
        assert_eq!(FunctionSpec::parse("").unwrap().destinations.retries, 2);
    }
}
