//! Helpers shared by the store's unit tests.

use super::records::{InvocationOutcome, InvocationRecord, Outcome};
use super::{LogFilter, Store};

/// A store in a fresh temporary directory (`<dir>/store.db`); keep the directory alive.
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.db")).unwrap();
    (dir, store)
}

/// A plausible invocation record of `function:latest`.
pub(crate) fn record(function: &str, id: &str, outcome: Outcome) -> InvocationRecord {
    InvocationRecord {
        id: id.to_owned(),
        function: function.to_owned(),
        version: None,
        qualifier: "latest".to_owned(),
        source: "invoke".to_owned(),
        subject: String::new(),
        event_id: format!("evt-{id}"),
        attempt: 1,
        event_time_ms: 1_700_000_000_000,
        start_ms: 1_700_000_000_002,
        duration_us: 1_500,
        fuel_used: 10_000,
        outcome,
        error: (!outcome.is_success()).then(|| format!("{outcome}")),
    }
}

/// An outcome without log lines or kv writes.
pub(crate) fn outcome(record: InvocationRecord) -> InvocationOutcome {
    InvocationOutcome {
        record,
        logs: Vec::new(),
        kv_writes: Vec::new(),
        extra: Default::default(),
    }
}

/// Texts of the lifecycle lines (log lines without invocation) of `function`, oldest first.
pub(crate) fn lifecycle_texts(store: &Store, function: &str) -> Vec<String> {
    store
        .logs(&LogFilter {
            function: Some(function.to_owned()),
            limit: 10_000,
            ..LogFilter::default()
        })
        .unwrap()
        .into_iter()
        .filter(|l| l.invocation_id.is_none())
        .map(|l| l.text)
        .collect()
}
