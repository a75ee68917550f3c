//! Plain data the daemon hands to the store after invocations: invocation records, log lines and
//! the [`InvocationOutcome`] that bundles what one invocation commits.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use super::dead_letters::DeadLetter;
use super::jobs::TaskUpdate;
use super::kv::KvWrite;
use super::outbox::OutboxMessage;
use super::queue::QueuedEvent;

/// Log level: the guest ABI's definition (one definition for the SDK, the runtime and the
/// store). Stored as its number 0-4; in JSON as its lowercase name (`"info"`).
pub use edgefn_sdk::Level;

/// Serde for [`Level`] as its lowercase name, as the admin API shows it.
pub mod level_name {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Level;

    pub fn serialize<S: Serializer>(level: &Level, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(level.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Level, D::Error> {
        let name = String::deserialize(d)?;
        Level::parse(&name).ok_or_else(|| D::Error::custom(format!("unknown log level {name:?}")))
    }

    /// The same for `Option<Level>` (`null` = none).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        use super::Level;

        pub fn serialize<S: Serializer>(level: &Option<Level>, s: S) -> Result<S::Ok, S::Error> {
            match level {
                Some(level) => super::serialize(level, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Level>, D::Error> {
            #[derive(Deserialize)]
            struct Named(#[serde(with = "super")] Level);
            Ok(Option::<Named>::deserialize(d)?.map(|Named(level)| level))
        }
    }
}

/// Error of parsing an [`Outcome`] or another small enum of the store from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
}

impl ParseEnumError {
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        Self {
            what,
            value: value.to_owned(),
        }
    }
}

/// How an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// `edgefn_handle` returned 0.
    Success,
    /// `edgefn_handle` returned non-zero (a function error; the response is the message).
    Error,
    /// The guest trapped (unreachable, bad pointer, stack overflow, ...).
    Trap,
    /// The guest used up its fuel.
    OutOfFuel,
    /// The guest tried to grow memory beyond its limit.
    MemoryLimit,
    /// The wall-clock timeout expired.
    Timeout,
    /// Refused because `max_concurrency` and the queue were full; the guest never ran.
    Throttled,
    /// The event was larger than the function's limit (or the guest could not allocate it).
    EventTooLarge,
    /// The instance failed to start (`edgefn_init` non-zero or trapped).
    InitFailed,
    /// Refused before running for another reason (e.g. the function is disabled).
    Rejected,
}

impl Outcome {
    /// Stored name (`"out_of_fuel"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Timeout => "timeout",
            Outcome::Throttled => "throttled",
            Outcome::EventTooLarge => "event_too_large",
            Outcome::InitFailed => "init_failed",
            Outcome::Rejected => "rejected",
        }
    }

    /// Every outcome, for parsing and tests.
    pub const ALL: [Outcome; 10] = [
        Outcome::Success,
        Outcome::Error,
        Outcome::Trap,
        Outcome::OutOfFuel,
        Outcome::MemoryLimit,
        Outcome::Timeout,
        Outcome::Throttled,
        Outcome::EventTooLarge,
        Outcome::InitFailed,
        Outcome::Rejected,
    ];

    /// True when the guest's effects (kv writes, publishes, response) are committed.
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = ParseEnumError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| ParseEnumError::new("outcome", s))
    }
}

impl ToSql for Outcome {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Outcome {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

/// One invocation, as recorded (and later uploaded to the cloud).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    /// Unique invocation id (a ULID from the daemon); every log line of the invocation carries it.
    pub id: String,
    pub function: String,
    /// The version that ran; `None` = `latest`.
    pub version: Option<u32>,
    /// What the caller named (`latest`, `3`, `prod`), to tell alias traffic apart.
    pub qualifier: String,
    /// Event source kind (`mqtt`, `schedule`, `http`, `invoke`, ...).
    pub source: String,
    /// Topic, schedule name, path, ... of the event.
    pub subject: String,
    /// The event's id (the dedup key; also what the weighted alias split hashes).
    pub event_id: String,
    /// 1 on first delivery; greater means a retry (counted in stats).
    pub attempt: u32,
    /// Event time, Unix ms; `start_ms - event_time_ms` is the latency in stats.
    pub event_time_ms: i64,
    /// When the guest call started (or the invocation was refused), Unix ms.
    pub start_ms: i64,
    pub duration_us: u64,
    pub fuel_used: u64,
    pub outcome: Outcome,
    /// The error message for anything but success.
    pub error: Option<String>,
}

impl InvocationRecord {
    /// Event-time-to-start latency in microseconds (0 when the event claims to come from the
    /// future, e.g. a device with a skewed clock).
    pub fn latency_us(&self) -> u64 {
        (self.start_ms.saturating_sub(self.event_time_ms).max(0) as u64).saturating_mul(1000)
    }
}

/// A log line written during an invocation; function, version and invocation id come from the
/// [`InvocationRecord`] it is committed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvocationLog {
    pub time_ms: i64,
    #[serde(with = "level_name")]
    pub level: Level,
    pub text: String,
}

/// A log line to append outside an invocation (agent lines, instance failures, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub time_ms: i64,
    #[serde(with = "level_name")]
    pub level: Level,
    /// `None` for agent-level lines.
    pub function: Option<String>,
    /// `None` = latest (or not about a version).
    pub version: Option<u32>,
    pub invocation_id: Option<String>,
    pub text: String,
}

/// A stored log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Position in the log; increases with every line and is never reused (`--follow` cursor).
    pub seq: i64,
    pub time_ms: i64,
    #[serde(with = "level_name")]
    pub level: Level,
    pub function: Option<String>,
    pub version: Option<u32>,
    pub invocation_id: Option<String>,
    pub text: String,
}

/// Everything one finished invocation commits, atomically with the others of its batch
/// ([`Store::commit`](super::Store::commit)). Stats are derived from the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvocationOutcome {
    pub record: InvocationRecord,
    /// The invocation's log lines (guest and host lines about it), in order.
    pub logs: Vec<InvocationLog>,
    /// The guest's kv writes, in order. Applied only when the outcome is a success: a failed
    /// invocation leaves no partial effects (DESIGN, guest ABI).
    pub kv_writes: Vec<KvWrite>,
    /// Delivery effects committed with the record whatever its outcome (the caller decides what
    /// to put here: publishes only after a success, a dead letter after the last failure, ...).
    #[serde(default)]
    pub extra: CommitExtra,
}

/// Delivery effects committed in the same transaction as an invocation's record
/// ([`InvocationOutcome::extra`]), or on their own ([`Store::commit_extra`](super::Store::commit_extra)).
/// Written in this order: outbox rows, queued events, the dedup mark, the dequeue, the dead letter,
/// the job task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommitExtra {
    /// Messages to publish (function publishes, destination publishes, MQTT 5 responses).
    pub outbox: Vec<OutboxMessage>,
    /// Events to queue: `(target, event)` with target `mapping:<id>` or
    /// `function:<name>[:<qualifier>]` (see [`super::queue`]).
    pub enqueue: Vec<(String, QueuedEvent)>,
    /// `(session, packet_id)` of the MQTT message this commit finishes (see [`super::dedup`]).
    pub dedup_mark: Option<(String, u16)>,
    /// The queue row this commit delivered (deleted; no error if already gone).
    pub dequeue: Option<i64>,
    /// The event failed for good.
    pub dead_letter: Option<DeadLetter>,
    /// The batch-job task this attempt belongs to: its state and result (see [`super::jobs`]).
    pub job_task: Option<TaskUpdate>,
    /// The stream partition checkpoint this commit moves (a stream batch's outcome).
    pub stream_checkpoint: Option<super::stream::StreamCheckpoint>,
}

impl CommitExtra {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
            && self.enqueue.is_empty()
            && self.dedup_mark.is_none()
            && self.dequeue.is_none()
            && self.dead_letter.is_none()
            && self.job_task.is_none()
            && self.stream_checkpoint.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_json_names_and_sql_numbers() {
        let line = InvocationLog {
            time_ms: 1,
            level: Level::Warn,
            text: "t".into(),
        };
        let json = serde_json::to_string(&line).unwrap();
        assert_eq!(json, r#"{"time_ms":1,"level":"warn","text":"t"}"#);
        assert_eq!(serde_json::from_str::<InvocationLog>(&json).unwrap(), line);
        assert!(
            serde_json::from_str::<InvocationLog>(r#"{"time_ms":1,"level":"loud","text":""}"#)
                .is_err()
        );
        assert_eq!(Level::Error as u8, 4);
    }

    #[test]
    fn outcomes_round_trip_through_text() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.as_str().parse::<Outcome>().unwrap(), outcome);
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
        assert!("exploded".parse::<Outcome>().is_err());
    }

    #[test]
    fn latency_is_clamped_at_zero() {
        let mut record = crate::store::test_support::record("f", "a", Outcome::Success);
        record.event_time_ms = 1_000;
        record.start_ms = 1_250;
        assert_eq!(record.latency_us(), 250_000);
        record.start_ms = 900;
        assert_eq!(record.latency_us(), 0);
    }
}
