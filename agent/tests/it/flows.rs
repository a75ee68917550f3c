//! Flows (docs/flows.md) on a real agent: definitions through the CLI, runs of the
//! `flow-step` example (which answers `{"tag": TAG, "in": INPUT}`, so results show which steps
//! ran in what order), triggers, failures with retries and on-failure, and a restart mid-run.

use crate::daemon_support::{now_ms, Agent};
use crate::support::example_path;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Creates `flow-step` functions named after their tags (with extra spec lines).
fn steps(a: &Agent, tags: &[&str], extra: &str) {
    for t in tags {
        let spec = format!("[config]\ntag = \"{t}\"\n{extra}");
        a.create(t, &example_path("flow_step"), Some(&spec));
    }
}

/// Creates flow `name` from TOML text; returns the CLI output.
fn flow(a: &Agent, name: &str, toml: &str) {
    let file = a.write(&format!("{name}.flow.toml"), toml);
    let out = a.cli(&["flow", "create", "--name", name, &file]);
    assert_eq!(out.ok().trim(), name);
}

/// `flow start NAME --data DATA --wait --json` → the run.
fn start_wait(a: &Agent, name: &str, data: &str) -> Value {
    let out = a.cli(&[
        "flow", "start", name, "--data", data, "--wait", "60s", "--json",
    ]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("flow start {name}: {e}: {out:?}"))
}

fn run_json(a: &Agent, id: &str) -> Value {
    a.cli(&["flow", "run", id, "--json"]).json()
}

/// Log lines of `function` mentioning `needle`.
fn count_logs(a: &Agent, function: &str, needle: &str) -> usize {
    let v = a
        .http()
        .get(&format!("/v1/logs?function={function}&limit=10000"))
        .json();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["text"].as_str().unwrap_or("").contains(needle))
        .count()
}

#[test]
fn sequence_choice_parallel_and_pointer_inputs() {
    let a = Agent::start("flows-constructs");
    steps(
        &a,
        &["a", "b", "c", "p1", "p2", "big", "small", "other"],
        "",
    );
    // Sequence with a pointer input: b gets only `in` of a's result.
    flow(
        &a,
        "seq",
        r#"
description = "a then b then c"
[[steps]]
name = "first"
function = "a"
next = "second"
[[steps]]
name = "second"
function = "b"
input = "/in"
next = "third"
[[steps]]
name = "third"
function = "c"
input = { merge = [{ step = "$input" }, { step = "first", pointer = "/in" }, { step = "second" }] }
"#,
    );
    let run = start_wait(&a, "seq", r#"{"order": 7}"#);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        run["state"]["steps"]["second"]["result"],
        json!({ "tag": "b", "in": { "order": 7 } })
    );
    assert_eq!(
        run["state"]["output"],
        json!({ "tag": "c", "in": { "order": 7, "tag": "b", "in": { "order": 7 } } })
    );
    // Each step's invocation carries the run id.
    let id = run["id"].as_str().unwrap();
    let inv = run["state"]["steps"]["first"]["invocations"][0]
        .as_str()
        .unwrap();
    assert!(inv.starts_with(id), "{inv}");
    let inv_logs = a
        .http()
        .get(&format!("/v1/logs?invocation={inv}&limit=100"))
        .json();
    assert!(
        inv_logs["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"] == "flow-step a ran"),
        "{inv_logs:#}"
    );
    // The table view names every step.
    let table = a.cli(&["flow", "run", id]).ok();
    for s in ["first", "second", "third", "succeeded"] {
        assert!(table.contains(s), "{table}");
    }

    // Choice on a field of a result, with a default.
    flow(
        &a,
        "pick",
        r#"
[[steps]]
name = "classify"
function = "a"
next = "route"
[[steps]]
name = "route"
choice = [
  { pointer = "/in/size", gt = 100, next = "big" },
  { pointer = "/in/size", in = [1, 2, 3], next = "small" },
]
default = "other"
[[steps]]
name = "big"
function = "big"
[[steps]]
name = "small"
function = "small"
[[steps]]
name = "other"
function = "other"
"#,
    );
    for (size, tag) in [("500", "big"), ("2", "small"), ("50", "other")] {
        let run = start_wait(&a, "pick", &format!(r#"{{"size": {size}}}"#));
        assert_eq!(run["status"], "succeeded", "{run:#}");
        assert_eq!(run["state"]["output"]["tag"], tag, "size {size}: {run:#}");
        assert_eq!(run["state"]["steps"]["route"]["chose"], tag);
        let others: Vec<&str> = ["big", "small", "other"]
            .into_iter()
            .filter(|t| *t != tag)
            .collect();
        for o in others {
            assert!(run["state"]["steps"].get(o).is_none(), "{o} ran: {run:#}");
        }
    }

    // Parallel fan-out joined as an array (in listed order), then a step on the join.
    flow(
        &a,
        "fan",
        r#"
[[steps]]
name = "split"
parallel = ["left", "right"]
next = "join"
[[steps]]
name = "left"
function = "p1"
[[steps]]
name = "right"
function = "p2"
next = "right2"
[[steps]]
name = "right2"
function = "b"
input = "/in"
[[steps]]
name = "join"
function = "c"
"#,
    );
    let run = start_wait(&a, "fan", "5");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        run["state"]["output"],
        json!({ "tag": "c", "in": [{ "tag": "p1", "in": 5 }, { "tag": "b", "in": 5 }] })
    );

    // Runs are listed with their state.
    let runs = a.cli(&["flow", "runs", "pick", "--json"]).json();
    assert_eq!(runs.as_array().unwrap().len(), 3);
    let table = a.cli(&["flow", "runs", "pick"]).ok();
    assert_eq!(table.matches("succeeded").count(), 3, "{table}");
    let list = a.cli(&["flow", "list"]).ok();
    for f in ["seq", "pick", "fan"] {
        assert!(list.contains(f), "{list}");
    }
}

#[test]
fn definitions_are_validated_with_errors_naming_step_and_field() {
    let a = Agent::start("flows-validate");
    steps(&a, &["a"], "");
    let cases = [
        (
            "[[steps]]\nname = \"s\"\nfunction = \"nope\"\n",
            "step \"s\": unknown function \"nope\"",
        ),
        (
            "[[steps]]\nname = \"s\"\nfunction = \"a\"\nnext = \"t\"\n[[steps]]\nname = \"t\"\nfunction = \"a\"\nnext = \"s\"\n",
            "cycle: s -> t -> s",
        ),
        (
            "[[steps]]\nname = \"s\"\nfunction = \"a\"\ninput = \"in\"\n",
            "step \"s\": input: bad JSON pointer",
        ),
        (
            "[[steps]]\nname = \"s\"\nfunction = \"a\"\nnext = \"zz\"\n",
            "next names unknown step \"zz\"",
        ),
        (
            "[[steps]]\nname = \"s\"\nfunction = \"a\"\nretry = 2\n",
            "unknown field `retry`",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = a.write(&format!("bad{i}.toml"), text);
        a.cli(&["flow", "create", "--name", "bad", &file])
            .fails(1, &[needle]);
    }
    a.cli(&["flow", "get", "bad"]).fails(1, &["not found"]);
    // JSON files work too, and a disabled flow starts nothing.
    let file = a.write(
        "ok.json",
        r#"{"name": "ok", "steps": [{"name": "s", "function": "a"}]}"#,
    );
    a.cli(&["flow", "create", &file]).ok();
    a.cli(&["flow", "disable", "ok"]).ok();
    a.cli(&["flow", "start", "ok"]).fails(1, &["disabled"]);
    a.cli(&["flow", "enable", "ok"]).ok();
    let run = start_wait(&a, "ok", "1");
    assert_eq!(run["status"], "succeeded");
    a.cli(&["flow", "delete", "ok"]).ok();
    a.cli(&["flow", "start", "ok"]).fails(1, &["not found"]);
}

#[test]
fn a_failing_step_retries_then_fails_the_run_to_its_on_failure_destination() {
    let a = Agent::start("flows-fail");
    steps(&a, &["a"], "");
    steps(&a, &["broken"], "fail = \"1\"\n");
    // The failure report goes to a function destination: `a` wraps it, and its invocation
    // (source `flow`) is visible in the logs.
    steps(&a, &["report"], "");
    flow(
        &a,
        "fails",
        r#"
on_failure = "function:report"
[[steps]]
name = "ok"
function = "a"
next = "bad"
[[steps]]
name = "bad"
function = "broken"
retries = 2
backoff_ms = 50
next = "never"
[[steps]]
name = "never"
function = "a"
"#,
    );
    let out = a.cli(&["flow", "start", "fails", "--data", "{}", "--wait", "60s"]);
    out.fails(
        1,
        &[
            "failed",
            "step \"bad\" failed after 3 attempt(s)",
            "failing as configured",
        ],
    );
    let runs = a.cli(&["flow", "runs", "fails", "--json"]).json();
    let run = &runs[0];
    assert_eq!(run["status"], "failed");
    assert_eq!(run["state"]["failed_step"], "bad");
    assert_eq!(run["state"]["steps"]["bad"]["attempts"], 3);
    assert_eq!(
        run["state"]["steps"]["bad"]["invocations"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert!(run["state"]["steps"].get("never").is_none());
    assert_eq!(count_logs(&a, "broken", "flow-step broken ran"), 3);
    // The on-failure destination got the report.
    a.poll("the on-failure report", WAIT, || {
        (count_logs(&a, "report", "flow-step report ran") == 1).then_some(())
    });
    let id = run["id"].as_str().unwrap();
    let flow_logs = a
        .http()
        .get("/v1/logs?function=flow:fails&limit=100")
        .json();
    assert!(
        flow_logs["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"]
                .as_str()
                .unwrap()
                .starts_with(&format!("run {id} failed"))),
        "{flow_logs:#}"
    );
}

#[test]
fn a_mapping_starts_runs_of_a_flow() {
    let a = Agent::start("flows-mapping");
    steps(&a, &["a", "b"], "");
    flow(
        &a,
        "hooked",
        "[[steps]]\nname = \"one\"\nfunction = \"a\"\nnext = \"two\"\n[[steps]]\nname = \"two\"\nfunction = \"b\"\n",
    );
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "flow:nope",
        "--http",
        "/x",
    ])
    .fails(1, &["flow \"nope\" not found"]);
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "flow:hooked",
        "--http",
        "/go",
    ])
    .ok();
    let http = crate::daemon_support::Http::new(&a.http_url, None);
    let mut started = None;
    a.poll("the mapping to be live", WAIT, || {
        let r = http.send(
            "POST",
            "/go",
            &[("content-type", "application/json")],
            br#"{"n": 1}"#,
        );
        if r.status == 200 {
            started = Some(r.json());
            Some(())
        } else {
            None
        }
    });
    let id = started.unwrap()["run"].as_str().unwrap().to_string();
    let run = a.poll("the run to end", WAIT, || {
        let r = run_json(&a, &id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(run["trigger"].as_str().unwrap().starts_with("mapping:"));
    assert_eq!(
        run["state"]["output"],
        json!({ "tag": "b", "in": { "tag": "a", "in": { "n": 1 } } })
    );
}

#[test]
fn a_restart_mid_run_continues_without_rerunning_finished_steps() {
    let mut a = Agent::start("flows-restart");
    steps(&a, &["a", "c"], "");
    // A slow step: the agent is killed while it runs.
    steps(
        &a,
        &["slow"],
        "spin_ms = \"3000\"\n[limits]\nfuel = 100000000000\ntimeout_ms = 60000\n",
    );
    flow(
        &a,
        "long",
        r#"
[[steps]]
name = "first"
function = "a"
next = "fan"
[[steps]]
name = "fan"
parallel = ["quick", "sleepy"]
next = "last"
[[steps]]
name = "quick"
function = "c"
[[steps]]
name = "sleepy"
function = "slow"
[[steps]]
name = "last"
function = "c"
input = "/1"
"#,
    );
    let id = a
        .cli(&["flow", "start", "long", "--data", "[1]"])
        .ok()
        .trim()
        .to_string();
    // Wait until `first` and `quick` are stored as done and `sleepy` is running.
    a.poll("the run to reach the slow step", WAIT, || {
        let r = run_json(&a, &id);
        let s = &r["state"]["steps"];
        (s["quick"]["status"] == "succeeded" && s["sleepy"]["status"] == "running").then_some(())
    });
    let t0 = now_ms();
    a.kill9();
    a.restart();
    let run = a.poll("the run to end after the restart", WAIT, || {
        let r = run_json(&a, &id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        run["state"]["output"],
        json!({ "tag": "c", "in": { "tag": "slow", "in": { "tag": "a", "in": [1] } } })
    );
    // Finished steps ran once; the interrupted one ran again after the restart.
    assert_eq!(count_logs(&a, "a", "flow-step a ran"), 1);
    assert_eq!(
        count_logs(&a, "c", "flow-step c ran"),
        2,
        "quick once, last once"
    );
    let slow_runs = count_logs(&a, "slow", "flow-step slow ran");
    assert!((1..=2).contains(&slow_runs), "{slow_runs}");
    assert!(
        run["state"]["steps"]["sleepy"]["ended_ms"]
            .as_i64()
            .unwrap()
            > t0 as i64
    );
}

#[test]
fn mqtt_messages_start_runs_whose_result_goes_to_a_topic() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{Client, Event, MqttOptions};
    let prefix = format!("edgefn-it/flows-{}-{}", std::process::id(), now_ms());
    let a = Agent::start_with("flows-mqtt", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    steps(&a, &["a", "b"], "");
    flow(
        &a,
        "viamqtt",
        &format!(
            "on_success = \"topic:{prefix}/done\"\n\
             [[steps]]\nname = \"one\"\nfunction = \"a\"\nnext = \"two\"\n\
             [[steps]]\nname = \"two\"\nfunction = \"b\"\ninput = \"/in\"\n"
        ),
    );
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "flow:viamqtt",
        "--mqtt",
        &format!("{prefix}/in/+"),
        "--qos",
        "1",
    ])
    .ok();
    let mut o = MqttOptions::new(prefix.replace('/', "-"), "127.0.0.1", 1883);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(o, 64);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for ev in connection.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p.payload.to_vec()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    client
        .subscribe(format!("{prefix}/done"), QoS::AtLeastOnce)
        .unwrap();
    // Publish until the agent's subscription is live and a run's result comes back.
    let got = a.poll("a flow result on the done topic", WAIT, || {
        client
            .publish(
                format!("{prefix}/in/dev1"),
                QoS::AtLeastOnce,
                false,
                br#"{"temp": 21}"#.to_vec(),
            )
            .unwrap();
        rx.recv_timeout(Duration::from_millis(500)).ok()
    });
    let v: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(v, json!({ "tag": "b", "in": { "temp": 21 } }));
    let runs = a.cli(&["flow", "runs", "viamqtt", "--json"]).json();
    let runs = runs.as_array().unwrap();
    assert!(!runs.is_empty());
    assert!(runs
        .iter()
        .all(|r| r["trigger"].as_str().unwrap().starts_with("mapping:m-")));
}
