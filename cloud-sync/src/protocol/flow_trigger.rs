//! Event sources of flows (docs/flows.md, "Triggers" and "Waiting for an event"): the
//! `[trigger]` table (`any` of several sources starts a run per event; `all` of them within a
//! `window`, correlated by a `key`, starts one run), and the event sources a `wait` step waits
//! for. As written in a definition (serde, TOML and JSON), with their validation.
//!
//! A source is what a mapping can use: `mqtt = FILTER` (with `qos`), `every = "30s"`,
//! `cron = "EXPR"` or `http = "/PATH"`. It becomes a [`Source`] of the mapping machinery
//! (`sources.rs` builds the trigger runtime's mappings from it), so subscriptions, schedules and
//! HTTP routes are the mappings' own.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::flow::{check_pointer, InvalidFlow};
use super::mapping::{Missed, Source};
use super::names::name_reason;

/// Most sources of a trigger or a wait step.
pub const MAX_SOURCES: usize = 16;
/// Shortest AND window.
pub const MIN_WINDOW_MS: u64 = 100;
/// Longest AND window (one day).
pub const MAX_WINDOW_MS: u64 = 86_400_000;
/// Longest wait of a `wait` step (30 days).
pub const MAX_WAIT_MS: u64 = 30 * 86_400_000;

/// A flow's `[trigger]`: exactly one of `any` and `all`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    /// OR: every event of any of these starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<SourceDef>>,
    /// AND: one event of each of these, within `window`, with the same key, starts one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<SourceDef>>,
    /// How long a partial AND match waits for the other sources (`"30s"`, `"2m"`), counted
    /// from its first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The default key of the sources (each may set its own): `"topic:N"` or `"/POINTER"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One event source of a trigger or of a wait step: exactly one of `mqtt`, `every`, `cron`,
/// `http`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    /// A name for the run's input (default: none; events are also told apart by `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An MQTT topic filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
    /// The MQTT subscription QoS (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// A fixed interval (`"10s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// A cron expression (6 fields with seconds, or 5), UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// `POST PATH` on the HTTP trigger listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// How this source's events give their key: `"topic:N"` (level N of the MQTT topic, from
    /// 1) or `"/POINTER"` (a JSON pointer into the payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The step a wait step goes to when this event comes (wait steps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A `wait` step: the run waits until one of `events` comes (its `next` is taken) or
/// `timeout` passes (`on_timeout` is taken, or the run fails).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitDef {
    pub events: Vec<SourceDef>,
    /// How long to wait (`"10m"`).
    pub timeout: String,
    /// The step taken on timeout (without it, a timeout fails the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// A JSON pointer into the step's input: the run's correlation value, which an event's key
    /// must equal. Without it, an event goes to every run waiting at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How an event's correlation key is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKey {
    /// Level N (from 1) of the event's subject (the MQTT topic).
    TopicLevel(usize),
    /// A JSON pointer into the payload.
    Pointer(String),
}

impl EventKey {
    pub fn parse(text: &str) -> Result<EventKey, String> {
        if let Some(n) = text.strip_prefix("topic:") {
            return match n.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => Ok(EventKey::TopicLevel(n)),
                _ => Err(format!(
                    "bad key {text:?}: the topic level is a number from 1 (`topic:2`)"
                )),
            };
        }
        if text.starts_with('/') {
            check_pointer(text)?;
            return Ok(EventKey::Pointer(text.to_string()));
        }
        Err(format!(
            "bad key {text:?}: expected `topic:N` (a topic level) or a JSON pointer into the \
             payload such as \"/device\""
        ))
    }

    /// The key of an event (`None` when the level or field is missing): a JSON string as is,
    /// any other JSON value as its compact text.
    pub fn extract(&self, subject: &str, data: &[u8]) -> Option<String> {
        match self {
            EventKey::TopicLevel(n) => subject
                .split('/')
                .nth(n - 1)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
            EventKey::Pointer(p) => {
                let v: Value = serde_json::from_slice(data).ok()?;
                key_text(v.pointer(p)?)
            }
        }
    }
}

/// A JSON value as a correlation key: a string as is, `null` as none, others as JSON text.
pub fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => Some(v.to_string()),
    }
}

fn bad<T>(msg: String) -> Result<T, InvalidFlow> {
    Err(InvalidFlow(msg))
}

/// A duration such as `"30s"`, `"1m 30s"`, `"250ms"`, in milliseconds.
pub fn parse_duration(what: &str, text: &str) -> Result<u64, InvalidFlow> {
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as u64)
        .map_err(|e| {
            InvalidFlow(format!(
                "{what}: bad duration {text:?}: {e} (e.g. \"30s\", \"2m\")"
            ))
        })
}

impl SourceDef {
    /// The mapping source it stands for (call on validated sources).
    pub fn source(&self) -> Result<Source, String> {
        if let Some(filter) = &self.mqtt {
            return Ok(Source::Mqtt {
                filter: filter.clone(),
                qos: self.qos.unwrap_or(1),
                shared_group: None,
            });
        }
        if let Some(every) = &self.every {
            let ms = humantime::parse_duration(every)
                .map_err(|e| format!("bad duration {every:?}: {e} (e.g. \"30s\")"))?
                .as_millis() as u64;
            return Ok(Source::Every {
                interval_ms: ms,
                missed: Missed::Skip,
            });
        }
        if let Some(expr) = &self.cron {
            return Ok(Source::Cron {
                expr: expr.clone(),
                missed: Missed::Skip,
            });
        }
        if let Some(path) = &self.http {
            return Ok(Source::Http { path: path.clone() });
        }
        Err("give one of `mqtt`, `every`, `cron`, `http`".into())
    }

    fn is_schedule(&self) -> bool {
        self.every.is_some() || self.cron.is_some()
    }

    /// The key this source's events give (its own, else `default`).
    pub fn key(&self, default: Option<&str>) -> Option<EventKey> {
        self.key
            .as_deref()
            .or(default)
            .and_then(|k| EventKey::parse(k).ok())
    }

    /// Checks the source (`at` names it in messages); `schedules`: whether schedules may be
    /// used here; `key`: the key its events must give, if any.
    fn validate(&self, at: &str, schedules: bool, key: Option<&str>) -> Result<(), InvalidFlow> {
        let kinds = [
            self.mqtt.is_some(),
            self.every.is_some(),
            self.cron.is_some(),
            self.http.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return bad(format!(
                "{at}: give exactly one of `mqtt`, `every`, `cron`, `http`"
            ));
        }
        if self.qos.is_some() && self.mqtt.is_none() {
            return bad(format!("{at}: `qos` only applies to `mqtt` sources"));
        }
        if self.is_schedule() && !schedules {
            return bad(format!(
                "{at}: a wait step waits for `mqtt` or `http` events, not schedules"
            ));
        }
        if let Some(n) = &self.name {
            name_reason(n)
                .map_err(|r| InvalidFlow(format!("{at}: name {n:?}: invalid name {n:?}: {r}")))?;
        }
        let source = self
            .source()
            .map_err(|e| InvalidFlow(format!("{at}: {e}")))?;
        source
            .validate()
            .map_err(|reason| InvalidFlow(format!("{at}: {reason}")))?;
        if let Some(k) = key {
            let k = EventKey::parse(k).map_err(|e| InvalidFlow(format!("{at}: {e}")))?;
            if self.is_schedule() {
                return bad(format!(
                    "{at}: schedule events carry no key; a keyed `all` cannot include a schedule"
                ));
            }
            if let (EventKey::TopicLevel(n), Some(filter)) = (&k, &self.mqtt) {
                let levels = filter.split('/').count();
                if !filter.contains('#') && *n > levels {
                    return bad(format!(
                        "{at}: key `topic:{n}`: the filter {filter:?} has only {levels} levels"
                    ));
                }
            }
            if matches!(k, EventKey::TopicLevel(_)) && self.http.is_some() {
                return bad(format!(
                    "{at}: key `topic:N` is for MQTT sources; take an HTTP event's key from \
                     its payload (\"/field\")"
                ));
            }
        }
        Ok(())
    }
}

impl TriggerDef {
    /// The sources and whether all of them must come (AND).
    pub fn sources(&self) -> (&[SourceDef], bool) {
        match (&self.all, &self.any) {
            (Some(all), _) => (all, true),
            (None, Some(any)) => (any, false),
            (None, None) => (&[], false),
        }
    }

    /// The AND window in milliseconds (0 for OR; call on validated triggers).
    pub fn window_ms(&self) -> u64 {
        self.window
            .as_deref()
            .and_then(|w| humantime::parse_duration(w).ok())
            .map_or(0, |d| d.as_millis() as u64)
    }

    pub fn validate(&self) -> Result<(), InvalidFlow> {
        let (sources, all) = match (&self.all, &self.any) {
            (Some(s), None) => (s, true),
            (None, Some(s)) => (s, false),
            _ => {
                return bad(
                    "trigger: give exactly one of `all` (every source within a window) and \
                     `any` (each event starts a run)"
                        .into(),
                )
            }
        };
        let which = if all { "all" } else { "any" };
        let min = if all { 2 } else { 1 };
        if sources.len() < min || sources.len() > MAX_SOURCES {
            return bad(format!(
                "trigger: `{which}` needs {min} to {MAX_SOURCES} sources, not {}",
                sources.len()
            ));
        }
        if all {
            let Some(w) = &self.window else {
                return bad(
                    "trigger: `all` needs a `window` (how long a partial match waits, e.g. \
                     \"30s\")"
                        .into(),
                );
            };
            let ms = parse_duration("trigger: window", w)?;
            if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&ms) {
                return bad(format!(
                    "trigger: window {w:?} is out of range: 100ms to 1 day"
                ));
            }
        } else if self.window.is_some() {
            return bad("trigger: `window` only applies to `all`".into());
        }
        check_names(sources, "trigger")?;
        for (i, s) in sources.iter().enumerate() {
            let at = format!("trigger: {which}[{}]", i + 1);
            if s.next.is_some() {
                return bad(format!(
                    "{at}: `next` only applies to the events of wait steps"
                ));
            }
            let key = s.key.as_deref().or(self.key.as_deref());
            s.validate(&at, true, key)?;
        }
        Ok(())
    }
}

fn check_names(sources: &[SourceDef], at: &str) -> Result<(), InvalidFlow> {
    let mut seen = std::collections::HashSet::new();
    for n in sources.iter().filter_map(|s| s.name.as_deref()) {
        if !seen.insert(n) {
            return bad(format!("{at}: two sources are named {n:?}"));
        }
    }
    Ok(())
}

impl WaitDef {
    /// The timeout in milliseconds (call on validated waits).
    pub fn timeout_ms(&self) -> u64 {
        humantime::parse_duration(&self.timeout).map_or(0, |d| d.as_millis() as u64)
    }

    /// The steps it may lead to.
    pub fn edges(&self) -> impl Iterator<Item = &str> {
        self.events
            .iter()
            .filter_map(|e| e.next.as_deref())
            .chain(self.on_timeout.as_deref())
    }

    /// Checks the wait of step `step` (`known`: whether a step name exists).
    pub fn validate(&self, step: &str, known: impl Fn(&str) -> bool) -> Result<(), InvalidFlow> {
        let at = format!("step {step:?}: wait");
        if self.events.is_empty() || self.events.len() > MAX_SOURCES {
            return bad(format!(
                "{at}: `events` needs 1 to {MAX_SOURCES} sources, not {}",
                self.events.len()
            ));
        }
        let ms = parse_duration(&format!("{at}: timeout"), &self.timeout)?;
        if ms == 0 || ms > MAX_WAIT_MS {
            return bad(format!(
                "{at}: timeout {:?} is out of range: more than 0, at most 30 days",
                self.timeout
            ));
        }
        if let Some(k) = &self.key {
            check_pointer(k).map_err(|e| InvalidFlow(format!("{at}: key: {e}")))?;
        }
        if let Some(t) = &self.on_timeout {
            if !known(t) {
                return bad(format!("{at}: on_timeout names unknown step {t:?}"));
            }
        }
        check_names(&self.events, &at)?;
        for (i, e) in self.events.iter().enumerate() {
            let at = format!("{at}: events[{}]", i + 1);
            match (&self.key, &e.key) {
                (Some(_), None) => {
                    return bad(format!(
                        "{at}: the wait has a `key` (the run's correlation value), so each event \
                         needs a `key` (`topic:N` or a JSON pointer into its payload)"
                    ))
                }
                (None, Some(_)) => {
                    return bad(format!(
                        "{at}: `key` needs the wait's own `key` (a JSON pointer into the step's \
                         input) to compare with"
                    ))
                }
                _ => {}
            }
            e.validate(&at, false, e.key.as_deref())?;
            if let Some(n) = &e.next {
                if !known(n) {
                    return bad(format!("{at}: next names unknown step {n:?}"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_topic_levels_or_payload_fields() {
        let k = EventKey::parse("topic:2").unwrap();
        assert_eq!(k.extract("a/dev7/x", b""), Some("dev7".into()));
        assert_eq!(k.extract("a", b""), None);
        let k = EventKey::parse("/device").unwrap();
        assert_eq!(k.extract("t", br#"{"device": "d1"}"#), Some("d1".into()));
        assert_eq!(k.extract("t", br#"{"device": 7}"#), Some("7".into()));
        assert_eq!(k.extract("t", br#"{"other": 7}"#), None);
        assert_eq!(k.extract("t", b"not json"), None);
        for bad in ["topic:0", "topic:x", "device", "/a~2"] {
            assert!(EventKey::parse(bad).is_err(), "{bad}");
        }
    }

    fn trigger(toml: &str) -> Result<(), String> {
        let t: TriggerDef = toml::from_str(toml).map_err(|e| e.to_string())?;
        t.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn triggers_are_validated_with_clear_errors() {
        trigger("all = [{ mqtt = \"a/+\" }, { http = \"/b\" }]\nwindow = \"2s\"\nkey = \"/id\"")
            .unwrap();
        trigger("any = [{ mqtt = \"a/+\" }, { every = \"1s\" }, { cron = \"* * * * * *\" }]")
            .unwrap();
        let cases = [
            ("window = \"2s\"", "exactly one of `all`"),
            ("all = [{ mqtt = \"a\" }, { mqtt = \"b\" }]", "needs a `window`"),
            (
                "all = [{ mqtt = \"a\" }]\nwindow = \"1s\"",
                "`all` needs 2 to 16 sources, not 1",
            ),
            (
                "all = [{ mqtt = \"a\" }, { mqtt = \"b\" }]\nwindow = \"soon\"",
                "bad duration \"soon\"",
            ),
            (
                "all = [{ mqtt = \"a/+\" }, { every = \"1s\" }]\nwindow = \"1s\"\nkey = \"topic:2\"",
                "all[2]: schedule events carry no key",
            ),
            (
                "all = [{ mqtt = \"a/+\" }, { mqtt = \"b\" }]\nwindow = \"1s\"\nkey = \"topic:2\"",
                "all[2]: key `topic:2`: the filter \"b\" has only 1 levels",
            ),
            ("any = [{ mqtt = \"a/#/b\" }]", "any[1]: bad MQTT topic filter"),
            (
                "any = [{ mqtt = \"a\", http = \"/b\" }]",
                "any[1]: give exactly one of",
            ),
            ("any = [{ every = \"1ms\" }]", "too short"),
            ("any = [{ http = \"b\" }]", "bad HTTP path"),
            ("any = [{ mqtt = \"a\" }]\nwindow = \"1s\"", "only applies to `all`"),
            ("any = [{ mqtt = \"a\", next = \"x\" }]", "`next` only applies"),
            ("any = [{ mqtt = \"a\", colour = 1 }]", "unknown field `colour`"),
        ];
        for (text, needle) in cases {
            let e = trigger(text).unwrap_err();
            assert!(e.contains(needle), "{text}\n=> {e}\n(expected {needle:?})");
        }
    }

    fn flow_with_wait(wait: &str) -> Result<super::super::flow::FlowDef, String> {
        let text = format!(
            "[[steps]]\nname = \"w\"\nwait = {wait}\n[[steps]]\nname = \"x\"\nfunction = \"f\"\n"
        );
        let def = super::super::flow::FlowDef::parse(&text).map_err(|e| e.to_string())?;
        def.validate().map_err(|e| e.to_string())?;
        Ok(def)
    }

    #[test]
    fn waits_are_validated_with_clear_errors() {
        let def = flow_with_wait(
            r#"{ key = "/id", timeout = "5s", on_timeout = "x", events = [{ mqtt = "a/+", key = "topic:2", next = "x" }, { http = "/h", key = "/id" }] }"#,
        )
        .unwrap();
        let json = serde_json::to_string(&def).unwrap();
        assert_eq!(super::super::flow::FlowDef::parse(&json).unwrap(), def);
        let cases = [
            (
                r#"{ timeout = "5s", events = [] }"#,
                "`events` needs 1 to 16",
            ),
            (
                r#"{ timeout = "never", events = [{ mqtt = "a" }] }"#,
                "step \"w\": wait: timeout: bad duration",
            ),
            (
                r#"{ timeout = "5s", on_timeout = "zz", events = [{ mqtt = "a" }] }"#,
                "on_timeout names unknown step \"zz\"",
            ),
            (
                r#"{ timeout = "5s", events = [{ mqtt = "a", next = "zz" }] }"#,
                "events[1]: next names unknown step \"zz\"",
            ),
            (
                r#"{ timeout = "5s", events = [{ every = "1s" }] }"#,
                "not schedules",
            ),
            (
                r#"{ key = "/id", timeout = "5s", events = [{ mqtt = "a" }] }"#,
                "each event needs a `key`",
            ),
            (
                r#"{ timeout = "5s", events = [{ mqtt = "a/+", key = "topic:2" }] }"#,
                "needs the wait's own `key`",
            ),
            (
                r#"{ key = "id", timeout = "5s", events = [{ mqtt = "a/+", key = "topic:2" }] }"#,
                "wait: key: bad JSON pointer",
            ),
            (
                r#"{ timeout = "5s", events = [{ mqtt = "a" }], colour = 1 }"#,
                "unknown field `colour`",
            ),
        ];
        for (wait, needle) in cases {
            let e = flow_with_wait(wait).unwrap_err();
            assert!(e.contains(needle), "{wait}\n=> {e}\n(expected {needle:?})");
        }
    }
}
