//! Batch-job throughput (issue 7, item 5): a job of `echo` tasks run by the job runner's driver
//! (`edgefn_agent::jobs::drive`, what `edgefn-agent run` does for every submitted job) at
//! parallelism 1, 2 and 4, against the same number of direct invocations through the daemon
//! (`Daemon::invoke`) from 1, 2 and 4 concurrent clients in the same process.
//!
//! Run: `cargo bench -p edgefn-agent --bench jobs` (bench profile = release + fat LTO).
//! Prints a markdown table to stdout and progress to stderr. Every configuration runs in
//! [`ROUNDS`] rounds, alternating job and direct; the median round (by rate) is reported.
//!
//! The in-process agent is built as `edgefn-agent run` builds it: a multi-thread tokio runtime
//! with 2 reactor workers and the blocking pool for invocations, a store with the default
//! options (WAL, synchronous=NORMAL) in a temporary directory, the default config (group commit
//! up to 256). `echo` gets `max_concurrency = 4` so the pool does not cap parallelism 4.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use edgefn_agent::config::AgentConfig;
use edgefn_agent::daemon::{Daemon, InvokeRequest};
use edgefn_agent::pool::OwnedEvent;
use edgefn_agent::store::jobs::Finish;
use edgefn_agent::store::{JobState, NewJob, Origin, Qualifier, Store, TaskInput};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Rounds per configuration; the median is reported.
const ROUNDS: usize = 5;
/// Tasks per job (and direct invocations per round).
const TASKS: usize = 2_000;
/// Payload of every task: a JSON object of about this many bytes.
const PAYLOAD: usize = 64;
const SPEC: &str = "max_concurrency = 4\n";
const WORKER_STACK: usize = 8 << 20;

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; wasmi is ~100x slower. Use `cargo bench`.");
    }
    eprintln!("load average at start: {}", loadavg());
    let echo = support::example("echo");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("agent.db")).expect("open the store");
    store
        .create_function("echo", &echo, SPEC, Origin::Local)
        .expect("create echo");
    let config = AgentConfig::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(config.worker_threads() + 4)
        .thread_stack_size(WORKER_STACK)
        .thread_name("edgefn-worker")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let daemon = rt.block_on(async { Daemon::new(store.clone(), &config) });
    let payload = format!("{{\"reading\":\"{}\"}}", "x".repeat(PAYLOAD - 14));

    // Warm up: instances, statement caches, the WAL.
    rt.block_on(direct(&daemon, 4, 500, &payload));
    rt.block_on(job(&daemon, &store, 4, 500, &payload));

    println!("| parallelism | job tasks/s | direct invocations/s | job / direct | submit (store {TASKS} tasks) |");
    println!("|---:|---:|---:|---:|---:|");
    for p in [1u32, 2, 4] {
        let mut jobs = Vec::new();
        let mut directs = Vec::new();
        let mut submits = Vec::new();
        for round in 0..ROUNDS {
            let (rate, submit_ms) = rt.block_on(job(&daemon, &store, p, TASKS, &payload));
            jobs.push(rate);
            submits.push(submit_ms);
            directs.push(rt.block_on(direct(&daemon, p as usize, TASKS, &payload)));
            eprintln!(
                "parallelism {p} round {round}: job {:.0} tasks/s, direct {:.0}/s, submit {submit_ms:.1} ms (load {})",
                jobs[round],
                directs[round],
                loadavg()
            );
        }
        let (j, d, s) = (
            median(&mut jobs),
            median(&mut directs),
            median(&mut submits),
        );
        println!("| {p} | {j:.0} | {d:.0} | {:.2} | {s:.1} ms |", j / d);
    }
    eprintln!("load average at end: {}", loadavg());
}

/// Submits a job of `n` tasks (timed separately) and drives it to its end; returns tasks/s and
/// the submission time in ms.
async fn job(
    daemon: &Daemon,
    store: &Store,
    parallelism: u32,
    n: usize,
    payload: &str,
) -> (f64, f64) {
    let new = NewJob {
        function: "echo".into(),
        qualifier: "latest".into(),
        parallelism,
        retries: 0,
        input: "jsonl".into(),
        tasks: (0..n)
            .map(|_| TaskInput {
                payload: payload.as_bytes().to_vec(),
                json: true,
            })
            .collect(),
    };
    let s = store.clone();
    let t = Instant::now();
    let created = tokio::task::spawn_blocking(move || s.create_job(&new))
        .await
        .unwrap()
        .expect("create the job");
    let submit_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let end = edgefn_agent::jobs::drive(
        daemon.clone(),
        created.id.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("drive the job");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(end, Finish::Finished(JobState::Succeeded));
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.delete_job(&created.id))
        .await
        .unwrap()
        .expect("delete the job");
    (n as f64 / secs, submit_ms)
}

/// `n` invocations of echo through `Daemon::invoke` from `clients` concurrent tasks; returns
/// invocations/s.
async fn direct(daemon: &Daemon, clients: usize, n: usize, payload: &str) -> f64 {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (d, data) = (daemon.clone(), payload.as_bytes().to_vec());
        let share = n / clients + usize::from(c < n % clients);
        set.spawn(async move {
            for _ in 0..share {
                let id = ulid::Ulid::new().to_string();
                let done = d
                    .invoke(InvokeRequest {
                        function: "echo".into(),
                        qualifier: Qualifier::Latest,
                        event: OwnedEvent {
                            id: id.clone(),
                            source: "invoke".into(),
                            subject: String::new(),
                            time_ms: edgefn_agent::runtime::now_ms(),
                            content_type: "application/json".into(),
                            data: data.clone(),
                            attempt: 1,
                        },
                        invocation_id: id,
                    })
                    .await
                    .expect("invoke");
                assert!(done.invocation.is_success());
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
