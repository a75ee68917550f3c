//! A flow definition (docs/flows.md): steps that invoke functions, parallel fan-outs joined
//! back, and choices on a field of a result, as written in a TOML or JSON file, and its
//! validation (every message names the step and field at fault).
//!
//! A step is one of three kinds, told apart by which field it has:
//! - `function = "NAME[:QUALIFIER]"`: invoke it with the step's input; its JSON answer is the
//!   step's result. `retries` and `backoff_ms` apply.
//! - `parallel = ["a", "b"]`: start one branch per listed step (each follows its `next` until a
//!   step without one); the result joins the branches' results (`join = "array"`, the default,
//!   in listed order; or `"object"`, keyed by the branch's first step).
//! - `choice = [{ pointer, equals | not_equals | in | exists | gt | gte | lt | lte, next }]`:
//!   the first rule that holds on the input picks the next step, else `default`; the input
//!   passes through as the result.
//!
//! Shared by the agent (which re-exports it as `edgefn_agent::flows::definition`) and the
//! cloud's registry (`edgefn flow create`), so both parse the same files and refuse the same
//! definitions with the same words. The checks that need a store (the functions a flow invokes
//! exist) are each side's.
//! - `wait = { events = [...], timeout, on_timeout, key }`: the run waits for one of the events
//!   (correlated to the run by `key`) and takes that event's `next`, or `on_timeout`
//!   ([`super::flow_trigger::WaitDef`]).
//!
//! A flow may also have a `[trigger]` ([`super::flow_trigger::TriggerDef`]): `any` of several event
//! sources, or `all` of them within a window, correlated by a key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::flow_trigger::{TriggerDef, WaitDef};
use super::mapping::Destination;
use super::names::{name_reason, qualifier_reason};

/// Most retries of a step.
pub const MAX_RETRIES: u32 = 10;
/// Most steps in a flow.
pub const MAX_STEPS: usize = 256;
/// Default first retry delay of a step (doubling per retry, capped at [`MAX_BACKOFF_MS`]).
pub const DEFAULT_BACKOFF_MS: u64 = 200;
/// Longest delay between two attempts of a step.
pub const MAX_BACKOFF_MS: u64 = 60_000;
/// The input reference naming the run's own input.
pub const RUN_INPUT: &str = "$input";

/// A flow as written by its author (TOML or JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDef {
    /// The flow's name (the CLI's NAME argument wins when both are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The first step (default: the first listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// Where the final result goes: `topic:T` or `function:NAME[:QUALIFIER]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// Where a failed run's report goes (same forms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
    /// Event sources that start runs: `any` of them, or `all` within a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerDef>,
    pub steps: Vec<StepDef>,
}

/// One step; exactly one of `function`, `parallel`, `choice`, `wait`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<Vec<String>>,
    /// How a parallel step joins its branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<Rule>>,
    /// A choice's step when no rule holds (without it, that fails the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Wait for an event (or a timeout) and branch on which came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitDef>,
    /// What the step gets (default: the result of the step before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Input>,
    /// The step after this one (none: the flow, or the parallel branch, ends here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Attempts after the first (function steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Delay before the first retry, doubling after each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
}

/// How a parallel step combines its branches' results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Join {
    /// `[r0, r1, ...]` in the listed order.
    #[default]
    Array,
    /// `{"first-step-of-branch": r, ...}`.
    Object,
}

/// One rule of a choice: a condition on the value at `pointer` in the input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// JSON pointer into the choice's input (`""` is the whole input).
    pub pointer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_equals: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// The step taken when the rule holds.
    pub next: String,
}

impl Rule {
    /// How many conditions the rule has (exactly one is valid).
    fn conditions(&self) -> usize {
        [
            self.equals.is_some(),
            self.not_equals.is_some(),
            self.one_of.is_some(),
            self.exists.is_some(),
            self.gt.is_some(),
            self.gte.is_some(),
            self.lt.is_some(),
            self.lte.is_some(),
        ]
        .iter()
        .filter(|c| **c)
        .count()
    }

    /// Whether the rule holds on `input`.
    pub fn holds(&self, input: &Value) -> bool {
        let v = input.pointer(&self.pointer);
        let num = |f: fn(f64, f64) -> bool, bound: f64| {
            v.and_then(Value::as_f64).is_some_and(|x| f(x, bound))
        };
        if let Some(e) = &self.equals {
            return v == Some(e);
        }
        if let Some(e) = &self.not_equals {
            return v != Some(e);
        }
        if let Some(set) = &self.one_of {
            return v.is_some_and(|v| set.contains(v));
        }
        if let Some(e) = self.exists {
            return v.is_some() == e;
        }
        if let Some(b) = self.gt {
            return num(|x, b| x > b, b);
        }
        if let Some(b) = self.gte {
            return num(|x, b| x >= b, b);
        }
        if let Some(b) = self.lt {
            return num(|x, b| x < b, b);
        }
        if let Some(b) = self.lte {
            return num(|x, b| x <= b, b);
        }
        false
    }
}

/// A value taken from a step's result (or the run's input, step `$input`), at a JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ref {
    pub step: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pointer: String,
}

/// A step's input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Input {
    /// `"/a/b"`: part of the previous step's result.
    Pointer(String),
    /// `{ step = "s", pointer = "/a" }`: (part of) a named step's result.
    Ref(Ref),
    /// `{ merge = [ref, ...] }`: objects merged key by key, later ones winning.
    Merge(Vec<Ref>),
    /// `{ object = { key = ref, ... } }`: an object built from several results.
    Object(BTreeMap<String, Ref>),
}

const INPUT_FORMS: &str = "expected a JSON pointer string such as \"/order\", \
     {step, pointer}, {merge = [{step, pointer}, ...]} or {object = {KEY = {step, pointer}, ...}}";

impl TryFrom<Value> for Input {
    type Error = String;

    fn try_from(v: Value) -> Result<Input, String> {
        let as_ref = |v: Value| -> Result<Ref, String> {
            serde_json::from_value(v).map_err(|e| format!("{e} ({INPUT_FORMS})"))
        };
        match v {
            Value::String(p) => Ok(Input::Pointer(p)),
            Value::Object(mut o) if o.len() == 1 && o.contains_key("merge") => {
                match o.remove("merge") {
                    Some(Value::Array(items)) => Ok(Input::Merge(
                        items.into_iter().map(as_ref).collect::<Result<_, _>>()?,
                    )),
                    _ => Err(format!("`merge` must be a list; {INPUT_FORMS}")),
                }
            }
            Value::Object(mut o) if o.len() == 1 && o.contains_key("object") => {
                match o.remove("object") {
                    Some(Value::Object(items)) => Ok(Input::Object(
                        items
                            .into_iter()
                            .map(|(k, v)| Ok((k, as_ref(v)?)))
                            .collect::<Result<_, String>>()?,
                    )),
                    _ => Err(format!("`object` must be a table/object; {INPUT_FORMS}")),
                }
            }
            v @ Value::Object(_) => Ok(Input::Ref(as_ref(v)?)),
            other => Err(format!("got {other}; {INPUT_FORMS}")),
        }
    }
}

impl From<Input> for Value {
    fn from(i: Input) -> Value {
        let r = |r: Ref| serde_json::to_value(r).expect("plain struct");
        match i {
            Input::Pointer(p) => Value::String(p),
            Input::Ref(x) => r(x),
            Input::Merge(items) => {
                serde_json::json!({ "merge": items.into_iter().map(r).collect::<Vec<_>>() })
            }
            Input::Object(items) => serde_json::json!({
                "object": items.into_iter().map(|(k, v)| (k, r(v))).collect::<serde_json::Map<_, _>>()
            }),
        }
    }
}

/// What a step does, once validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind<'a> {
    Invoke {
        function: &'a str,
        qualifier: &'a str,
    },
    Parallel {
        branches: &'a [String],
        join: Join,
    },
    Choice {
        rules: &'a [Rule],
        default: Option<&'a str>,
    },
    Wait(&'a WaitDef),
}

impl StepDef {
    /// The step's kind (call on validated definitions only).
    pub fn kind(&self) -> Kind<'_> {
        if let Some(f) = &self.function {
            let (function, qualifier) = f.split_once(':').unwrap_or((f, "latest"));
            Kind::Invoke {
                function,
                qualifier,
            }
        } else if let Some(b) = &self.parallel {
            Kind::Parallel {
                branches: b,
                join: self.join.unwrap_or_default(),
            }
        } else if let Some(w) = &self.wait {
            Kind::Wait(w)
        } else {
            Kind::Choice {
                rules: self.choice.as_deref().unwrap_or_default(),
                default: self.default.as_deref(),
            }
        }
    }

    /// Delay before retry `n` (1-based).
    pub fn backoff(&self, n: u32) -> std::time::Duration {
        let base = self.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS);
        std::time::Duration::from_millis(
            base.saturating_mul(1u64 << n.saturating_sub(1).min(16))
                .min(MAX_BACKOFF_MS),
        )
    }

    /// The steps this one may lead to (next, branches, choice targets).
    fn edges(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.next.iter().map(String::as_str).collect();
        out.extend(self.parallel.iter().flatten().map(String::as_str));
        out.extend(self.choice.iter().flatten().map(|r| r.next.as_str()));
        out.extend(self.default.as_deref());
        out.extend(self.wait.iter().flat_map(|w| w.edges()));
        out
    }
}

/// Why a definition is invalid (the message names the step and field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flow: {0}")]
pub struct InvalidFlow(pub String);

fn bad<T>(msg: String) -> Result<T, InvalidFlow> {
    Err(InvalidFlow(msg))
}

/// Checks the syntax of a JSON pointer (RFC 6901): empty, or `/`-separated tokens where `~` is
/// only followed by `0` or `1`.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Ok(());
    }
    if !p.starts_with('/') {
        return Err(format!(
            "bad JSON pointer {p:?}: it must be empty or start with `/` (e.g. \"/order/id\")"
        ));
    }
    let b = p.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "bad JSON pointer {p:?}: `~` must be followed by 0 or 1 (`~0` is ~, `~1` is /)"
            ));
        }
    }
    Ok(())
}

impl FlowDef {
    /// Parses a definition: JSON when the text starts with `{`, TOML otherwise.
    pub fn parse(text: &str) -> Result<FlowDef, InvalidFlow> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| InvalidFlow(format!("bad JSON: {e}")))
        } else {
            toml::from_str(text).map_err(|e| InvalidFlow(format!("bad TOML: {e}")))
        }
    }

    /// The step called `name`.
    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The first step.
    pub fn start_step(&self) -> &str {
        self.start
            .as_deref()
            .unwrap_or_else(|| self.steps.first().map_or("", |s| s.name.as_str()))
    }

    /// The functions the steps invoke (`(name, qualifier)`), for existence checks.
    pub fn functions(&self) -> Vec<(&str, &str)> {
        self.steps
            .iter()
            .filter_map(|s| match s.kind() {
                Kind::Invoke {
                    function,
                    qualifier,
                } => Some((function, qualifier)),
                _ => None,
            })
            .collect()
    }

    /// Parsed `on_success` / `on_failure`.
    pub fn destinations(&self) -> (Option<Destination>, Option<Destination>) {
        let d = |t: &Option<String>| t.as_deref().and_then(|t| Destination::parse(t).ok());
        (d(&self.on_success), d(&self.on_failure))
    }

    /// Validates everything that does not need the store: names, kinds, references, pointers,
    /// conditions, destinations, cycles and unreachable steps.
    pub fn validate(&self) -> Result<(), InvalidFlow> {
        if self.steps.is_empty() {
            return bad("a flow needs at least one step (`[[steps]]`)".into());
        }
        if self.steps.len() > MAX_STEPS {
            return bad(format!(
                "{} steps is too many: at most {MAX_STEPS}",
                self.steps.len()
            ));
        }
        for (field, d) in [
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
        ] {
            if let Some(t) = d {
                Destination::parse(t).map_err(|e| InvalidFlow(format!("{field}: {e}")))?;
            }
        }
        if let Some(t) = &self.trigger {
            t.validate()?;
        }
        let mut names = HashSet::new();
        for s in &self.steps {
            name_reason(&s.name).map_err(|r| {
                InvalidFlow(format!(
                    "step name {:?}: invalid name {:?}: {r}",
                    s.name, s.name
                ))
            })?;
            if !names.insert(s.name.as_str()) {
                return bad(format!("two steps are named {:?}", s.name));
            }
        }
        let known = |step: &str, field: &str, target: &str| -> Result<(), InvalidFlow> {
            if names.contains(target) {
                Ok(())
            } else {
                bad(format!(
                    "step {step:?}: {field} names unknown step {target:?}"
                ))
            }
        };
        if let Some(start) = &self.start {
            if !names.contains(start.as_str()) {
                return bad(format!("start names unknown step {start:?}"));
            }
        }
        for s in &self.steps {
            let n = &s.name;
            let kinds = [
                s.function.is_some(),
                s.parallel.is_some(),
                s.choice.is_some(),
                s.wait.is_some(),
            ];
            match kinds.iter().filter(|k| **k).count() {
                1 => {}
                0 => {
                    return bad(format!(
                        "step {n:?} does nothing: give it `function`, `parallel`, `choice` or \
                         `wait`"
                    ))
                }
                _ => {
                    return bad(format!(
                        "step {n:?} has more than one of `function`, `parallel`, `choice`, \
                         `wait`: give exactly one"
                    ))
                }
            }
            let only = |field: &str, present: bool, kind: &str| -> Result<(), InvalidFlow> {
                if present {
                    bad(format!(
                        "step {n:?}: `{field}` only applies to {kind} steps"
                    ))
                } else {
                    Ok(())
                }
            };
            if let Some(f) = &s.function {
                let (name, q) = f.split_once(':').unwrap_or((f, "latest"));
                name_reason(name).map_err(|r| {
                    InvalidFlow(format!("step {n:?}: function: invalid name {name:?}: {r}"))
                })?;
                qualifier_reason(q).map_err(|r| {
                    InvalidFlow(format!(
                        "step {n:?}: function: invalid qualifier {q:?}: {r}"
                    ))
                })?;
                if s.retries.is_some_and(|r| r > MAX_RETRIES) {
                    return bad(format!(
                        "step {n:?}: retries {} is too many: at most {MAX_RETRIES}",
                        s.retries.unwrap_or_default()
                    ));
                }
                if s.backoff_ms.is_some_and(|b| b > MAX_BACKOFF_MS) {
                    return bad(format!(
                        "step {n:?}: backoff_ms is too long: at most {MAX_BACKOFF_MS}"
                    ));
                }
            } else {
                only("retries", s.retries.is_some(), "function")?;
                only("backoff_ms", s.backoff_ms.is_some(), "function")?;
            }
            only("join", s.join.is_some() && s.parallel.is_none(), "parallel")?;
            only(
                "default",
                s.default.is_some() && s.choice.is_none(),
                "choice",
            )?;
            if let Some(branches) = &s.parallel {
                if branches.is_empty() {
                    return bad(format!("step {n:?}: parallel needs at least one branch"));
                }
                let mut seen = HashSet::new();
                for b in branches {
                    known(n, "parallel", b)?;
                    if !seen.insert(b) {
                        return bad(format!("step {n:?}: parallel lists {b:?} twice"));
                    }
                }
            }
            if let Some(rules) = &s.choice {
                if rules.is_empty() {
                    return bad(format!("step {n:?}: choice needs at least one rule"));
                }
                for (i, r) in rules.iter().enumerate() {
                    let at = format!("step {n:?}: choice rule {}", i + 1);
                    check_pointer(&r.pointer).map_err(|e| InvalidFlow(format!("{at}: {e}")))?;
                    if r.conditions() != 1 {
                        return bad(format!(
                            "{at}: give exactly one condition of equals, not_equals, in, exists, \
                             gt, gte, lt, lte"
                        ));
                    }
                    known(n, &format!("choice rule {}: next", i + 1), &r.next)?;
                }
                if let Some(d) = &s.default {
                    known(n, "default", d)?;
                }
            }
            if let Some(next) = &s.next {
                known(n, "next", next)?;
            }
            if let Some(w) = &s.wait {
                w.validate(n, |t| names.contains(t))?;
            }
            match &s.input {
                None => {}
                Some(Input::Pointer(p)) => {
                    check_pointer(p).map_err(|e| InvalidFlow(format!("step {n:?}: input: {e}")))?
                }
                Some(Input::Ref(r)) => self.check_ref(n, r)?,
                Some(Input::Merge(items)) => {
                    if items.is_empty() {
                        return bad(format!("step {n:?}: input: merge needs at least one item"));
                    }
                    for r in items {
                        self.check_ref(n, r)?;
                    }
                }
                Some(Input::Object(items)) => {
                    for r in items.values() {
                        self.check_ref(n, r)?;
                    }
                }
            }
        }
        self.check_graph()
    }

    fn check_ref(&self, step: &str, r: &Ref) -> Result<(), InvalidFlow> {
        if r.step != RUN_INPUT && self.step(&r.step).is_none() {
            return bad(format!(
                "step {step:?}: input names unknown step {:?} (or use {RUN_INPUT:?} for the \
                 run's input)",
                r.step
            ));
        }
        if r.step == step {
            return bad(format!("step {step:?}: input names the step itself"));
        }
        check_pointer(&r.pointer).map_err(|e| InvalidFlow(format!("step {step:?}: input: {e}")))
    }

    /// No cycles, every step reachable from the start.
    fn check_graph(&self) -> Result<(), InvalidFlow> {
        let index: HashMap<&str, &StepDef> =
            self.steps.iter().map(|s| (s.name.as_str(), s)).collect();
        // Depth-first search with colours: 1 = on the current path, 2 = done.
        let mut colour: HashMap<&str, u8> = HashMap::new();
        for s in &self.steps {
            if colour.contains_key(s.name.as_str()) {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(s.name.as_str(), 0)];
            colour.insert(s.name.as_str(), 1);
            while let Some((name, i)) = stack.pop() {
                let edges = index[name].edges();
                if i < edges.len() {
                    stack.push((name, i + 1));
                    let to = edges[i];
                    match colour.get(to) {
                        Some(1) => {
                            let mut path: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                            let from = path.iter().position(|n| *n == to).unwrap_or(0);
                            path.drain(..from);
                            path.push(to);
                            return bad(format!(
                                "steps form a cycle: {} (flows run each step at most once)",
                                path.join(" -> ")
                            ));
                        }
                        Some(_) => {}
                        None => {
                            colour.insert(to, 1);
                            stack.push((to, 0));
                        }
                    }
                } else {
                    colour.insert(name, 2);
                }
            }
        }
        let mut reached = HashSet::new();
        let mut todo = vec![self.start_step()];
        while let Some(n) = todo.pop() {
            if reached.insert(n) {
                todo.extend(index[n].edges());
            }
        }
        if let Some(s) = self
            .steps
            .iter()
            .find(|s| !reached.contains(s.name.as_str()))
        {
            return bad(format!(
                "step {:?} is never reached from the start step {:?}",
                s.name,
                self.start_step()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        let def = FlowDef::parse(text).unwrap();
        def.validate().unwrap_err().to_string()
    }

    #[test]
    fn toml_and_json_parse_to_the_same_definition() {
        let toml = r#"
            on_failure = "topic:flows/failed"
            [[steps]]
            name = "a"
            function = "f:prod"
            input = "/order"
            retries = 2
            next = "b"
            [[steps]]
            name = "b"
            choice = [{ pointer = "/kind", equals = "x", next = "c" }]
            default = "c"
            [[steps]]
            name = "c"
            function = "g"
            input = { merge = [{ step = "a" }, { step = "$input", pointer = "/meta" }] }
        "#;
        let def = FlowDef::parse(toml).unwrap();
        def.validate().unwrap();
        let json = serde_json::to_string(&def).unwrap();
        assert_eq!(FlowDef::parse(&json).unwrap(), def);
        assert_eq!(
            def.steps[0].kind(),
            Kind::Invoke {
                function: "f",
                qualifier: "prod"
            }
        );
        assert_eq!(def.functions(), [("f", "prod"), ("g", "latest")]);
    }

    #[test]
    fn errors_name_the_step_and_field() {
        let cases = [
            ("[[steps]]\nname = \"a\"\n", "step \"a\" does nothing"),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\nnext = \"zz\"\n",
                "step \"a\": next names unknown step \"zz\"",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\ninput = \"order\"\n",
                "step \"a\": input: bad JSON pointer \"order\"",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\ninput = \"/a~2\"\n",
                "`~` must be followed by 0 or 1",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\nnext = \"b\"\n\
                 [[steps]]\nname = \"b\"\nfunction = \"f\"\nnext = \"a\"\n",
                "steps form a cycle: a -> b -> a",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\n[[steps]]\nname = \"b\"\nfunction = \"f\"\n",
                "step \"b\" is never reached",
            ),
            (
                "[[steps]]\nname = \"a\"\nchoice = [{ pointer = \"/x\", next = \"a\" }]\n",
                "choice rule 1: give exactly one condition",
            ),
            (
                "[[steps]]\nname = \"a\"\nparallel = [\"q\"]\n",
                "step \"a\": parallel names unknown step \"q\"",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\nretries = 99\n",
                "step \"a\": retries 99 is too many",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"bad name\"\n",
                "step \"a\": function: invalid name",
            ),
            (
                "on_failure = \"mail:x\"\n[[steps]]\nname = \"a\"\nfunction = \"f\"\n",
                "on_failure:",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\ninput = { step = \"nope\" }\n",
                "step \"a\": input names unknown step \"nope\"",
            ),
            (
                "[[steps]]\nname = \"a\"\nfunction = \"f\"\njoin = \"array\"\n",
                "`join` only applies to parallel steps",
            ),
        ];
        for (text, needle) in cases {
            let e = err(text);
            assert!(e.contains(needle), "{text}\n=> {e}\n(expected {needle:?})");
        }
        let e = FlowDef::parse("[[steps]]\nname = \"a\"\nfunction = \"f\"\nnxt = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nxt"), "{e}");
        let e = FlowDef::parse("[[steps]]\nname = \"a\"\nfunction = \"f\"\ninput = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON pointer string"), "{e}");
    }

    #[test]
    fn rules_evaluate_conditions() {
        let input = serde_json::json!({ "kind": "b", "n": 5, "tags": ["x"] });
        let rule = |extra: &str| -> Rule {
            serde_json::from_str(&format!(r#"{{"pointer": "/kind", "next": "s", {extra}}}"#))
                .unwrap()
        };
        assert!(rule(r#""equals": "b""#).holds(&input));
        assert!(!rule(r#""equals": "a""#).holds(&input));
        assert!(rule(r#""not_equals": "a""#).holds(&input));
        assert!(rule(r#""in": ["a", "b"]"#).holds(&input));
        assert!(rule(r#""exists": true"#).holds(&input));
        let mut n = rule(r#""gt": 4"#);
        n.pointer = "/n".into();
        assert!(n.holds(&input));
        n.gt = Some(5.0);
        assert!(!n.holds(&input));
        let mut missing = rule(r#""exists": false"#);
        missing.pointer = "/nope".into();
        assert!(missing.holds(&input));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s: StepDef =
            serde_json::from_str(r#"{"name": "a", "function": "f", "backoff_ms": 100}"#).unwrap();
        assert_eq!(s.backoff(1).as_millis(), 100);
        assert_eq!(s.backoff(3).as_millis(), 400);
        assert_eq!(s.backoff(30).as_millis() as u64, MAX_BACKOFF_MS);
    }
}
