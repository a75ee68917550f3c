//! Ordered streams benchmark (issue 7, item 5): stream records/s per partition and with 1, 2, 4
//! and 8 partitions, against a plain MQTT mapping of the same records in the same run.
//!
//! Run: `cargo bench -p edgefn-agent --bench streams` (release agent built like benches/mqtt.rs,
//! or `EDGEFN_BENCH_AGENT=path`). Markdown table on stdout, progress on stderr; results in
//! docs/benchmarks.md ("Ordered streams (issue 7)").
//!
//! What runs: the release `edgefn-agent run` against the real Mosquitto, the `stream-audit`
//! example (parses the batch, one kv read and up to three kv writes per batch) on
//! `--stream-mqtt bench/s/<pid>/<round>/+ --partition-key topic:5 --batch-size 100`, and, as the
//! baseline, the `counter` example (one kv write per message) on a plain `--mqtt` mapping of
//! the same number of messages. One publisher (rumqttc, QoS 1) sends `{"seq":N}` round robin to
//! the P partition topics, keeping at most `WINDOW` messages ahead of what the agent committed
//! (Mosquitto drops new QoS 1 messages for a subscriber with more than `max_queued_messages` =
//! 1000, plus its receive maximum, unacknowledged; the agent acks as soon as it committed).
//! `EDGEFN_BENCH_MQTT` (host:port, default 127.0.0.1:1883) picks the broker.
//!
//! Phases per round, for P in 1, 2, 4, 8:
//! - **end to end**: publish N records, time from the first publish until every record's batch
//!   committed (the sum of the partitions' kv `last/<partition>` = N);
//! - **consume only**: the mapping paused, N records appended (and acked), then `resume` and the
//!   time until that sum is N: the workers alone, P partitions in parallel.
//!
//! and the baseline: N messages through the plain MQTT mapping, until kv `count` = N. Medians
//! of `EDGEFN_BENCH_ROUNDS` (default 3) rounds; `EDGEFN_BENCH_RECORDS` (default 20,000) records
//! per phase.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use edgefn_agent::store::Store;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, MqttOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Messages published but not yet committed by the agent, at most.
const WINDOW: u64 = 800;
const PARTITIONS: [usize; 4] = [1, 2, 4, 8];

fn main() {
    let pid = std::process::id();
    let broker = std::env::var("EDGEFN_BENCH_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (host, port) = broker
        .rsplit_once(':')
        .map(|(h, p)| {
            (
                h.to_string(),
                p.parse::<u16>().expect("EDGEFN_BENCH_MQTT port"),
            )
        })
        .expect("EDGEFN_BENCH_MQTT is host:port");
    let rounds: usize = env_num("EDGEFN_BENCH_ROUNDS", 3);
    let n: u64 = env_num("EDGEFN_BENCH_RECORDS", 20_000);
    eprintln!("building the example functions (examples/, wasm32)...");
    let audit = support::example_path("stream_audit");
    let counter = support::example_path("counter");
    let dir = support::TempDir::new("streams-bench");
    let bin = agent_binary(dir.path());
    let mut agent = Agent::start(
        &bin,
        dir.path(),
        &format!("edgefn-bench-streams-{pid}"),
        &broker,
    );
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, "max_queue = 1024\nmax_concurrency = 8\n").unwrap();
    // `audit` may run one instance per partition at once; `counter` keeps the default (one at
    // a time: its read-modify-write of `count` needs it).
    agent.cli(&[
        "function",
        "create",
        "audit",
        "--module",
        audit.to_str().unwrap(),
        "--spec",
        spec.to_str().unwrap(),
    ]);
    let base_spec = dir.path().join("base.toml");
    std::fs::write(&base_spec, "max_queue = 1024\n").unwrap();
    agent.cli(&[
        "function",
        "create",
        "counter",
        "--module",
        counter.to_str().unwrap(),
        "--spec",
        base_spec.to_str().unwrap(),
    ]);
    let store = Store::open(dir.path().join("agent.db")).expect("the agent's store");
    let publisher = Publisher::connect(&format!("edgefn-bench-streams-pub-{pid}"), &host, port);
    // The baseline's mapping stays; each stream phase gets its own mapping (fresh partitions).
    let base_topic = format!("bench/b/{pid}/in");
    agent.cli(&[
        "mapping",
        "create",
        "--function",
        "counter",
        "--mqtt",
        &base_topic,
        "--qos",
        "1",
    ]);
    std::thread::sleep(Duration::from_secs(1));

    let mut e2e: Vec<Vec<f64>> = vec![Vec::new(); PARTITIONS.len()];
    let mut consume: Vec<Vec<f64>> = vec![Vec::new(); PARTITIONS.len()];
    let mut baseline = Vec::new();
    let kv = |key: &str, f: &str| -> u64 {
        store
            .kv_get(f, key.as_bytes())
            .ok()
            .flatten()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap_or([0; 8])))
    };
    for round in 0..rounds {
        // Baseline: the plain MQTT mapping.
        let before = kv("count", "counter");
        let t = publisher.run(
            n,
            |i| (base_topic.clone(), i),
            || kv("count", "counter") - before,
        );
        eprintln!("round {round}: baseline {:.0} msg/s", n as f64 / t);
        baseline.push(n as f64 / t);
        for (k, &p) in PARTITIONS.iter().enumerate() {
            for paused in [false, true] {
                let prefix = format!("bench/s/{pid}/{round}{}/{p}", u8::from(paused));
                let id = agent.cli(&[
                    "mapping",
                    "create",
                    "--function",
                    "audit",
                    "--stream-mqtt",
                    &format!("{prefix}/+"),
                    "--partition-key",
                    "topic:6",
                    "--batch-size",
                    "100",
                ]);
                let id = id.trim().to_string();
                // Partition names unique per phase: kv `last/<partition>` starts over.
                let tag = format!("r{round}{}n{p}", u8::from(paused));
                std::thread::sleep(Duration::from_millis(800)); // subscribed
                                                                // Progress: the sum of the partitions' last `seq` (each partition's own key, so
                                                                // instances running at once never write the same one).
                let done = || -> u64 {
                    (0..p)
                        .map(|k| kv(&format!("last/{tag}-{k}"), "audit"))
                        .sum()
                };
                let topic = |i: u64| (format!("{prefix}/{tag}-{}", i % p as u64), i / p as u64 + 1);
                let t = if paused {
                    agent.cli(&["mapping", "pause", &id]);
                    std::thread::sleep(Duration::from_millis(300));
                    let appended = || {
                        store
                            .stream_lag(None)
                            .map(|rows| {
                                rows.iter()
                                    .filter(|r| r.mapping == id)
                                    .map(|r| r.appended as u64)
                                    .sum::<u64>()
                            })
                            .unwrap_or(0)
                    };
                    publisher.run(n, topic, appended);
                    let start = Instant::now();
                    agent.cli(&["mapping", "resume", &id]);
                    wait(|| done() >= n);
                    start.elapsed().as_secs_f64()
                } else {
                    publisher.run(n, topic, done)
                };
                let rate = n as f64 / t;
                eprintln!(
                    "round {round}: {p} partitions, {}: {rate:.0} records/s",
                    if paused { "consume only" } else { "end to end" }
                );
                if paused {
                    consume[k].push(rate);
                } else {
                    e2e[k].push(rate);
                }
                assert_eq!(
                    kv("gaps", "audit"),
                    0,
                    "a record lost, repeated or reordered"
                );
                agent.cli(&["mapping", "delete", &id]);
            }
        }
    }
    let base = median(&mut baseline);
    println!(
        "| partitions | end to end records/s | per partition | consume only records/s | per partition | end to end vs plain MQTT mapping |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (k, &p) in PARTITIONS.iter().enumerate() {
        let (e, c) = (median(&mut e2e[k]), median(&mut consume[k]));
        println!(
            "| {p} | {e:.0} | {:.0} | {c:.0} | {:.0} | {:.2}x |",
            e / p as f64,
            c / p as f64,
            e / base
        );
    }
    println!("| plain MQTT mapping (baseline, `counter`) | {base:.0} msg/s | | | | 1.00x |");
    println!(
        "\n{rounds} rounds of {n} records, medians; load average at the end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    agent.stop();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[track_caller]
fn wait(mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(
            Instant::now() < until,
            "the agent did not finish within 300 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One QoS 1 publisher.
struct Publisher {
    client: Client,
}

impl Publisher {
    fn connect(id: &str, host: &str, port: u16) -> Publisher {
        let mut o = MqttOptions::new(id, host, port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_request_channel_capacity(10_000);
        let (client, mut conn) = Client::new(o, 10_000);
        // The event loop must be polled for anything to be sent; progress is read from the
        // agent's store, not from PUBACKs.
        std::thread::spawn(move || {
            for ev in conn.iter() {
                if let Err(e) = ev {
                    eprintln!("publisher: MQTT error: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Publisher { client }
    }

    /// Publishes `n` messages (`topic(i)` → (topic, seq)), at most [`WINDOW`] ahead of
    /// `committed()`, and returns the seconds until `committed() >= n`.
    fn run(
        &self,
        n: u64,
        topic: impl Fn(u64) -> (String, u64),
        committed: impl Fn() -> u64,
    ) -> f64 {
        let start = Instant::now();
        let mut done = 0;
        for i in 0..n {
            if i >= done + WINDOW {
                wait(|| {
                    done = committed();
                    i < done + WINDOW
                });
            }
            let (t, seq) = topic(i);
            self.client
                .publish(t, QoS::AtLeastOnce, false, format!("{{\"seq\":{seq}}}"))
                .unwrap();
        }
        wait(|| committed() >= n);
        start.elapsed().as_secs_f64()
    }
}

struct Agent {
    child: Option<Child>,
    url: String,
    data_dir: PathBuf,
    bin: PathBuf,
}

impl Agent {
    fn start(bin: &Path, data_dir: &Path, client_id: &str, broker: &str) -> Agent {
        let config = data_dir.join("agent.toml");
        std::fs::write(&config, format!("[mqtt]\nclient_id = \"{client_id}\"\n")).unwrap();
        let mut child = Command::new(bin)
            .args(["run", "--data-dir"])
            .arg(data_dir)
            .arg("--config")
            .arg(&config)
            .args([
                "--api",
                "127.0.0.1:0",
                "--http",
                "off",
                "--mqtt",
                &format!("mqtt://{broker}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgefn-agent run");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("admin API ").nth(1) {
                    let _ = tx.send(rest.split([',', ' ']).next().unwrap_or("").to_string());
                }
                eprintln!("  [agent] {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the agent reports ready");
        Agent {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            bin: bin.to_path_buf(),
        }
    }

    fn cli(&mut self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .args(args)
            .arg("--agent")
            .arg(&self.url)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("run edgefn-agent");
        if !out.status.success() {
            self.stop();
            panic!(
                "edgefn-agent {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(1));
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The release agent: `EDGEFN_BENCH_AGENT`, or built into `<target>/streams-bench`.
fn agent_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("edgefn-agent");
    if let Ok(bin) = std::env::var("EDGEFN_BENCH_AGENT") {
        std::fs::copy(&bin, &copy).expect("copy EDGEFN_BENCH_AGENT");
        return copy;
    }
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| support::repo_root().join("target"))
        .join("streams-bench");
    eprintln!("building the release agent into {}...", target.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(support::repo_root())
        .args([
            "build",
            "--release",
            "-p",
            "edgefn-agent",
            "--bin",
            "edgefn-agent",
        ])
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --release failed");
    std::fs::copy(target.join("release/edgefn-agent"), &copy).expect("copy the agent");
    copy
}
