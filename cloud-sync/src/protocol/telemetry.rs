//! Telemetry upload: what a device sends to `POST /v1/device/telemetry` (log records,
//! invocation records, per-minute stats buckets and drop counts, in batches) and what the cloud
//! answers. docs/cloud-api.md, "Telemetry upload", is the language-neutral description.
//!
//! A batch is identified by `(device, batch_seq)`: the cloud stores each batch at most once and
//! answers a batch it already has with the extent it stored then (`duplicate: true`), so a
//! device that crashed after sending and before recording the answer re-sends and moves its
//! cursors to what the cloud really holds. Stats buckets are cumulative (the device's whole
//! bucket, not a delta) and replace the cloud's copy, so sending one twice is harmless.
//!
//! On the wire the JSON body is compressed with zlib (`Content-Encoding: deflate`, RFC 1950/1951)
//! by [`compress`]; [`decompress`] refuses bodies that inflate past a limit.

use serde::{Deserialize, Serialize};

/// Log levels by number (the guest ABI's 0..=4) and name, as the wire and the API show them.
pub const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// The number of a level name (`"warn"` -> 3).
pub fn level_number(name: &str) -> Option<u8> {
    LEVELS.iter().position(|l| *l == name).map(|i| i as u8)
}

/// Body of `POST /v1/device/telemetry` (before compression).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBatch {
    /// The device's batch number: 1, 2, 3, ... (the idempotency key with the device id).
    pub batch_seq: u64,
    /// The device's log position of the newest log record in this batch or before it: after
    /// the cloud stores the batch, the device's log cursor moves here.
    pub logs_to: i64,
    /// The same for invocation records.
    pub invocations_to: i64,
    /// New log records, oldest first.
    #[serde(default)]
    pub logs: Vec<LogEntry>,
    /// New invocation records, oldest first.
    #[serde(default)]
    pub invocations: Vec<InvocationEntry>,
    /// Stats buckets that changed since they were last acknowledged (whole buckets).
    #[serde(default)]
    pub stats: Vec<StatsEntry>,
    /// Records the device dropped (disk budget, retention) before they were uploaded; totals
    /// since the device was enrolled, so the cloud keeps the largest it has seen.
    #[serde(default)]
    pub dropped: Dropped,
}

impl UploadBatch {
    /// Log and invocation records in the batch.
    pub fn records(&self) -> usize {
        self.logs.len() + self.invocations.len()
    }
}

/// Counts of records dropped on a device before upload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub logs: u64,
    pub invocations: u64,
}

/// One log line, as the agent stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// The device's log position (increasing, never reused).
    pub seq: i64,
    pub time_ms: i64,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// `None` for agent-level lines.
    pub function: Option<String>,
    /// `None` = latest (or not about a version).
    pub version: Option<u32>,
    pub invocation_id: Option<String>,
    pub text: String,
}

/// One invocation record, as the agent stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationEntry {
    /// The device's invocation position (increasing, never reused).
    pub seq: i64,
    pub id: String,
    pub function: String,
    pub version: Option<u32>,
    pub qualifier: String,
    pub source: String,
    pub subject: String,
    pub event_id: String,
    pub attempt: u32,
    pub event_time_ms: i64,
    pub start_ms: i64,
    pub duration_us: u64,
    pub fuel_used: u64,
    /// `success`, `error`, `trap`, ... (docs/agent-api.md).
    pub outcome: String,
    pub error: Option<String>,
}

/// One per-minute stats bucket of one (function, version), cumulative.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsEntry {
    pub function: String,
    /// `latest` or a version number.
    pub version: String,
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub retries: u64,
    pub fuel_sum: u64,
    pub duration_sum_us: u64,
    pub latency_sum_us: u64,
    /// base64 of [`super::histogram::Histogram::to_bytes`] of the durations (µs).
    pub duration_hist: String,
    /// The same for latencies (event time to start, µs).
    pub latency_hist: String,
}

/// Answer of `POST /v1/device/telemetry` (`200`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadAck {
    pub batch_seq: u64,
    /// The cloud already had this batch: nothing was stored now, and `logs_to` /
    /// `invocations_to` are the extent stored the first time.
    pub duplicate: bool,
    pub logs_to: i64,
    pub invocations_to: i64,
    /// Log / invocation records the cloud stored from this batch (the first time, for a
    /// duplicate): lets the device tell records it deleted meanwhile from records it dropped.
    pub logs: u64,
    pub invocations: u64,
}

/// Why a compressed body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("body is not zlib data: {0}")]
    Corrupt(String),
    #[error("body inflates past {limit} bytes")]
    TooLarge { limit: usize },
}

/// zlib level 6 (a good size/CPU trade on a Pi: JSON of log lines shrinks 5-10x).
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(bytes, 6)
}

/// Inflates a zlib body, refusing more than `limit` bytes of output.
pub fn decompress(bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(bytes, limit).map_err(|e| {
        if e.status == miniz_oxide::inflate::TINFLStatus::HasMoreOutput {
            DecompressError::TooLarge { limit }
        } else {
            DecompressError::Corrupt(format!("{:?}", e.status))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_round_trips_and_limits_output() {
        let text = "info celsius 3 converted 21.5 C to 70.7 F\n".repeat(1000);
        let packed = compress(text.as_bytes());
        assert!(packed.len() * 10 < text.len(), "{} bytes", packed.len());
        assert_eq!(decompress(&packed, 1 << 20).unwrap(), text.as_bytes());
        assert!(matches!(
            decompress(&packed, 100),
            Err(DecompressError::TooLarge { limit: 100 })
        ));
        assert!(matches!(
            decompress(b"not zlib", 100),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn levels_have_names_and_numbers() {
        assert_eq!(level_number("warn"), Some(3));
        assert_eq!(level_number("loud"), None);
        assert_eq!(LEVELS[4], "error");
    }

    #[test]
    fn batch_json_shape() {
        let b = UploadBatch {
            batch_seq: 7,
            ..UploadBatch::default()
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["batch_seq"], 7);
        assert_eq!(v["dropped"]["logs"], 0);
        assert!(serde_json::from_str::<UploadBatch>(
            r#"{"batch_seq":1,"logs_to":0,"invocations_to":0,"bogus":1}"#
        )
        .is_err());
    }
}
