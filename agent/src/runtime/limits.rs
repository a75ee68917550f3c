//! Per-function limits enforced by the runtime, with the defaults of `docs/abi.md`.

use std::time::Duration;

/// What one function may use. Every field is enforced per invocation (or per instance for memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (≈ executed Wasm instructions) per invocation; `edgefn_init` gets the same budget.
    pub fuel: u64,
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget per invocation, checked between fuel slices.
    pub timeout: Duration,
    /// Largest encoded event handed to the guest.
    pub max_event_bytes: usize,
    /// Publishes per invocation; further calls get `QUOTA`.
    pub max_publishes: usize,
    /// Largest payload of one publish.
    pub max_publish_bytes: usize,
    /// Largest kv value.
    pub max_kv_value_bytes: usize,
    /// Largest kv key.
    pub max_kv_key_bytes: usize,
    /// Log lines kept per invocation; more are counted as dropped.
    pub max_log_lines: usize,
    /// Longest log line kept; longer lines are cut.
    pub max_log_line_bytes: usize,
    /// Largest response (or error message) a function may set.
    pub max_response_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 100_000_000,
            memory_bytes: 16 << 20,
            timeout: Duration::from_millis(1000),
            max_event_bytes: 256 << 10,
            max_publishes: 64,
            max_publish_bytes: 256 << 10,
            max_kv_value_bytes: 64 << 10,
            max_kv_key_bytes: 256,
            max_log_lines: 1000,
            max_log_line_bytes: 4096,
            max_response_bytes: 1 << 20,
        }
    }
}

/// Fuel handed to the guest per slice. Between slices the wall clock is checked, so this bounds
/// how late a timeout is noticed (well under a millisecond here, a few on a Pi). It also bounds
/// host stack use: wasmi's tail-call dispatch leaves a native frame per executed `memory.grow`
/// until the guest call returns to the host, and a slice boundary does return. 16 Ki fuel keeps a
/// `memory.grow` spin under ~0.5 MiB of stack (tested with a 1 MiB thread); invocation threads
/// get 8 MiB. Short invocations (an echo is ~3.4 Ki fuel) still run in one slice.
pub(crate) const FUEL_SLICE: u64 = 16_384;
