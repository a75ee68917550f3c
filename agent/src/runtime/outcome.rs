//! What an invocation produced: outcome, response, logs and the effects to commit.

use edgefn_sdk::{Level, QoS};
use std::collections::BTreeMap;
use std::time::Duration;

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// `edgefn_handle` returned 0: effects are committed.
    Success,
    /// The function returned non-zero; the response bytes are its error message.
    Error,
    /// The instance trapped (unreachable, bad memory access, bad pointer to an import, stack
    /// overflow, ...); the instance is discarded.
    Trap,
    /// The invocation used its whole fuel budget.
    OutOfFuel,
    /// The instance tried to grow memory past its limit.
    MemoryLimit,
    /// The invocation ran past its wall-clock timeout.
    Timeout,
    /// The event is larger than the function's `max_event_bytes`, or the guest could not
    /// allocate room for it.
    EventTooLarge,
    /// A fresh instance could not start (`edgefn_init` failed or trapped).
    InitFailed,
}

impl Outcome {
    /// Snake-case name used in logs, records and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::OutOfFuel => "out_of_fuel",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::Timeout => "timeout",
            Outcome::EventTooLarge => "event_too_large",
            Outcome::InitFailed => "init_failed",
        }
    }

    /// Whether the instance that produced this outcome must be dropped.
    pub fn ends_instance(self) -> bool {
        matches!(
            self,
            Outcome::Trap
                | Outcome::OutOfFuel
                | Outcome::MemoryLimit
                | Outcome::Timeout
                | Outcome::InitFailed
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One line the guest logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Wall clock when it was logged, Unix ms.
    pub time_ms: u64,
    /// Its level.
    pub level: Level,
    /// The text (lossy UTF-8, cut at the function's `max_log_line_bytes`).
    pub text: String,
}

/// A message the guest asked to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic (valid UTF-8, no wildcards, permitted by the function's spec).
    pub topic: String,
    /// Payload.
    pub data: Vec<u8>,
    /// Requested quality of service.
    pub qos: QoS,
}

/// Effects buffered during an invocation; they reach the outside world only if it succeeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Publishes in call order.
    pub publishes: Vec<Publish>,
    /// The final value of every key written (`None` = deleted), last write wins.
    pub kv_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Effects {
    /// True when there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.publishes.is_empty() && self.kv_writes.is_empty()
    }
}

/// The complete record of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Unique id (ULID); every log line of the invocation carries it.
    pub id: String,
    /// Wall clock at start, Unix ms.
    pub started_ms: u64,
    /// Time spent in the guest (alloc + handle).
    pub duration: Duration,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The error message when the outcome is not [`Outcome::Success`].
    pub error: Option<String>,
    /// The response bytes (empty unless the function set one and succeeded).
    pub response: Vec<u8>,
    /// Lines the guest logged (kept whatever the outcome).
    pub logs: Vec<LogLine>,
    /// Lines beyond `max_log_lines` that were not kept.
    pub logs_dropped: u32,
    /// What to commit; always empty unless the outcome is a success.
    pub effects: Effects,
}

impl Invocation {
    /// True for [`Outcome::Success`].
    pub fn is_success(&self) -> bool {
        self.outcome == Outcome::Success
    }
}
