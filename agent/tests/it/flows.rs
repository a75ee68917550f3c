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
fn a_stream_mapping_starts_one_run_per_batch_in_order() {
    let a = Agent::start("flows-stream");
    steps(&a, &["a"], "");
    flow(
        &a,
        "batched",
        "[[steps]]\nname = \"one\"\nfunction = \"a\"\n",
    );
    let lines: String = (1..=5).map(|n| format!("{{\"n\": {n}}}\n")).collect();
    let file = a.write("readings.jsonl", &lines);
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "flow:batched",
        "--stream-file",
        &file,
        "--batch-size",
        "2",
    ])
    .ok();
    // Every record reaches a run, each batch one run, in offset order.
    let runs = a.poll("runs of every record", WAIT, || {
        let runs = runs_of(&a, "batched");
        let records: usize = runs
            .iter()
            .map(|r| run_json(&a, r["id"].as_str().unwrap()))
            .filter(|r| r["status"] == "succeeded")
            .map(|r| r["state"]["output"]["in"].as_array().map_or(0, Vec::len))
            .sum();
        (records == 5).then_some(runs)
    });
    let mut seen = Vec::new();
    for r in runs.iter().rev() {
        let run = run_json(&a, r["id"].as_str().unwrap());
        assert!(
            run["trigger"].as_str().unwrap().starts_with("mapping:"),
            "{run:#}"
        );
        let batch = run["state"]["output"]["in"].as_array().unwrap().clone();
        assert!(batch.len() <= 2, "{run:#}");
        seen.extend(
            batch
                .iter()
                .map(|rec| rec["payload"]["n"].as_i64().unwrap()),
        );
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
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

/// A test's MQTT client: publishes at QoS 1 (a background thread drives the connection).
struct Mqtt {
    client: rumqttc::v5::Client,
}

impl Mqtt {
    fn connect(id: &str) -> Mqtt {
        use rumqttc::v5::{Client, MqttOptions};
        let mut o = MqttOptions::new(id.replace('/', "-"), "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(o, 256);
        std::thread::spawn(move || {
            for ev in connection.iter() {
                if ev.is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Mqtt { client }
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .unwrap();
    }
}

/// A topic prefix of two levels, unique to this test run.
fn prefix(tag: &str) -> String {
    format!("edgefn-it/flowev-{tag}-{}-{}", std::process::id(), now_ms())
}

fn flow_info(a: &Agent, name: &str) -> Value {
    a.cli(&["flow", "get", name, "--json"]).json()
}

fn runs_of(a: &Agent, name: &str) -> Vec<Value> {
    a.cli(&["flow", "runs", name, "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `flow get` until `f` holds on it.
fn until_flow(a: &Agent, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    a.poll(what, WAIT, || {
        let v = flow_info(a, name);
        f(&v).then_some(v)
    })
}

/// Polls `flow run ID` until the run has ended.
fn until_ended(a: &Agent, id: &str) -> Value {
    a.poll("the run to end", WAIT, || {
        let r = run_json(a, id);
        (r["status"] != "running").then_some(r)
    })
}

/// Publishes `payload` on `topic` every 200 ms until `done` gives a value.
fn publish_until<T>(
    a: &Agent,
    mqtt: &Mqtt,
    topic: &str,
    payload: &str,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
) -> T {
    let mut last = std::time::Instant::now() - Duration::from_secs(1);
    a.poll(what, WAIT, || {
        if last.elapsed() >= Duration::from_millis(200) {
            mqtt.publish(topic, payload);
            last = std::time::Instant::now();
        }
        done()
    })
}

#[test]
fn an_and_trigger_joins_the_events_of_all_sources_with_one_key_within_its_window() {
    let p = prefix("and");
    let a = Agent::start_with("flows-and", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    let mqtt = Mqtt::connect(&format!("{p}-pub"));
    steps(&a, &["a"], "");
    flow(
        &a,
        "joined",
        &format!(
            r#"
[trigger]
all = [{{ mqtt = "{p}/temp/+", name = "temp" }}, {{ mqtt = "{p}/door/+", name = "door" }}]
key = "topic:4"
window = "2s"
[[steps]]
name = "s"
function = "a"
"#
        ),
    );
    // Both subscriptions live: one partial match per key (w1, w2), never joined.
    publish_until(
        &a,
        &mqtt,
        &format!("{p}/temp/w1"),
        "1",
        "a temp partial",
        || (flow_info(&a, "joined")["partials"].as_u64() >= Some(1)).then_some(()),
    );
    publish_until(
        &a,
        &mqtt,
        &format!("{p}/door/w2"),
        "1",
        "a door partial",
        || (flow_info(&a, "joined")["partials"].as_u64() >= Some(2)).then_some(()),
    );
    // The window ends: both are dropped, counted and logged; no run started.
    let f = until_flow(&a, "joined", "the partials to expire", |v| {
        v["partials"] == 0 && v["partials_expired"].as_u64() >= Some(2)
    });
    let expired = f["partials_expired"].as_u64().unwrap();
    assert!(count_logs(&a, "flow:joined", "expired") >= 2);
    assert!(runs_of(&a, "joined").is_empty());

    // Different keys do not join.
    mqtt.publish(&format!("{p}/temp/k1"), r#"{"t": 21}"#);
    mqtt.publish(&format!("{p}/door/k2"), r#"{"open": true}"#);
    until_flow(&a, "joined", "two partials", |v| v["partials"] == 2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(runs_of(&a, "joined").is_empty());

    // The other source with the same key, within the window: one run with both events.
    mqtt.publish(&format!("{p}/door/k1"), r#"{"open": false}"#);
    let runs = a.poll("the joined run", WAIT, || {
        let r = runs_of(&a, "joined");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = until_ended(&a, runs[0]["id"].as_str().unwrap());
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(run["trigger"]
        .as_str()
        .unwrap()
        .starts_with("trigger:joined:"));
    let input = &run["state"]["input"];
    assert_eq!(input["key"], "k1", "{input:#}");
    assert_eq!(input["events"][0]["name"], "temp");
    assert_eq!(input["events"][0]["index"], 0);
    assert_eq!(input["events"][0]["source"], "mqtt");
    assert_eq!(input["events"][0]["subject"], format!("{p}/temp/k1"));
    assert_eq!(input["events"][0]["data"], json!({ "t": 21 }));
    assert_eq!(input["events"][1]["name"], "door");
    assert_eq!(input["events"][1]["subject"], format!("{p}/door/k1"));
    assert_eq!(input["events"][1]["data"], json!({ "open": false }));
    assert_eq!(run["state"]["output"], json!({ "tag": "a", "in": input }));

    // k2 never got its other event: its window ends, and a late temp/k2 starts over.
    let f = until_flow(&a, "joined", "k2's partial to expire", |v| {
        v["partials"] == 0
    });
    assert_eq!(f["partials_expired"].as_u64(), Some(expired + 1));
    mqtt.publish(&format!("{p}/temp/k2"), "2");
    until_flow(&a, "joined", "a new k2 partial", |v| v["partials"] == 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_of(&a, "joined").len(), 1);
    let shown = a.cli(&["flow", "get", "joined"]).ok();
    assert!(shown.contains("expired matches"), "{shown}");
}

#[test]
fn an_or_trigger_starts_one_run_per_event_of_any_source() {
    let p = prefix("or");
    let path = format!("/flowev-or-{}", std::process::id());
    let a = Agent::start_with("flows-or", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    let mqtt = Mqtt::connect(&format!("{p}-pub"));
    steps(&a, &["a"], "");
    flow(
        &a,
        "either",
        &format!(
            r#"
[trigger]
any = [{{ mqtt = "{p}/in/+", key = "topic:4" }}, {{ http = "{path}", name = "web" }}]
[[steps]]
name = "s"
function = "a"
"#
        ),
    );
    // HTTP: answered with the run's id.
    let http = crate::daemon_support::Http::new(&a.http_url, None);
    let started = a.poll("the HTTP source to be live", WAIT, || {
        let r = http.send(
            "POST",
            &path,
            &[("content-type", "application/json")],
            br#"{"n": 1}"#,
        );
        (r.status == 200).then(|| r.json())
    });
    let run = until_ended(&a, started["run"].as_str().unwrap());
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let input = &run["state"]["input"];
    assert_eq!(input["key"], Value::Null);
    assert_eq!(input["events"].as_array().unwrap().len(), 1);
    assert_eq!(input["events"][0]["index"], 1);
    assert_eq!(input["events"][0]["name"], "web");
    assert_eq!(input["events"][0]["source"], "http");
    assert_eq!(input["events"][0]["data"], json!({ "n": 1 }));

    // MQTT: once live, each message starts exactly one run.
    publish_until(
        &a,
        &mqtt,
        &format!("{p}/in/warm"),
        "0",
        "an MQTT run",
        || (runs_of(&a, "either").len() >= 2).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = runs_of(&a, "either").len();
    for i in 0..3 {
        mqtt.publish(&format!("{p}/in/dev{i}"), &format!(r#"{{"i": {i}}}"#));
    }
    a.poll("three more runs", WAIT, || {
        (runs_of(&a, "either").len() == before + 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let runs = runs_of(&a, "either");
    assert_eq!(runs.len(), before + 3);
    // The three newest (messages are processed concurrently, so in any order).
    let mut keys: Vec<String> = runs[..3]
        .iter()
        .map(|r| {
            let run = until_ended(&a, r["id"].as_str().unwrap());
            let ev = &run["state"]["input"]["events"][0];
            assert_eq!(ev["index"], 0, "{run:#}");
            let key = run["state"]["input"]["key"].as_str().unwrap().to_string();
            assert_eq!(
                ev["data"]["i"].to_string(),
                key.replace("dev", ""),
                "{run:#}"
            );
            key
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["dev0", "dev1", "dev2"]);

    // A schedule source; disabling the flow stops it.
    flow(
        &a,
        "ticks",
        "[trigger]\nany = [{ every = \"300ms\", name = \"tick\" }]\n\
         [[steps]]\nname = \"s\"\nfunction = \"a\"\n",
    );
    let runs = a.poll("two scheduled runs", WAIT, || {
        let r = runs_of(&a, "ticks");
        (r.len() >= 2).then_some(r)
    });
    let ev = &runs[0]["state"]["input"]["events"][0];
    assert_eq!(ev["source"], "schedule", "{ev:#}");
    assert_eq!(ev["name"], "tick");
    assert_eq!(ev["subject"], "trigger:ticks:0");
    a.cli(&["flow", "disable", "ticks"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    let stopped = runs_of(&a, "ticks").len();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(runs_of(&a, "ticks").len(), stopped, "no runs once disabled");
}

#[test]
fn an_and_partial_match_survives_kill_9_within_its_window() {
    let p = prefix("andkill");
    let mut a = Agent::start_with("flows-and-kill", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    let mqtt = Mqtt::connect(&format!("{p}-pub"));
    steps(&a, &["a"], "");
    flow(
        &a,
        "durable",
        &format!(
            r#"
[trigger]
all = [{{ mqtt = "{p}/x/+" }}, {{ mqtt = "{p}/y/+" }}]
key = "topic:4"
window = "30s"
[[steps]]
name = "s"
function = "a"
"#
        ),
    );
    publish_until(
        &a,
        &mqtt,
        &format!("{p}/x/warm"),
        "0",
        "the subscription",
        || (flow_info(&a, "durable")["partials"] == 1).then_some(()),
    );
    mqtt.publish(&format!("{p}/x/k1"), r#"{"from": "before"}"#);
    until_flow(&a, "durable", "the k1 partial", |v| v["partials"] == 2);
    a.kill9();
    a.restart();
    assert_eq!(flow_info(&a, "durable")["partials"], 2);
    // The persistent session keeps the subscription: the other half joins the stored half.
    mqtt.publish(&format!("{p}/y/k1"), r#"{"from": "after"}"#);
    let runs = a.poll("the joined run after the restart", WAIT, || {
        let r = runs_of(&a, "durable");
        (!r.is_empty()).then_some(r)
    });
    let run = until_ended(&a, runs[0]["id"].as_str().unwrap());
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let input = &run["state"]["input"];
    assert_eq!(input["key"], "k1");
    assert_eq!(input["events"][0]["data"], json!({ "from": "before" }));
    assert_eq!(input["events"][1]["data"], json!({ "from": "after" }));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runs_of(&a, "durable").len(), 1);
    assert_eq!(flow_info(&a, "durable")["partials"], 1, "warm stays");
}

/// A flow that asks, then waits for `paid/ORDER` (→ ship) or `cancel/ORDER` (→ refund), or
/// its timeout (→ late).
fn waiting_flow(p: &str, timeout: &str) -> String {
    format!(
        r#"
[[steps]]
name = "ask"
function = "a"
next = "await"
[[steps]]
name = "await"
wait = {{ key = "/in/order", timeout = "{timeout}", on_timeout = "late", events = [
  {{ mqtt = "{p}/paid/+", key = "topic:4", next = "ship" }},
  {{ mqtt = "{p}/cancel/+", key = "topic:4", next = "refund", name = "cancel" }},
] }}
[[steps]]
name = "ship"
function = "ship"
[[steps]]
name = "refund"
function = "refund"
[[steps]]
name = "late"
function = "late"
"#
    )
}

fn start_run(a: &Agent, flow: &str, data: &str) -> String {
    a.cli(&["flow", "start", flow, "--data", data])
        .ok()
        .trim()
        .to_string()
}

fn until_waiting(a: &Agent, id: &str) {
    a.poll("the run to wait", WAIT, || {
        let r = run_json(a, id);
        r["state"]["waits"]["await"].is_object().then_some(())
    });
}

#[test]
fn a_wait_step_takes_the_branch_of_the_event_that_came_and_survives_a_restart() {
    let p = prefix("wait");
    let mut a = Agent::start_with("flows-wait", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    let mqtt = Mqtt::connect(&format!("{p}-pub"));
    steps(&a, &["a", "ship", "refund", "late"], "");
    flow(&a, "order", &waiting_flow(&p, "5m"));
    let one = start_run(&a, "order", r#"{"order": "o1"}"#);
    let two = start_run(&a, "order", r#"{"order": "o2"}"#);
    until_waiting(&a, &one);
    until_waiting(&a, &two);
    // Cancel o1: run one takes the refund branch; run two (o2) goes on waiting.
    let run = publish_until(
        &a,
        &mqtt,
        &format!("{p}/cancel/o1"),
        r#"{"why": "changed mind"}"#,
        "run one to leave its wait",
        || {
            let r = run_json(&a, &one);
            (r["status"] != "running").then_some(r)
        },
    );
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let took = &run["state"]["steps"]["await"];
    assert_eq!(took["chose"], "refund", "{run:#}");
    assert_eq!(took["result"]["name"], "cancel");
    assert_eq!(took["result"]["key"], "o1");
    assert_eq!(took["result"]["data"], json!({ "why": "changed mind" }));
    assert_eq!(run["state"]["output"]["tag"], "refund");
    assert_eq!(run["state"]["output"]["in"]["index"], 1);
    assert!(run["state"]["steps"].get("ship").is_none());
    let r2 = run_json(&a, &two);
    assert_eq!(r2["status"], "running", "{r2:#}");
    assert!(r2["state"]["waits"]["await"].is_object());
    let table = a.cli(&["flow", "run", &two]).ok();
    assert!(
        table.contains("waiting for an event with key o2 until"),
        "{table}"
    );
    assert_eq!(count_logs(&a, "refund", "flow-step refund ran"), 1);

    // The waiting run survives kill -9, and the event after the restart resumes it (a disabled
    // flow starts no runs, but its running runs go on).
    a.cli(&["flow", "disable", "order"]).ok();
    a.kill9();
    a.restart();
    assert_eq!(run_json(&a, &two)["status"], "running");
    let run = publish_until(
        &a,
        &mqtt,
        &format!("{p}/paid/o2"),
        r#"{"amount": 5}"#,
        "run two to leave its wait",
        || {
            let r = run_json(&a, &two);
            (r["status"] != "running").then_some(r)
        },
    );
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["state"]["steps"]["await"]["chose"], "ship");
    assert_eq!(run["state"]["output"]["tag"], "ship");
    assert_eq!(run["state"]["output"]["in"]["data"], json!({ "amount": 5 }));
    // Each step ran once (the ask steps before the restart are not run again).
    assert_eq!(count_logs(&a, "a", "flow-step a ran"), 2);
    assert_eq!(count_logs(&a, "ship", "flow-step ship ran"), 1);
    assert_eq!(count_logs(&a, "late", "flow-step late ran"), 0);
}

#[test]
fn a_wait_step_takes_its_timeout_branch_when_no_event_comes() {
    let p = prefix("waitlate");
    let a = Agent::start_with("flows-wait-late", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    steps(&a, &["a", "ship", "refund", "late"], "");
    flow(&a, "hurry", &waiting_flow(&p, "1s"));
    let id = start_run(&a, "hurry", r#"{"order": "o9"}"#);
    let run = until_ended(&a, &id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let took = &run["state"]["steps"]["await"];
    assert_eq!(took["chose"], "late", "{run:#}");
    let waited = took["ended_ms"].as_i64().unwrap() - took["started_ms"].as_i64().unwrap();
    assert!(waited >= 1000, "{waited}");
    // The timeout branch gets the wait's input: the ask step's result.
    assert_eq!(
        run["state"]["output"],
        json!({ "tag": "late", "in": { "tag": "a", "in": { "order": "o9" } } })
    );
    assert!(count_logs(&a, "flow:hurry", "timed out") >= 1);
}

/// 300 keys: each key's first source committed, then the second sources' QoS 1 messages with
/// the agent killed (SIGKILL) mid-burst and restarted on the same session. Every key joins
/// exactly once: 300 runs, one per key, and no partial match left over (a message counted twice
/// would start a second partial match or a second run).
#[test]
fn and_joins_are_exactly_once_across_kill_9() {
    const N: usize = 300;
    let p = prefix("andonce");
    let mut a = Agent::start_with("flows-and-once", &["--mqtt", "mqtt://127.0.0.1:1883"]);
    let mqtt = Mqtt::connect(&format!("{p}-pub"));
    steps(&a, &["a"], "");
    flow(
        &a,
        "once",
        &format!(
            r#"
[trigger]
all = [{{ mqtt = "{p}/x/+" }}, {{ mqtt = "{p}/y/+" }}]
key = "/k"
window = "10m"
[[steps]]
name = "s"
function = "a"
"#
        ),
    );
    let partials = |a: &Agent| {
        a.http().get("/v1/flows/once").json()["partials"]
            .as_u64()
            .unwrap()
    };
    publish_until(
        &a,
        &mqtt,
        &format!("{p}/x/1"),
        r#"{"k": "warm"}"#,
        "the subscription",
        || (partials(&a) == 1).then_some(()),
    );
    for i in 0..N {
        mqtt.publish(
            &format!("{p}/x/1"),
            &format!(r#"{{"k": "k{i}", "i": {i}}}"#),
        );
    }
    a.poll("every first half stored", WAIT, || {
        (partials(&a) == N as u64 + 1).then_some(())
    });
    for i in 0..N {
        mqtt.publish(&format!("{p}/y/2"), &format!(r#"{{"k": "k{i}"}}"#));
    }
    let at_kill = a.poll("some joins", WAIT, || {
        let n = partials(&a);
        (n <= N as u64 - 30).then_some(n)
    });
    a.kill9();
    eprintln!("killed with {at_kill} partial matches left of {}", N + 1);
    assert!(at_kill > 1, "killed too late: every key had joined");
    a.restart();
    a.poll("every key joined", Duration::from_secs(120), || {
        (partials(&a) == 1).then_some(())
    });
    let runs = a.poll("a run per key", WAIT, || {
        let r = a
            .cli(&["flow", "runs", "once", "--limit", "1000", "--json"])
            .json();
        let r = r.as_array().unwrap().clone();
        (r.len() >= N).then_some(r)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(partials(&a), 1, "only the warm-up key is left");
    let mut keys: Vec<String> = runs
        .iter()
        .map(|r| r["state"]["input"]["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        (runs.len(), keys.len()),
        (N, N),
        "killed at {at_kill} partials"
    );
}
