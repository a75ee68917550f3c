//! Partition keys and file formats of stream sources: how a record's partition is found
//! (shared: the cloud validates stream mappings with it, the agent also extracts keys).
//!
//! Text forms (CLI `--partition-key`, the mapping's JSON): `none` (one partition), `topic` (the
//! whole MQTT topic), `topic:N` (the Nth level of the topic, from 1), `json:/POINTER` (a field of
//! the JSON payload, RFC 6901: `json:/device`, `json:/meta/site`). A string field gives its
//! text, any other JSON value its compact JSON text. A record without the key (a topic with
//! fewer levels, a payload that is not JSON or lacks the field) goes to the default partition,
//! whose key is empty.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How a stream record's partition key is taken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PartitionKey {
    /// Every record in one partition.
    #[default]
    None,
    /// The whole MQTT topic.
    Topic,
    /// One level of the MQTT topic, from 1.
    TopicLevel(u32),
    /// A JSON pointer into the payload.
    Json(String),
}

impl PartitionKey {
    /// The default of MQTT streams: one partition per topic.
    pub fn whole_topic() -> PartitionKey {
        PartitionKey::Topic
    }

    /// Refuses a topic level the filter never has (`topic:4` of `a/+/b`).
    pub fn validate_for_mqtt(&self, filter: &str) -> Result<(), String> {
        if let PartitionKey::TopicLevel(n) = self {
            let levels = filter.split('/').count();
            if !filter.contains('#') && *n as usize > levels {
                return Err(format!(
                    "partition key `topic:{n}`: the filter {filter:?} has only {levels} levels"
                ));
            }
        }
        Ok(())
    }

    /// The partition of a record (`""` when the key is missing).
    pub fn extract(&self, topic: &str, payload: &[u8]) -> String {
        match self {
            PartitionKey::None => String::new(),
            PartitionKey::Topic => topic.to_owned(),
            PartitionKey::TopicLevel(n) => topic
                .split('/')
                .nth(*n as usize - 1)
                .unwrap_or_default()
                .to_owned(),
            PartitionKey::Json(pointer) => {
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
                    return String::new();
                };
                match value.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                }
            }
        }
    }
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionKey::None => f.write_str("none"),
            PartitionKey::Topic => f.write_str("topic"),
            PartitionKey::TopicLevel(n) => write!(f, "topic:{n}"),
            PartitionKey::Json(p) => write!(f, "json:{p}"),
        }
    }
}

impl FromStr for PartitionKey {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "bad partition key {text:?}: {why} (expected `none`, `topic`, `topic:N` or \
                 `json:/POINTER`)"
            )
        };
        match text {
            "none" => return Ok(PartitionKey::None),
            "topic" => return Ok(PartitionKey::Topic),
            _ => {}
        }
        if let Some(n) = text.strip_prefix("topic:") {
            return match n.parse::<u32>() {
                Ok(n) if (1..=1024).contains(&n) => Ok(PartitionKey::TopicLevel(n)),
                _ => Err(bad("the topic level is a number from 1")),
            };
        }
        if let Some(p) = text.strip_prefix("json:") {
            if !p.starts_with('/') {
                return Err(bad("a JSON pointer starts with `/`"));
            }
            return Ok(PartitionKey::Json(p.to_owned()));
        }
        Err(bad("unknown form"))
    }
}

impl From<PartitionKey> for String {
    fn from(k: PartitionKey) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for PartitionKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// The format of a file source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row: each row becomes a JSON object keyed by the
    /// header (string values).
    Csv,
    /// One JSON value per line (each line is a record as it is).
    Jsonl,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
        })
    }
}

impl FromStr for FileFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(FileFormat::Csv),
            "jsonl" | "ndjson" => Ok(FileFormat::Jsonl),
            _ => Err(format!("bad file format {s:?}: expected `csv` or `jsonl`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_errors_are_clear() {
        for text in ["none", "topic", "topic:2", "json:/device", "json:/a/0"] {
            assert_eq!(text.parse::<PartitionKey>().unwrap().to_string(), text);
        }
        for (text, why) in [
            ("topic:0", "from 1"),
            ("topic:x", "from 1"),
            ("json:device", "starts with `/`"),
            ("device", "unknown form"),
        ] {
            let e = text.parse::<PartitionKey>().unwrap_err();
            assert!(e.contains(why) && e.contains(text), "{e}");
        }
        assert!(PartitionKey::TopicLevel(4)
            .validate_for_mqtt("a/+/b")
            .is_err());
        assert!(PartitionKey::TopicLevel(4).validate_for_mqtt("a/#").is_ok());
        let json = serde_json::to_string(&PartitionKey::Json("/d".into())).unwrap();
        assert_eq!(json, r#""json:/d""#);
    }

    #[test]
    fn keys_are_extracted_or_empty() {
        let payload = br#"{"device":"d7","n":3,"meta":{"site":12},"nul":null}"#;
        let k = |t: &str| t.parse::<PartitionKey>().unwrap();
        assert_eq!(k("none").extract("a/b", payload), "");
        assert_eq!(k("topic").extract("a/b", payload), "a/b");
        assert_eq!(k("topic:2").extract("a/b", payload), "b");
        assert_eq!(k("topic:3").extract("a/b", payload), "");
        assert_eq!(k("json:/device").extract("a", payload), "d7");
        assert_eq!(k("json:/n").extract("a", payload), "3");
        assert_eq!(k("json:/meta/site").extract("a", payload), "12");
        assert_eq!(k("json:/meta").extract("a", payload), r#"{"site":12}"#);
        assert_eq!(k("json:/nul").extract("a", payload), "");
        assert_eq!(k("json:/missing").extract("a", payload), "");
        assert_eq!(k("json:/device").extract("a", b"not json"), "");
    }
}
