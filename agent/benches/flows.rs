//! Flow step overhead (issue 7, item 5): a run of N sequential `echo` steps vs N direct
//! `Daemon::invoke` calls of the same function with the same payload, in one process.
//!
//! Run: `cargo bench -p edgefn-agent --bench flows` (bench profile = release + fat LTO).
//! Prints a markdown table to stdout and progress to stderr. Hand-rolled timing: every
//! measurement runs in 5 rounds and the median round is reported.
//!
//! The agent is built as `edgefn-agent run` builds it: a multi-thread tokio runtime with 2
//! reactor workers and the blocking pool, a store with the default options (WAL,
//! synchronous=NORMAL) in a temporary directory, the default config, and the flow engine
//! (`flows::engine::run`). A run is started with `flows::start` (what `flow start` does behind
//! the API) and waited for by polling its row every 50 µs, so the figures include the start
//! (one write transaction), the engine's pick-up, and per step: the invocation (with its group
//! commit) and the state write.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use edgefn_agent::config::AgentConfig;
use edgefn_agent::daemon::{Daemon, InvokeRequest};
use edgefn_agent::flows::{FlowDef, RunStatus};
use edgefn_agent::pool::OwnedEvent;
use edgefn_agent::store::{CommitExtra, Origin, Qualifier, Store};
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;
/// Flow runs per round for each flow length.
const RUNS: usize = 200;
/// Steps of the long flow.
const STEPS: usize = 10;
const WORKER_STACK: usize = 8 << 20;
const PAYLOAD: &str = r#"{"sensor":"t-1","value":21.5,"unit":"C","seq":12345678}"#;

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; wasmi is ~100x slower. Use `cargo bench`.");
    }
    eprintln!("load average at start: {}", loadavg());
    let echo = support::example("echo");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("agent.db")).expect("open the store");
    store
        .create_function("echo", &echo, "", Origin::Local)
        .expect("create echo");
    for n in [1, STEPS] {
        let mut toml = String::new();
        for i in 0..n {
            toml.push_str(&format!(
                "[[steps]]\nname = \"s{i}\"\nfunction = \"echo\"\n"
            ));
            if i + 1 < n {
                toml.push_str(&format!("next = \"s{}\"\n", i + 1));
            }
        }
        let def = FlowDef::parse(&toml).expect("flow parses");
        store
            .create_flow(&format!("f{n}"), &def)
            .expect("create flow");
    }
    let config = AgentConfig::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.worker_threads() + 4)
        .thread_stack_size(WORKER_STACK)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let daemon = Daemon::new(store.clone(), &config);
    rt.spawn(edgefn_agent::flows::engine::run(daemon.clone()));

    let direct = |n: usize| -> Duration {
        let t = Instant::now();
        for _ in 0..n {
            let done = rt
                .block_on(daemon.invoke(InvokeRequest {
                    function: "echo".into(),
                    qualifier: Qualifier::Latest,
                    event: OwnedEvent {
                        id: ulid::Ulid::new().to_string(),
                        source: "invoke".into(),
                        subject: String::new(),
                        time_ms: 0,
                        content_type: "application/json".into(),
                        data: PAYLOAD.as_bytes().to_vec(),
                        attempt: 1,
                    },
                    invocation_id: ulid::Ulid::new().to_string(),
                }))
                .expect("invoke");
            assert!(done.invocation.is_success());
        }
        t.elapsed()
    };
    let input: serde_json::Value = serde_json::from_str(PAYLOAD).unwrap();
    let flow = |steps: usize| -> Duration {
        let t = Instant::now();
        for _ in 0..RUNS {
            let run = rt
                .block_on(edgefn_agent::flows::start(
                    &daemon,
                    &format!("f{steps}"),
                    input.clone(),
                    "bench",
                    CommitExtra::default(),
                ))
                .expect("start");
            loop {
                let r = store.flow_run(&run.id).expect("run");
                if r.status != RunStatus::Running {
                    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.state.error);
                    assert_eq!(r.state.output.as_ref(), Some(&input));
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        t.elapsed()
    };
    // Warm-up: the pool, the caches, the engine.
    direct(200);
    flow(1);
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        ("direct `Daemon::invoke`, per call".into(), Vec::new()),
        ("flow of 1 step, per run".into(), Vec::new()),
        (format!("flow of {STEPS} steps, per run"), Vec::new()),
    ];
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        rows[0].1.push(per(direct(RUNS * STEPS), RUNS * STEPS));
        rows[1].1.push(per(flow(1), RUNS));
        rows[2].1.push(per(flow(STEPS), RUNS));
    }
    let med: Vec<f64> = rows.iter().map(|(_, v)| median(v.clone())).collect();
    let per_step = (med[2] - med[1]) / (STEPS - 1) as f64;
    println!("| what | median of {ROUNDS} rounds (µs) | vs direct invoke |");
    println!("|---|---:|---:|");
    for ((name, _), m) in rows.iter().zip(&med) {
        println!("| {name} | {m:.1} | {:.2}x |", m / med[0]);
    }
    println!(
        "| flow step, marginal: (run of {STEPS} − run of 1) / {} | {per_step:.1} | {:.2}x |",
        STEPS - 1,
        per_step / med[0]
    );
    println!(
        "| flow of {STEPS} steps, per step | {:.1} | {:.2}x |",
        med[2] / STEPS as f64,
        med[2] / STEPS as f64 / med[0]
    );
    eprintln!("load average at end: {}", loadavg());
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
