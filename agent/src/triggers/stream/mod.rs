//! Ordered streams (docs/triggers.md, "Streams"): stream mappings append the records of their
//! source to a durable per-partition log in the store (`store/stream.rs`) before the source is
//! acknowledged, and one worker per partition feeds them in order, in batches, to the function;
//! the checkpoint moves only with a committed success (or a record given up after bisection).
//!
//! | file | concept |
//! |---|---|
//! | (`edgefn_cloud::protocol::partition`) | [`PartitionKey`] (`none`, `topic`, `topic:N`, `json:/POINTER`) and [`FileFormat`], shared with the cloud |
//! | `appender.rs` | [`Appender`]: MQTT messages of stream mappings appended in arrival order, many per transaction, with their dedup marks; the link acks after the append committed |
//! | `file.rs` | file sources (CSV, JSON lines; once or followed), position committed with the records |
//! | `worker.rs` | the tasks: one per stream mapping, one worker per partition; batches, windows, retries, checkpoints |
//! | `bisect.rs` | [`Bisect`]: which records of a failing batch to try next (plain state machine) |
//! | `encode.rs` | the batch event (a JSON array of records) |
//!
//! [`Hub`] tells a mapping's tasks that records were appended (a counter per mapping).

mod appender;
mod bisect;
pub mod encode;
mod file;
mod worker;

pub use appender::Appender;
pub use bisect::{Attempt, Bisect, Failed};
pub use edgefn_cloud::protocol::partition::{FileFormat, PartitionKey};
pub use file::MAX_BACKLOG;
pub use worker::supervise;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Wakes a stream mapping's tasks when records were appended to it.
#[derive(Clone, Default)]
pub struct Hub {
    counters: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

impl Hub {
    /// Records were appended to `mapping`.
    pub fn appended(&self, mapping: &str) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(mapping.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that changes whenever records are appended to `mapping`.
    pub fn watch(&self, mapping: &str) -> watch::Receiver<u64> {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(mapping.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }
}
