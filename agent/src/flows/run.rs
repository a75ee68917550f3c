//! A flow run as a plain state machine (no I/O): which steps are entered, which function steps
//! wait to run, the results so far, parallel joins in progress, and how the run ended.
//!
//! The driver ([`super::engine`]) asks for [`RunState::ready`] steps, invokes them, and feeds
//! each outcome back with [`RunState::succeeded`] or [`RunState::attempt_failed`]; after each it
//! stores the state (serde JSON), so a restarted agent continues from the last stored state:
//! finished steps are never run again; a step that was running when the agent died runs again.
//! Choice and parallel steps involve no I/O and are taken as soon as they are entered.
//! A wait step stays entered (in [`RunState::waits`], with its correlation key and deadline)
//! until the driver feeds it the event that came or its timeout ([`RunState::wait_ended`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use super::definition::{FlowDef, Input, Join, Kind, Ref, RUN_INPUT};
use super::trigger::key_text;

/// How a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

/// How a step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Entered: a function step waiting for (or in) its next attempt, a parallel step
    /// waiting for its branches, or a wait step waiting for its event.
    Running,
    Succeeded,
    Failed,
}

/// What happened to one step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub status: StepStatus,
    /// Attempts started (function steps).
    #[serde(default)]
    pub attempts: u32,
    /// The input it got (computed when it was entered).
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step taken by a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chose: Option<String>,
    /// Invocation ids of its attempts (each also names the run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invocations: Vec<String>,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Which parallel branch it runs in, so its end can fill the join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// The parallel branch a step runs in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub parallel: String,
    pub branch: usize,
}

/// A parallel step waiting for its branches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinState {
    /// One slot per branch, filled as each ends.
    pub results: Vec<Option<Value>>,
}

/// A wait step waiting for its event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitState {
    /// The run's correlation value (from the step's input at the wait's `key` pointer), which
    /// an event's key must equal; `None` when the wait has no key (any event will do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// When the wait times out (Unix ms).
    pub deadline_ms: i64,
}

/// How a wait ended.
#[derive(Clone, Debug, PartialEq)]
pub enum WaitOutcome {
    /// Event `index` of the wait's `events` came (`event`: its envelope, the step's result).
    Event { index: usize, event: Value },
    /// Nothing came in time.
    Timeout,
}

/// The whole state of a run (stored as JSON after every change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub status: RunStatus,
    pub input: Value,
    /// Steps entered so far, by name.
    pub steps: BTreeMap<String, StepRecord>,
    /// Parallel steps waiting for branches.
    #[serde(default)]
    pub joins: BTreeMap<String, JoinState>,
    /// Wait steps waiting for their event, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waits: BTreeMap<String, WaitState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step whose failure failed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
}

/// A function step to invoke.
#[derive(Clone, Debug, PartialEq)]
pub struct Ready {
    pub step: String,
    pub function: String,
    pub qualifier: String,
    pub input: Value,
    /// 1-based number of the attempt to make.
    pub attempt: u32,
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterFailure {
    /// Try again after this delay.
    Retry(std::time::Duration),
    /// The step, and with it the run, failed.
    RunFailed,
}

impl RunState {
    /// A new run of `def` with `input`, its start step entered (`now`: Unix ms).
    pub fn start(def: &FlowDef, input: Value, now: i64) -> RunState {
        let mut s = RunState {
            status: RunStatus::Running,
            input,
            steps: BTreeMap::new(),
            joins: BTreeMap::new(),
            waits: BTreeMap::new(),
            output: None,
            error: None,
            failed_step: None,
        };
        let first = def.start_step().to_string();
        s.enter(def, &first, None, None, now);
        s
    }

    /// Function steps waiting for an attempt, in name order.
    pub fn ready(&self, def: &FlowDef) -> Vec<Ready> {
        if self.status != RunStatus::Running {
            return Vec::new();
        }
        self.steps
            .iter()
            .filter(|(_, r)| r.status == StepStatus::Running)
            .filter_map(|(name, r)| match def.step(name)?.kind() {
                Kind::Invoke {
                    function,
                    qualifier,
                } => Some(Ready {
                    step: name.clone(),
                    function: function.to_string(),
                    qualifier: qualifier.to_string(),
                    input: r.input.clone(),
                    attempt: r.attempts + 1,
                }),
                _ => None,
            })
            .collect()
    }

    /// Whether the run has nothing to do but wait for events (or timeouts): every entered step
    /// still open is a wait step, or a parallel step whose branches are such.
    pub fn only_waiting(&self) -> bool {
        self.status == RunStatus::Running
            && !self.waits.is_empty()
            && self
                .steps
                .iter()
                .filter(|(_, r)| r.status == StepStatus::Running)
                .all(|(n, _)| self.waits.contains_key(n) || self.joins.contains_key(n))
    }

    /// Wait steps whose deadline has passed at `now`.
    pub fn timed_out(&self, now: i64) -> Vec<String> {
        self.waits
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The wait of `step` ended with `outcome`: take the event's `next` (or the step's), or
    /// on timeout `on_timeout` (or fail the run). Returns the step taken, if any; does nothing
    /// when `step` is not waiting.
    pub fn wait_ended(
        &mut self,
        def: &FlowDef,
        step: &str,
        outcome: WaitOutcome,
        now: i64,
    ) -> Option<String> {
        if self.status != RunStatus::Running || self.waits.remove(step).is_none() {
            return None;
        }
        let sd = def.step(step)?;
        let Kind::Wait(w) = sd.kind() else {
            return None;
        };
        let scope = self.steps.get(step).and_then(|r| r.scope.clone());
        let (target, result) = match outcome {
            WaitOutcome::Event { index, event } => {
                let next = w
                    .events
                    .get(index)
                    .and_then(|e| e.next.clone())
                    .or_else(|| sd.next.clone());
                (next, event)
            }
            WaitOutcome::Timeout => match &w.on_timeout {
                Some(t) => {
                    let input = self
                        .steps
                        .get(step)
                        .map_or(Value::Null, |r| r.input.clone());
                    (Some(t.clone()), input)
                }
                None => {
                    self.fail_step(
                        step,
                        format!(
                            "step {step:?}: no event came within {} (and the wait has no \
                             on_timeout)",
                            w.timeout
                        ),
                        now,
                    );
                    return None;
                }
            },
        };
        if let Some(r) = self.steps.get_mut(step) {
            r.status = StepStatus::Succeeded;
            r.result = Some(result.clone());
            r.chose = target.clone();
            r.ended_ms = Some(now);
        }
        match &target {
            Some(t) => self.enter(def, t, Some(step), scope, now),
            None => self.end_scope(def, scope, result, now),
        }
        target
    }

    /// Records that an attempt of `step` starts with invocation `invocation_id`.
    pub fn attempt_started(&mut self, step: &str, invocation_id: &str) {
        if let Some(r) = self.steps.get_mut(step) {
            r.attempts += 1;
            r.invocations.push(invocation_id.to_string());
        }
    }

    /// `step` answered `result`: record it and move on.
    pub fn succeeded(&mut self, def: &FlowDef, step: &str, result: Value, now: i64) {
        let Some(r) = self.steps.get_mut(step) else {
            return;
        };
        if r.status != StepStatus::Running || self.status != RunStatus::Running {
            return;
        }
        r.status = StepStatus::Succeeded;
        r.result = Some(result);
        r.error = None;
        r.ended_ms = Some(now);
        self.after(def, step, now);
    }

    /// An attempt of `step` failed with `error`: retry, or fail the run.
    pub fn attempt_failed(
        &mut self,
        def: &FlowDef,
        step: &str,
        error: String,
        now: i64,
    ) -> AfterFailure {
        let Some(sd) = def.step(step) else {
            return AfterFailure::RunFailed;
        };
        let Some(r) = self.steps.get_mut(step) else {
            return AfterFailure::RunFailed;
        };
        let retries = sd.retries.unwrap_or(0);
        if r.attempts <= retries {
            r.error = Some(error);
            return AfterFailure::Retry(sd.backoff(r.attempts));
        }
        let attempts = r.attempts;
        self.fail_step(
            step,
            format!("step {step:?} failed after {attempts} attempt(s): {error}"),
            now,
        );
        AfterFailure::RunFailed
    }

    fn fail_step(&mut self, step: &str, error: String, now: i64) {
        if let Some(r) = self.steps.get_mut(step) {
            r.status = StepStatus::Failed;
            r.error = Some(error.clone());
            r.ended_ms = Some(now);
        }
        self.fail(Some(step), error);
    }

    fn fail(&mut self, step: Option<&str>, error: String) {
        if self.status == RunStatus::Running {
            self.status = RunStatus::Failed;
            self.failed_step = step.map(str::to_string);
            self.error = Some(error);
            self.waits.clear();
        }
    }

    /// The value a step entered from `from` gets by default: the run's input at the start, a
    /// parallel step's input inside its branches, else the result of `from`.
    fn previous(&self, from: Option<&str>) -> Value {
        match from.and_then(|f| self.steps.get(f)) {
            None => self.input.clone(),
            Some(r) if r.status == StepStatus::Running => r.input.clone(),
            Some(r) => r.result.clone().unwrap_or(Value::Null),
        }
    }

    fn resolve_ref(&self, r: &Ref) -> Result<Value, String> {
        let whole = if r.step == RUN_INPUT {
            &self.input
        } else {
            match self.steps.get(&r.step).and_then(|s| s.result.as_ref()) {
                Some(v) => v,
                None => {
                    return Err(format!(
                        "input names step {:?}, which has no result in this run (yet)",
                        r.step
                    ))
                }
            }
        };
        whole.pointer(&r.pointer).cloned().ok_or_else(|| {
            format!(
                "input: {:?} has nothing at JSON pointer {:?}",
                r.step, r.pointer
            )
        })
    }

    /// The input of a step entered from `from`.
    fn input_of(&self, input: Option<&Input>, from: Option<&str>) -> Result<Value, String> {
        let prev = || self.previous(from);
        match input {
            None => Ok(prev()),
            Some(Input::Pointer(p)) => prev().pointer(p).cloned().ok_or_else(|| {
                format!(
                    "input: the previous result has nothing at JSON pointer {p:?}: {}",
                    short(&prev())
                )
            }),
            Some(Input::Ref(r)) => self.resolve_ref(r),
            Some(Input::Merge(items)) => {
                let mut out = serde_json::Map::new();
                for r in items {
                    match self.resolve_ref(r)? {
                        Value::Object(o) => out.extend(o),
                        other => {
                            return Err(format!(
                                "input: merge needs objects, but {:?}{} is {}",
                                r.step,
                                r.pointer,
                                short(&other)
                            ))
                        }
                    }
                }
                Ok(Value::Object(out))
            }
            Some(Input::Object(items)) => items
                .iter()
                .map(|(k, r)| Ok((k.clone(), self.resolve_ref(r)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()
                .map(Value::Object),
        }
    }

    /// Enters `name` (reached from `from`, inside `scope`).
    fn enter(
        &mut self,
        def: &FlowDef,
        name: &str,
        from: Option<&str>,
        scope: Option<Scope>,
        now: i64,
    ) {
        if self.status != RunStatus::Running {
            return;
        }
        let Some(sd) = def.step(name) else {
            return self.fail(None, format!("unknown step {name:?}"));
        };
        if self.steps.contains_key(name) {
            return self.fail(
                Some(name),
                format!("step {name:?} reached twice in one run (from two parallel branches?)"),
            );
        }
        let input = match self.input_of(sd.input.as_ref(), from) {
            Ok(v) => v,
            Err(e) => {
                self.steps.insert(
                    name.to_string(),
                    record(Value::Null, now, scope, StepStatus::Failed),
                );
                return self.fail_step(name, format!("step {name:?}: {e}"), now);
            }
        };
        self.steps.insert(
            name.to_string(),
            record(input.clone(), now, scope.clone(), StepStatus::Running),
        );
        match sd.kind() {
            Kind::Invoke { .. } => {}
            Kind::Wait(w) => {
                let key = match &w.key {
                    None => None,
                    Some(p) => match input.pointer(p).and_then(key_text) {
                        Some(k) => Some(k),
                        None => {
                            return self.fail_step(
                                name,
                                format!(
                                    "step {name:?}: wait key: the input has nothing at JSON \
                                     pointer {p:?}: {}",
                                    short(&input)
                                ),
                                now,
                            )
                        }
                    },
                };
                let deadline_ms = now.saturating_add(w.timeout_ms() as i64);
                self.waits
                    .insert(name.to_string(), WaitState { key, deadline_ms });
            }
            Kind::Parallel { branches, .. } => {
                self.joins.insert(
                    name.to_string(),
                    JoinState {
                        results: vec![None; branches.len()],
                    },
                );
                for (i, b) in branches.iter().enumerate() {
                    let scope = Scope {
                        parallel: name.to_string(),
                        branch: i,
                    };
                    self.enter(def, b, Some(name), Some(scope), now);
                }
            }
            Kind::Choice { rules, default } => {
                let target = rules
                    .iter()
                    .find(|r| r.holds(&input))
                    .map(|r| r.next.as_str())
                    .or(default);
                let Some(target) = target else {
                    return self.fail_step(
                        name,
                        format!(
                            "step {name:?}: no choice rule holds and there is no default; input: {}",
                            short(&input)
                        ),
                        now,
                    );
                };
                let target = target.to_string();
                if let Some(r) = self.steps.get_mut(name) {
                    r.status = StepStatus::Succeeded;
                    r.result = Some(input);
                    r.chose = Some(target.clone());
                    r.ended_ms = Some(now);
                }
                self.enter(def, &target, Some(name), scope, now);
            }
        }
    }

    /// `step` finished: go to its next step, or end its branch (or the run).
    fn after(&mut self, def: &FlowDef, step: &str, now: i64) {
        let scope = self.steps.get(step).and_then(|r| r.scope.clone());
        match def.step(step).and_then(|s| s.next.clone()) {
            Some(next) => self.enter(def, &next, Some(step), scope, now),
            None => {
                let result = self
                    .steps
                    .get(step)
                    .and_then(|r| r.result.clone())
                    .unwrap_or(Value::Null);
                self.end_scope(def, scope, result, now)
            }
        }
    }

    fn end_scope(&mut self, def: &FlowDef, scope: Option<Scope>, result: Value, now: i64) {
        let Some(scope) = scope else {
            if self.status == RunStatus::Running {
                self.status = RunStatus::Succeeded;
                self.output = Some(result);
                // Waits of other branches no longer matter (the run has ended).
                self.waits.clear();
            }
            return;
        };
        let Some(join) = self.joins.get_mut(&scope.parallel) else {
            return;
        };
        if let Some(slot) = join.results.get_mut(scope.branch) {
            *slot = Some(result);
        }
        if join.results.iter().any(Option::is_none) {
            return;
        }
        let join = self.joins.remove(&scope.parallel).expect("present above");
        let p = scope.parallel.clone();
        let joined = match def.step(&p).map(|s| s.kind()) {
            Some(Kind::Parallel {
                branches,
                join: Join::Object,
            }) => Value::Object(
                branches
                    .iter()
                    .cloned()
                    .zip(join.results.into_iter().map(Option::unwrap_or_default))
                    .collect(),
            ),
            _ => Value::Array(
                join.results
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            ),
        };
        if let Some(r) = self.steps.get_mut(&p) {
            r.status = StepStatus::Succeeded;
            r.result = Some(joined);
            r.ended_ms = Some(now);
        }
        self.after(def, &p, now);
    }
}

fn record(input: Value, now: i64, scope: Option<Scope>, status: StepStatus) -> StepRecord {
    StepRecord {
        status,
        attempts: 0,
        input,
        result: None,
        error: None,
        chose: None,
        invocations: Vec::new(),
        started_ms: now,
        ended_ms: None,
        scope,
    }
}

/// A value for an error message, cut to a readable length.
fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(toml: &str) -> FlowDef {
        let d = FlowDef::parse(toml).unwrap();
        d.validate().unwrap();
        d
    }

    /// Runs every ready step with `f` until nothing is ready; returns the invocation order.
    fn drive(
        d: &FlowDef,
        s: &mut RunState,
        mut f: impl FnMut(&Ready) -> Result<Value, String>,
    ) -> Vec<String> {
        let mut order = Vec::new();
        loop {
            let ready = s.ready(d);
            if ready.is_empty() {
                return order;
            }
            for r in ready {
                s.attempt_started(&r.step, "inv");
                order.push(r.step.clone());
                match f(&r) {
                    Ok(v) => s.succeeded(d, &r.step, v, 1),
                    Err(e) => {
                        let _ = s.attempt_failed(d, &r.step, e, 1);
                    }
                }
            }
        }
    }

    fn tag(r: &Ready) -> Result<Value, String> {
        Ok(json!({ "tag": r.step, "in": r.input }))
    }

    #[test]
    fn sequence_passes_each_result_on() {
        let d = def(r#"
            [[steps]]
            name = "a"
            function = "f"
            next = "b"
            [[steps]]
            name = "b"
            function = "g:prod"
            input = "/in"
        "#);
        let mut s = RunState::start(&d, json!({ "x": 1 }), 0);
        assert_eq!(s.ready(&d)[0].function, "f");
        let order = drive(&d, &mut s, tag);
        assert_eq!(order, ["a", "b"]);
        assert_eq!(s.status, RunStatus::Succeeded);
        assert_eq!(s.output, Some(json!({ "tag": "b", "in": { "x": 1 } })));
    }

    #[test]
    fn parallel_joins_as_array_or_object_then_continues() {
        for (join, expected) in [
            (
                "array",
                json!([{ "tag": "p1", "in": 7 }, { "tag": "q", "in": { "tag": "p2", "in": 7 } }]),
            ),
            (
                "object",
                json!({ "p1": { "tag": "p1", "in": 7 }, "p2": { "tag": "q", "in": { "tag": "p2", "in": 7 } } }),
            ),
        ] {
            let d = def(&format!(
                r#"
                [[steps]]
                name = "fan"
                parallel = ["p1", "p2"]
                join = "{join}"
                next = "end"
                [[steps]]
                name = "p1"
                function = "f"
                [[steps]]
                name = "p2"
                function = "f"
                next = "q"
                [[steps]]
                name = "q"
                function = "f"
                [[steps]]
                name = "end"
                function = "f"
            "#
            ));
            let mut s = RunState::start(&d, json!(7), 0);
            assert_eq!(s.ready(&d).len(), 2, "both branches start at once");
            drive(&d, &mut s, tag);
            assert_eq!(s.status, RunStatus::Succeeded);
            assert_eq!(s.steps["fan"].result, Some(expected.clone()));
            assert_eq!(s.output, Some(json!({ "tag": "end", "in": expected })));
        }
    }

    #[test]
    fn choice_takes_the_first_rule_that_holds_or_the_default() {
        let d = def(r#"
            [[steps]]
            name = "pick"
            choice = [
              { pointer = "/kind", equals = "a", next = "a" },
              { pointer = "/n", gt = 10, next = "big" },
            ]
            default = "other"
            [[steps]]
            name = "a"
            function = "f"
            [[steps]]
            name = "big"
            function = "f"
            [[steps]]
            name = "other"
            function = "f"
        "#);
        for (input, step) in [
            (json!({ "kind": "a", "n": 50 }), "a"),
            (json!({ "kind": "b", "n": 50 }), "big"),
            (json!({ "kind": "b", "n": 5 }), "other"),
        ] {
            let mut s = RunState::start(&d, input.clone(), 0);
            assert_eq!(drive(&d, &mut s, tag), [step]);
            assert_eq!(s.steps["pick"].chose.as_deref(), Some(step));
            assert_eq!(s.output, Some(json!({ "tag": step, "in": input })));
        }
    }

    #[test]
    fn choice_without_default_fails_when_nothing_holds() {
        let d = def(r#"
            [[steps]]
            name = "pick"
            choice = [{ pointer = "/kind", equals = "a", next = "a" }]
            [[steps]]
            name = "a"
            function = "f"
        "#);
        let s = RunState::start(&d, json!({ "kind": "z" }), 0);
        assert_eq!(s.status, RunStatus::Failed);
        assert_eq!(s.failed_step.as_deref(), Some("pick"));
        assert!(s.error.as_deref().unwrap().contains("no choice rule holds"));
    }

    #[test]
    fn retries_then_failure_fails_the_run() {
        let d = def(r#"
            [[steps]]
            name = "a"
            function = "f"
            retries = 2
            backoff_ms = 10
            next = "b"
            [[steps]]
            name = "b"
            function = "f"
        "#);
        let mut s = RunState::start(&d, json!(null), 0);
        s.attempt_started("a", "i1");
        assert_eq!(
            s.attempt_failed(&d, "a", "boom".into(), 1),
            AfterFailure::Retry(std::time::Duration::from_millis(10))
        );
        assert_eq!(s.ready(&d)[0].attempt, 2);
        s.attempt_started("a", "i2");
        assert!(matches!(
            s.attempt_failed(&d, "a", "boom".into(), 1),
            AfterFailure::Retry(_)
        ));
        s.attempt_started("a", "i3");
        assert_eq!(
            s.attempt_failed(&d, "a", "boom".into(), 1),
            AfterFailure::RunFailed
        );
        assert_eq!(s.status, RunStatus::Failed);
        assert_eq!(s.steps["a"].attempts, 3);
        assert!(s
            .error
            .as_deref()
            .unwrap()
            .contains("after 3 attempt(s): boom"));
        assert!(s.ready(&d).is_empty());
        assert!(!s.steps.contains_key("b"));
    }

    #[test]
    fn retry_succeeding_continues() {
        let d = def("[[steps]]\nname = \"a\"\nfunction = \"f\"\nretries = 1\n");
        let mut s = RunState::start(&d, json!(1), 0);
        let mut n = 0;
        drive(&d, &mut s, |r| {
            n += 1;
            if n == 1 {
                Err("first fails".into())
            } else {
                tag(r)
            }
        });
        assert_eq!(s.status, RunStatus::Succeeded);
        assert_eq!(s.steps["a"].attempts, 2);
    }

    #[test]
    fn inputs_merge_and_build_objects_from_named_results() {
        let d = def(r#"
            [[steps]]
            name = "a"
            function = "f"
            next = "b"
            [[steps]]
            name = "b"
            function = "f"
            next = "m"
            [[steps]]
            name = "m"
            function = "f"
            input = { merge = [{ step = "a", pointer = "/in" }, { step = "b" }] }
            next = "o"
            [[steps]]
            name = "o"
            function = "f"
            input = { object = { first = { step = "a", pointer = "/tag" }, run = { step = "$input" } } }
        "#);
        let mut s = RunState::start(&d, json!({ "x": 1 }), 0);
        drive(&d, &mut s, tag);
        assert_eq!(s.status, RunStatus::Succeeded, "{:?}", s.error);
        assert_eq!(
            s.steps["m"].input,
            json!({ "x": 1, "tag": "b", "in": { "tag": "a", "in": { "x": 1 } } })
        );
        assert_eq!(
            s.steps["o"].input,
            json!({ "first": "a", "run": { "x": 1 } })
        );
    }

    #[test]
    fn a_missing_pointer_fails_the_step_with_its_name() {
        let d = def(r#"
            [[steps]]
            name = "a"
            function = "f"
            next = "b"
            [[steps]]
            name = "b"
            function = "f"
            input = "/nope"
        "#);
        let mut s = RunState::start(&d, json!(1), 0);
        drive(&d, &mut s, tag);
        assert_eq!(s.status, RunStatus::Failed);
        assert_eq!(s.failed_step.as_deref(), Some("b"));
        assert!(
            s.error.as_deref().unwrap().contains("\"/nope\""),
            "{:?}",
            s.error
        );
    }

    const WAITING: &str = r#"
        [[steps]]
        name = "ask"
        function = "f"
        next = "await"
        [[steps]]
        name = "await"
        wait = { key = "/in/order", timeout = "10s", on_timeout = "late", events = [
          { mqtt = "paid/+", key = "topic:2", next = "ship" },
          { mqtt = "cancel/+", key = "topic:2" },
        ] }
        next = "refund"
        [[steps]]
        name = "ship"
        function = "f"
        [[steps]]
        name = "refund"
        function = "f"
        [[steps]]
        name = "late"
        function = "f"
    "#;

    #[test]
    fn a_wait_takes_the_branch_of_the_event_that_came() {
        let d = def(WAITING);
        for (index, step) in [(0, "ship"), (1, "refund")] {
            let mut s = RunState::start(&d, json!({ "order": 7 }), 0);
            drive(&d, &mut s, tag);
            assert!(s.only_waiting(), "{s:?}");
            assert_eq!(s.waits["await"].key.as_deref(), Some("7"));
            // Entered at 1 (drive's clock): 10 s later.
            assert_eq!(s.waits["await"].deadline_ms, 10_001);
            // Round trip through the store's JSON while waiting.
            let mut s: RunState =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert!(s.timed_out(10_000).is_empty());
            let event = json!({ "index": index, "data": "ev" });
            let took = s.wait_ended(
                &d,
                "await",
                WaitOutcome::Event {
                    index,
                    event: event.clone(),
                },
                5,
            );
            assert_eq!(took.as_deref(), Some(step));
            assert!(s.waits.is_empty());
            assert_eq!(s.steps["await"].result, Some(event.clone()));
            assert_eq!(drive(&d, &mut s, tag), [step]);
            assert_eq!(s.output, Some(json!({ "tag": step, "in": event })));
            // A second outcome for the same wait changes nothing.
            assert_eq!(s.wait_ended(&d, "await", WaitOutcome::Timeout, 6), None);
        }
    }

    #[test]
    fn a_wait_times_out_to_its_branch_or_fails_the_run() {
        let d = def(WAITING);
        let mut s = RunState::start(&d, json!({ "order": "x" }), 0);
        drive(&d, &mut s, tag);
        assert_eq!(s.timed_out(10_001), ["await"]);
        let took = s.wait_ended(&d, "await", WaitOutcome::Timeout, 10_001);
        assert_eq!(took.as_deref(), Some("late"));
        assert_eq!(drive(&d, &mut s, tag), ["late"]);
        assert_eq!(s.status, RunStatus::Succeeded);
        // The late step gets the wait's input (the result before it).
        assert_eq!(s.output.unwrap()["in"]["in"], json!({ "order": "x" }));

        let d = def(&WAITING.replace(", on_timeout = \"late\"", "").replace(
            "[[steps]]\n        name = \"late\"\n        function = \"f\"\n",
            "",
        ));
        let mut s = RunState::start(&d, json!({ "order": "x" }), 0);
        drive(&d, &mut s, tag);
        s.wait_ended(&d, "await", WaitOutcome::Timeout, 10_000);
        assert_eq!(s.status, RunStatus::Failed);
        assert!(s
            .error
            .as_deref()
            .unwrap()
            .contains("no event came within 10s"));
        assert!(s.waits.is_empty());
    }

    #[test]
    fn a_wait_in_a_parallel_branch_holds_the_join_until_its_event() {
        let d = def(r#"
            [[steps]]
            name = "fan"
            parallel = ["work", "await"]
            join = "object"
            [[steps]]
            name = "work"
            function = "f"
            [[steps]]
            name = "await"
            wait = { timeout = "1m", events = [{ mqtt = "go" }] }
        "#);
        let mut s = RunState::start(&d, json!(1), 0);
        assert!(!s.only_waiting(), "the function branch is ready");
        assert_eq!(drive(&d, &mut s, tag), ["work"]);
        assert!(s.only_waiting());
        assert_eq!(s.waits["await"].key, None);
        let ev = json!({ "index": 0, "data": "go" });
        // No `next` on the event or the step: the branch ends with the event.
        assert_eq!(
            s.wait_ended(
                &d,
                "await",
                WaitOutcome::Event {
                    index: 0,
                    event: ev.clone()
                },
                2
            ),
            None
        );
        assert_eq!(s.status, RunStatus::Succeeded);
        assert_eq!(
            s.output,
            Some(json!({ "work": { "tag": "work", "in": 1 }, "await": ev }))
        );
    }

    #[test]
    fn a_wait_without_its_key_in_the_input_fails_the_step() {
        let d = def(WAITING);
        let mut s = RunState::start(&d, json!({ "other": 1 }), 0);
        drive(&d, &mut s, tag);
        assert_eq!(s.status, RunStatus::Failed);
        assert_eq!(s.failed_step.as_deref(), Some("await"));
        assert!(
            s.error.as_deref().unwrap().contains("\"/in/order\""),
            "{:?}",
            s.error
        );
    }

    #[test]
    fn state_round_trips_through_json_mid_run() {
        let d = def(r#"
            [[steps]]
            name = "fan"
            parallel = ["p1", "p2"]
            [[steps]]
            name = "p1"
            function = "f"
            [[steps]]
            name = "p2"
            function = "f"
        "#);
        let mut s = RunState::start(&d, json!(1), 0);
        s.attempt_started("p1", "i");
        s.succeeded(&d, "p1", json!("one"), 1);
        let stored = serde_json::to_string(&s).unwrap();
        let mut back: RunState = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, s);
        let ready = back.ready(&d);
        assert_eq!(ready.len(), 1, "only the unfinished branch runs again");
        assert_eq!(ready[0].step, "p2");
        back.succeeded(&d, "p2", json!("two"), 2);
        assert_eq!(back.output, Some(json!(["one", "two"])));
    }
}
