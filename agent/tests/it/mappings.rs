//! End-to-end tests of the `mapping` and `dead-letters` verbs (issue 4 item 1): a real agent
//! process per test, driven by the CLI as a user runs it, plus raw admin API calls where the
//! status code is the point. Delivery itself belongs to the trigger runtime's tests.

use crate::daemon_support::{Agent, Out};
use crate::support::example_path;
use edgefn_agent::store::{CommitExtra, DeadLetter, QueuedEvent, Store};
use serde_json::{json, Value};

fn module(name: &str) -> String {
    example_path(name).to_str().unwrap().to_string()
}

/// An agent with functions `echo` and `counter`.
fn agent_with_functions(tag: &str) -> Agent {
    let a = Agent::start(tag);
    a.cli(&["function", "create", "echo", "--module", &module("echo")])
        .ok();
    a.cli(&[
        "function",
        "create",
        "counter",
        "--module",
        &module("counter"),
    ])
    .ok();
    a
}

/// `mapping create ...` → the id it printed (stdout is the id alone).
#[track_caller]
fn create(a: &Agent, args: &[&str]) -> String {
    let out = a.cli(&[&["mapping", "create"], args].concat()).ok();
    let id = out.trim().to_string();
    assert!(
        id.starts_with("m-") && id.len() == 28 && out == format!("{id}\n"),
        "not an id alone: {out:?}"
    );
    id
}

fn get_json(a: &Agent, id: &str) -> Value {
    a.cli(&["mapping", "get", id, "--json"]).json()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Lines of a text table without its header.
fn rows(out: &str) -> Vec<&str> {
    out.lines().skip(1).collect()
}

#[test]
fn mapping_verbs_in_text_and_json() {
    let a = agent_with_functions("mappings-verbs");

    // create: one of each source kind; text prints the id alone
    let mqtt = create(
        &a,
        &[
            "--function",
            "echo",
            "--mqtt",
            "sensors/+/temp",
            "--qos",
            "2",
            "--shared-group",
            "workers",
            "--on-success",
            "topic:out/echo",
            "--on-failure",
            "function:counter:prod",
            "--retries",
            "5",
        ],
    );
    let cron = create(
        &a,
        &[
            "--function",
            "counter",
            "--cron",
            "*/10 * * * * *",
            "--name",
            "tick",
            "--missed",
            "run-once",
        ],
    );
    let every = create(&a, &["--function", "counter:latest", "--every", "1m 30s"]);
    // --json prints the Mapping document
    let http = a
        .cli(&[
            "mapping",
            "create",
            "--function",
            "echo",
            "--http",
            "/convert",
            "--json",
        ])
        .json();
    let http_id = http["id"].as_str().unwrap().to_string();
    assert_eq!(http["name"], http["id"], "the name defaults to the id");
    assert_eq!(http["function"], "echo");
    assert_eq!(http["qualifier"], "latest");
    assert_eq!(http["source"], json!({"kind": "http", "path": "/convert"}));
    assert_eq!(http["enabled"], true);
    assert_eq!(http["retries"], 2);
    assert_eq!(http["on_success"], Value::Null);
    assert_eq!(http["on_failure"], Value::Null);
    assert_eq!(http["created_ms"], http["updated_ms"]);

    // get: JSON by id and by name
    let m = get_json(&a, &mqtt);
    assert_eq!(
        m["source"],
        json!({"kind": "mqtt", "filter": "sensors/+/temp", "qos": 2, "shared_group": "workers"})
    );
    assert_eq!(m["on_success"], "topic:out/echo");
    assert_eq!(m["on_failure"], "function:counter:prod");
    assert_eq!(m["retries"], 5);
    let tick = get_json(&a, "tick");
    assert_eq!(tick["id"], cron.as_str());
    assert_eq!(tick["name"], "tick");
    assert_eq!(
        tick["source"],
        json!({"kind": "cron", "expr": "*/10 * * * * *", "missed": "run-once"})
    );
    assert_eq!(get_json(&a, &cron), tick);
    let e = get_json(&a, &every);
    assert_eq!(
        e["source"],
        json!({"kind": "every", "interval_ms": 90000, "missed": "skip"})
    );
    assert_eq!(e["qualifier"], "latest");

    // get: text
    let text = a.cli(&["mapping", "get", &mqtt]).ok();
    for needle in [
        "id:".to_string(),
        mqtt.clone(),
        "echo:latest".into(),
        "mqtt sensors/+/temp (qos 2, shared group workers)".into(),
        "$share/workers/sensors/+/temp".into(),
        "enabled".into(),
        "topic:out/echo".into(),
        "function:counter:prod".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
    }
    let text = a.cli(&["mapping", "get", "tick"]).ok();
    assert!(
        text.contains("cron */10 * * * * * (missed: run-once)"),
        "{text}"
    );
    assert!(text.contains("- (dead letter)"), "{text}");

    // list: creation order, text table and JSON, and by function
    let list = a.cli(&["mapping", "list", "--json"]).json();
    assert_eq!(
        ids(&list),
        [mqtt.clone(), cron.clone(), every.clone(), http_id.clone()]
    );
    let text = a.cli(&["mapping", "list"]).ok();
    let header = text.lines().next().unwrap();
    for col in ["ID", "NAME", "FUNCTION", "SOURCE", "STATE", "RETRIES"] {
        assert!(header.contains(col), "{header}");
    }
    let lines = rows(&text);
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with(&mqtt) && lines[0].contains("echo:latest"));
    assert!(lines[1].contains("tick") && lines[1].contains("cron */10 * * * * *"));
    assert!(lines[2].contains("every 1m 30s"), "{text}");
    assert!(lines[3].contains("http /convert"), "{text}");
    let of_counter = a
        .cli(&["mapping", "list", "--function", "counter", "--json"])
        .json();
    assert_eq!(ids(&of_counter), [cron.clone(), every.clone()]);
    let of_nobody = a.cli(&["mapping", "list", "--function", "nobody"]);
    assert_eq!(of_nobody.ok(), "");
    assert!(of_nobody.stderr.contains("no mappings"));

    // update: partial; text says what it updated, JSON is the document
    let out = a.cli(&["mapping", "update", "tick", "--retries", "0"]).ok();
    assert_eq!(out, format!("updated mapping {cron} (tick)\n"));
    let t = get_json(&a, "tick");
    assert_eq!(t["retries"], 0);
    assert_eq!(t["source"], tick["source"], "the rest is kept");
    // a new kind replaces the source; --missed is kept from the old schedule
    let t = a
        .cli(&["mapping", "update", "tick", "--every", "5s", "--json"])
        .json();
    assert_eq!(
        t["source"],
        json!({"kind": "every", "interval_ms": 5000, "missed": "run-once"})
    );
    assert!(t["updated_ms"].as_i64() >= tick["updated_ms"].as_i64());
    assert_eq!(t["created_ms"], tick["created_ms"]);
    // --qos / --shared-group alone adjust the MQTT source; `none` removes a destination
    let m2 = a
        .cli(&[
            "mapping",
            "update",
            &mqtt,
            "--qos",
            "0",
            "--shared-group",
            "",
            "--on-success",
            "none",
            "--json",
        ])
        .json();
    assert_eq!(
        m2["source"],
        json!({"kind": "mqtt", "filter": "sensors/+/temp", "qos": 0, "shared_group": null})
    );
    assert_eq!(m2["on_success"], Value::Null);
    assert_eq!(m2["on_failure"], "function:counter:prod");
    // rename, and point at another function and qualifier
    a.cli(&[
        "mapping",
        "update",
        &mqtt,
        "--name",
        "temps",
        "--function",
        "counter:3",
        "--mqtt",
        "sensors/#",
    ])
    .ok();
    let m3 = get_json(&a, "temps");
    assert_eq!(
        (m3["function"].clone(), m3["qualifier"].clone()),
        (json!("counter"), json!("3"))
    );
    assert_eq!(m3["source"]["filter"], "sensors/#");
    assert_eq!(m3["source"]["qos"], 0, "same kind: the QoS is kept");
    // the function's log tells the story
    let logs = a.cli(&["logs", "counter", "--grep", "mapping"]).ok();
    assert!(
        logs.contains(&format!("mapping {cron} (tick) created")),
        "{logs}"
    );
    assert!(logs.contains("(was echo:latest)"), "{logs}");

    // pause / resume: the state shows in get and list; both are idempotent
    assert_eq!(
        a.cli(&["mapping", "pause", "tick"]).ok(),
        format!("paused mapping {cron} (tick)\n")
    );
    assert_eq!(get_json(&a, "tick")["enabled"], false);
    assert!(rows(&a.cli(&["mapping", "list"]).ok())[1].contains("paused"));
    assert!(a.cli(&["mapping", "get", "tick"]).ok().contains("paused"));
    let again = a.cli(&["mapping", "pause", &cron, "--json"]).json();
    assert_eq!(again["enabled"], false);
    assert_eq!(
        a.cli(&["mapping", "resume", &cron]).ok(),
        format!("resumed mapping {cron} (tick)\n")
    );
    assert_eq!(get_json(&a, "tick")["enabled"], true);
    assert_eq!(
        a.cli(&["mapping", "resume", "tick", "--json"]).json()["enabled"],
        true
    );

    // delete: by id, by name; JSON
    assert_eq!(
        a.cli(&["mapping", "delete", &every]).ok(),
        format!("deleted mapping {every}\n")
    );
    assert_eq!(
        a.cli(&["mapping", "delete", "tick", "--json"]).json(),
        json!({"deleted": true, "mapping": "tick"})
    );
    let list = a.cli(&["mapping", "list", "--json"]).json();
    assert_eq!(ids(&list), [mqtt.clone(), http_id.clone()]);
    a.cli(&["mapping", "get", &every])
        .fails(1, &["error:", &every, "not found"]);
}

#[test]
fn one_source_feeds_several_functions_and_one_function_has_several_sources() {
    let a = agent_with_functions("mappings-n-m");
    let one = create(&a, &["--function", "echo", "--mqtt", "shared/topic"]);
    let two = create(&a, &["--function", "counter", "--mqtt", "shared/topic"]);
    let three = create(&a, &["--function", "echo", "--cron", "0 * * * *"]);
    let list = a.cli(&["mapping", "list", "--json"]).json();
    assert_eq!(ids(&list), [one.clone(), two, three.clone()]);
    let echo = a
        .cli(&["mapping", "list", "--function", "echo", "--json"])
        .json();
    assert_eq!(ids(&echo), [one, three]);
    // 5 fields: second 0
    assert_eq!(
        echo[1]["source"],
        json!({"kind": "cron", "expr": "0 * * * *", "missed": "skip"})
    );
}

#[test]
fn mapping_error_paths_exit_non_zero_with_a_clear_message() {
    let a = agent_with_functions("mappings-errors");
    create(
        &a,
        &["--function", "echo", "--http", "/taken", "--name", "web"],
    );

    // Refused by the agent: exit 1, its message verbatim.
    let refused: &[(&[&str], &[&str])] = &[
        (
            &["--function", "echo", "--mqtt", "a/#/b"],
            &["bad MQTT topic filter", "a/#/b", "`#`"],
        ),
        (
            &["--function", "echo", "--mqtt", "a+"],
            &["bad MQTT topic filter", "`+`"],
        ),
        (
            &["--function", "echo", "--mqtt", "$share/g/a"],
            &["bad MQTT topic filter", "shared group"],
        ),
        (
            &["--function", "echo", "--mqtt", "a", "--shared-group", "g/x"],
            &["bad shared subscription group", "g/x"],
        ),
        (
            &["--function", "echo", "--cron", "not a cron"],
            &["bad cron expression", "not a cron"],
        ),
        (
            &["--function", "echo", "--cron", "61 * * * * *"],
            &["bad cron expression", "61 * * * * *"],
        ),
        (
            &["--function", "echo", "--cron", "0 0 0 30 2 *"],
            &["bad cron expression", "never fires"],
        ),
        (
            &["--function", "echo", "--every", "50ms"],
            &["interval 50ms is too short", "at least 100ms"],
        ),
        (
            &["--function", "nope", "--mqtt", "a"],
            &["function", "nope", "not found"],
        ),
        (
            &["--function", "bad name", "--mqtt", "a"],
            &["invalid name", "bad name"],
        ),
        (
            &["--function", "echo:0", "--mqtt", "a"],
            &["invalid qualifier", "0"],
        ),
        (
            &[
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--on-success",
                "queue:x",
            ],
            &["bad destination", "queue:x", "topic:TOPIC", "function:NAME"],
        ),
        (
            &[
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--on-failure",
                "topic:a/#",
            ],
            &["bad destination", "topic:a/#", "wildcards"],
        ),
        (
            &[
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--on-success",
                "function:x y",
            ],
            &["bad destination", "invalid name"],
        ),
        (
            &["--function", "echo", "--http", "/taken"],
            &["HTTP path", "/taken", "already mapped"],
        ),
        (
            &["--function", "echo", "--http", "taken"],
            &["bad HTTP path", "must start with `/`"],
        ),
        (
            &["--function", "echo", "--http", "/a?b=1"],
            &["bad HTTP path", "query"],
        ),
        (
            &["--function", "echo", "--mqtt", "a", "--name", "web"],
            &["mapping named", "web", "already exists"],
        ),
        (
            &["--function", "echo", "--mqtt", "a", "--name", "m-x"],
            &["bad mapping name", "reserved"],
        ),
        (
            &["--function", "echo", "--mqtt", "a", "--retries", "1000"],
            &["1000 retries", "at most 100"],
        ),
    ];
    for (args, needles) in refused {
        a.cli(&[&["mapping", "create"], *args].concat())
            .fails(1, &[&["error:"], *needles].concat());
    }

    // Unknown mapping: every verb that names one.
    for args in [
        &["mapping", "get", "m-nope"][..],
        &["mapping", "update", "m-nope", "--retries", "1"],
        &["mapping", "update", "m-nope", "--qos", "1"],
        &["mapping", "delete", "m-nope"],
        &["mapping", "pause", "m-nope"],
        &["mapping", "resume", "m-nope"],
    ] {
        a.cli(args)
            .fails(1, &["error:", "mapping", "m-nope", "not found"]);
    }

    // Updates are validated like creates, and a refused update changes nothing.
    let before = get_json(&a, "web");
    for (args, needles) in [
        (&["--http", "nope"][..], &["bad HTTP path"][..]),
        (&["--every", "10ms"], &["too short"]),
        (&["--function", "nope"], &["nope", "not found"]),
        (&["--on-failure", "topic:+"], &["bad destination"]),
        (&["--cron", "* *"], &["bad cron expression"]),
        (&["--mqtt", "#/x"], &["bad MQTT topic filter"]),
    ] {
        a.cli(&[&["mapping", "update", "web"], args].concat())
            .fails(1, needles);
    }
    assert_eq!(get_json(&a, "web"), before);
    let other = create(&a, &["--function", "echo", "--http", "/other"]);
    a.cli(&["mapping", "update", &other, "--http", "/taken"])
        .fails(1, &["already mapped"]);
    a.cli(&["mapping", "update", &other, "--name", "web"])
        .fails(1, &["already exists"]);

    // Usage errors: exit 2, before any request.
    for (args, needles) in [
        (
            &["mapping", "create", "--function", "echo"][..],
            &["--mqtt"][..],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--http",
                "/x",
            ],
            &["cannot be used with"],
        ),
        (&["mapping", "create", "--mqtt", "a"], &["--function"]),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--qos",
                "3",
            ],
            &["--qos", "3"],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--every",
                "5 parsecs",
            ],
            &["--every", "5 parsecs"],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--cron",
                "* * * * *",
                "--missed",
                "later",
            ],
            &["--missed", "later"],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--missed",
                "skip",
            ],
            &["--missed applies to schedules"],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--every",
                "1s",
                "--qos",
                "1",
            ],
            &["--qos", "MQTT"],
        ),
        (&["mapping", "update", "web"], &["nothing to update"]),
        (
            &["mapping", "update", "web", "--qos", "1"],
            &["apply to HTTP"],
        ),
        (
            &[
                "mapping",
                "create",
                "--function",
                "echo",
                "--mqtt",
                "a",
                "--retries",
                "-1",
            ],
            &["'-1'"],
        ),
    ] {
        a.cli(args).fails(2, needles);
    }

    // The agent unreachable: exit 2, naming the URL.
    let out = crate::daemon_support::cli_bare(
        &[
            "mapping",
            "list",
            "--agent",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ],
        &[],
    );
    out.fails(2, &["cannot reach the agent", "127.0.0.1:9"]);
    let out: Out = crate::daemon_support::cli_bare(
        &[
            "dead-letters",
            "--agent",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ],
        &[],
    );
    out.fails(2, &["cannot reach the agent"]);

    // Nothing was created by any of the refused commands.
    let list = a.cli(&["mapping", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
}

#[test]
fn admin_api_status_codes() {
    let a = agent_with_functions("mappings-api");
    let h = a.http();
    let post = |body: Value| h.send_json("POST", "/v1/mappings", &body);

    let r = post(json!({"function": "echo", "source": {"kind": "mqtt", "filter": "a/+"}}));
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json();
    assert_eq!(m["source"]["qos"], 1, "QoS defaults to 1");
    let id = m["id"].as_str().unwrap().to_string();
    // NAME:QUALIFIER in `function`
    let r = post(json!({"function": "echo:prod", "source": {"kind": "http", "path": "/p"}}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["qualifier"], "prod");

    let error = |r: &crate::daemon_support::Resp| r.json()["error"]["code"].clone();
    for (body, status, code) in [
        (
            json!({"function": "echo", "source": {"kind": "mqtt", "filter": "#/a"}}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo", "source": {"kind": "mqtt", "filter": "a", "qos": 5}}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo", "source": {"kind": "every", "interval_ms": 1}}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo", "source": {"kind": "cron", "expr": "x"}}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo", "source": {"kind": "http", "path": "/p"}}),
            409,
            "conflict",
        ),
        (
            json!({"function": "nope", "source": {"kind": "http", "path": "/q"}}),
            404,
            "not_found",
        ),
        (
            json!({"function": "echo", "source": {"kind": "mqtt", "filter": "a"}, "on_success": "x"}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo:1", "qualifier": "2", "source": {"kind": "mqtt", "filter": "a"}}),
            422,
            "invalid",
        ),
        (
            json!({"function": "echo", "source": {"kind": "smtp"}}),
            400,
            "bad_request",
        ),
        (
            json!({"function": "echo", "source": {"kind": "every", "interval_ms": "5s"}}),
            400,
            "bad_request",
        ),
        (
            json!({"function": "echo", "source": {"kind": "mqtt", "filter": "a"}, "colour": 1}),
            400,
            "bad_request",
        ),
        (
            json!({"source": {"kind": "mqtt", "filter": "a"}}),
            400,
            "bad_request",
        ),
    ] {
        let r = post(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert_eq!(error(&r), code, "{body}");
    }
    let r = h.send(
        "POST",
        "/v1/mappings",
        &[("content-type", "application/json")],
        b"{",
    );
    assert_eq!((r.status, error(&r)), (400, json!("bad_request")));
    let r = h.send("POST", "/v1/mappings", &[], b"");
    assert_eq!(r.status, 400);

    // PATCH: absent keeps, null removes; unknown id 404
    let path = format!("/v1/mappings/{id}");
    let r = h.send_json(
        "PATCH",
        &path,
        &json!({"on_success": "topic:done", "retries": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["on_success"].clone(), r.json()["retries"].clone()),
        (json!("topic:done"), json!(4))
    );
    let r = h.send_json("PATCH", &path, &json!({"on_success": null}));
    assert_eq!(r.json()["on_success"], Value::Null);
    assert_eq!(r.json()["retries"], 4);
    let r = h.send_json("PATCH", "/v1/mappings/m-nope", &json!({"retries": 1}));
    assert_eq!((r.status, error(&r)), (404, json!("not_found")));

    // GET, pause, resume, DELETE
    assert_eq!(h.get(&path).status, 200);
    assert_eq!(h.get("/v1/mappings/m-nope").status, 404);
    assert_eq!(
        h.get("/v1/mappings?function=echo")
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = h.send("POST", &format!("{path}/pause"), &[], b"");
    assert_eq!((r.status, r.json()["enabled"].clone()), (200, json!(false)));
    let r = h.send("POST", &format!("{path}/resume"), &[], b"");
    assert_eq!((r.status, r.json()["enabled"].clone()), (200, json!(true)));
    assert_eq!(h.send("DELETE", &path, &[], b"").status, 204);
    assert_eq!(h.send("DELETE", &path, &[], b"").status, 404);
    // dead letters
    assert_eq!(h.get("/v1/dead-letters").json(), json!([]));
    assert_eq!(h.get("/v1/dead-letters/01NOPE").status, 404);
    // the token is required
    assert_eq!(h.with_token(None).get("/v1/mappings").status, 401);
    assert_eq!(h.with_token(None).get("/v1/dead-letters").status, 401);
}

#[test]
fn mappings_persist_across_restart_and_outlive_their_function() {
    let mut a = agent_with_functions("mappings-restart");
    let m = create(
        &a,
        &[
            "--function",
            "echo",
            "--mqtt",
            "in/#",
            "--on-success",
            "function:counter",
            "--name",
            "inbound",
        ],
    );
    let s = create(&a, &["--function", "counter", "--every", "10s"]);
    a.cli(&["mapping", "pause", &s]).ok();
    let before = a.cli(&["mapping", "list", "--json"]).json();

    let status = a.terminate();
    assert!(status.success(), "{status}");
    a.restart();
    assert_eq!(a.cli(&["mapping", "list", "--json"]).json(), before);
    assert_eq!(get_json(&a, &s)["enabled"], false);

    // A killed agent keeps them too.
    a.cli(&["mapping", "resume", &s]).ok();
    a.kill9();
    a.restart();
    assert_eq!(get_json(&a, &s)["enabled"], true);
    assert_eq!(get_json(&a, "inbound")["id"], m.as_str());

    // Deleting a function keeps its mappings (their events then fail delivery).
    a.cli(&["function", "delete", "echo"]).ok();
    let kept = get_json(&a, &m);
    assert_eq!(kept["function"], "echo");
    assert!(a.cli(&["mapping", "list"]).ok().contains(&m));
    // They stay editable; pointing them at a missing function is refused.
    a.cli(&["mapping", "update", &m, "--retries", "1"]).ok();
    a.cli(&["mapping", "update", &m, "--function", "ghost"])
        .fails(1, &["ghost", "not found"]);
    a.cli(&["mapping", "update", &m, "--function", "counter"])
        .ok();
    assert_eq!(get_json(&a, &m)["function"], "counter");
    a.cli(&["mapping", "delete", "inbound"]).ok();
}

/// Writes dead letters straight into the store of a stopped agent (delivery, which makes them,
/// is the trigger runtime's), then reads them back through the verb.
#[test]
fn dead_letters_verb_lists_and_filters() {
    let mut a = agent_with_functions("mappings-dead-letters");
    let m = create(
        &a,
        &["--function", "echo", "--mqtt", "in/#", "--name", "inbound"],
    );
    let empty = a.cli(&["dead-letters"]);
    assert_eq!(empty.ok(), "");
    assert!(empty.stderr.contains("no dead letters"));
    assert_eq!(a.cli(&["dead-letters", "--json"]).json(), json!([]));

    a.terminate();
    let letters: Vec<DeadLetter> = {
        let store = Store::open(a.data_dir().join("agent.db")).expect("the agent's store");
        let mut event = QueuedEvent::new("evt-1", "mqtt", "in/kitchen", vec![0, 159, 146, 150]);
        event.attempt = 3;
        let first = DeadLetter::new(Some(m.clone()), "echo", "latest", event, 3, "error", "boom");
        let second = DeadLetter::new(
            None,
            "counter",
            "2",
            QueuedEvent::new("evt-2", "function", "echo", b"chained".to_vec()),
            1,
            "depth_exceeded",
            "chain deeper than 8",
        );
        store
            .commit_extras(&[
                CommitExtra {
                    dead_letter: Some(first.clone()),
                    ..CommitExtra::default()
                },
                CommitExtra {
                    dead_letter: Some(second.clone()),
                    ..CommitExtra::default()
                },
            ])
            .unwrap();
        vec![first, second]
    };
    a.restart();

    let all = a.cli(&["dead-letters", "--json"]).json();
    let list = all.as_array().unwrap();
    assert_eq!(list.len(), 2, "{all}");
    let d = &list[0];
    assert_eq!(d["id"], letters[0].id.as_str());
    assert_eq!(d["mapping_id"], m.as_str());
    assert_eq!(d["function"], "echo");
    assert_eq!(d["qualifier"], "latest");
    assert_eq!(d["attempts"], 3);
    assert_eq!(d["outcome"], "error");
    assert_eq!(d["error"], "boom");
    assert_eq!(d["event"]["id"], "evt-1");
    assert_eq!(d["event"]["subject"], "in/kitchen");
    assert_eq!(d["event"]["data_base64"], "AJ+Slg==");
    assert_eq!(d["event"]["attempt"], 3);
    assert_eq!(list[1]["mapping_id"], Value::Null);

    let text = a.cli(&["dead-letters"]).ok();
    let lines = rows(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(text.lines().next().unwrap().contains("OUTCOME"));
    assert!(lines[0].starts_with(&letters[0].id) && lines[0].contains(&m));
    assert!(lines[0].contains("echo:latest") && lines[0].contains("boom"));
    assert!(lines[1].contains("counter:2") && lines[1].contains("depth_exceeded"));

    // --mapping takes the id or the name
    for key in [m.as_str(), "inbound"] {
        let only = a.cli(&["dead-letters", "--mapping", key, "--json"]).json();
        assert_eq!(only.as_array().unwrap().len(), 1, "{key}");
        assert_eq!(only[0]["id"], letters[0].id.as_str());
    }
    let none = a
        .cli(&["dead-letters", "--mapping", "m-gone", "--json"])
        .json();
    assert_eq!(none, json!([]));
    let by_function = a
        .cli(&["dead-letters", "--function", "counter", "--json"])
        .json();
    assert_eq!(by_function[0]["id"], letters[1].id.as_str());
    let newest = a.cli(&["dead-letters", "--limit", "1", "--json"]).json();
    assert_eq!(newest[0]["id"], letters[1].id.as_str());
    a.cli(&["dead-letters", "--limit", "0"])
        .fails(2, &["--limit"]);

    // Deleting the mapping keeps its dead letters.
    a.cli(&["mapping", "delete", &m]).ok();
    let still = a.cli(&["dead-letters", "--mapping", &m, "--json"]).json();
    assert_eq!(still.as_array().unwrap().len(), 1);
}
