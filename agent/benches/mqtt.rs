//! MQTT end-to-end benchmark (issue 4, item 11): publish → `celsius` → result publish through a
//! real Mosquitto, the release agent side by side with a native ceiling, in one run.
//!
//! Run: `cargo bench -p edgefn-agent --bench mqtt` (bench profile = release + fat LTO). Markdown
//! table on stdout, progress on stderr. Results and the machine they were taken on live in
//! docs/benchmarks.md ("MQTT end to end (issue 4)").
//!
//! What runs:
//! - **the agent**: the release `edgefn-agent run --data-dir D --api 127.0.0.1:0 --http off
//!   --mqtt mqtt://127.0.0.1:1883` as a child process, configured through its own CLI:
//!   `celsius-q0` / `celsius-q1` (the `celsius` example with config `qos` = 0 / 1, `max_queue =
//!   1024`) mapped with `--mqtt bench/in/e<pid>/q<Q>/# --qos Q`. celsius publishes its result
//!   to `bench/out/<last topic level>` with QoS Q through the agent's durable outbox.
//! - **the native ceiling**: a rumqttc v5 client in this process (a tokio task, TCP_NODELAY,
//!   automatic acks) subscribed to `bench/in2/n<pid>/q<Q>/#`, doing the same conversion with
//!   serde_json and publishing to `bench/out2/<last level>` with the same QoS. No Wasm, no store.
//! - **one load generator** (rumqttc v5, TCP_NODELAY) publishing `{"seq":N,"ts_us":T,"temp":X}`
//!   with `ts_us` = send time (wall clock, µs) to 8 sensor topics round robin, and **one
//!   subscriber** on the exact output topics measuring receive time − `ts_us` per message.
//!
//! Measurements, for QoS 0 and QoS 1, agent and native interleaved, in 3 rounds (median round
//! reported): (a) latency p50/p99 at a paced 1,000 msg/s for 10 s; (b) max throughput: publish
//! as fast as the pipeline takes it for 10 s, keeping at most `WINDOW` messages outstanding end
//! to end (below Mosquitto's default `max_queued_messages` of 1000, beyond which the broker
//! drops messages for a slow subscriber), and count outputs/s received after a 1 s ramp-up.
//! Agent RSS (VmRSS sampled every 250 ms) and CPU ((utime+stime)/wall from /proc/PID/stat) are
//! taken over each agent phase.
//!
//! Every topic carries the process id, so concurrent runs and tests do not see each other's
//! messages. Everything is bounded in time (a watchdog ends the run after `DEADLINE`) and the
//! agent is stopped (SIGTERM, then SIGKILL) and its broker session removed on every exit path.
//!
//! Environment overrides: `EDGEFN_BENCH_MQTT` (host:port, default 127.0.0.1:1883),
//! `EDGEFN_BENCH_ROUNDS` (3), `EDGEFN_BENCH_SECS` (10, per phase), `EDGEFN_BENCH_AGENT` (an agent
//! binary to use instead of building one, e.g. an unstripped build for `perf`).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Paced rate of the latency phases.
const RATE: u32 = 1_000;
/// Max-throughput phases: messages outstanding end to end (sent, output not yet received).
const WINDOW: u64 = 800;
/// Sensor topics the load generator cycles through.
const SENSORS: usize = 8;
/// Seq numbers are `phase * PHASE_MUL + i`, so stragglers of an earlier phase are ignored.
const PHASE_MUL: u64 = 1_000_000_000;
/// The run after the builds ends (agent killed, exit 2) after this long, whatever happens.
const DEADLINE: Duration = Duration::from_secs(25 * 60);
/// Targets (issue 4): QoS 1 throughput ≥ 0.5x the ceiling; p50 at 1,000 msg/s ≤ 1.5x.
const TARGET_THROUGHPUT: f64 = 0.5;
const TARGET_P50: f64 = 1.5;

/// The agent's pid, for the watchdog.
static AGENT_PID: AtomicU32 = AtomicU32::new(0);

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; wasmi is ~100x slower. Use `cargo bench`.");
    }
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
    let secs: f64 = env_num("EDGEFN_BENCH_SECS", 10.0);

    eprintln!("building the example functions (examples/, wasm32)...");
    let celsius = support::example_path("celsius");
    let dir = support::TempDir::new("mqtt-bench");
    let agent_bin = agent_binary(dir.path());
    // From here on (the builds are done) the run is bounded.
    std::thread::spawn(|| {
        std::thread::sleep(DEADLINE);
        eprintln!("mqtt bench: deadline of {DEADLINE:?} reached; killing the agent and exiting");
        kill_pid(AGENT_PID.load(Ordering::Relaxed), "KILL");
        std::process::exit(2);
    });
    let client_id = format!("edgefn-bench-agent-{pid}");
    let mut agent = Agent::start(&agent_bin, dir.path(), &client_id, &broker);
    eprintln!(
        "agent pid {} ready: admin API {}, data dir {}",
        agent.pid,
        agent.url,
        dir.path().display()
    );
    let tag_agent = format!("e{pid}");
    let tag_native = format!("n{pid}");
    for q in [0u8, 1] {
        let spec = dir.path().join(format!("celsius-q{q}.toml"));
        std::fs::write(&spec, format!("max_queue = 1024\n[config]\nqos = {q}\n")).unwrap();
        let name = format!("celsius-q{q}");
        agent.cli(&[
            "function",
            "create",
            &name,
            "--module",
            celsius.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
        ]);
        let filter = format!("bench/in/{tag_agent}/q{q}/#");
        let id = agent.cli(&[
            "mapping",
            "create",
            "--function",
            &name,
            "--mqtt",
            &filter,
            "--qos",
            &q.to_string(),
        ]);
        eprintln!("mapped {name} <- {filter} (QoS {q}): {}", id.trim());
    }

    // The machine's load from here on: the builds above are over.
    let load_start = loadavg();
    eprintln!("load average before the measurements: {load_start}");
    let cpu_start = cpu_times();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = rt.block_on(bench(Setup {
        host: host.clone(),
        port,
        pid,
        tag_agent,
        tag_native,
        agent_pid: agent.pid,
        rounds,
        secs,
    }));
    let dead_letters = agent.cli(&["dead-letters", "--json"]);
    let dead = serde_json::from_str::<serde_json::Value>(&dead_letters)
        .ok()
        .and_then(|v| {
            v.as_array().map(|a| a.len()).or_else(|| {
                v.get("dead_letters")
                    .and_then(|d| d.as_array())
                    .map(|a| a.len())
            })
        });
    agent.stop();
    rt.block_on(remove_session(&host, port, &client_id));
    drop(rt);
    let load_end = loadavg();
    let cpu = cpu_use(&cpu_start, &cpu_times());
    let results = match outcome {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mqtt bench failed: {e}");
            std::process::exit(1);
        }
    };
    print_report(
        &results,
        rounds,
        secs,
        &broker,
        &load_start,
        &load_end,
        &cpu,
        dead,
    );
}

fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The agent child process

/// Builds the release agent (`cargo build --release -p edgefn-agent`) into a target directory of
/// its own, `target/mqtt-bench`, and copies the binary into `dir`. The shared target directory
/// is not safe here: another worktree building into it replaces `target/release/edgefn-agent`
/// (and even `deps/` binaries of the same name and hash) with its own source's build. The copy
/// must know `run --mqtt` and `--http`.
fn agent_binary(dir: &Path) -> PathBuf {
    let copy = dir.join("edgefn-agent");
    if let Ok(bin) = std::env::var("EDGEFN_BENCH_AGENT") {
        eprintln!("agent binary from EDGEFN_BENCH_AGENT: {bin}");
        std::fs::copy(&bin, &copy).expect("copy EDGEFN_BENCH_AGENT");
        return copy;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This bench runs as <target>/release/deps/mqtt-HASH.
    let target = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| support::repo_root().join("target"))
        .join("mqtt-bench");
    eprintln!(
        "building the release agent (cargo build --release -p edgefn-agent --target-dir {}; \
         the first time builds every dependency)...",
        target.display()
    );
    let mut child = Command::new(&cargo)
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
        .spawn()
        .expect("run cargo build");
    let until = Instant::now() + Duration::from_secs(30 * 60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for cargo") {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("cargo build --release -p edgefn-agent took more than 30 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "cargo build --release -p edgefn-agent failed"
    );
    std::fs::copy(target.join("release/edgefn-agent"), &copy).expect("copy the agent binary");
    let help = Command::new(&copy)
        .args(["run", "--help"])
        .output()
        .expect("run edgefn-agent run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--mqtt") && help.contains("--http"),
        "the built agent has no `run --mqtt`/`--http`"
    );
    copy
}

struct Agent {
    child: Option<Child>,
    pid: u32,
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
            .args(["--api", "127.0.0.1:0", "--http", "off", "--mqtt"])
            .arg(format!("mqtt://{broker}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgefn-agent run");
        let pid = child.id();
        AGENT_PID.store(pid, Ordering::Relaxed);
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("admin API ").nth(1) {
                    let url = rest.split([',', ' ']).next().unwrap_or("").to_string();
                    let _ = tx.send(url);
                }
                eprintln!("  [agent] {line}");
            }
        });
        let mut agent = Agent {
            child: Some(child),
            pid,
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
            bin: bin.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => agent.url = url,
            Err(_) => {
                agent.stop();
                panic!("the agent did not report ready within 20 s");
            }
        }
        agent
    }

    /// Runs a CLI verb against the agent; panics (after stopping it) on failure.
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

    /// SIGTERM, then SIGKILL after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_pid(self.pid, "TERM");
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                AGENT_PID.store(0, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        AGENT_PID.store(0, Ordering::Relaxed);
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_pid(pid: u32, signal: &str) {
    if pid != 0 {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
    }
}

/// (utime + stime) of a process, in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS of a process, in KiB.
fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

// ---------------------------------------------------------------------------------------------
// MQTT clients

fn options(id: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, host, port);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(true)
        .set_max_packet_size(Some(1 << 20))
        .set_request_channel_capacity(10_000)
        .set_network_options(net);
    o
}

fn qos_of(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// The reading of message `seq`: a deterministic temperature, so outputs can be checked.
fn temp_of(seq: u64) -> f64 {
    (seq % 700) as f64 / 10.0 - 20.0
}

#[derive(serde::Deserialize)]
struct Reading {
    seq: u64,
    ts_us: u64,
    temp: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Converted {
    seq: u64,
    ts_us: u64,
    temp_f: f64,
}

/// The native ceiling: subscribe, convert with serde_json, publish with the same QoS.
async fn native_ceiling(host: &str, port: u16, pid: u32, tag: &str) -> AsyncClient {
    let (client, mut el) = AsyncClient::new(
        options(&format!("edgefn-bench-native-{pid}"), host, port),
        10_000,
    );
    for q in [0u8, 1] {
        client
            .subscribe(format!("bench/in2/{tag}/q{q}/#"), qos_of(q))
            .await
            .expect("native subscribe");
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("native ceiling: MQTT error: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let publisher = client.clone();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let Ok(r) = serde_json::from_slice::<Reading>(&p.payload) else {
                continue;
            };
            let out = Converted {
                seq: r.seq,
                ts_us: r.ts_us,
                temp_f: r.temp * 9.0 / 5.0 + 32.0,
            };
            let topic = String::from_utf8_lossy(&p.topic);
            let level = topic.rsplit('/').next().unwrap_or("unknown");
            let payload = serde_json::to_vec(&out).unwrap();
            if publisher
                .publish(format!("bench/out2/{level}"), p.qos, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    client
}

/// What the subscriber counts for the current phase.
struct Rx {
    phase: AtomicU64,
    received: AtomicU64,
    wrong: AtomicU64,
    record: AtomicBool,
    lat_us: Mutex<Vec<u32>>,
    progress: Notify,
}

async fn subscriber(host: &str, port: u16, pid: u32, topics: Vec<String>, rx: Arc<Rx>) {
    let (client, mut el) = AsyncClient::new(
        options(&format!("edgefn-bench-sub-{pid}"), host, port),
        10_000,
    );
    for t in topics {
        client
            .subscribe(t, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    tokio::spawn(async move {
        let _client = client;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = now_us();
                    let Ok(c) = serde_json::from_slice::<Converted>(&p.payload) else {
                        rx.wrong.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if c.seq / PHASE_MUL != rx.phase.load(Ordering::Relaxed) {
                        continue;
                    }
                    let expect = temp_of(c.seq) * 9.0 / 5.0 + 32.0;
                    if (c.temp_f - expect).abs() > 1e-9 {
                        rx.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    if rx.record.load(Ordering::Relaxed) {
                        let lat = now.saturating_sub(c.ts_us).min(u32::MAX as u64) as u32;
                        rx.lat_us.lock().unwrap().push(lat);
                    }
                    rx.received.fetch_add(1, Ordering::Relaxed);
                    rx.progress.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("subscriber: MQTT error: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

/// The load generator's client (its event loop runs in a task).
async fn load_generator(host: &str, port: u16, pid: u32) -> AsyncClient {
    let (client, mut el) = AsyncClient::new(
        options(&format!("edgefn-bench-load-{pid}"), host, port),
        10_000,
    );
    tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                eprintln!("load generator: MQTT error: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    client
}

/// Removes the agent's persistent session from the broker (clean start, expiry 0).
async fn remove_session(host: &str, port: u16, client_id: &str) {
    let mut o = options(client_id, host, port);
    o.set_clean_start(true).set_session_expiry_interval(None);
    let (client, mut el) = AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.disconnect().await;
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Phases

struct Setup {
    host: String,
    port: u16,
    pid: u32,
    tag_agent: String,
    tag_native: String,
    agent_pid: u32,
    rounds: usize,
    secs: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Agent,
    Native,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Paced,
    Max,
}

#[derive(Debug, Clone, Default)]
struct PhaseResult {
    sent: u64,
    received: u64,
    /// Outputs/s (max mode: after the ramp-up; paced: received / send time).
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    /// Agent: CPU (% of one core) and RSS (median, max of the samples) during the phase.
    cpu_pct: Option<f64>,
    rss_kib: Option<(u64, u64)>,
}

struct Bench {
    s: Setup,
    load: AsyncClient,
    rx: Arc<Rx>,
    next_phase: u64,
    clk_tck: f64,
}

impl Bench {
    fn topics(&self, target: Target, qos: u8) -> Vec<String> {
        (0..SENSORS)
            .map(|k| match target {
                Target::Agent => format!("bench/in/{0}/q{qos}/{0}-s{k}", self.s.tag_agent),
                Target::Native => format!("bench/in2/{0}/q{qos}/{0}-s{k}", self.s.tag_native),
            })
            .collect()
    }

    async fn publish(&self, topic: &str, qos: u8, seq: u64) {
        let payload = format!(
            "{{\"seq\":{seq},\"ts_us\":{},\"temp\":{}}}",
            now_us(),
            temp_of(seq)
        );
        self.load
            .publish(topic, qos_of(qos), false, payload)
            .await
            .expect("load generator publish");
    }

    fn begin(&mut self, record: bool) -> u64 {
        self.next_phase += 1;
        let id = self.next_phase;
        self.rx.record.store(false, Ordering::Relaxed);
        self.rx.received.store(0, Ordering::Relaxed);
        self.rx.lat_us.lock().unwrap().clear();
        self.rx.phase.store(id, Ordering::Relaxed);
        self.rx.record.store(record, Ordering::Relaxed);
        id
    }

    /// Waits until `n` outputs of the current phase arrived or nothing arrived for `idle`.
    async fn drain(&self, n: u64, idle: Duration) -> u64 {
        let mut last = self.rx.received.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            let got = self.rx.received.load(Ordering::Relaxed);
            if got >= n {
                return got;
            }
            if got != last {
                last = got;
                since = Instant::now();
            } else if since.elapsed() > idle {
                return got;
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(20), self.rx.progress.notified()).await;
        }
    }

    /// Until one message went through `target` at `qos` (subscriptions ready, instance warm).
    async fn probe(&mut self, target: Target, qos: u8) -> Result<(), String> {
        let topics = self.topics(target, qos);
        let phase = self.begin(false);
        let until = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while Instant::now() < until {
            self.publish(&topics[0], qos, phase * PHASE_MUL + i).await;
            i += 1;
            if self.drain(1, Duration::from_millis(500)).await >= 1 {
                // Warm-up: a short paced burst, not measured.
                for j in 0..200u64 {
                    self.publish(
                        &topics[j as usize % SENSORS],
                        qos,
                        phase * PHASE_MUL + i + j,
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.drain(i + 200, Duration::from_secs(3)).await;
                return Ok(());
            }
        }
        Err(format!(
            "no output from {target:?} at QoS {qos} within 20 s"
        ))
    }

    async fn phase(&mut self, target: Target, qos: u8, mode: Mode) -> PhaseResult {
        let topics = self.topics(target, qos);
        let phase = self.begin(mode == Mode::Paced);
        let dur = Duration::from_secs_f64(self.s.secs);
        // Agent CPU and RSS over the phase.
        let sampler = (target == Target::Agent).then(|| {
            let pid = self.s.agent_pid;
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let task = tokio::spawn(async move {
                let mut rss = Vec::new();
                while !s2.load(Ordering::Relaxed) {
                    if let Some(r) = proc_rss_kib(pid) {
                        rss.push(r);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                rss
            });
            (stop, task, proc_cpu_ticks(pid), Instant::now())
        });
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut rate_from = None;
        let mut lost_credit = 0u64;
        match mode {
            Mode::Paced => {
                let n = (RATE as f64 * self.s.secs) as u64;
                let step = Duration::from_secs(1) / RATE;
                for i in 0..n {
                    let at = t0 + step * i as u32;
                    if at > Instant::now() {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    self.publish(&topics[i as usize % SENSORS], qos, phase * PHASE_MUL + i)
                        .await;
                    sent += 1;
                }
            }
            Mode::Max => {
                let ramp = t0 + Duration::from_secs(1);
                let end = t0 + dur;
                let mut last_progress = (0u64, Instant::now());
                while Instant::now() < end {
                    let got = self.rx.received.load(Ordering::Relaxed);
                    if rate_from.is_none() && Instant::now() >= ramp {
                        rate_from = Some((got, Instant::now()));
                    }
                    if got != last_progress.0 {
                        last_progress = (got, Instant::now());
                    }
                    if sent - got - lost_credit >= WINDOW {
                        if last_progress.1.elapsed() > Duration::from_secs(2) {
                            // Nothing came back for 2 s: count the window as lost, go on.
                            lost_credit = sent - got;
                            last_progress.1 = Instant::now();
                        }
                        let _ = tokio::time::timeout(
                            Duration::from_millis(20),
                            self.rx.progress.notified(),
                        )
                        .await;
                        continue;
                    }
                    self.publish(
                        &topics[sent as usize % SENSORS],
                        qos,
                        phase * PHASE_MUL + sent,
                    )
                    .await;
                    sent += 1;
                }
            }
        }
        let send_time = t0.elapsed();
        let at_end = (self.rx.received.load(Ordering::Relaxed), Instant::now());
        let (cpu_pct, rss_kib) = match sampler {
            Some((stop, task, ticks0, c0)) => {
                // CPU over the sending time (the agent's work for the phase).
                let cpu = match (ticks0, proc_cpu_ticks(self.s.agent_pid)) {
                    (Some(a), Some(b)) => {
                        Some((b - a) as f64 / self.clk_tck / c0.elapsed().as_secs_f64() * 100.0)
                    }
                    _ => None,
                };
                stop.store(true, Ordering::Relaxed);
                let mut rss = task.await.unwrap_or_default();
                rss.sort_unstable();
                let r = (!rss.is_empty()).then(|| (rss[rss.len() / 2], *rss.last().unwrap()));
                (cpu, r)
            }
            None => (None, None),
        };
        let received = self.drain(sent, Duration::from_secs(5)).await;
        self.rx.record.store(false, Ordering::Relaxed);
        let rate = match (mode, rate_from) {
            (Mode::Max, Some((n0, t))) => {
                (at_end.0 - n0) as f64 / at_end.1.duration_since(t).as_secs_f64()
            }
            _ => received as f64 / send_time.as_secs_f64(),
        };
        let mut lat = std::mem::take(&mut *self.rx.lat_us.lock().unwrap());
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                f64::NAN
            } else {
                lat[((lat.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        PhaseResult {
            sent,
            received,
            rate,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            cpu_pct,
            rss_kib,
        }
    }
}

/// Results by (target, qos, mode): one per round.
type Results = Vec<((Target, u8, Mode), Vec<PhaseResult>)>;

async fn bench(s: Setup) -> Result<(Results, u64), String> {
    let (host, port, pid) = (s.host.clone(), s.port, s.pid);
    let rx = Arc::new(Rx {
        phase: AtomicU64::new(0),
        received: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
        record: AtomicBool::new(false),
        lat_us: Mutex::new(Vec::new()),
        progress: Notify::new(),
    });
    let mut out_topics = Vec::new();
    for k in 0..SENSORS {
        out_topics.push(format!("bench/out/{}-s{k}", s.tag_agent));
        out_topics.push(format!("bench/out2/{}-s{k}", s.tag_native));
    }
    subscriber(&host, port, pid, out_topics, rx.clone()).await;
    let _native = native_ceiling(&host, port, pid, &s.tag_native).await;
    let load = load_generator(&host, port, pid).await;
    let rounds = s.rounds;
    let mut b = Bench {
        s,
        load,
        rx,
        next_phase: 0,
        clk_tck: clk_tck(),
    };
    for q in [0u8, 1] {
        for t in [Target::Agent, Target::Native] {
            eprintln!("warming up {t:?} at QoS {q}...");
            b.probe(t, q).await?;
        }
    }
    let mut results: Results = Vec::new();
    for q in [0u8, 1] {
        for m in [Mode::Paced, Mode::Max] {
            for t in [Target::Agent, Target::Native] {
                results.push(((t, q, m), Vec::new()));
            }
        }
    }
    for round in 1..=rounds {
        for q in [0u8, 1] {
            for m in [Mode::Paced, Mode::Max] {
                // Alternate which side goes first, so drift does not favour one.
                let order = if round % 2 == 1 {
                    [Target::Agent, Target::Native]
                } else {
                    [Target::Native, Target::Agent]
                };
                for t in order {
                    let r = b.phase(t, q, m).await;
                    eprintln!(
                        "round {round}/{rounds} {t:?} QoS {q} {m:?}: sent {} received {} rate {:.0}/s p50 {} p99 {}{}",
                        r.sent,
                        r.received,
                        r.rate,
                        fmt_us(r.p50_us),
                        fmt_us(r.p99_us),
                        match (r.cpu_pct, r.rss_kib) {
                            (Some(c), Some((m, x))) => format!(" agent CPU {c:.0}% RSS {:.1}/{:.1} MiB", m as f64 / 1024.0, x as f64 / 1024.0),
                            _ => String::new(),
                        }
                    );
                    results
                        .iter_mut()
                        .find(|(k, _)| *k == (t, q, m))
                        .unwrap()
                        .1
                        .push(r);
                    // Let the pipeline settle between phases.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    let wrong = b.rx.wrong.load(Ordering::Relaxed);
    Ok((results, wrong))
}

// ---------------------------------------------------------------------------------------------
// Report

fn fmt_us(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1} k/s", r / 1000.0)
    } else {
        format!("{r:.0}/s")
    }
}

/// The round with the median value of `key`.
fn median_by(rounds: &[PhaseResult], key: impl Fn(&PhaseResult) -> f64) -> PhaseResult {
    let mut v: Vec<&PhaseResult> = rounds.iter().collect();
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

fn range(
    rounds: &[PhaseResult],
    key: impl Fn(&PhaseResult) -> f64,
    f: fn(f64) -> String,
) -> String {
    let v: Vec<f64> = rounds.iter().map(key).collect();
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{}–{}", f(lo), f(hi))
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    (results, wrong): &(Results, u64),
    rounds: usize,
    secs: f64,
    broker: &str,
    load_start: &str,
    load_end: &str,
    cpu: &str,
    dead_letters: Option<usize>,
) {
    let get = |t: Target, q: u8, m: Mode| -> &Vec<PhaseResult> {
        &results.iter().find(|(k, _)| *k == (t, q, m)).unwrap().1
    };
    println!("| Measurement | QoS | agent | native ceiling | agent / native | agent, all rounds | native, all rounds | Target | Met |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for q in [0u8, 1] {
        let a = get(Target::Agent, q, Mode::Paced);
        let n = get(Target::Native, q, Mode::Paced);
        let am = median_by(a, |r| r.p50_us);
        let nm = median_by(n, |r| r.p50_us);
        let ratio = am.p50_us / nm.p50_us;
        println!(
            "| latency p50 at {RATE} msg/s | {q} | {} | {} | {ratio:.2}x | {} | {} | ≤ {TARGET_P50}x | {} |",
            fmt_us(am.p50_us),
            fmt_us(nm.p50_us),
            range(a, |r| r.p50_us, fmt_us),
            range(n, |r| r.p50_us, fmt_us),
            if ratio <= TARGET_P50 { "yes" } else { "**no**" }
        );
        println!(
            "| latency p99 at {RATE} msg/s | {q} | {} | {} | {:.2}x | {} | {} |  |  |",
            fmt_us(am.p99_us),
            fmt_us(nm.p99_us),
            am.p99_us / nm.p99_us,
            range(a, |r| r.p99_us, fmt_us),
            range(n, |r| r.p99_us, fmt_us),
        );
        println!(
            "| delivered at {RATE} msg/s (received / sent) | {q} | {}/{} | {}/{} |  |  |  |  |  |",
            am.received, am.sent, nm.received, nm.sent
        );
        let a = get(Target::Agent, q, Mode::Max);
        let n = get(Target::Native, q, Mode::Max);
        let am = median_by(a, |r| r.rate);
        let nm = median_by(n, |r| r.rate);
        let ratio = am.rate / nm.rate;
        let (target, met) = if q == 1 {
            (
                format!("≥ {TARGET_THROUGHPUT}x"),
                if ratio >= TARGET_THROUGHPUT {
                    "yes"
                } else {
                    "**no**"
                },
            )
        } else {
            (String::new(), "")
        };
        println!(
            "| max throughput (outputs/s) | {q} | {} | {} | {ratio:.2}x | {} | {} | {target} | {met} |",
            fmt_rate(am.rate),
            fmt_rate(nm.rate),
            range(a, |r| r.rate, fmt_rate),
            range(n, |r| r.rate, fmt_rate),
        );
        println!(
            "| delivered at max rate (received / sent) | {q} | {}/{} | {}/{} |  |  |  |  |  |",
            am.received, am.sent, nm.received, nm.sent
        );
    }
    for q in [0u8, 1] {
        for (m, what) in [
            (Mode::Paced, format!("at {RATE} msg/s")),
            (Mode::Max, "at max rate".into()),
        ] {
            let a = get(Target::Agent, q, m);
            let cpu = median_by(a, |r| r.cpu_pct.unwrap_or(f64::NAN));
            let rss = median_by(a, |r| r.rss_kib.map_or(0.0, |x| x.0 as f64));
            let (med, max) = rss.rss_kib.unwrap_or((0, 0));
            println!(
                "| agent CPU {what} (% of one core) | {q} | {:.0}% |  |  | {} |  |  |  |",
                cpu.cpu_pct.unwrap_or(f64::NAN),
                range(a, |r| r.cpu_pct.unwrap_or(f64::NAN), |c| format!("{c:.0}%")),
            );
            println!(
                "| agent RSS {what} (median sample / peak) | {q} | {:.1} / {:.1} MiB |  |  |  |  |  |  |",
                med as f64 / 1024.0,
                max as f64 / 1024.0
            );
        }
    }
    println!();
    println!(
        "Broker {broker}; {rounds} rounds of {secs} s per phase, agent and native interleaved \
         (median round shown: by p50 for latency, by rate for throughput); 8 sensor topics; \
         max-rate window {WINDOW} messages outstanding end to end; outputs with a wrong \
         `temp_f` or unparsable: {wrong}; agent dead letters at the end: {}.",
        dead_letters.map_or("?".into(), |d| d.to_string())
    );
    println!(
        "Machine load: loadavg {load_start} before the measurements, {load_end} at the end; {cpu}."
    );
}

// ---------------------------------------------------------------------------------------------
// Machine

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// (busy, steal, total) jiffies of all CPUs from /proc/stat.
fn cpu_times() -> (u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() < 8 {
        return (0, 0, 0);
    }
    let total: u64 = f.iter().take(8).sum();
    let idle = f[3] + f[4];
    (total - idle, f[7], total)
}

fn cpu_use(a: &(u64, u64, u64), b: &(u64, u64, u64)) -> String {
    let total = (b.2 - a.2).max(1) as f64;
    format!(
        "{:.0}% of the machine's CPUs busy during the run, {:.0}% steal",
        (b.0 - a.0) as f64 / total * 100.0,
        (b.1 - a.1) as f64 / total * 100.0
    )
}
