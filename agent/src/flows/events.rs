//! Events of flows' own sources (`sources.rs`): a trigger source's event starts a run or joins
//! a partial AND match; a wait source's event resolves the waits of the runs waiting for it.
//! Both are committed by the store with what the trigger carries (the MQTT dedup mark); the
//! engine is woken for the runs that can go on. Also what a trigger reports for such events.

use serde_json::Value;
use std::time::Duration;

use super::engine::{started, wake};
use super::sources::SourceRef;
use crate::daemon::Daemon;
use crate::pool::OwnedEvent;
use crate::store::flow_events::TriggerOutcome;
use crate::store::flows::flow_label;
use crate::store::{CommitExtra, StoreError};

/// An event of a flow's trigger source or of a wait step's event source (`sources.rs`),
/// committed with `extra` (the MQTT dedup mark): it starts a run, joins a partial AND match, or
/// resolves the waits of the runs waiting for it. What a trigger reports: `{"run": ID}`,
/// `{"partial": KEY, "have": [INDEX, ...], "of": N}` or `{"resumed": [RUN, ...]}`.
pub async fn source_event(
    daemon: &Daemon,
    source: SourceRef,
    event: OwnedEvent,
    extra: CommitExtra,
) -> Result<crate::daemon::Invoked, StoreError> {
    let store = daemon.store().clone();
    let label = source.mapping_id();
    match source {
        SourceRef::Trigger { flow, index } => {
            let (f, l) = (flow.clone(), label.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                store.flow_trigger_event(&f, index, &event, &l, &extra)
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("flow trigger task failed: {e}")))??;
            let target = flow_label(&flow);
            match outcome {
                TriggerOutcome::Started(run) => {
                    started(daemon, &run).await;
                    Ok(started_invocation(&target, &run.id))
                }
                TriggerOutcome::Partial { key, have, of } => Ok(answer(
                    &target,
                    &label,
                    serde_json::json!({ "partial": key, "have": have, "of": of }),
                )),
            }
        }
        SourceRef::Wait { flow, step, index } => {
            let (f, s) = (flow.clone(), step.clone());
            let runs = tokio::task::spawn_blocking(move || {
                store.flow_wait_event(&f, &s, index, &event, &extra)
            })
            .await
            .map_err(|e| StoreError::Corrupt(format!("flow wait task failed: {e}")))??;
            if !runs.is_empty() {
                wake();
            }
            Ok(answer(
                &flow_label(&flow),
                &label,
                serde_json::json!({ "resumed": runs }),
            ))
        }
    }
}

/// What a trigger reports for an event that started run `run_id` of `target` (`flow:NAME`):
/// a successful "invocation" whose id is the run id and whose response is `{"run": ID}`.
pub fn started_invocation(target: &str, run_id: &str) -> crate::daemon::Invoked {
    answer(target, run_id, serde_json::json!({ "run": run_id }))
}

/// A successful "invocation" of `target` with id `id` answering `body`.
fn answer(target: &str, id: &str, body: Value) -> crate::daemon::Invoked {
    crate::daemon::Invoked {
        invocation: crate::runtime::Invocation {
            id: id.to_string(),
            started_ms: crate::runtime::now_ms(),
            duration: Duration::ZERO,
            fuel_used: 0,
            outcome: crate::runtime::Outcome::Success,
            error: None,
            response: serde_json::to_vec(&body).expect("JSON values serialize"),
            logs: Vec::new(),
            logs_dropped: 0,
            effects: Default::default(),
        },
        function: target.to_string(),
        version: None,
    }
}
