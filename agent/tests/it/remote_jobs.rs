//! Batch jobs relayed from the cloud (issue 7, item 3: "locally and relayed from the cloud"):
//! `edgefn job submit|status|list|cancel|results --device D` against a real
//! `edgefn-cloud serve --mqtt` and a real agent, both on the local Mosquitto. The job is the
//! agent's own (the same one `edgefn-agent job` shows), with the local CLI's semantics: the
//! report and exit code of a failed job, results in input order, cancel, bad input refused with
//! the line named; a device that is offline is a clear error (exit 1) while its job goes on, and
//! the restarted agent resumes it.

use std::time::Duration;

use serde_json::Value;

use crate::remote_invoke::{edgefn, online, text};
use crate::support::example_path;

const WAIT: Duration = Duration::from_secs(120);

/// misbehave's `count KEY MS` spins for MS ms of wall time: enough fuel for that (as jobs.rs).
const SPEC: &str = "max_concurrency = 2\n[limits]\nfuel = 20000000000\n";

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
fn jobs_submitted_through_the_cloud_run_on_the_device() {
    let (cloud, agent, name, device_id) = online("jobs");
    agent.create("worker", &example_path("misbehave"), Some(SPEC));
    agent.create("echo", &example_path("echo"), None);

    // A failing job, waited for with the progress bar: exit 1 and the report.
    let input = agent.write(
        "tasks.jsonl",
        "\"ok\"\n\"error\"\n\"ok\"\n\n\"trap\"\n\"ok\"\n",
    );
    let out_file = agent.file("results.jsonl");
    let o = edgefn(
        &cloud,
        &[
            "job",
            "submit",
            "worker",
            "--device",
            &name,
            "--input",
            &input,
            "--parallelism",
            "2",
            "--retries",
            "1",
            "--output",
            out_file.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("on {name}: 5 tasks for worker:latest")),
        "{stderr}"
    );
    assert!(stderr.contains("100%"), "no final progress line: {stderr}");
    assert!(stderr.contains("wrote 5 results"), "{stderr}");
    assert!(stderr.contains("2 of 5 tasks failed"), "{stderr}");
    assert!(stdout.contains("state:     failed"), "{stdout}");
    assert!(
        stdout.contains("3 succeeded, 2 failed, 0 pending"),
        "{stdout}"
    );
    assert!(stdout.contains("failed tasks:"), "{stdout}");
    assert!(stdout.contains("requested error"), "{stdout}");
    let lines = results(&std::fs::read_to_string(&out_file).unwrap(), 5);
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    );
    assert_eq!(lines[1]["attempts"], 2);

    // The job is the device's own: the local CLI lists the same one.
    let o = edgefn(&cloud, &["job", "list", "--device", &device_id, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let local = agent.cli(&["job", "status", &id, "--json"]).json();
    assert_eq!(local["state"], "failed", "{local}");
    assert_eq!(local["failed"], 2, "{local}");

    // CSV, detached, then status --wait and results through the cloud.
    let csv = agent.write("rows.csv", "name,n\na,1\nb,2\nc,3\n");
    let o = edgefn(
        &cloud,
        &[
            "job",
            "submit",
            "echo:latest",
            "--device",
            &name,
            "--input",
            &csv,
            "--detach",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let csv_id = text(&o.stdout).trim().to_string();
    assert_eq!(csv_id.len(), 26, "not a job id: {csv_id:?}");
    let o = edgefn(
        &cloud,
        &[
            "job", "status", &csv_id, "--device", &name, "--wait", "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            j["state"].as_str(),
            j["input"].as_str(),
            j["device"].as_str()
        ),
        (Some("succeeded"), Some("csv"), Some(name.as_str())),
        "{j}"
    );
    let o = edgefn(&cloud, &["job", "results", &csv_id, "--device", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let lines = results(&text(&o.stdout), 3);
    // echo answers each task's payload: the CSV row as a JSON object keyed by the header
    // (embedded as JSON in the result line).
    assert_eq!(
        lines[2]["output"],
        serde_json::json!({"name": "c", "n": "3"}),
        "{lines:?}"
    );

    // The device's rules and words: unknown function, a bad line named with its file, an
    // unknown job, a cancel of a finished job; a missing --device is a usage error.
    let o = edgefn(
        &cloud,
        &[
            "job", "submit", "nope", "--device", &name, "--input", &input,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("HTTP 404"), "{}", text(&o.stderr));
    let bad = agent.write("bad.jsonl", "\"ok\"\n{not json\n");
    let o = edgefn(
        &cloud,
        &[
            "job", "submit", "worker", "--device", &name, "--input", &bad,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("bad.jsonl") && err.contains("line 2"), "{err}");
    let o = edgefn(
        &cloud,
        &[
            "job",
            "status",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "--device",
            &name,
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
    let o = edgefn(&cloud, &["job", "cancel", &id, "--device", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("already failed") && text(&o.stderr).contains("HTTP 409"),
        "{}",
        text(&o.stderr)
    );
    let o = edgefn(&cloud, &["job", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--device"), "{}", text(&o.stderr));
}

#[test]
fn cancel_offline_and_resume_through_the_cloud() {
    let (cloud, mut agent, name, _) = online("jobs-cancel");
    agent.create("worker", &example_path("misbehave"), Some(SPEC));
    let status = |id: &str| -> Value {
        let o = edgefn(&cloud, &["job", "status", id, "--device", &name, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let submit = |input: &str| -> String {
        let o = edgefn(
            &cloud,
            &[
                "job", "submit", "worker", "--device", &name, "--input", input, "--detach",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        text(&o.stdout).trim().to_string()
    };

    // Cancel: no new task starts, the running one finishes.
    let slow: String = (0..40).map(|i| format!("\"count c{i} 100\"\n")).collect();
    let id = submit(&agent.write("slow.jsonl", &slow));
    agent.poll("two tasks done", WAIT, || {
        (status(&id)["succeeded"].as_u64().unwrap() >= 2).then_some(())
    });
    let o = edgefn(&cloud, &["job", "cancel", &id, "--device", &name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("cancelling"),
        "{}",
        text(&o.stdout)
    );
    let j = agent.poll("the job to be cancelled", WAIT, || {
        let j = status(&id);
        (j["state"] == "cancelled").then_some(j)
    });
    let done = j["succeeded"].as_u64().unwrap();
    assert!((2..40).contains(&done), "{j}");
    assert_eq!(j["pending"].as_u64().unwrap(), 40 - done);

    // Offline: the device's job goes on without the cloud; asking fails clearly (exit 1).
    let work: String = (0..30).map(|i| format!("\"count r{i} 100\"\n")).collect();
    let id = submit(&agent.write("resume.jsonl", &work));
    agent.poll("a task done", WAIT, || {
        (status(&id)["succeeded"].as_u64().unwrap() >= 1).then_some(())
    });
    agent.kill9();
    let o = edgefn(
        &cloud,
        &["job", "status", &id, "--device", &name, "--timeout", "2s"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("device {name} (")) && err.contains("did not answer within 2s"),
        "{err}"
    );
    assert!(err.contains("last seen "), "{err}");

    // The restarted agent resumes the job; `status --wait` through the cloud sees it finish
    // with every task done once.
    agent.restart();
    let o = agent.poll("the agent to take requests again", WAIT, || {
        let o = edgefn(
            &cloud,
            &["job", "status", &id, "--device", &name, "--wait", "--json"],
        );
        (o.status.code() == Some(0)).then_some(o)
    });
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(
        (j["succeeded"].as_u64(), j["failed"].as_u64()),
        (Some(30), Some(0))
    );
    let store = edgefn_agent::store::Store::open(agent.data_dir().join("agent.db")).unwrap();
    for i in 0..30 {
        let v = store
            .kv_get("worker", format!("r{i}").as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("task r{i} never ran"));
        assert_eq!(v.len(), 8, "r{i}: {v:?}");
        assert_eq!(
            u64::from_le_bytes(v.try_into().unwrap()),
            1,
            "r{i} ran twice"
        );
    }
}
