//! Deploy to running (issue 5, item 9): the time from `function publish` + `deploy create` on
//! the cloud to the new version answering on every agent of a small local fleet, with the MQTT
//! nudge and with polling only (the agents' long-poll). Results: docs/benchmarks.md ("Deploy to
//! running").
//!
//! Run: `cargo bench -p edgefn-agent --bench deploy` (bench profile = release + fat LTO).
//! Markdown table on stdout, progress on stderr.
//!
//! What runs, per mode: the release `edgefn-cloud` (`init`, `serve --listen 127.0.0.1:0`, SQLite;
//! with `--mqtt mqtt://127.0.0.1:1883` in the nudge mode) and `AGENTS` release agents (`run
//! --api 127.0.0.1:0 --http off --mqtt none`, each enrolled with `edgefn-agent enroll`, `[cloud]`
//! defaults: a 60 s long-poll; in the nudge mode also `mqtt = "mqtt://127.0.0.1:1883"`). A
//! deployment of version 1 of `hello` to their group first (warm-up, not measured). Then
//! `TRIALS` times: upload a new module (`PUT /v1/functions/hello`, a guest answering `vN`;
//! not timed), and, timed from just before it, `POST /v1/functions/hello/publish` and `POST
//! /v1/deployments {"group", "functions": ["hello:N"]}` (batch 100 %); meanwhile one thread per
//! agent invokes `hello:N` through the agent's admin API every `PROBE` until it answers `vN`.
//! A trial's time is the slowest agent's. Each mode's agents and cloud are stopped before the
//! next mode starts.
//!
//! Environment: `EDGEFN_BENCH_CLOUD` (an `edgefn-cloud` binary; default: built by cargo with
//! the bench profile next to this bench's agent), `EDGEFN_BENCH_MQTT` (host:port of the broker
//! for the nudges, default 127.0.0.1:1883), `EDGEFN_BENCH_TRIALS` (10), `EDGEFN_BENCH_AGENTS` (3).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/daemon_support.rs"]
mod daemon_support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use daemon_support::{cli_bare, Agent};
use support::TempDir;

/// How often each agent is asked whether the new version answers.
const PROBE: Duration = Duration::from_millis(5);
/// A trial that has not reached every agent after this long is reported as failed.
const TRIAL_LIMIT: Duration = Duration::from_secs(120);

fn env_num(k: &str, default: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A guest answering `tag`.
fn guest(tag: &str) -> Vec<u8> {
    support::wat(&format!(
        r#"(module
  (import "edgefn" "respond" (func $respond (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{tag}")
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "edgefn_handle") (param i32 i32) (result i32)
    (call $respond (i32.const 16) (i32.const {len})) (i32.const 0)))"#,
        len = tag.len()
    ))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `edgefn-cloud` binary: `EDGEFN_BENCH_CLOUD`, else built with this bench's profile.
fn cloud_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEFN_BENCH_CLOUD") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_edgefn-agent"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building edgefn-cloud (bench profile)");
    let ok = Command::new(cargo)
        .current_dir(support::repo_root())
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "edgefn-cloud",
            "--bin",
            "edgefn-cloud",
        ])
        .status()
        .expect("run cargo build -p edgefn-cloud");
    assert!(ok.success(), "building edgefn-cloud failed");
    dir.join("edgefn-cloud")
}

struct Cloud {
    child: Child,
    url: String,
    token: String,
    http: ureq::Agent,
    _dir: TempDir,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cloud {
    fn start(bin: &PathBuf, mqtt: Option<&str>) -> Cloud {
        let dir = TempDir::new("bench-deploy-cloud");
        let ok = Command::new(bin)
            .args(["init", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "edgefn-cloud init");
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.path());
        if let Some(m) = mqtt {
            cmd.args(["--mqtt", &format!("mqtt://{m}")]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgefn-cloud serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("edgefn-cloud serve exited").unwrap();
            if let Some(u) = line.strip_prefix("listening on ") {
                break u.trim().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(dir.path().join("operator.token"))
            .unwrap()
            .trim()
            .to_string();
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Cloud {
            child,
            url,
            token,
            http,
            _dir: dir,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        let body = serde_json::to_vec(&body).unwrap();
        let req = match method {
            "POST" => self.http.post(&url),
            "PUT" => self.http.put(&url),
            m => panic!("{m}"),
        };
        let mut r = req
            .header("authorization", &auth)
            .content_type("application/json")
            .send(body)
            .unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

/// What `hello:version` answers on `agent` (None unless 200).
fn answer(agent: &daemon_support::Http, version: u64) -> Option<String> {
    let r = agent.invoke("hello", &version.to_string(), None, b"x");
    if r.status != 200 {
        return None;
    }
    let v = r.json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["response_base64"].as_str()?)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Waits until every agent answers `hello:version` with `want`; the time each took from
/// `start`, or None past [`TRIAL_LIMIT`].
fn wait_all(agents: &[Agent], version: u64, want: &str, start: Instant) -> Vec<Option<Duration>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| {
                let http = a.http();
                s.spawn(move || loop {
                    if answer(&http, version).as_deref() == Some(want) {
                        return Some(start.elapsed());
                    }
                    if start.elapsed() > TRIAL_LIMIT {
                        return None;
                    }
                    std::thread::sleep(PROBE);
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

struct ModeResult {
    /// Per trial: the slowest agent's time (None: a trial failed).
    trials: Vec<Option<Duration>>,
    /// Every agent's time in every trial.
    each: Vec<Duration>,
    load: (String, String),
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_mode(
    name: &'static str,
    cloud_bin: &PathBuf,
    mqtt: Option<&str>,
    agents_n: usize,
    trials: usize,
) -> ModeResult {
    eprintln!("{name}: starting the cloud and {agents_n} agents");
    let cloud = Cloud::start(cloud_bin, mqtt);
    cloud.call("POST", "/v1/groups", json!({"name": "bench"}));
    let scratch = TempDir::new("bench-deploy-cfg");
    let config = scratch.path().join("agent.toml");
    let text = match mqtt {
        Some(m) => format!("[cloud]\nmqtt = \"mqtt://{m}\"\n"),
        None => "[cloud]\n".to_string(),
    };
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap().to_string();
    let agents: Vec<Agent> = (0..agents_n)
        .map(|i| {
            let dev = cloud.call(
                "POST",
                "/v1/devices",
                json!({"name": format!("pi-{i}"), "groups": ["bench"]}),
            );
            let token = dev["token"].as_str().unwrap().to_string();
            let url = cloud.url.clone();
            Agent::start_prepared(
                &format!("bench-deploy-{name}-{i}"),
                &["--config", &config, "--http", "off", "--mqtt", "none"],
                |data| {
                    let o = cli_bare(
                        &[
                            "enroll",
                            "--cloud",
                            &url,
                            "--token",
                            &token,
                            "--data-dir",
                            data.to_str().unwrap(),
                        ],
                        &[],
                    );
                    assert_eq!(o.code, Some(0), "enroll: {}", o.stderr);
                },
            )
        })
        .collect();
    if mqtt.is_some() {
        for a in &agents {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !a.stderr_text().contains("taking nudges on") {
                assert!(
                    Instant::now() < deadline,
                    "no nudge subscription: {}",
                    a.stderr_text()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // Warm-up: version 1 everywhere.
    cloud.call(
        "POST",
        "/v1/functions",
        json!({"name": "hello", "module_base64": b64(&guest("v1"))}),
    );
    cloud.call("POST", "/v1/functions/hello/publish", json!({}));
    cloud.call(
        "POST",
        "/v1/deployments",
        json!({"group": "bench", "functions": ["hello:1"]}),
    );
    let warm = wait_all(&agents, 1, "v1", Instant::now());
    assert!(
        warm.iter().all(Option::is_some),
        "warm-up deployment did not reach every agent"
    );
    // Let the agents' health windows and reports settle (not measured).
    std::thread::sleep(Duration::from_secs(2));

    let load_start = loadavg();
    let mut out = ModeResult {
        trials: vec![],
        each: vec![],
        load: (String::new(), String::new()),
    };
    for t in 0..trials {
        let version = t as u64 + 2;
        let tag = format!("v{version}");
        cloud.call(
            "PUT",
            "/v1/functions/hello",
            json!({"module_base64": b64(&guest(&tag))}),
        );
        let start = Instant::now();
        let published = cloud.call("POST", "/v1/functions/hello/publish", json!({}));
        assert_eq!(published["version"].as_u64(), Some(version));
        cloud.call(
            "POST",
            "/v1/deployments",
            json!({"group": "bench", "functions": [format!("hello:{version}")]}),
        );
        let times = wait_all(&agents, version, &tag, start);
        let slowest = if times.iter().all(Option::is_some) {
            times.iter().flatten().max().copied()
        } else {
            None
        };
        out.each.extend(times.iter().flatten());
        eprintln!(
            "  {name} trial {}: {}",
            t + 1,
            times
                .iter()
                .map(|d| d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out.trials.push(slowest);
        // Between trials: let the reports and health windows of this one pass.
        std::thread::sleep(Duration::from_secs(2));
    }
    out.load = (load_start, loadavg());
    drop(agents);
    drop(cloud);
    out
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    let _ = std::env::args(); // `cargo bench` passes --bench
    let trials = env_num("EDGEFN_BENCH_TRIALS", 10);
    let agents_n = env_num("EDGEFN_BENCH_AGENTS", 3);
    let broker = std::env::var("EDGEFN_BENCH_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    if std::net::TcpStream::connect(&broker).is_err() {
        panic!("no MQTT broker at {broker} (EDGEFN_BENCH_MQTT)");
    }
    let bin = cloud_bin();
    eprintln!(
        "deploy-to-running bench: {agents_n} agents, {trials} trials per mode, cloud {}",
        bin.display()
    );
    let results = [
        run_mode("nudge", &bin, Some(&broker), agents_n, trials),
        run_mode("poll", &bin, None, agents_n, trials),
    ];
    println!();
    println!("| | MQTT nudge + long-poll | long-poll only | target |");
    println!("|---|---|---|---|");
    let row = |label: &str, f: &dyn Fn(&ModeResult) -> String, target: &str| {
        println!(
            "| {label} | {} | {} | {target} |",
            f(&results[0]),
            f(&results[1])
        );
    };
    row("agents", &|_| agents_n.to_string(), "");
    row(
        "trials (reached every agent / all)",
        &|r| {
            format!(
                "{} / {}",
                r.trials.iter().filter(|t| t.is_some()).count(),
                r.trials.len()
            )
        },
        "",
    );
    let done = |r: &ModeResult| r.trials.iter().flatten().copied().collect::<Vec<_>>();
    row(
        "**publish + deploy → every agent answers, median**",
        &|r| format!("**{}**", ms(pct(&done(r), 0.5))),
        "**≤ 2 s** (nudge)",
    );
    row("same, slowest trial", &|r| ms(pct(&done(r), 1.0)), "");
    row("same, fastest trial", &|r| ms(pct(&done(r), 0.0001)), "");
    row(
        "per agent, median / max",
        &|r| format!("{} / {}", ms(pct(&r.each, 0.5)), ms(pct(&r.each, 1.0))),
        "",
    );
    row(
        "loadavg start → end",
        &|r| format!("{} → {}", r.load.0, r.load.1),
        "",
    );
}
