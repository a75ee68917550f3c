//! Batch jobs end to end (issue 7, item 3): real agent processes driven by `edgefn-agent job ...`
//! as a user runs it: failing tasks and their report, retries that succeed later, CSV and JSON
//! lines input with results in input order, bad input refused with nothing submitted, cancel,
//! and a `kill -9` mid-job resumed by the restarted agent without redoing finished tasks.

use crate::daemon_support::Agent;
use crate::support::example_path;
use serde_json::Value;
use std::time::Duration;

/// Generous: the machine running the tests may be busy.
const WAIT: Duration = Duration::from_secs(120);

fn module(name: &str) -> std::path::PathBuf {
    example_path(name)
}

/// An agent with `misbehave` and `echo`, each allowed `concurrency` instances at once.
fn agent(tag: &str, concurrency: u32) -> Agent {
    let a = Agent::start(tag);
    // misbehave's `count KEY MS` spins for MS milliseconds of wall time: on an idle fast machine
    // 150 ms of spinning burns more than the default 100 M fuel, so the budget is raised (the
    // spin, not fuel, is what these tests time).
    let spec = format!("max_concurrency = {concurrency}\n[limits]\nfuel = 20000000000\n");
    a.create("misbehave", &module("misbehave"), Some(spec.as_str()));
    a.create("echo", &module("echo"), Some(spec.as_str()));
    a
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The invocation records of task `index` of `job`, one line each (for failure messages).
fn task_invocations(a: &Agent, job: &str, index: u64) -> String {
    let store = edgefn_agent::store::Store::open(a.data_dir().join("agent.db")).unwrap();
    let filter = edgefn_agent::store::InvocationFilter {
        function: Some("misbehave".into()),
        since_ms: None,
        limit: 10_000,
    };
    let subject = format!("{job}/{index}");
    store
        .invocations(&filter)
        .unwrap()
        .iter()
        .filter(|r| r.subject == subject)
        .map(|r| {
            format!(
                "{} attempt {} started {} took {} µs: {:?} {:?}",
                r.id, r.attempt, r.start_ms, r.duration_us, r.outcome, r.error
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn status(a: &Agent, id: &str) -> Value {
    a.cli(&["job", "status", id, "--json"]).json()
}

/// Waits until the job has finished; returns its document.
fn finished(a: &Agent, id: &str) -> Value {
    a.poll("the job to finish", WAIT, || {
        let j = status(a, id);
        matches!(
            j["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
        .then_some(j)
    })
}

/// `job submit ... --detach`: the job id.
#[track_caller]
fn submit_detached(a: &Agent, args: &[&str]) -> String {
    let out = a
        .cli(&[&["job", "submit"], args, &["--detach"]].concat())
        .ok();
    let id = out.trim().to_string();
    assert_eq!(id.len(), 26, "not a job id: {out:?}");
    id
}

/// The results file (or `job results` output) as JSON values, checking one line per task in
/// input order.
#[track_caller]
fn results(text: &str, tasks: usize) -> Vec<Value> {
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), tasks, "{text}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i as u64, "results out of order: {text}");
    }
    lines
}

#[test]
fn failing_tasks_fail_the_job_with_a_report_and_results_in_input_order() {
    let a = agent("jobs-fail", 2);
    let input = a.write(
        "tasks.jsonl",
        "\"ok\"\n\"error\"\n\"ok\"\n\n\"trap\"\n\"ok\"\n",
    );
    let out_file = a.file("results.jsonl");
    let out = a.cli(&[
        "job",
        "submit",
        "misbehave",
        "--input",
        &input,
        "--parallelism",
        "2",
        "--retries",
        "1",
        "--output",
        out_file.to_str().unwrap(),
    ]);
    // The job failed: exit 1, and the report names the failed tasks with their attempts.
    let stderr = out.fails(1, &["5 tasks", "wrote 5 results"]);
    let stdout = out.stdout();
    assert!(stdout.contains("state:     failed"), "{stdout}");
    assert!(
        stdout.contains("3 succeeded, 2 failed, 0 pending"),
        "{stdout}"
    );
    assert!(stdout.contains("failed tasks:"), "{stdout}");
    assert!(stdout.contains("requested error"), "{stdout}");
    assert!(stdout.contains("unreachable"), "{stdout}");
    assert!(stderr.contains("100%"), "no final progress line: {stderr}");

    let lines = results(&std::fs::read_to_string(&out_file).unwrap(), 5);
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    );
    assert_eq!(lines[0]["output"], "ok");
    assert_eq!(lines[1]["attempts"], 2);
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("misbehave: requested error"));
    assert_eq!(lines[3]["attempts"], 2);

    // The same report from `job status --json`, and in `job list`.
    let list = a.cli(&["job", "list", "--json"]).json();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let j = status(&a, &id);
    assert_eq!(j["state"], "failed");
    assert_eq!(
        (j["tasks"].as_u64(), j["failed"].as_u64()),
        (Some(5), Some(2))
    );
    let failures = j["failures"].as_array().unwrap();
    assert_eq!(
        failures
            .iter()
            .map(|f| f["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 3]
    );
    assert!(failures.iter().all(|f| f["attempts"] == 2));
    let table = a.cli(&["job", "list"]).ok();
    assert!(
        table.contains(&id) && table.contains("failed") && table.contains("5/5"),
        "{table}"
    );

    // Each attempt was an invocation with its own id: its log lines carry it, with the job and
    // task as the event's subject in its record.
    let inv = failures[0]["invocation_id"].as_str().unwrap();
    let logs = a.cli(&["logs", "--invocation", inv, "--json"]).ok();
    assert!(logs.contains("attempt 2") && logs.contains(inv), "{logs}");
    let lifecycle = a.cli(&["logs", "misbehave"]).ok();
    assert!(
        lifecycle.contains(&format!("job {id} submitted")),
        "{lifecycle}"
    );
    assert!(
        lifecycle.contains(&format!("job {id} failed: 2 of 5 tasks failed")),
        "{lifecycle}"
    );

    // `job results` prints the same lines; a finished job can be deleted, a second cancel is
    // refused.
    let again = a.cli(&["job", "results", &id]).ok();
    assert_eq!(again, std::fs::read_to_string(&out_file).unwrap());
    a.cli(&["job", "cancel", &id]).fails(1, &["already failed"]);
    a.cli(&["job", "delete", &id]).ok();
    a.cli(&["job", "status", &id]).fails(1, &["not found"]);
}

#[test]
fn retries_succeed_on_a_later_attempt() {
    let a = agent("jobs-retry", 1);
    let input = a.write(
        "flaky.jsonl",
        "\"fail-attempts 2\"\n\"fail-attempts 1\"\n\"ok\"\n",
    );
    let out_file = a.file("out.jsonl");
    let out = a.cli(&[
        "job",
        "submit",
        "misbehave:latest",
        "--input",
        &input,
        "--retries",
        "2",
        "--output",
        out_file.to_str().unwrap(),
        "--json",
    ]);
    let j = out.json();
    assert_eq!(j["state"], "succeeded", "{j}");
    let lines = results(&std::fs::read_to_string(&out_file).unwrap(), 3);
    assert_eq!(
        lines
            .iter()
            .map(|l| (
                l["attempts"].as_u64().unwrap(),
                l["output"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [(3, "attempt 3"), (2, "attempt 2"), (1, "ok")]
    );

    // With fewer retries than the task needs, it fails after retries + 1 attempts.
    let id = submit_detached(&a, &["misbehave", "--input", &input, "--retries", "1"]);
    let j = finished(&a, &id);
    assert_eq!(j["state"], "failed");
    assert_eq!(j["failures"][0]["index"], 0);
    assert_eq!(j["failures"][0]["attempts"], 2);
    assert!(j["failures"][0]["error"]
        .as_str()
        .unwrap()
        .contains("failing attempt 2"));
}

#[test]
fn csv_and_json_lines_inputs_give_results_in_input_order() {
    let a = agent("jobs-input", 4);
    let csv = a.write(
        "rows.csv",
        "id,name,note\n1,Ada,\"likes, commas\"\n2,\"Bob \"\"B\"\"\",\"two\nlines\"\n3,é,\n",
    );
    let out_file = a.file("csv-out.jsonl");
    let out = a.cli(&[
        "job",
        "submit",
        "echo",
        "--input",
        &csv,
        "--output",
        out_file.to_str().unwrap(),
    ]);
    out.ok();
    let lines = results(&std::fs::read_to_string(&out_file).unwrap(), 3);
    // Each row became an object keyed by the header (in header order); echo answered it.
    assert_eq!(
        std::fs::read_to_string(&out_file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
        format!(
            "{{\"index\":0,\"status\":\"succeeded\",\"attempts\":1,\"output\":{{\"id\":\"1\",\"name\":\"Ada\",\"note\":\"likes, commas\"}},\"invocation_id\":{}}}",
            lines[0]["invocation_id"]
        )
    );
    assert_eq!(lines[1]["output"]["name"], "Bob \"B\"");
    assert_eq!(lines[1]["output"]["note"], "two\nlines");
    assert_eq!(lines[2]["output"]["name"], "é");

    // JSON lines at parallelism 4: strings give their text, other values their compact JSON.
    let mut text = String::new();
    for i in 0..60 {
        match i % 3 {
            0 => text.push_str(&format!("\"text {i}\"\n")),
            1 => text.push_str(&format!("{{ \"n\": {i}, \"list\": [1, 2] }}\n")),
            _ => text.push_str(&format!("{i}\n")),
        }
    }
    let input = a.write("items.jsonl", &text);
    let id = submit_detached(&a, &["echo", "--input", &input, "--parallelism", "4"]);
    let j = finished(&a, &id);
    assert_eq!(
        (j["state"].as_str(), j["succeeded"].as_u64()),
        (Some("succeeded"), Some(60))
    );
    let lines = results(&a.cli(&["job", "results", &id]).ok(), 60);
    for (i, l) in lines.iter().enumerate() {
        let expected: Value = match i % 3 {
            0 => Value::String(format!("text {i}")),
            1 => serde_json::json!({"n": i, "list": [1, 2]}),
            _ => serde_json::json!(i),
        };
        assert_eq!(l["output"], expected, "task {i}");
    }
    // Each task was an invocation whose event names the job and the task.
    let store = edgefn_agent::store::Store::open(a.data_dir().join("agent.db")).unwrap();
    for (i, l) in lines.iter().enumerate().step_by(7) {
        let record = store
            .invocation(l["invocation_id"].as_str().unwrap())
            .unwrap();
        assert_eq!(record.source, "batch");
        assert_eq!(record.subject, format!("{id}/{i}"));
        assert_eq!(record.event_id, format!("{id}/{i}"));
        assert_eq!((record.function.as_str(), record.attempt), ("echo", 1));
    }
    let rendered = a.cli(&["job", "status", &id]).ok();
    assert!(
        rendered.contains("parallelism 4, retries 2, input jsonl"),
        "{rendered}"
    );
}

#[test]
fn bad_input_is_refused_naming_the_line_and_nothing_is_submitted() {
    let a = agent("jobs-bad", 1);
    let bad_json = a.write("bad.jsonl", "\"ok\"\n{\"a\": 1,}\n\"ok\"\n");
    a.cli(&["job", "submit", "echo", "--input", &bad_json])
        .fails(1, &["bad.jsonl", "line 2", "column", "not a JSON value"]);
    let ragged = a.write("ragged.csv", "a,b\n1,2\n3\n");
    a.cli(&["job", "submit", "echo", "--input", &ragged])
        .fails(1, &["ragged.csv", "CSV line 3", "1 fields", "header has 2"]);
    let header = a.write("dup.csv", "a,b,a\n1,2,3\n");
    a.cli(&["job", "submit", "echo", "--input", &header])
        .fails(1, &["column 3 repeats the name \"a\""]);
    let empty = a.write("empty.jsonl", "\n\n");
    a.cli(&["job", "submit", "echo", "--input", &empty])
        .fails(1, &["empty", "at least one task"]);
    let good = a.write("good.jsonl", "\"ok\"\n");
    a.cli(&["job", "submit", "nosuch", "--input", &good])
        .fails(1, &["function \"nosuch\" not found"]);
    a.cli(&["job", "submit", "echo:prod", "--input", &good])
        .fails(1, &["no alias \"prod\""]);
    a.cli(&[
        "job",
        "submit",
        "echo",
        "--input",
        &good,
        "--parallelism",
        "0",
    ])
    .fails(2, &["--parallelism"]);
    let missing = a.file("missing.jsonl").to_str().unwrap().to_string();
    a.cli(&["job", "submit", "echo", "--input", &missing])
        .fails(2, &["cannot read the input file"]);
    let binary = a.write("bin.jsonl", b"\"ok\"\n\xff\xfe\n".as_slice());
    a.cli(&["job", "submit", "echo", "--input", &binary])
        .fails(2, &["line 2", "not UTF-8"]);
    a.cli(&["function", "disable", "echo"]).ok();
    a.cli(&["job", "submit", "echo", "--input", &good])
        .fails(1, &["disabled"]);
    // The API refuses what the CLI cannot send, with the same care.
    let r = a.http().send(
        "POST",
        "/v1/jobs",
        &[("content-type", "application/json")],
        br#"{"function": "misbehave", "items": ["ok"], "parallelism": 0}"#,
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("parallelism"), "{}", r.text());
    let r = a.http().send(
        "POST",
        "/v1/jobs",
        &[("content-type", "application/json")],
        br#"{"function": "misbehave", "format": "xml", "input": "x"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());

    let list = a.cli(&["job", "list", "--json"]).json();
    assert_eq!(list, serde_json::json!([]), "something was submitted");
}

#[test]
fn cancel_stops_new_tasks_and_lets_running_ones_finish() {
    let a = agent("jobs-cancel", 1);
    let text: String = (0..40).map(|i| format!("\"count k{i} 100\"\n")).collect();
    let input = a.write("slow.jsonl", &text);
    let id = submit_detached(&a, &["misbehave", "--input", &input]);
    a.poll("two tasks done", WAIT, || {
        (status(&a, &id)["succeeded"].as_u64().unwrap() >= 2).then_some(())
    });
    let out = a.cli(&["job", "cancel", &id]).ok();
    assert!(out.contains("cancelling"), "{out}");
    let j = finished(&a, &id);
    assert_eq!(j["state"], "cancelled");
    let done = j["succeeded"].as_u64().unwrap();
    assert!((2..40).contains(&done), "{j}");
    assert_eq!(j["failed"], 0);
    assert_eq!(j["pending"].as_u64().unwrap(), 40 - done);
    // Nothing more runs: the counts stay, the results say which tasks never ran.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&a, &id)["succeeded"].as_u64().unwrap(), done);
    let lines = results(&a.cli(&["job", "results", &id]).ok(), 40);
    let ran = lines.iter().filter(|l| l["status"] == "succeeded").count() as u64;
    assert_eq!(ran, done);
    assert!(lines
        .iter()
        .skip(ran as usize)
        .all(|l| l["status"] == "pending"));
    a.cli(&["job", "cancel", &id])
        .fails(1, &["already cancelled"]);
}

#[test]
fn a_killed_agent_resumes_the_job_without_redoing_finished_tasks() {
    let mut a = agent("jobs-kill", 2);
    const TASKS: usize = 30;
    // Each task adds 1 to its own kv counter and answers the new value: a task that ran and
    // committed twice would answer 2.
    let text: String = (0..TASKS)
        .map(|i| format!("\"count k{i} 150\"\n"))
        .collect();
    let input = a.write("resume.jsonl", &text);
    let id = submit_detached(&a, &["misbehave", "--input", &input, "--parallelism", "2"]);
    let before = a.poll("some tasks done", WAIT, || {
        let n = status(&a, &id)["succeeded"].as_u64().unwrap();
        (n >= 6).then_some(n)
    });
    assert!(before < TASKS as u64, "the job finished before the kill");
    a.kill9();
    let killed_ms = now_ms();
    a.restart();
    let j = finished(&a, &id);
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["succeeded"].as_u64(), Some(TASKS as u64));
    let lines = results(&a.cli(&["job", "results", &id]).ok(), TASKS);
    for l in &lines {
        assert_eq!(
            l["output"],
            serde_json::json!(1),
            "task {} ran to a commit more than once (finished before the kill: {before}; \
             killed at {killed_ms}); its invocations:\n{}\nagent stderr:\n{}",
            l["index"],
            task_invocations(&a, &id, l["index"].as_u64().unwrap()),
            a.stderr_text()
        );
        assert_eq!(l["attempts"], 1);
    }
    // Each task committed exactly one invocation: the records agree with the tasks.
    let stats = a.cli(&["stats", "misbehave", "--json"]).json();
    assert_eq!(
        stats["totals"]["invocations"].as_u64(),
        Some(TASKS as u64),
        "{stats}"
    );
}
