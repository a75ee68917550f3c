//! The actor that drives flow runs: one task per running run, invoking its ready function
//! steps through the daemon's invocation path (parallel branches at once), feeding outcomes to
//! the run's state machine ([`RunState`]) and storing the state after every step, with the
//! run's destination when it ends.
//!
//! Runs are found in the store: [`run`] picks up every `running` run at start (so runs
//! continue after a restart or a `kill -9`) and whenever [`wake`] is called (a run was started,
//! an event came for a waiting run) or a second has passed. A run's task is the only writer of
//! its row. A run with nothing to do but wait (`wait` steps) is left to the store until an
//! event resolves one of its waits or a deadline passes; the task then takes the event (or the
//! timeout) and goes on. Each pass also drops the trigger joins' partial matches whose window
//! ended.

use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::run::{AfterFailure, Ready, RunState, RunStatus, WaitOutcome};
use crate::daemon::{Daemon, InvokeRequest};
use crate::pool::OwnedEvent;
use crate::store::flows::flow_label;
use crate::store::{
    CommitExtra, Destination, FlowRun, Level, LogLine, OutboxMessage, Qualifier, QueuedEvent,
    StoreError,
};

/// The event source of flow steps' invocations.
pub const SOURCE: &str = "flow";

/// Wakes the actor (a run was started); runs are also picked up every second.
static WAKE: Notify = Notify::const_new();

/// Tells the actor to look for new runs now.
pub fn wake() {
    WAKE.notify_one();
}

/// A flow value from bytes (an event's data, a function's answer): the JSON it holds, else
/// the text as a JSON string (invalid UTF-8 replaced); empty is `null`.
pub fn value_from_bytes(data: &[u8]) -> Value {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// Starts a run of `flow` on `input` (stored with `extra` in one transaction) and wakes the
/// actor. `trigger` says what started it (`manual`, `mapping:ID`, ...).
pub async fn start(
    daemon: &Daemon,
    flow: &str,
    input: Value,
    trigger: &str,
    extra: CommitExtra,
) -> Result<FlowRun, StoreError> {
    let store = daemon.store().clone();
    let (f, t) = (flow.to_string(), trigger.to_string());
    let run = tokio::task::spawn_blocking(move || store.start_flow_run(&f, input, &t, &extra))
        .await
        .map_err(|e| StoreError::Corrupt(format!("flow start task failed: {e}")))??;
    started(daemon, &run).await;
    Ok(run)
}

/// After a run was stored as started: wake the actor, or commit the end of a run that ended
/// as it started.
pub(super) async fn started(daemon: &Daemon, run: &FlowRun) {
    if run.state.status == RunStatus::Running {
        wake();
    } else {
        // Ended as it started (a choice with no way out, a bad input pointer): commit its end.
        let line = end_line(&run.flow, &run.id, &run.state);
        let extra = end_extra(&run.flow, &run.id, &run.definition, &run.state);
        save(daemon, &run.id, &run.state, vec![line], extra).await;
    }
}

/// The actor: drives every running run until the task is dropped.
pub async fn run(daemon: Daemon) {
    let active: Arc<Mutex<HashSet<String>>> = Arc::default();
    loop {
        let store = daemon.store().clone();
        match tokio::task::spawn_blocking(move || store.expire_flow_partials()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("edgefn-agent: cannot expire flow trigger matches: {e}"),
            Err(e) => eprintln!("edgefn-agent: cannot expire flow trigger matches: {e}"),
        }
        let store = daemon.store().clone();
        match tokio::task::spawn_blocking(move || store.runnable_flow_run_ids()).await {
            Ok(Ok(ids)) => {
                for id in ids {
                    if !lock(&active).insert(id.clone()) {
                        continue;
                    }
                    let (d, a) = (daemon.clone(), active.clone());
                    tokio::spawn(async move {
                        let store = d.store().clone();
                        let rid = id.clone();
                        match tokio::task::spawn_blocking(move || store.flow_run(&rid)).await {
                            Ok(Ok(run)) => drive(d, run).await,
                            Ok(Err(e)) => eprintln!("edgefn-agent: cannot load flow run {id}: {e}"),
                            Err(e) => eprintln!("edgefn-agent: cannot load flow run {id}: {e}"),
                        }
                        lock(&a).remove(&id);
                    });
                }
            }
            Ok(Err(e)) => eprintln!("edgefn-agent: cannot list flow runs: {e}"),
            Err(e) => eprintln!("edgefn-agent: cannot list flow runs: {e}"),
        }
        tokio::select! {
            _ = WAKE.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How one attempt ended.
struct Attempt {
    step: String,
    attempt: u32,
    invocation_id: String,
    result: Result<Value, String>,
}

/// Drives one run to its end.
async fn drive(daemon: Daemon, run: FlowRun) {
    let FlowRun {
        id,
        flow,
        definition: def,
        mut state,
        ..
    } = run;
    let mut inflight: JoinSet<Attempt> = JoinSet::new();
    let mut started: HashSet<String> = HashSet::new();
    let mut delays: HashMap<String, Duration> = HashMap::new();
    if state.status != RunStatus::Running {
        return;
    }
    loop {
        if !state.waits.is_empty() {
            let logs = take_waits(&daemon, &flow, &id, &def, &mut state).await;
            if !logs.is_empty() {
                let mut logs = logs;
                let extra = match state.status {
                    RunStatus::Running => CommitExtra::default(),
                    _ => {
                        logs.push(end_line(&flow, &id, &state));
                        end_extra(&flow, &id, &def, &state)
                    }
                };
                save(&daemon, &id, &state, logs, extra).await;
                if state.status != RunStatus::Running {
                    return;
                }
            }
        }
        for ready in state.ready(&def) {
            if !started.insert(ready.step.clone()) {
                continue;
            }
            let invocation_id = format!("{id}.{}.{}", ready.step, ready.attempt);
            state.attempt_started(&ready.step, &invocation_id);
            let delay = delays.remove(&ready.step);
            inflight.spawn(attempt(
                daemon.clone(),
                flow.clone(),
                id.clone(),
                ready,
                invocation_id,
                delay,
            ));
        }
        if inflight.is_empty() && state.only_waiting() {
            // Nothing to run until an event or a timeout: stored as waiting, the store hands
            // the run back to the engine when one of them is there.
            save(&daemon, &id, &state, Vec::new(), CommitExtra::default()).await;
            return;
        }
        let joined = if state.waits.is_empty() {
            inflight.join_next().await
        } else {
            // Other branches run while one waits: look for its event now and then.
            tokio::select! {
                j = inflight.join_next() => j,
                _ = tokio::time::sleep(WAIT_POLL) => continue,
            }
        };
        let Some(joined) = joined else {
            break;
        };
        let Ok(a) = joined else { continue };
        started.remove(&a.step);
        let now = crate::runtime::now_ms() as i64;
        let mut logs = Vec::new();
        let mut log = |level: Level, text: String| {
            logs.push(LogLine {
                time_ms: now,
                level,
                function: Some(flow_label(&flow)),
                version: None,
                invocation_id: Some(id.clone()),
                text,
            })
        };
        match a.result {
            Ok(v) => {
                log(
                    Level::Info,
                    format!(
                        "run {id}: step {} succeeded (attempt {}, invocation {})",
                        a.step, a.attempt, a.invocation_id
                    ),
                );
                state.succeeded(&def, &a.step, v, now);
            }
            Err(e) => {
                log(
                    Level::Warn,
                    format!(
                        "run {id}: step {} attempt {} failed (invocation {}): {e}",
                        a.step, a.attempt, a.invocation_id
                    ),
                );
                if let AfterFailure::Retry(d) = state.attempt_failed(&def, &a.step, e, now) {
                    delays.insert(a.step.clone(), d);
                }
            }
        }
        let extra = match state.status {
            RunStatus::Running => CommitExtra::default(),
            _ => {
                log(end_level(&state), end_text(&id, &state));
                end_extra(&flow, &id, &def, &state)
            }
        };
        save(&daemon, &id, &state, logs, extra).await;
        if state.status != RunStatus::Running {
            // Branches still in flight after a failure are dropped (their invocations end
            // on their own; their results no longer matter).
            return;
        }
    }
    if state.status == RunStatus::Running {
        // Nothing ready and nothing in flight: the stored state cannot progress (an unknown
        // step in a changed definition). Fail it rather than leave it running forever.
        state.status = RunStatus::Failed;
        state.error = Some("the run cannot progress: no step is ready".into());
    }
    let line = end_line(&flow, &id, &state);
    let extra = end_extra(&flow, &id, &def, &state);
    save(&daemon, &id, &state, vec![line], extra).await;
}

/// How often a run whose other branches are busy looks for the event of its wait step.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Feeds run `id` the events that resolved its waits and the timeouts that passed; returns the
/// log lines of what changed (none: nothing did).
async fn take_waits(
    daemon: &Daemon,
    flow: &str,
    id: &str,
    def: &super::FlowDef,
    state: &mut RunState,
) -> Vec<LogLine> {
    let store = daemon.store().clone();
    let rid = id.to_string();
    let resolved = match tokio::task::spawn_blocking(move || store.resolved_flow_waits(&rid)).await
    {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("edgefn-agent: cannot read the waits of flow run {id}: {e}");
            Vec::new()
        }
        Err(_) => Vec::new(),
    };
    let now = crate::runtime::now_ms() as i64;
    let line = |level: Level, text: String| LogLine {
        time_ms: now,
        level,
        function: Some(flow_label(flow)),
        version: None,
        invocation_id: Some(id.to_string()),
        text,
    };
    let mut logs = Vec::new();
    for (step, index, event) in resolved {
        if !state.waits.contains_key(&step) {
            continue;
        }
        let subject = event["subject"].as_str().unwrap_or("").to_string();
        let next = state.wait_ended(def, &step, WaitOutcome::Event { index, event }, now);
        logs.push(line(
            Level::Info,
            format!(
                "run {id}: step {step} got event {} ({subject}); next: {}",
                index + 1,
                next.as_deref().unwrap_or("(end)")
            ),
        ));
    }
    for step in state.timed_out(now) {
        let next = state.wait_ended(def, &step, WaitOutcome::Timeout, now);
        logs.push(line(
            Level::Warn,
            format!(
                "run {id}: step {step} timed out waiting for events; next: {}",
                next.as_deref().unwrap_or("(none: the run fails)")
            ),
        ));
    }
    logs
}

fn end_line(flow: &str, id: &str, state: &RunState) -> LogLine {
    LogLine {
        time_ms: crate::runtime::now_ms() as i64,
        level: end_level(state),
        function: Some(flow_label(flow)),
        version: None,
        invocation_id: Some(id.to_string()),
        text: end_text(id, state),
    }
}

fn end_level(state: &RunState) -> Level {
    if state.status == RunStatus::Succeeded {
        Level::Info
    } else {
        Level::Error
    }
}

fn end_text(id: &str, state: &RunState) -> String {
    match state.status {
        RunStatus::Succeeded => format!("run {id} succeeded"),
        _ => format!(
            "run {id} failed: {}",
            state.error.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Stores the state (retrying while the store refuses: the state must not be lost).
async fn save(daemon: &Daemon, id: &str, state: &RunState, logs: Vec<LogLine>, extra: CommitExtra) {
    let mut wait = Duration::from_millis(100);
    loop {
        let (store, i, s, l, e) = (
            daemon.store().clone(),
            id.to_string(),
            state.clone(),
            logs.clone(),
            extra.clone(),
        );
        match tokio::task::spawn_blocking(move || store.save_flow_run(&i, &s, &l, &e)).await {
            Ok(Ok(())) => return,
            Ok(Err(StoreError::UnknownFlowRun(_))) => return,
            Ok(Err(e)) => eprintln!("edgefn-agent: cannot store flow run {id}: {e}"),
            Err(e) => eprintln!("edgefn-agent: cannot store flow run {id}: {e}"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// One attempt of a function step (after `delay`, for a retry).
async fn attempt(
    daemon: Daemon,
    flow: String,
    run_id: String,
    ready: Ready,
    invocation_id: String,
    delay: Option<Duration>,
) -> Attempt {
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let result = invoke(&daemon, &flow, &run_id, &ready, &invocation_id).await;
    Attempt {
        step: ready.step,
        attempt: ready.attempt,
        invocation_id,
        result,
    }
}

async fn invoke(
    daemon: &Daemon,
    flow: &str,
    run_id: &str,
    ready: &Ready,
    invocation_id: &str,
) -> Result<Value, String> {
    let qualifier = Qualifier::parse(&ready.qualifier).map_err(|e| e.to_string())?;
    let req = InvokeRequest {
        function: ready.function.clone(),
        qualifier,
        event: OwnedEvent {
            // The same id for every attempt: a weighted alias sends them to one version.
            id: format!("{run_id}/{}", ready.step),
            source: SOURCE.into(),
            subject: format!("{flow}/{run_id}/{}", ready.step),
            time_ms: crate::runtime::now_ms(),
            content_type: "application/json".into(),
            data: serde_json::to_vec(&ready.input).expect("JSON values serialize"),
            attempt: ready.attempt,
        },
        invocation_id: invocation_id.to_string(),
    };
    match daemon.invoke(req).await {
        Ok(done) if done.invocation.is_success() => Ok(value_from_bytes(&done.invocation.response)),
        Ok(done) => Err(format!(
            "{}: {}",
            done.invocation.outcome,
            done.invocation.error.unwrap_or_default()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// What a finished run commits: its result to `on_success`, or its failure report to
/// `on_failure`.
fn end_extra(flow: &str, id: &str, def: &super::FlowDef, state: &RunState) -> CommitExtra {
    let (on_success, on_failure) = def.destinations();
    let (dest, body) = match state.status {
        RunStatus::Succeeded => (
            on_success,
            serde_json::to_vec(state.output.as_ref().unwrap_or(&Value::Null))
                .expect("JSON values serialize"),
        ),
        RunStatus::Failed => {
            let step = state.failed_step.as_ref();
            let report = serde_json::json!({
                "flow": flow,
                "run": id,
                "step": step,
                "error": state.error,
                "attempts": step.and_then(|s| state.steps.get(s)).map(|r| r.attempts),
                "input": state.input,
            });
            (
                on_failure,
                serde_json::to_vec(&report).expect("JSON values serialize"),
            )
        }
        RunStatus::Running => (None, Vec::new()),
    };
    let mut extra = CommitExtra::default();
    match dest {
        Some(Destination::Topic(t)) => extra.outbox.push(OutboxMessage::new(&t, body, 1, None)),
        Some(Destination::Function { name, qualifier }) => {
            let event = QueuedEvent {
                id: format!("{id}:{}", state.status.as_str()),
                source: SOURCE.into(),
                subject: flow.to_string(),
                time_ms: crate::runtime::now_ms(),
                content_type: "application/json".into(),
                data: body,
                attempt: 1,
                depth: 1,
                reply: None,
            };
            extra.enqueue.push((
                crate::triggers::dispatch::destination_target(&name, &qualifier),
                event,
            ));
        }
        None => {}
    }
    extra
}
