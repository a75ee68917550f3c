//! End-to-end tests of `edgefn-agent run` and the client verbs (issue 3 item 8): a real agent
//! process on port 0 with its own data directory per test, driven by the CLI exactly as a user
//! (or an outside checker) runs it, plus raw admin API calls where a status code is the point.

use crate::daemon_support::{cli_bare, now_ms, Agent, Http, Out};
use crate::support::{example_path, wat};
use edgefn_agent::store::{sha256_hex, split_point};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn module(name: &str) -> String {
    p(&example_path(name)).to_string()
}

fn sha(name: &str) -> String {
    sha256_hex(&std::fs::read(example_path(name)).unwrap())
}

/// `logs ... --json` → the records (JSON lines).
fn json_lines(out: &Out) -> Vec<Value> {
    out.ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {e}: {l}")))
        .collect()
}

fn texts(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect()
}

/// `stats ... --json` → (invocations, errors, throttles) of the totals.
fn totals(v: &Value) -> (u64, u64, u64) {
    let t = &v["totals"];
    (
        t["invocations"].as_u64().unwrap(),
        t["errors"].as_u64().unwrap(),
        t["throttles"].as_u64().unwrap(),
    )
}

/// A ULID as the agent makes invocation ids: 26 Crockford base32 characters.
fn is_invocation_id(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b)))
}

// ---------------------------------------------------------------------------------------------
// function create/update/publish/get/list/delete/enable/disable
// ---------------------------------------------------------------------------------------------

#[test]
fn function_lifecycle_verbs_in_text_and_json() {
    let a = Agent::start("lifecycle");
    let (echo, counter) = (module("echo"), module("counter"));
    let (echo_sha, counter_sha) = (sha("echo"), sha("counter"));

    // create: text
    let text = a
        .cli(&["function", "create", "echo", "--module", &echo])
        .ok();
    assert!(
        text.starts_with(&format!("created echo: latest {} (", &echo_sha[..12])),
        "{text}"
    );
    // create with a spec: JSON (the Function document)
    let spec = "max_concurrency = 2\n[limits]\nfuel = 5000000\n[config]\ngreeting = \"hi\"\n";
    let spec_file = a.write("other.toml", spec);
    let v = a
        .cli(&[
            "function", "create", "other", "--module", &counter, "--spec", &spec_file, "--json",
        ])
        .json();
    assert_eq!(v["name"], "other");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["latest"]["sha256"], counter_sha.as_str());
    assert_eq!(
        v["latest"]["size"],
        std::fs::metadata(&counter).unwrap().len()
    );
    assert_eq!(v["latest"]["spec"], spec);
    assert_eq!(v["versions"], json!([]));
    assert_eq!(v["aliases"], json!([]));

    // list: text and JSON
    let text = a.cli(&["function", "list"]).ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ENABLED"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("echo ") && l.contains(&echo_sha[..12])),
        "{text}"
    );
    let list = a.cli(&["function", "list", "--json"]).json();
    let names: BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["echo", "other"]));

    // publish: the number alone on stdout; an unchanged latest gives the same number again
    assert_eq!(a.cli(&["function", "publish", "echo"]).ok(), "1\n");
    let again = a.cli(&["function", "publish", "echo"]);
    assert_eq!(again.ok(), "1\n");
    assert!(again.stderr.contains("unchanged"), "{again:?}");
    assert_eq!(
        a.cli(&["function", "publish", "echo", "--json"]).json(),
        json!({"version": 1, "created": false})
    );

    // update: the module, then the spec (latest only; version 1 stays echo)
    let text = a
        .cli(&["function", "update", "echo", "--module", &counter])
        .ok();
    assert!(
        text.starts_with(&format!("updated echo: latest {} (", &counter_sha[..12])),
        "{text}"
    );
    let new_spec = "[limits]\ntimeout_ms = 500\n";
    let new_spec_file = a.write("echo.toml", new_spec);
    let v = a
        .cli(&[
            "function",
            "update",
            "echo",
            "--spec",
            &new_spec_file,
            "--json",
        ])
        .json();
    assert_eq!(v["latest"]["sha256"], counter_sha.as_str());
    assert_eq!(v["latest"]["spec"], new_spec);
    assert_eq!(v["versions"][0]["sha256"], echo_sha.as_str());
    let v = a
        .cli(&[
            "function",
            "publish",
            "echo",
            "--description",
            "counter build",
            "--json",
        ])
        .json();
    assert_eq!(v, json!({"version": 2, "created": true}));

    // get: text and JSON, of the function and of one version
    let text = a.cli(&["function", "get", "echo"]).ok();
    for needle in [
        "name:",
        "echo",
        "enabled:  yes",
        &counter_sha,
        &echo_sha[..12],
        "counter build",
        "spec of latest:",
        "timeout_ms = 500",
    ] {
        assert!(text.contains(needle), "get lacks {needle:?}:\n{text}");
    }
    let v = a.cli(&["function", "get", "echo", "--json"]).json();
    let versions: Vec<u64> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(v["versions"][1]["description"], "counter build");
    assert_eq!(v["versions"][1]["spec"], new_spec);
    let text = a.cli(&["function", "get", "echo", "--version", "1"]).ok();
    assert!(text.contains(&echo_sha), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("version:") && l.trim_end().ends_with(" 1")),
        "{text}"
    );
    let v = a
        .cli(&["function", "get", "echo", "--version", "2", "--json"])
        .json();
    assert_eq!(
        (v["version"].as_u64(), v["sha256"].as_str()),
        (Some(2), Some(counter_sha.as_str()))
    );

    // each version runs its own module
    assert_eq!(
        a.cli(&["invoke", "echo:1", "--data", "x"]).ok(),
        "x",
        "version 1 is echo"
    );
    assert_eq!(
        a.cli(&["invoke", "echo:2"]).ok(),
        "1",
        "version 2 is counter"
    );
    assert_eq!(a.cli(&["invoke", "echo"]).ok(), "2", "latest is counter");

    // disable / enable: text and JSON
    assert_eq!(
        a.cli(&["function", "disable", "echo"]).ok(),
        "disabled echo\n"
    );
    assert_eq!(
        a.cli(&["function", "get", "echo", "--json"]).json()["enabled"],
        false
    );
    let list = a.cli(&["function", "list", "--json"]).json();
    let echo_entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo_entry["enabled"], false);
    assert!(a
        .cli(&["function", "list"])
        .ok()
        .lines()
        .any(|l| l.starts_with("echo ") && l.contains(" no ")));
    let v = a.cli(&["function", "enable", "echo", "--json"]).json();
    assert_eq!(
        (v["name"].as_str(), v["enabled"].as_bool()),
        (Some("echo"), Some(true))
    );
    assert_eq!(
        a.cli(&["function", "enable", "echo"]).ok(),
        "enabled echo\n"
    );
    let v = a.cli(&["function", "disable", "other", "--json"]).json();
    assert_eq!(v["enabled"], false);

    // delete one version, then the function
    assert_eq!(
        a.cli(&["function", "delete", "echo", "--version", "1"])
            .ok(),
        "deleted echo version 1\n"
    );
    let v = a.cli(&["function", "get", "echo", "--json"]).json();
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    assert_eq!(v["versions"][0]["version"], 2);
    assert_eq!(
        a.cli(&["function", "delete", "echo", "--version", "2", "--json"])
            .json(),
        json!({"deleted": true, "function": "echo", "version": 2})
    );
    assert_eq!(
        a.cli(&["function", "delete", "echo"]).ok(),
        "deleted echo\n"
    );
    a.cli(&["function", "get", "echo"])
        .fails(1, &["echo", "not found"]);
    assert_eq!(
        a.cli(&["function", "delete", "other", "--json"]).json(),
        json!({"deleted": true, "function": "other", "version": null})
    );
    assert_eq!(a.cli(&["function", "list", "--json"]).json(), json!([]));
    let empty = a.cli(&["function", "list"]);
    assert_eq!(empty.ok(), "");
    assert!(empty.stderr.contains("no functions"), "{empty:?}");

    // every lifecycle step is a log record of the function
    let log = texts(&json_lines(&a.cli(&["logs", "echo", "--json"])));
    for needle in [
        "function created",
        "latest updated",
        "published version 1",
        "published version 2: counter build",
        "function disabled",
        "function enabled",
        "version 1 deleted",
        "function deleted",
    ] {
        assert!(
            log.iter().any(|t| t.contains(needle)),
            "no {needle:?} in {log:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// alias set/list/delete
// ---------------------------------------------------------------------------------------------

#[test]
fn alias_verbs_in_text_and_json() {
    let a = Agent::start("alias");
    a.cli(&["function", "create", "f", "--module", &module("echo")])
        .ok();
    a.cli(&["function", "publish", "f"]).ok();
    a.cli(&["function", "update", "f", "--module", &module("counter")])
        .ok();
    assert_eq!(a.cli(&["function", "publish", "f"]).ok(), "2\n");

    let empty = a.cli(&["alias", "list", "f"]);
    assert_eq!(empty.ok(), "");
    assert!(empty.stderr.contains("no aliases"), "{empty:?}");
    assert_eq!(a.cli(&["alias", "list", "f", "--json"]).json(), json!([]));

    assert_eq!(
        a.cli(&["alias", "set", "f", "prod", "1"]).ok(),
        "prod: version 1\n"
    );
    assert_eq!(
        a.cli(&["alias", "set", "f", "canary", "1", "--also", "2", "--weight", "0.1"])
            .ok(),
        "canary: version 1 (90%), version 2 (10%)\n"
    );
    let v = a.cli(&["alias", "set", "f", "beta", "2", "--json"]).json();
    assert_eq!(
        (
            v["name"].as_str(),
            v["version"].as_u64(),
            v["also_version"].is_null(),
            v["weight"].is_null()
        ),
        (Some("beta"), Some(2), true, true)
    );

    let text = a.cli(&["alias", "list", "f"]).ok();
    let rows: BTreeMap<&str, Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells[0], cells[1..].to_vec())
        })
        .collect();
    assert!(text.starts_with("ALIAS"), "{text}");
    assert_eq!(rows["prod"], ["1", "-", "-", "100%"], "{text}");
    assert_eq!(rows["canary"], ["1", "2", "0.1", "90%/10%"], "{text}");
    assert_eq!(rows["beta"], ["2", "-", "-", "100%"], "{text}");
    let list = a.cli(&["alias", "list", "f", "--json"]).json();
    let canary = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "canary")
        .unwrap();
    assert_eq!(
        (
            canary["version"].as_u64(),
            canary["also_version"].as_u64(),
            canary["weight"].as_f64()
        ),
        (Some(1), Some(2), Some(0.1))
    );
    // `function get` shows the aliases too
    let v = a.cli(&["function", "get", "f", "--json"]).json();
    assert_eq!(v["aliases"].as_array().unwrap().len(), 3);
    assert!(a.cli(&["function", "get", "f"]).ok().contains("canary"));

    // invoking through an alias runs its version; moving the alias moves the traffic
    assert_eq!(a.cli(&["invoke", "f:prod", "--data", "hi"]).ok(), "hi");
    assert_eq!(a.cli(&["invoke", "f:beta"]).ok(), "1");
    assert_eq!(
        a.cli(&["alias", "set", "f", "prod", "2"]).ok(),
        "prod: version 2\n"
    );
    assert_eq!(a.cli(&["invoke", "f:prod"]).ok(), "2");
    let v = a.cli(&["invoke", "f:prod", "--json"]).json();
    assert_eq!(v["version"], 2);

    assert_eq!(
        a.cli(&["alias", "delete", "f", "beta"]).ok(),
        "deleted alias beta of f\n"
    );
    assert_eq!(
        a.cli(&["alias", "delete", "f", "canary", "--json"]).json(),
        json!({"deleted": true, "function": "f", "alias": "canary"})
    );
    let list = a.cli(&["alias", "list", "f", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "prod");
    a.cli(&["invoke", "f:beta"]).fails(1, &["alias", "beta"]);

    let log = texts(&json_lines(
        &a.cli(&["logs", "f", "--grep", "alias", "--json"]),
    ));
    for needle in [
        "alias prod set to version 1",
        "alias canary set to",
        "alias beta deleted",
    ] {
        assert!(
            log.iter().any(|t| t.contains(needle)),
            "no {needle:?} in {log:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// invoke: sync, --json, --async, --log-tail, --data-file
// ---------------------------------------------------------------------------------------------

#[test]
fn invoke_sync_json_async_and_log_tail() {
    let a = Agent::start("invoke");
    a.cli(&["function", "create", "echo", "--module", &module("echo")])
        .ok();
    a.cli(&["function", "create", "mb", "--module", &module("misbehave")])
        .ok();

    // sync: stdout is exactly the response bytes (binary, no newline added)
    assert_eq!(
        a.cli(&["invoke", "echo", "--data", "hello world"]).stdout,
        b"hello world"
    );
    let bytes = [0u8, 255, 10, 13, 1, 0x80];
    let file = a.write("payload.bin", bytes);
    let out = a.cli(&["invoke", "echo:latest", "--data-file", &file]);
    assert_eq!(
        (out.code, out.stdout.as_slice()),
        (Some(0), &bytes[..]),
        "{out:?}"
    );
    let out = a.cli_with_stdin(&["invoke", "echo", "--data-file", "-"], Some(b"from stdin"));
    assert_eq!(out.ok(), "from stdin");
    let out = a.cli(&["invoke", "echo"]);
    assert_eq!(
        (out.code, out.stdout.len()),
        (Some(0), 0),
        "no data = empty payload"
    );

    // --json: the Invocation document
    let v = a.cli(&["invoke", "echo", "--data", "hi", "--json"]).json();
    assert_eq!(v["function"], "echo");
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["response_base64"], "aGk=");
    assert!(v["version"].is_null(), "latest: {v}");
    assert!(
        is_invocation_id(v["invocation_id"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["error"].is_null());
    assert!(v["fuel_used"].as_u64().unwrap() > 0);

    // a function error: exit 1, the error on stderr, nothing on stdout
    let out = a.cli(&["invoke", "mb", "--data", "error"]);
    out.fails(1, &["error", "misbehave: requested error"]);
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = a.cli(&["invoke", "mb", "--data", "trap"]);
    out.fails(1, &["trap", "unreachable"]);
    let out = a.cli(&["invoke", "mb", "--data", "error", "--json"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["outcome"].as_str(), v["error"].as_str()),
        (Some("error"), Some("misbehave: requested error"))
    );

    // --log-tail: that invocation's lines on stderr, the response on stdout
    let out = a.cli(&["invoke", "mb", "--data", "log 3", "--log-tail"]);
    assert_eq!(out.ok(), "logged 3");
    let tail: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(tail.len(), 3, "{}", out.stderr);
    let id = tail[0].split_whitespace().nth(2).unwrap().to_string();
    assert!(is_invocation_id(&id), "{}", out.stderr);
    for (i, line) in tail.iter().enumerate() {
        assert!(line.contains(" info "), "{line}");
        assert!(line.contains(&id), "{line}");
        assert!(
            line.ends_with(&format!("misbehave: log line {} of 3", i + 1)),
            "{line}"
        );
    }
    let logged = json_lines(&a.cli(&["logs", "--invocation", &id, "--json"]));
    assert_eq!(
        texts(&logged)[..3],
        [
            "misbehave: log line 1 of 3",
            "misbehave: log line 2 of 3",
            "misbehave: log line 3 of 3"
        ]
    );
    let v = a
        .cli(&["invoke", "mb", "--data", "log 2", "--log-tail", "--json"])
        .json();
    assert_eq!(v["logs"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["logs"][0]["invocation_id"], v["invocation_id"]);
    assert_eq!(v["logs"][1]["text"], "misbehave: log line 2 of 2");
    let out = a.cli(&["invoke", "mb", "--data", "error", "--log-tail"]);
    out.fails(1, &["misbehave: requested error"]);

    // --async: the id at once; the outcome shows up in logs and stats later
    let before = totals(&a.cli(&["stats", "mb", "--json"]).json()).0;
    let out = a.cli(&["invoke", "mb", "--data", "log 2", "--async"]);
    let id = out.ok().trim_end().to_string();
    assert!(is_invocation_id(&id), "{out:?}");
    assert_eq!(out.stdout(), format!("{id}\n"));
    let records = a.poll("the async invocation's log lines", WAIT, || {
        let r = json_lines(&a.cli(&["logs", "mb", "--invocation", &id, "--json"]));
        (r.len() >= 2).then_some(r)
    });
    assert_eq!(
        texts(&records)[..2],
        ["misbehave: log line 1 of 2", "misbehave: log line 2 of 2"]
    );
    assert!(records.iter().all(|r| r["invocation_id"] == id.as_str()));
    a.poll("the async invocation in stats", WAIT, || {
        (totals(&a.cli(&["stats", "mb", "--json"]).json()).0 == before + 1).then_some(())
    });
    // an async invocation that fails: its error is in its log lines and in the error count
    let errors_before = totals(&a.cli(&["stats", "mb", "--json"]).json()).1;
    let v = a
        .cli(&["invoke", "mb", "--data", "error", "--async", "--json"])
        .json();
    let id = v["invocation_id"].as_str().unwrap().to_string();
    assert!(is_invocation_id(&id), "{v}");
    let records = a.poll(
        "the failed async invocation's outcome in logs",
        WAIT,
        || {
            let r = json_lines(&a.cli(&["logs", "--invocation", &id, "--json"]));
            (!r.is_empty()).then_some(r)
        },
    );
    assert!(
        texts(&records)
            .iter()
            .any(|t| t.contains("misbehave: requested error")),
        "{records:#?}"
    );
    a.poll("the failed async invocation in stats", WAIT, || {
        (totals(&a.cli(&["stats", "mb", "--json"]).json()).1 == errors_before + 1).then_some(())
    });
    // an async invocation that logs nothing still has its outcome in the logs
    let id = a
        .cli(&["invoke", "echo", "--data", "quiet", "--async"])
        .ok()
        .trim_end()
        .to_string();
    let records = a.poll("the quiet async invocation's outcome in logs", WAIT, || {
        let r = json_lines(&a.cli(&["logs", "--invocation", &id, "--json"]));
        (!r.is_empty()).then_some(r)
    });
    assert!(
        texts(&records).iter().any(|t| t.contains("success")),
        "{records:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// logs: every filter, text and JSON lines
// ---------------------------------------------------------------------------------------------

/// Waits until the wall clock has moved past `ms` (so later records have later times).
fn clock_past(ms: u64) {
    while now_ms() <= ms + 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[test]
fn logs_filters_and_formats() {
    let a = Agent::start("logs");
    a.cli(&["function", "create", "mb", "--module", &module("misbehave")])
        .ok();
    a.cli(&[
        "function",
        "create",
        "other",
        "--module",
        &module("misbehave"),
    ])
    .ok();
    let first = a.cli(&["invoke", "mb", "--data", "log 2", "--json"]).json();
    let first_id = first["invocation_id"].as_str().unwrap().to_string();
    a.cli(&["invoke", "mb", "--data", "trap"])
        .fails(1, &["trap"]);
    let t_mid = now_ms();
    clock_past(t_mid);
    let second = a
        .cli(&["invoke", "other", "--data", "log 1", "--json"])
        .json();
    let second_id = second["invocation_id"].as_str().unwrap().to_string();

    // everything, JSON lines: every field of a LogRecord
    let all = json_lines(&a.cli(&["logs", "--json"]));
    assert!(all.len() >= 6, "{all:#?}");
    for r in &all {
        for k in [
            "seq",
            "time_ms",
            "level",
            "function",
            "version",
            "invocation_id",
            "text",
        ] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
    }
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );

    // text: one line per record with time, level, function, version, invocation, text
    let text = a.cli(&["logs"]).ok();
    assert_eq!(text.lines().count(), all.len(), "{text}");
    let line = text
        .lines()
        .find(|l| l.ends_with("misbehave: log line 1 of 2"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert!(cells[0].ends_with('Z') && cells[0].contains('T'), "{line}");
    assert_eq!(
        &cells[1..5],
        ["info", "mb", "latest", first_id.as_str()],
        "{line}"
    );

    // NAME
    let mb = json_lines(&a.cli(&["logs", "mb", "--json"]));
    assert!(!mb.is_empty() && mb.iter().all(|r| r["function"] == "mb"));
    assert!(texts(&mb).iter().any(|t| t.contains("function created")));
    let other = a.cli(&["logs", "other"]).ok();
    assert!(other.lines().all(|l| l.contains(" other ")), "{other}");

    // --level: a minimum
    let warn = json_lines(&a.cli(&["logs", "--level", "warn", "--json"]));
    assert!(!warn.is_empty());
    assert!(warn
        .iter()
        .all(|r| matches!(r["level"].as_str(), Some("warn" | "error"))));
    assert!(texts(&warn).iter().any(|t| t.contains("instance failure")));
    let info = json_lines(&a.cli(&["logs", "mb", "--level", "info", "--json"]));
    assert!(info.len() > warn.len());
    assert!(json_lines(&a.cli(&["logs", "--level", "error", "--json"]))
        .iter()
        .all(|r| r["level"] == "error"));
    a.cli(&["logs", "--level", "loud"]).fails(2, &["loud"]);

    // --grep: case-insensitive substring
    let g = json_lines(&a.cli(&["logs", "--grep", "LOG LINE 2", "--json"]));
    assert_eq!(texts(&g), ["misbehave: log line 2 of 2"]);
    assert_eq!(a.cli(&["logs", "--grep", "no such text anywhere"]).ok(), "");

    // --invocation
    let inv = json_lines(&a.cli(&["logs", "--invocation", &first_id, "--json"]));
    assert_eq!(
        texts(&inv),
        ["misbehave: log line 1 of 2", "misbehave: log line 2 of 2"]
    );
    let inv = json_lines(&a.cli(&["logs", "--invocation", &second_id, "--json"]));
    assert_eq!(texts(&inv), ["misbehave: log line 1 of 1"]);

    // --since / --until: around the moment between the two invocations
    let since = json_lines(&a.cli(&["logs", "--since", &rfc3339(t_mid + 1), "--json"]));
    assert_eq!(texts(&since), ["misbehave: log line 1 of 1"], "{since:#?}");
    let until = json_lines(&a.cli(&["logs", "--until", &(t_mid + 1).to_string(), "--json"]));
    assert!(!until.is_empty());
    assert!(until
        .iter()
        .all(|r| r["time_ms"].as_u64().unwrap() < t_mid + 1));
    assert!(!texts(&until)
        .iter()
        .any(|t| t == "misbehave: log line 1 of 1"));
    assert_eq!(until.len() + since.len(), all.len());
    let until_rfc = json_lines(&a.cli(&["logs", "--until", &rfc3339(t_mid + 1), "--json"]));
    assert_eq!(until_rfc, until);
    assert_eq!(
        json_lines(&a.cli(&["logs", "--since", "10m", "--json"])).len(),
        all.len()
    );
    assert_eq!(
        a.cli(&["logs", "--until", "2000-01-01T00:00:00Z"]).ok(),
        "",
        "nothing before 2000"
    );
    a.cli(&["logs", "--since", "600"]).fails(2, &["600s"]);

    // --follow: records as they come
    let mut follow = crate::support::agent()
        .args([
            "logs",
            "other",
            "--follow",
            "--json",
            "--agent",
            &a.url,
            "--data-dir",
        ])
        .arg(a.data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let followed = a
        .cli(&["invoke", "other", "--data", "log 1", "--json"])
        .json();
    let followed_id = followed["invocation_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("logs --follow never showed {followed_id}: {seen:#?}"));
        let r: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(r["function"], "other", "{r}");
        if r["invocation_id"] == followed_id {
            assert_eq!(r["text"], "misbehave: log line 1 of 1");
            break;
        }
        seen.push(r);
    }
    let _ = follow.kill();
    let _ = follow.wait();
    // earlier records came first, once each
    let seqs: Vec<u64> = seen.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // filters combine
    let combined = json_lines(&a.cli(&[
        "logs", "mb", "--level", "info", "--grep", "line 2", "--until", "now", "--json",
    ]));
    assert_eq!(texts(&combined), ["misbehave: log line 2 of 2"]);
}

// ---------------------------------------------------------------------------------------------
// stats: figures equal the invocations made
// ---------------------------------------------------------------------------------------------

/// The counts row of `stats` text: INVOCATIONS ERRORS THROTTLES RETRIES.
fn text_counts(text: &str) -> Vec<u64> {
    let mut lines = text.lines();
    lines
        .find(|l| l.trim_start().starts_with("INVOCATIONS"))
        .unwrap_or_else(|| panic!("{text}"));
    lines
        .next()
        .unwrap()
        .split_whitespace()
        .take(4)
        .map(|c| c.parse().unwrap())
        .collect()
}

#[test]
fn stats_figures_equal_the_invocations_made() {
    let a = Agent::start("stats");
    a.cli(&["function", "create", "mb", "--module", &module("misbehave")])
        .ok();
    a.cli(&["function", "create", "echo", "--module", &module("echo")])
        .ok();
    let empty = a.cli(&["stats", "mb", "--json"]).json();
    assert_eq!(totals(&empty), (0, 0, 0));

    // latest: 3 ok, 2 errors, 1 trap
    for d in ["ok", "ok", "ok", "error", "error", "trap"] {
        a.cli(&["invoke", "mb", "--data", d]);
    }
    a.cli(&["function", "publish", "mb"]).ok();
    a.cli(&["alias", "set", "mb", "prod", "1"]).ok();
    // version 1: 2 ok directly, 1 error through the alias
    a.cli(&["invoke", "mb:1", "--data", "ok"]).ok();
    a.cli(&["invoke", "mb:1", "--data", "ok"]).ok();
    a.cli(&["invoke", "mb:prod", "--data", "error"])
        .fails(1, &["requested error"]);
    // an unknown qualifier or a disabled function is not an invocation
    a.cli(&["invoke", "mb:7"]).fails(1, &["version 7"]);
    for _ in 0..2 {
        a.cli(&["invoke", "echo", "--data", "x"]).ok();
    }

    let v = a.cli(&["stats", "mb", "--json"]).json();
    assert_eq!(totals(&v), (9, 4, 0), "{v:#}");
    assert_eq!(v["totals"]["retries"], 0);
    assert!(v["totals"]["fuel"]["total"].as_u64().unwrap() > 0, "{v:#}");
    for k in ["avg", "p50", "p95", "p99"] {
        assert!(v["totals"]["duration_us"][k].is_number(), "{k}: {v:#}");
        assert!(v["totals"]["latency_us"][k].is_number(), "{k}: {v:#}");
    }
    assert_eq!(v["window_s"], 3600);
    assert_eq!(
        totals(
            &a.cli(&["stats", "mb", "--qualifier", "latest", "--json"])
                .json()
        ),
        (6, 3, 0)
    );
    assert_eq!(
        totals(&a.cli(&["stats", "mb", "--qualifier", "1", "--json"]).json()),
        (3, 1, 0)
    );
    assert_eq!(
        totals(
            &a.cli(&["stats", "mb", "--qualifier", "prod", "--json"])
                .json()
        ),
        (3, 1, 0)
    );
    assert_eq!(
        totals(&a.cli(&["stats", "echo", "--json"]).json()),
        (2, 0, 0)
    );
    assert_eq!(totals(&a.cli(&["stats", "--json"]).json()), (11, 4, 0));

    // the series adds up to the totals
    let v = a
        .cli(&["stats", "mb", "--window", "1h", "--series", "1m", "--json"])
        .json();
    let series = v["series"].as_array().unwrap();
    assert!(!series.is_empty(), "{v:#}");
    let sum: u64 = series
        .iter()
        .map(|b| b["invocations"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 9);
    assert!(series.iter().all(|b| b["start_ms"].is_u64()));
    // the agent's default series is per minute (docs/agent-api.md)
    let v = a.cli(&["stats", "mb", "--json"]).json();
    let sum: u64 = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["invocations"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 9, "{v:#}");

    // text
    let text = a.cli(&["stats", "mb"]).ok();
    assert_eq!(text_counts(&text), [9, 4, 0, 0], "{text}");
    assert!(text.contains("function:") && text.contains("mb"), "{text}");
    assert!(
        text.contains("duration") && text.contains("latency"),
        "{text}"
    );
    let text = a.cli(&["stats", "mb", "--qualifier", "prod"]).ok();
    assert_eq!(text_counts(&text), [3, 1, 0, 0], "{text}");
    assert!(text.contains("prod"), "{text}");
    assert_eq!(text_counts(&a.cli(&["stats"]).ok()), [11, 4, 0, 0]);

    // /metrics agrees, per function and version
    let metrics = a.http().metrics();
    for line in [
        r#"edgefn_invocations_total{function="mb",version="latest",outcome="success"} 3"#,
        r#"edgefn_invocations_total{function="mb",version="latest",outcome="error"} 2"#,
        r#"edgefn_invocations_total{function="mb",version="latest",outcome="trap"} 1"#,
        r#"edgefn_invocations_total{function="mb",version="1",outcome="success"} 2"#,
        r#"edgefn_invocations_total{function="mb",version="1",outcome="error"} 1"#,
        r#"edgefn_errors_total{function="mb",version="latest"} 3"#,
        r#"edgefn_errors_total{function="mb",version="1"} 1"#,
        r#"edgefn_invocation_duration_seconds_count{function="mb",version="latest"} 6"#,
        r#"edgefn_invocation_duration_seconds_count{function="echo",version="latest"} 2"#,
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

// ---------------------------------------------------------------------------------------------
// error paths: a clear message and a non-zero exit
// ---------------------------------------------------------------------------------------------

/// A valid module that imports a host function the ABI does not have.
const UNKNOWN_IMPORT: &str = r#"(module
  (import "edgefn" "open_socket" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "edgefn_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "edgefn_handle") (param i32 i32) (result i32) i32.const 0))"#;

/// A valid module without the ABI's exports.
const NO_EXPORTS: &str = r#"(module (memory (export "memory") 1))"#;

#[test]
fn error_paths_exit_non_zero_with_a_clear_message() {
    let a = Agent::start("errors");
    let echo = module("echo");
    a.cli(&["function", "create", "f", "--module", &echo]).ok();

    // unknown function: every verb that names one
    for args in [
        &["function", "get", "nope"][..],
        &["function", "update", "nope", "--module", &echo],
        &["function", "publish", "nope"],
        &["function", "delete", "nope"],
        &["function", "enable", "nope"],
        &["function", "disable", "nope"],
        &["alias", "set", "nope", "prod", "1"],
        &["alias", "list", "nope"],
        &["alias", "delete", "nope", "prod"],
        &["invoke", "nope"],
        &["invoke", "nope", "--async"],
        &["stats", "nope"],
    ] {
        a.cli(args).fails(1, &["error:", "nope", "not found"]);
    }

    // unknown version
    a.cli(&["function", "publish", "f"]).ok();
    for args in [
        &["function", "get", "f", "--version", "9"][..],
        &["function", "delete", "f", "--version", "9"],
        &["invoke", "f:9"],
        &["alias", "set", "f", "prod", "9"],
        &[
            "alias", "set", "f", "prod", "1", "--also", "9", "--weight", "0.5",
        ],
        &["stats", "f", "--qualifier", "9"],
    ] {
        a.cli(args).fails(1, &["error:", "version 9"]);
    }

    // unknown alias
    for args in [
        &["invoke", "f:nope"][..],
        &["alias", "delete", "f", "nope"],
        &["stats", "f", "--qualifier", "nope"],
    ] {
        a.cli(args).fails(1, &["error:", "alias", "nope"]);
    }

    // a version an alias uses cannot be deleted; the message names the alias
    a.cli(&["alias", "set", "f", "live", "1"]).ok();
    a.cli(&["function", "delete", "f", "--version", "1"])
        .fails(1, &["version 1", "live"]);
    a.cli(&["function", "update", "f", "--module", &module("counter")])
        .ok();
    a.cli(&["function", "publish", "f"]).ok();
    a.cli(&[
        "alias", "set", "f", "live", "2", "--also", "1", "--weight", "0.2",
    ])
    .ok();
    a.cli(&["function", "delete", "f", "--version", "1"])
        .fails(1, &["version 1", "live"]);
    a.cli(&["function", "delete", "f", "--version", "2"])
        .fails(1, &["version 2", "live"]);
    assert_eq!(
        a.cli(&["function", "get", "f", "--json"]).json()["versions"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "nothing was deleted"
    );

    // bad specs: an unknown key, a bad value, not TOML (create and update)
    let typo = a.write("typo.toml", "max_concurency = 2\n");
    let bad_value = a.write("bad.toml", "[limits]\nmemory_mb = 0\n");
    let bad_type = a.write("type.toml", "[limits]\nfuel = \"lots\"\n");
    let not_toml = a.write("nottoml.toml", "this is = = not toml\n");
    for (spec, needle) in [
        (&typo, "max_concurency"),
        (&bad_value, "memory_mb"),
        (&bad_type, "fuel"),
        (&not_toml, "spec"),
    ] {
        a.cli(&["function", "create", "g", "--module", &echo, "--spec", spec])
            .fails(1, &["bad function spec", needle]);
        a.cli(&["function", "update", "f", "--spec", spec])
            .fails(1, &["bad function spec", needle]);
    }
    a.cli(&[
        "function",
        "create",
        "g",
        "--module",
        &echo,
        "--spec",
        "/nonexistent/spec.toml",
    ])
    .fails(2, &["spec", "/nonexistent/spec.toml"]);

    // bad modules: garbage, an unknown import, no ABI exports (create and update)
    let garbage = a.write("garbage.wasm", "definitely not wasm");
    let unknown_import = a.write("import.wasm", wat(UNKNOWN_IMPORT));
    let no_exports = a.write("noexports.wasm", wat(NO_EXPORTS));
    for (m, needle) in [
        (&garbage, "not a WebAssembly"),
        (&unknown_import, "open_socket"),
        (&no_exports, "edgefn_handle"),
    ] {
        a.cli(&["function", "create", "g", "--module", m])
            .fails(1, &["bad module", needle]);
        a.cli(&["function", "update", "f", "--module", m])
            .fails(1, &["bad module", needle]);
    }
    a.cli(&["function", "create", "g", "--module", "/nonexistent/m.wasm"])
        .fails(2, &["/nonexistent/m.wasm"]);
    // nothing was created or changed by the refused requests
    let list = a.cli(&["function", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    let v = a.cli(&["function", "get", "f", "--json"]).json();
    assert_eq!(v["latest"]["sha256"], sha("counter").as_str());
    assert_eq!(v["latest"]["spec"], "");

    // a disabled function refuses invocations (sync and async), by any qualifier
    a.cli(&["function", "disable", "f"]).ok();
    for args in [
        &["invoke", "f"][..],
        &["invoke", "f:1"],
        &["invoke", "f:live"],
        &["invoke", "f", "--async"],
    ] {
        a.cli(args).fails(1, &["error:", "disabled"]);
    }
    a.cli(&["function", "enable", "f"]).ok();
    a.cli(&["invoke", "f:1", "--data", "back"]).ok();

    // weights: out of range is refused by the CLI (usage) and by the API (422)
    for w in ["1.5", "-0.1", "2", "abc"] {
        a.cli(&["alias", "set", "f", "w", "1", "--also", "2", "--weight", w])
            .fails(2, &["weight"]);
    }
    let http = a.http();
    for w in [1.5, -0.1] {
        let r = http.send_json(
            "PUT",
            "/v1/functions/f/aliases/w",
            &json!({"version": 1, "also_version": 2, "weight": w}),
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid");
        assert!(r.text().contains("weight"), "{}", r.text());
    }
    let r = http.send_json(
        "PUT",
        "/v1/functions/f/aliases/w",
        &json!({"version": 1, "also_version": 2}),
    );
    assert!(
        matches!(r.status, 400 | 422),
        "also without weight: {}",
        r.text()
    );
    // --also without --weight, and --weight without --also
    a.cli(&["alias", "set", "f", "w", "1", "--also", "2"])
        .fails(2, &["--weight"]);
    a.cli(&["alias", "set", "f", "w", "1", "--weight", "0.5"])
        .fails(2, &["--also"]);
    assert_eq!(
        a.cli(&["alias", "list", "f", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "no alias w"
    );

    // invalid names
    let long = "a".repeat(65);
    for name in ["bad name", "bad/name", "bad.name", "ünï", long.as_str()] {
        a.cli(&["function", "create", name, "--module", &echo])
            .fails(1, &["invalid name"]);
    }
    a.cli(&["function", "create", "_x", "--module", &echo])
        .fails(1, &["invalid name"]);
    for alias in ["latest", "123", "bad alias"] {
        a.cli(&["alias", "set", "f", alias, "1"])
            .fails(1, &["invalid name", alias]);
    }
    a.cli(&["invoke", "bad name"]).fails(2, &["bad name"]);

    // duplicate create
    a.cli(&["function", "create", "f", "--module", &echo])
        .fails(1, &["f", "already exists"]);

    // publish dedup and version numbers never reused
    a.cli(&["function", "update", "f", "--module", &echo]).ok();
    assert_eq!(a.cli(&["function", "publish", "f"]).ok(), "3\n");
    assert_eq!(
        a.cli(&["function", "publish", "f"]).ok(),
        "3\n",
        "unchanged latest: the existing version"
    );
    a.cli(&["alias", "set", "f", "live", "2"]).ok();
    a.cli(&["function", "delete", "f", "--version", "3"]).ok();
    a.cli(&["function", "delete", "f", "--version", "1"]).ok();
    let out = a.cli(&["function", "publish", "f"]);
    assert_eq!(out.ok(), "4\n", "version 3 is not reused: {out:?}");
    a.cli(&[
        "function",
        "update",
        "f",
        "--spec",
        &a.write("s.toml", "max_queue = 3\n"),
    ])
    .ok();
    assert_eq!(a.cli(&["function", "publish", "f"]).ok(), "5\n");
    let versions: Vec<u64> = a.cli(&["function", "get", "f", "--json"]).json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [2, 4, 5]);
    // after deleting and re-creating the function, numbering starts again
    a.cli(&["alias", "delete", "f", "live"]).ok();
    a.cli(&["function", "delete", "f"]).ok();
    a.cli(&["function", "create", "f", "--module", &echo]).ok();
    assert_eq!(a.cli(&["function", "publish", "f"]).ok(), "1\n");

    // bad arguments and an unreachable agent are usage errors (exit 2)
    a.cli(&["function", "get", "f", "--version", "x"])
        .fails(2, &["--version"]);
    a.cli(&["invoke", "f", "--data", "a", "--data-file", "b"])
        .fails(2, &["--data"]);
    let down = cli_bare(
        &[
            "function",
            "list",
            "--agent",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ],
        &[],
    );
    down.fails(2, &["cannot reach the agent", "127.0.0.1:9"]);
}

// ---------------------------------------------------------------------------------------------
// persistence across restart
// ---------------------------------------------------------------------------------------------

#[test]
fn everything_survives_a_clean_restart() {
    let mut a = Agent::start("restart");
    let token = a.token();
    a.cli(&[
        "function",
        "create",
        "counter",
        "--module",
        &module("counter"),
    ])
    .ok();
    a.cli(&["function", "publish", "counter", "--description", "v1"])
        .ok();
    a.cli(&["alias", "set", "counter", "prod", "1"]).ok();
    a.cli(&["function", "create", "mb", "--module", &module("misbehave")])
        .ok();
    a.cli(&["function", "publish", "mb"]).ok();
    a.cli(&["function", "update", "mb", "--module", &module("echo")])
        .ok();
    a.cli(&["function", "publish", "mb"]).ok();
    a.cli(&[
        "alias", "set", "mb", "canary", "1", "--also", "2", "--weight", "0.25",
    ])
    .ok();
    a.cli(&["function", "disable", "mb"]).ok();
    for expect in ["1", "2", "3"] {
        assert_eq!(a.cli(&["invoke", "counter:prod"]).ok(), expect);
    }
    a.cli(&["function", "enable", "mb"]).ok();
    let logged = a
        .cli(&["invoke", "mb:1", "--data", "log 1", "--json"])
        .json();
    a.cli(&["invoke", "mb:1", "--data", "error"])
        .fails(1, &["requested error"]);
    a.cli(&["function", "disable", "mb"]).ok();

    let functions = a.cli(&["function", "get", "counter", "--json"]).json();
    let mb = a.cli(&["function", "get", "mb", "--json"]).json();
    let list = a.cli(&["function", "list", "--json"]).json();
    let aliases = a.cli(&["alias", "list", "mb", "--json"]).json();
    let logs = json_lines(&a.cli(&["logs", "--json"]));
    let stats_counter = totals(&a.cli(&["stats", "counter", "--json"]).json());
    let stats_mb = totals(&a.cli(&["stats", "mb", "--json"]).json());
    assert_eq!((stats_counter, stats_mb), ((3, 0, 0), (2, 1, 0)));

    let status = a.terminate();
    assert_eq!(status.code(), Some(0), "a clean shutdown on SIGTERM");
    assert!(a.stderr_text().contains("shut down"), "{}", a.stderr_text());
    a.restart();
    assert_eq!(a.token(), token, "the token is kept");

    assert_eq!(
        a.cli(&["function", "get", "counter", "--json"]).json(),
        functions
    );
    assert_eq!(a.cli(&["function", "get", "mb", "--json"]).json(), mb);
    assert_eq!(a.cli(&["function", "list", "--json"]).json(), list);
    assert_eq!(a.cli(&["alias", "list", "mb", "--json"]).json(), aliases);
    let after = json_lines(&a.cli(&["logs", "--json"]));
    assert_eq!(after[..logs.len()], logs[..], "the log records survive");
    let inv = json_lines(&a.cli(&[
        "logs",
        "--invocation",
        logged["invocation_id"].as_str().unwrap(),
        "--json",
    ]));
    assert_eq!(texts(&inv), ["misbehave: log line 1 of 1"]);
    assert_eq!(
        totals(&a.cli(&["stats", "counter", "--json"]).json()),
        (3, 0, 0)
    );
    assert_eq!(totals(&a.cli(&["stats", "mb", "--json"]).json()), (2, 1, 0));
    assert_eq!(
        totals(&a.cli(&["stats", "mb", "--qualifier", "1", "--json"]).json()),
        (2, 1, 0)
    );

    // the state continues where it was: kv, disabled flag, version numbering, aliases
    assert_eq!(a.cli(&["invoke", "counter:prod"]).ok(), "4");
    assert_eq!(a.cli(&["invoke", "counter"]).ok(), "5");
    a.cli(&["invoke", "mb"]).fails(1, &["disabled"]);
    a.cli(&["function", "enable", "mb"]).ok();
    assert_eq!(a.cli(&["invoke", "mb:canary", "--data", "ok"]).ok(), "ok");
    a.cli(&["function", "update", "counter", "--module", &module("echo")])
        .ok();
    assert_eq!(a.cli(&["function", "publish", "counter"]).ok(), "2\n");
    assert_eq!(
        totals(&a.cli(&["stats", "counter", "--json"]).json()),
        (5, 0, 0)
    );

    // and again (a second restart on the same data), stopped with Ctrl-C this time
    assert_eq!(a.interrupt().code(), Some(0), "a clean shutdown on SIGINT");
    a.restart();
    assert_eq!(a.cli(&["invoke", "counter:prod"]).ok(), "6");
}

#[test]
fn kill_9_leaves_a_consistent_store() {
    let mut a = Agent::start("kill9");
    a.cli(&[
        "function",
        "create",
        "counter",
        "--module",
        &module("counter"),
    ])
    .ok();
    a.cli(&["function", "create", "mb", "--module", &module("misbehave")])
        .ok();
    a.cli(&["function", "publish", "mb"]).ok();
    a.cli(&["alias", "set", "mb", "prod", "1"]).ok();

    // Invocations from three threads (two on the counter) until the agent dies under them;
    // record what was answered.
    let counts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let logged = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = a.http();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (http, counts) = (http.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            while let Ok(r) = http.try_invoke("counter", b"") {
                assert_eq!(r.status, 200, "{}", r.text());
                let v = r.json();
                let text = base64_decode(v["response_base64"].as_str().unwrap());
                counts.lock().unwrap().push(text.parse().unwrap());
            }
        }));
    }
    {
        let (http, logged) = (http.clone(), logged.clone());
        threads.push(std::thread::spawn(move || {
            while let Ok(r) = http.try_invoke("mb", b"log 1") {
                assert_eq!(r.status, 200, "{}", r.text());
                let v = r.json();
                assert_eq!(v["outcome"], "success", "{v}");
                logged
                    .lock()
                    .unwrap()
                    .push(v["invocation_id"].as_str().unwrap().to_string());
            }
        }));
    }
    a.poll("invocations answered before the kill", WAIT, || {
        (counts.lock().unwrap().len() >= 40 && logged.lock().unwrap().len() >= 40).then_some(())
    });
    a.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    let logged = logged.lock().unwrap().clone();
    // every answered count is distinct: each invocation saw the previous one's kv write
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    assert_eq!(distinct.len(), counts.len(), "lost kv updates: {counts:?}");
    let max_answered = *counts.iter().max().unwrap();

    a.restart();
    // the function, its version and alias are there
    let v = a.cli(&["function", "get", "mb", "--json"]).json();
    assert_eq!(v["versions"][0]["version"], 1);
    assert_eq!(v["aliases"][0]["name"], "prod");
    // kv and stats were committed together: the counter continues right after the last
    // committed invocation, and that is at least every answered one
    let committed = totals(&a.cli(&["stats", "counter", "--json"]).json()).0;
    assert!(committed >= max_answered, "{committed} < {max_answered}");
    assert!(committed >= counts.len() as u64);
    let next: u64 = a.cli(&["invoke", "counter"]).ok().parse().unwrap();
    assert_eq!(next, committed + 1, "kv and stats agree after kill -9");
    // every answered invocation's log line and stats are there
    let mb_stats = totals(&a.cli(&["stats", "mb", "--json"]).json());
    assert!(
        mb_stats.0 >= logged.len() as u64,
        "{mb_stats:?} < {}",
        logged.len()
    );
    assert_eq!(mb_stats.1, 0);
    let ids: BTreeSet<String> = json_lines(&a.cli(&["logs", "mb", "--grep", "log line", "--json"]))
        .iter()
        .map(|r| r["invocation_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len() as u64,
        mb_stats.0,
        "one log line per committed invocation"
    );
    for id in &logged {
        assert!(
            ids.contains(id),
            "answered invocation {id} has no log record"
        );
    }
    // and the agent works on: new writes, a clean stop, another start
    a.cli(&["function", "update", "mb", "--module", &module("echo")])
        .ok();
    assert_eq!(a.cli(&["function", "publish", "mb"]).ok(), "2\n");
    assert_eq!(a.terminate().code(), Some(0));
    a.restart();
    assert_eq!(
        a.cli(&["invoke", "counter"]).ok(),
        (committed + 2).to_string()
    );
}

fn base64_decode(s: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// the weighted split
// ---------------------------------------------------------------------------------------------

#[test]
fn weighted_alias_split_over_10000_events() {
    const EVENTS: usize = 10_000;
    const THREADS: usize = 4;
    let a = Agent::start("split");
    // version 1 = echo, version 2 = misbehave: both answer `ok` to `ok`
    a.cli(&["function", "create", "f", "--module", &module("echo")])
        .ok();
    a.cli(&["function", "publish", "f"]).ok();
    a.cli(&["function", "update", "f", "--module", &module("misbehave")])
        .ok();
    a.cli(&["function", "publish", "f"]).ok();
    a.cli(&[
        "alias", "set", "f", "canary", "1", "--also", "2", "--weight", "0.1",
    ])
    .ok();

    let http = a.http();
    let run = |ids: Vec<String>| -> Vec<(String, u64)> {
        let chunks: Vec<Vec<String>> = ids
            .chunks(ids.len().div_ceil(THREADS))
            .map(<[String]>::to_vec)
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let http: Http = http.clone();
                std::thread::spawn(move || {
                    chunk
                        .into_iter()
                        .map(|id| {
                            let r = http.invoke("f", "canary", Some(&id), b"ok");
                            assert_eq!(r.status, 200, "{}", r.text());
                            let v = r.json();
                            assert_eq!(v["outcome"], "success", "{v}");
                            assert_eq!(v["response_base64"], "b2s=", "{v}");
                            (id, v["version"].as_u64().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    };

    let ids: Vec<String> = (0..EVENTS)
        .map(|i| format!("sensor-7/reading-{i}"))
        .collect();
    let first: BTreeMap<String, u64> = run(ids.clone()).into_iter().collect();
    assert_eq!(first.len(), EVENTS);
    let second_share = first.values().filter(|v| **v == 2).count();
    assert_eq!(
        first.values().filter(|v| **v == 1).count() + second_share,
        EVENTS
    );
    // 10% of 10,000 is 1,000 with a standard deviation of 30: within 3.3 sigma
    assert!(
        (900..=1100).contains(&second_share),
        "{second_share} of {EVENTS} events reached version 2 (weight 0.1)"
    );
    // the split is the documented function of the event id
    for (id, v) in &first {
        let expected = if split_point(id) < 0.1 { 2 } else { 1 };
        assert_eq!(*v, expected, "event {id}");
    }
    // the same event always reaches the same version
    let again: Vec<String> = ids.iter().step_by(20).cloned().collect();
    for (id, v) in run(again.clone()) {
        assert_eq!(v, first[&id], "event {id} moved");
    }

    // stats count every invocation, per version of the alias
    let total = (EVENTS + again.len()) as u64;
    let v2_total = first.values().filter(|v| **v == 2).count() as u64
        + again.iter().filter(|id| first[*id] == 2).count() as u64;
    assert_eq!(
        totals(
            &a.cli(&["stats", "f", "--qualifier", "canary", "--json"])
                .json()
        ),
        (total, 0, 0)
    );
    assert_eq!(
        totals(&a.cli(&["stats", "f", "--qualifier", "2", "--json"]).json()),
        (v2_total, 0, 0)
    );
    assert_eq!(
        totals(&a.cli(&["stats", "f", "--qualifier", "1", "--json"]).json()),
        (total - v2_total, 0, 0)
    );
    // without an event id each invocation gets its own, so both versions are reached
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let r = http.invoke("f", "canary", None, b"ok");
        seen.insert(r.json()["version"].as_u64().unwrap());
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, BTreeSet::from([1, 2]));
}

// ---------------------------------------------------------------------------------------------
// throttling and warm instances
// ---------------------------------------------------------------------------------------------

#[test]
fn a_full_function_throttles_and_counts_it() {
    let a = Agent::start("throttle");
    // One instance, no queue, and an invocation that spins until its 600 ms timeout.
    let spec =
        "max_concurrency = 1\nmax_queue = 0\n[limits]\nfuel = 100000000000\ntimeout_ms = 600\n";
    a.create("slow", &example_path("misbehave"), Some(spec));
    let spawn = || {
        let mut cmd = crate::support::agent();
        cmd.args([
            "invoke",
            "slow",
            "--data",
            "loop",
            "--agent",
            &a.url,
            "--data-dir",
        ])
        .arg(a.data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (c1, c2) = (spawn(), spawn());
    let outs = [
        c1.wait_with_output().unwrap(),
        c2.wait_with_output().unwrap(),
    ];
    let stderrs: Vec<String> = outs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(
        outs.iter().all(|o| o.status.code() == Some(1)),
        "{stderrs:?}"
    );
    let throttled = stderrs.iter().filter(|e| e.contains("throttled")).count();
    let timed_out = stderrs.iter().filter(|e| e.contains("timeout")).count();
    assert_eq!((throttled, timed_out), (1, 1), "{stderrs:?}");

    let v = a.cli(&["stats", "slow", "--json"]).json();
    assert_eq!(totals(&v), (1, 1, 1), "{v:#}");
    let text = a.cli(&["stats", "slow"]).ok();
    assert_eq!(text_counts(&text), [1, 1, 1, 0], "{text}");
    let metrics = a.http().metrics();
    assert!(
        metrics.contains(r#"edgefn_throttles_total{function="slow",version="latest"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"edgefn_invocations_total{function="slow",version="latest",outcome="throttled"} 1"#
        ),
        "{metrics}"
    );
    // the API says 429 / throttled
    let http = a.http();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let http = http.clone();
            std::thread::spawn(move || http.invoke("slow", "latest", None, b"loop"))
        })
        .collect();
    let mut statuses: Vec<(u16, Value)> = calls
        .into_iter()
        .map(|c| {
            let r = c.join().unwrap();
            (r.status, r.json())
        })
        .collect();
    statuses.sort_by_key(|(s, _)| *s);
    assert_eq!(statuses[0].0, 200, "{statuses:?}");
    assert_eq!(statuses[0].1["outcome"], "timeout", "{statuses:?}");
    assert_eq!(statuses[1].0, 429, "{statuses:?}");
    assert_eq!(statuses[1].1["error"]["code"], "throttled", "{statuses:?}");
    assert_eq!(
        totals(&a.cli(&["stats", "slow", "--json"]).json()),
        (2, 2, 2)
    );
}

#[test]
fn min_instances_are_kept_warm() {
    let mut a = Agent::start("warm");
    let spec = "min_instances = 2\nmax_concurrency = 3\n";
    a.create("w", &example_path("misbehave"), Some(spec));
    let http = a.http();
    let warm = |version: &str, n: u32| {
        let line = format!(r#"edgefn_warm_instances{{function="w",version="{version}"}} {n}"#);
        a.poll(&line, WAIT, || http.metrics().contains(&line).then_some(()));
    };
    // kept warm as soon as the function exists
    warm("latest", 2);
    a.cli(&["function", "publish", "w"]).ok();
    a.cli(&["alias", "set", "w", "prod", "1"]).ok();
    warm("1", 2);
    // an instance started before the first event: `edgefn_init` ran once, the event is its first
    assert_eq!(
        a.cli(&["invoke", "w:prod", "--data", "init-count"]).ok(),
        "1"
    );
    warm("1", 2);

    // from start-up
    assert_eq!(a.terminate().code(), Some(0));
    a.restart();
    let http = a.http();
    for version in ["latest", "1"] {
        let line = format!(r#"edgefn_warm_instances{{function="w",version="{version}"}} 2"#);
        a.poll(&line, WAIT, || http.metrics().contains(&line).then_some(()));
    }
    // a function whose init fails keeps no instance, and says why
    let failing = "min_instances = 1\n[config]\nfail_init = 1\n";
    a.create("bad", &example_path("misbehave"), Some(failing));
    let records = a.poll("the warm-up failure in the logs", WAIT, || {
        let r = json_lines(&a.cli(&["logs", "bad", "--level", "warn", "--json"]));
        (!r.is_empty()).then_some(r)
    });
    assert!(
        texts(&records).iter().any(|t| t.contains("fail_init")),
        "{records:#?}"
    );
    a.cli(&["invoke", "bad", "--data", "ok"])
        .fails(1, &["init"]);
}

// ---------------------------------------------------------------------------------------------
// the admin token
// ---------------------------------------------------------------------------------------------

#[test]
fn the_admin_api_requires_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let a = Agent::start("token");
    let path = a.data_dir().join("admin.token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    let token = a.token();
    assert!(token.len() >= 32, "{token}");

    let good = a.http();
    assert_eq!(good.get("/v1/functions").status, 200);
    for http in [
        good.with_token(None),
        good.with_token(Some("wrong")),
        good.with_token(Some("")),
    ] {
        for (method, path) in [
            ("GET", "/v1/functions"),
            ("GET", "/v1/logs"),
            ("GET", "/v1/stats"),
            ("POST", "/v1/functions/x/invoke"),
            ("DELETE", "/v1/functions/x"),
        ] {
            let r = if method == "GET" {
                http.get(path)
            } else {
                http.send(method, path, &[], b"")
            };
            assert_eq!(r.status, 401, "{method} {path}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "unauthorized");
        }
    }
    // a token of the right length but wrong is refused too
    let almost: String = token
        .chars()
        .map(|c| if c == 'a' { 'b' } else { 'a' })
        .collect();
    assert_eq!(
        good.with_token(Some(&almost)).get("/v1/functions").status,
        401
    );
    // /metrics and /v1/health need none
    let anon = good.with_token(None);
    assert_eq!(anon.get("/v1/health").status, 200);
    assert_eq!(anon.get("/metrics").status, 200);

    // the CLI: a wrong token is refused by the agent (exit 1, with a hint); no token is a
    // usage error (exit 2)
    let wrong = cli_bare(
        &["function", "list", "--agent", &a.url, "--token", "wrong"],
        &[],
    );
    wrong.fails(1, &["token", "hint:"]);
    let empty = crate::support::TempDir::new("daemon-token-none");
    let none = cli_bare(
        &[
            "function",
            "list",
            "--agent",
            &a.url,
            "--data-dir",
            p(empty.path()),
        ],
        &[],
    );
    none.fails(2, &["no admin token", "admin.token"]);
    // EDGEFN_AGENT and EDGEFN_TOKEN instead of flags
    let env = cli_bare(
        &["function", "list", "--json"],
        &[("EDGEFN_AGENT", &a.url), ("EDGEFN_TOKEN", &token)],
    );
    assert_eq!(env.json(), json!([]));
}

#[test]
fn status_counts_what_the_agent_holds() {
    let a = Agent::start("status");
    let echo = module("echo");
    for name in ["one", "two"] {
        a.cli(&["function", "create", name, "--module", &echo]).ok();
    }
    a.cli(&["function", "disable", "two"]).ok();
    let id = a
        .cli(&[
            "mapping",
            "create",
            "--function",
            "one",
            "--every",
            "1h",
            "--json",
        ])
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "one",
        "--cron",
        "0 0 * * * *",
    ])
    .ok();
    a.cli(&["mapping", "pause", &id]).ok();

    let v = a.cli(&["status", "--json"]).json();
    assert_eq!(
        (
            &v["functions"],
            &v["functions_enabled"],
            &v["functions_cloud"]
        ),
        (&json!(2), &json!(1), &json!(0)),
        "{v}"
    );
    assert_eq!(
        (&v["mappings"], &v["mappings_paused"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(v["device"], Value::Null);
    assert_eq!(v["cloud_sequence"], Value::Null);
    assert_eq!(v["dead_letters"], 0);
    assert!(v["store"]["bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["store"]["schema_version"].as_u64().unwrap() >= 4, "{v}");
    assert_eq!(v["upload"]["dropped"]["logs"], 0);

    let text = a.cli(&["status"]).ok();
    for needle in [
        "functions:",
        "2 (1 enabled, 0 from the cloud)",
        "mappings:",
        "2 (1 paused)",
        "not enrolled",
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }
}
