//! Telemetry upload end to end (issue 6): real agents uploading to a real `edgefn-cloud serve`
//! over HTTP. `kill -9` of the agent after the cloud stored a batch and before the agent
//! recorded the answer, and of the cloud inside the ingest transaction: every record is stored
//! exactly once. The cloud down with a small disk budget: the records kept stay under the
//! budget, drops are counted, and everything else arrives once the cloud is back. Two agents
//! with different latency distributions: fleet queries filter by device, group, level, text and
//! invocation, and the merged percentiles match the combined invocation records.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use edgefn_agent::store::{LogFilter, Store};
use serde_json::Value;

use crate::daemon_support::{cli_bare, Agent};
use crate::support::{wat, TempDir};
use crate::sync::{enrolled_agent_with, poll, Cloud};

/// Fast uploads and retries, so the tests do not wait on defaults.
const CONFIG: &str = "[cloud]\npoll_wait = \"5s\"\nretry_max = \"1s\"\n\
[upload]\ninterval = \"200ms\"\nbatch_records = 40\nretry_max = \"1s\"\n";

/// A guest that logs `text` at `level` and then spins `spins` loop iterations.
fn logger(text: &str, level: u8, spins: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
  (import "edgefn" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{text}")
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "edgefn_handle") (param i32 i32) (result i32)
    (local $i i32)
    (call $log (i32.const {level}) (i32.const 16) (i32.const {len}))
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const {spins})))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    (i32.const 0)))"#,
        len = text.len()
    ))
}

/// Creates `name` on `agent` from `module`.
fn create(agent: &Agent, name: &str, module: &[u8]) {
    let path = agent.file(&format!("{name}.wasm"));
    std::fs::write(&path, module).unwrap();
    agent.create(name, &path, None);
}

fn invoke_n(agent: &Agent, name: &str, n: usize) {
    let http = agent.http();
    for i in 0..n {
        let r = http.invoke(name, "latest", None, format!("{i}").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Every log record of the agent, as `(seq, text)`.
fn agent_logs(agent: &Agent) -> BTreeSet<(i64, String)> {
    let v = agent.http().get("/v1/logs?limit=10000").json();
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_i64().unwrap(),
                r["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The cloud's log records of `device`, as `(seq, text)` in the order returned.
fn cloud_logs(cloud: &Cloud, device: &str) -> Vec<(i64, String)> {
    let v = cloud.ok(
        "GET",
        &format!("/v1/logs?device={device}&limit=10000"),
        None,
    );
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seq"].as_i64().unwrap(),
                r["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn cloud_invocations(cloud: &Cloud, device: &str) -> Vec<Value> {
    cloud
        .ok(
            "GET",
            &format!("/v1/invocations?device={device}&limit=10000"),
            None,
        )
        .as_array()
        .unwrap()
        .clone()
}

fn cloud_metrics(cloud: &Cloud) -> String {
    let r = ureq::get(format!("{}/metrics", cloud.url)).call().unwrap();
    r.into_body().read_to_string().unwrap()
}

/// An enrolled agent started with `env` from its first start on.
fn enrolled_agent_env(
    tag: &str,
    cloud: &Cloud,
    token: &str,
    config: &str,
    env: &[(&str, &str)],
) -> Agent {
    let scratch = TempDir::new(&format!("cfg-{tag}"));
    let path = scratch.path().join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap().to_string();
    let agent = Agent::start_prepared_env(tag, &["--config", &path], env, |data| {
        let o = cli_bare(
            &[
                "enroll",
                "--cloud",
                &cloud.url,
                "--token",
                token,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(o.code, Some(0), "enroll: {}", o.stderr);
    });
    std::mem::forget(scratch);
    agent
}

/// Waits until the cloud holds exactly the agent's log records (as a set, each once) and
/// `invocations` invocation records of `device`; returns the cloud's log records.
fn wait_for_everything(
    cloud: &Cloud,
    agent: &Agent,
    device: &str,
    invocations: usize,
) -> Vec<(i64, String)> {
    poll(
        "the cloud to hold every record of the agent",
        || {
            format!(
                "agent:\n{}\ncloud:\n{}",
                agent.stderr_text(),
                cloud.stderr_text()
            )
        },
        || {
            let local = agent_logs(agent);
            let remote = cloud_logs(cloud, device);
            let set: BTreeSet<(i64, String)> = remote.iter().cloned().collect();
            (set == local && cloud_invocations(cloud, device).len() == invocations)
                .then_some(remote)
        },
    )
}

#[test]
fn kill9_of_the_agent_between_send_and_ack_stores_every_record_once() {
    let cloud = Cloud::start();
    let token = cloud.device("up-a", "lab");
    let mut agent = enrolled_agent_env(
        "up-a",
        &cloud,
        &token,
        CONFIG,
        &[("EDGEFN_TEST_UPLOAD_PAUSE", "acked")],
    );
    create(&agent, "work", &logger("work done", 2, 0));
    invoke_n(&agent, "work", 30);
    agent.poll("the upload hook", Duration::from_secs(60), || {
        agent
            .stderr_text()
            .contains("upload: test hook: paused at acked")
            .then_some(())
    });
    // The cloud stored batch 1; the agent never recorded that.
    let stored = cloud_logs(&cloud, "up-a");
    assert!(!stored.is_empty());
    agent.kill9();
    agent.set_env(&[]);
    agent.restart();
    invoke_n(&agent, "work", 10);
    let remote = wait_for_everything(&cloud, &agent, "up-a", 40);
    let seqs: BTreeSet<i64> = remote.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), remote.len(), "no record twice");
    assert_eq!(remote.iter().filter(|(_, t)| t == "work done").count(), 40);
    let m = cloud_metrics(&cloud);
    assert!(
        m.contains("edgefn_cloud_ingest_batches_total{result=\"duplicate\"} 1"),
        "the re-sent batch 1 was answered as a duplicate:\n{m}"
    );
}

#[test]
fn kill9_of_the_cloud_inside_the_ingest_transaction_stores_every_record_once() {
    let mut cloud = Cloud::start_env(false, &[], &[("EDGEFN_TEST_INGEST_PAUSE", "commit")]);
    let token = cloud.device("up-b", "lab");
    let agent = enrolled_agent_with("up-b", &cloud.url, &token, CONFIG);
    create(&agent, "work", &logger("work done", 2, 0));
    invoke_n(&agent, "work", 25);
    poll(
        "the ingest hook",
        || cloud.stderr_text(),
        || {
            cloud
                .stderr_text()
                .contains("ingest: test hook: paused before commit")
                .then_some(())
        },
    );
    cloud.kill9();
    cloud.restart(&[]);
    invoke_n(&agent, "work", 5);
    let remote = wait_for_everything(&cloud, &agent, "up-b", 30);
    let seqs: BTreeSet<i64> = remote.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs.len(), remote.len(), "no record twice");
    assert_eq!(remote.iter().filter(|(_, t)| t == "work done").count(), 30);
    let m = cloud_metrics(&cloud);
    assert!(
        !m.contains("result=\"duplicate\""),
        "the killed transaction stored nothing, so nothing came twice:\n{m}"
    );
}

#[test]
fn cloud_down_keeps_disk_within_budget_counts_drops_and_drains_after() {
    let mut cloud = Cloud::start();
    let token = cloud.device("up-c", "lab");
    let config = format!("{CONFIG}disk_budget = \"64KiB\"\n[retention]\ninterval = \"200ms\"\n");
    let agent = enrolled_agent_with("up-c", &cloud.url, &token, &config);
    let text = format!("reading {}", "x".repeat(120));
    create(&agent, "chatty", &logger(&text, 2, 0));
    cloud.kill9();
    invoke_n(&agent, "chatty", 1200);
    // ~300 bytes per invocation (record + line): 1200 of them are ~5x the budget.
    let store = Store::open(agent.data_dir().join("agent.db")).unwrap();
    let status = agent.poll(
        "retention to enforce the budget",
        Duration::from_secs(60),
        || {
            let s = store.upload_status().unwrap();
            (s.record_bytes <= 64 << 10 && s.dropped.logs > 0).then_some(s)
        },
    );
    assert!(
        status.pending_logs > 0,
        "records wait for the cloud: {status:?}"
    );
    assert!(status.dropped.invocations > 0, "{status:?}");
    // `edgefn-agent status` shows the backlog and the drops to the person at the gateway.
    let shown = agent.cli(&["status", "--json"]).json();
    assert_eq!(shown["enrollment"]["device_name"], "up-c", "{shown}");
    assert!(
        shown["device"].as_str().unwrap().starts_with("d-"),
        "{shown}"
    );
    let upload = &shown["upload"];
    assert!(
        upload["dropped"]["logs"].as_u64().unwrap() >= status.dropped.logs
            && upload["dropped"]["invocations"].as_u64().unwrap() >= status.dropped.invocations
            && upload["pending_logs"].as_u64().unwrap() > 0,
        "{shown}"
    );
    assert!(upload["failures"].as_u64().unwrap() > 0, "{shown}");
    let text = agent.cli(&["status"]).ok();
    assert!(
        text.contains("enrolled as up-c")
            && text.contains("dropped:")
            && text.contains("before upload"),
        "{text}"
    );

    cloud.restart(&[]);
    // Every record written is in the cloud once or counted as dropped, and nothing waits.
    let written = |store: &Store| {
        let (rows, dropped) = (store.row_counts().unwrap(), store.dropped_totals().unwrap());
        (
            rows.logs + dropped.logs,
            rows.invocations + dropped.invocations,
        )
    };
    let (remote_logs, remote_invocations, drops) = poll(
        "the backlog to drain",
        || {
            format!(
                "{:?}\n{}",
                store.upload_status().unwrap(),
                agent.stderr_text()
            )
        },
        || {
            let s = store.upload_status().unwrap();
            if s.pending_logs + s.pending_invocations > 0 {
                return None;
            }
            let v = cloud.ok("GET", "/v1/logs?device=up-c&limit=10000", None);
            let logs: Vec<i64> = v["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["seq"].as_i64().unwrap())
                .collect();
            let invocations = cloud_invocations(&cloud, "up-c").len() as u64;
            let dropped = (
                v["dropped"][0]["logs"].as_u64().unwrap_or(0),
                v["dropped"][0]["invocations"].as_u64().unwrap_or(0),
            );
            let (wl, wi) = written(&store);
            (logs.len() as u64 + dropped.0 == wl && invocations + dropped.1 == wi).then_some((
                logs,
                invocations,
                dropped,
            ))
        },
    );
    let distinct: BTreeSet<i64> = remote_logs.iter().copied().collect();
    assert_eq!(distinct.len(), remote_logs.len(), "no record twice");
    assert!(
        drops.0 > 0 && drops.1 > 0,
        "drops were counted and shown: {drops:?}"
    );
    assert!(remote_invocations > 0 && !remote_logs.is_empty());
    assert_eq!(store.upload_status().unwrap().dropped.logs, drops.0);
    assert_eq!(
        store
            .logs(&LogFilter {
                limit: 1,
                ..LogFilter::default()
            })
            .unwrap()
            .len(),
        1
    );
}

/// The exact nearest-rank quantile of sorted values.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn edgefn(cloud: &Cloud, args: &[&str]) -> (i32, String, String) {
    let bin = crate::sync::cloud_bin("edgefn");
    let o = Command::new(bin)
        .args(args)
        .env("EDGEFN_CLOUD", &cloud.url)
        .env("EDGEFN_TOKEN", &cloud.token)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn fleet_queries_and_merged_percentiles_across_two_agents() {
    let cloud = Cloud::start();
    let fast_token = cloud.device("up-fast", "lab");
    let slow_token = cloud.device("up-slow", "lab");
    let fast = enrolled_agent_with("up-fast", &cloud.url, &fast_token, CONFIG);
    let slow = enrolled_agent_with("up-slow", &cloud.url, &slow_token, CONFIG);
    create(&fast, "work", &logger("FAST work done", 2, 0));
    create(&slow, "work", &logger("slow work done", 3, 300_000));
    invoke_n(&fast, "work", 60);
    invoke_n(&slow, "work", 40);
    wait_for_everything(&cloud, &fast, "up-fast", 60);
    wait_for_everything(&cloud, &slow, "up-slow", 40);

    // Filters, through the CLI.
    let (code, out, err) = edgefn(&cloud, &["logs", "work", "--device", "up-slow", "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines = json_lines(&out);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["text"] == "slow work done")
            .count(),
        40
    );
    assert!(lines.iter().all(|l| l["device"] == "up-slow"));
    let (_, out, _) = edgefn(
        &cloud,
        &[
            "logs", "work", "--group", "lab", "--level", "warn", "--json",
        ],
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 40);
    assert!(lines
        .iter()
        .all(|l| l["text"] == "slow work done" && l["level"] == "warn"));
    let (_, out, _) = edgefn(&cloud, &["logs", "--grep", "fast WORK", "--json"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 60);
    assert!(lines.iter().all(|l| l["device"] == "up-fast"));
    let one = &cloud_invocations(&cloud, "up-slow")[7];
    let id = one["id"].as_str().unwrap();
    let (_, out, _) = edgefn(&cloud, &["logs", "--invocation", id, "--json"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["invocation_id"], id);
    let start = one["start_ms"].as_i64().unwrap();
    // A bare number is refused for --since (seconds or milliseconds?).
    let (code, _, err) = edgefn(&cloud, &["logs", "--since", "600"]);
    assert_eq!(code, 2, "{err}");
    let until = format!("{}", start);
    let (_, out, _) = edgefn(
        &cloud,
        &[
            "logs", "work", "--device", "up-slow", "--until", &until, "--json",
        ],
    );
    assert!(json_lines(&out)
        .iter()
        .all(|l| l["time_ms"].as_i64().unwrap() < start));
    let (_, text, _) = edgefn(&cloud, &["logs", "work", "--device", "up-fast"]);
    assert!(text.lines().all(|l| l.contains(" up-fast ")), "{text}");
    let (code, _, err) = edgefn(&cloud, &["logs", "--device", "a", "--group", "b"]);
    assert_eq!(code, 2, "{err}");

    // Percentiles merged from both devices' histograms equal the combined records'.
    let mut all: Vec<u64> = ["up-fast", "up-slow"]
        .iter()
        .flat_map(|d| cloud_invocations(&cloud, d))
        .map(|i| i["duration_us"].as_u64().unwrap())
        .collect();
    all.sort();
    let (code, out, err) = edgefn(
        &cloud,
        &[
            "stats", "work", "--group", "lab", "--window", "1h", "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["totals"]["invocations"], 100);
    for (q, key) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let want = exact(&all, q) as f64;
        let got = r["totals"]["duration_us"][key].as_u64().unwrap() as f64;
        assert!(
            (got - want).abs() <= want / 64.0 + 1.0,
            "{key}: merged {got} vs combined records {want}"
        );
    }
    let devices: Vec<&str> = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["up-fast", "up-slow"]);
    let (code, text, _) = edgefn(&cloud, &["stats", "work", "--device", "up-fast"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("invocations:") && text.contains("60"),
        "{text}"
    );
}
