//! Mapping sources and destinations (docs/agent-api.md "Mappings"): the agent's rules, which
//! live in [`crate::protocol::mapping`] so that the cloud and the agent share one copy (every
//! source kind, including the `stream-mqtt` and `stream-file` streams, and `flow:NAME` targets).

pub use crate::protocol::mapping::{
    check_mapping_name, check_retries, check_target, parse_cron, Destination, FileFormat, Missed,
    PartitionKey, Source, FLOW_TARGET, MAX_RETRIES, MIN_INTERVAL_MS,
};

/// Checks a destination (`topic:TOPIC` or `function:NAME[:QUALIFIER]`) and returns its
/// canonical text (`function:f:latest` becomes `function:f`).
pub fn check_destination(text: &str) -> Result<String, String> {
    Destination::parse(text).map(|d| d.to_string())
}
