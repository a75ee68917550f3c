//! Agent daemon benchmark (issue 3, item 9): one invocation of `echo` (64 B) through the admin
//! API over loopback HTTP vs `Daemon::invoke` in-process vs the runtime alone, and the store's
//! write throughput of invocation + log records with and without batching.
//!
//! Run: `cargo bench -p edgefn-agent --bench daemon` (bench profile = release + fat LTO).
//! Prints markdown tables to stdout and progress to stderr. Hand-rolled timing (no criterion):
//! every measurement runs in 3 rounds and the median round (by p50, or by rate for the store) is
//! reported. Results and the machine they were taken on live in docs/benchmarks.md.
//!
//! The in-process agent is built as `edgefn-agent run` builds it (agent/src/cli/run.rs): a
//! multi-thread tokio runtime with 2 reactor workers and the blocking pool for invocations, a
//! store with the default options (WAL, synchronous=NORMAL) in a temporary directory, the
//! default config (group commit up to 256), and `api::serve` on 127.0.0.1:0. The retention loop
//! is not started (it would run once a minute).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use edgefn_agent::config::AgentConfig;
use edgefn_agent::daemon::{Committer, Daemon, InvokeRequest};
use edgefn_agent::pool::OwnedEvent;
use edgefn_agent::runtime::{FunctionEnv, Runtime};
use edgefn_agent::spec::FunctionSpec;
use edgefn_agent::store::{
    InvocationLog, InvocationOutcome, InvocationRecord, Level, Origin, Outcome, Qualifier, Store,
    StoreOptions, Synchronous,
};
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Every measurement is repeated this many times; the median round is reported.
const ROUNDS: usize = 3;
/// Runtime alone: calls per round (after warm-up).
const RUNTIME_ITERS: usize = 100_000;
/// `Daemon::invoke` in-process: calls per client thread per round.
const DAEMON_ITERS: usize = 10_000;
/// Admin API over HTTP: calls per client thread per round.
const HTTP_ITERS: usize = 5_000;
/// Warm-up calls before each loop (per client thread).
const WARMUP: usize = 500;
/// Pieces of the daemon path (resolve, spawn_blocking, health): calls per round.
const PIECE_ITERS: usize = 20_000;
/// Store writes: records per round and configuration (fewer when a round hits the time cap).
const STORE_RECORDS: usize = 32_768;
/// Store writes: a round stops after this long even if it wrote fewer records.
const STORE_TIME_CAP: Duration = Duration::from_secs(4);
/// Log lines per invocation record in the store benchmark.
const LOGS_PER_RECORD: usize = 2;
/// Payload of every invocation.
const PAYLOAD: usize = 64;
/// The benchmarked function's spec: two instances may run at once, so the 2-client rows are not
/// serialised by the pool (the default `max_concurrency` is 1).
const SPEC: &str = "max_concurrency = 2\n";
/// Same as run.rs: invocations run on these threads, and wasmi's dispatch uses the host stack.
const WORKER_STACK: usize = 8 << 20;
const TOKEN: &str = "bench-token";
const AUTH: &str = "Bearer bench-token";

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; wasmi is ~100x slower. Use `cargo bench`.");
    }
    let load_start = loadavg();
    eprintln!("load average at start: {load_start}");
    eprintln!("building the example functions (examples/, wasm32)...");
    let echo_wasm = support::example("echo");
    let data = vec![0x5a_u8; PAYLOAD];

    // ---- the in-process agent ----
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path().join("agent.db")).expect("open the store");
    store
        .create_function("echo", &echo_wasm, SPEC, Origin::Local)
        .expect("create echo");
    let config = AgentConfig::default();
    let workers = config.worker_threads();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(workers + 4)
        .thread_stack_size(WORKER_STACK)
        .thread_name("edgefn-worker")
        .enable_all()
        .build()
        .expect("tokio runtime");
    let daemon = Daemon::new(store.clone(), &config);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(edgefn_agent::api::serve(
        listener,
        daemon.clone(),
        TOKEN,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let invoke_url = format!("http://{addr}/v1/functions/echo/invoke");
    let health_url = format!("http://{addr}/v1/health");
    eprintln!("agent listening on {addr}, store {}", dir.path().display());

    // ---- 1. the invocation path, side by side ----
    // The runtime alone: the same module and limits the daemon's pool runs, one warm instance.
    let runtime = Runtime::new();
    let spec = FunctionSpec::parse(SPEC).expect("spec");
    let module = runtime.load(&echo_wasm).expect("echo loads");
    let limits = Arc::new(spec.limits.clone());
    let ev = edgefn_sdk::Event {
        id: "01J9ZK3V4Q8W6R2T5Y7U9I0P1A",
        source: "invoke",
        subject: "",
        time_ms: 1_700_000_000_000,
        content_type: "",
        data: &data,
        attempt: 1,
    };
    // Daemon::invoke from plain threads (block_on on the agent's runtime): resolve, pool,
    // instance, group commit, metrics; no HTTP.
    let direct = |threads: usize| -> Sample {
        clients(threads, DAEMON_ITERS, |_| {
            let (d, h, data) = (daemon.clone(), rt.handle().clone(), data.clone());
            move |_| {
                let done = h.block_on(d.invoke(request(&data))).expect("invoke");
                assert!(done.invocation.is_success());
                black_box(done);
            }
        })
    };
    // The admin API: ureq with keep-alive (one agent, so one pooled connection, per thread).
    let first = http_invoke(&http_agent(), &invoke_url, &data);
    let doc: serde_json::Value = serde_json::from_slice(&first).expect("invocation JSON");
    assert_eq!(doc["outcome"], "success", "{doc}");
    let over_http = |threads: usize| -> Sample {
        clients(threads, HTTP_ITERS, |_| {
            let (agent, url, data) = (http_agent(), invoke_url.clone(), data.clone());
            move |_| {
                black_box(http_invoke(&agent, &url, &data));
            }
        })
    };
    // The group commit alone (a second committer on the agent's store): the commit thread hop
    // plus one transaction per batch; with 2 threads, batches of up to 2.
    let committer = Committer::start(store.clone(), config.max_batch);
    let group_commit = |threads: usize| -> Sample {
        clients(threads, PIECE_ITERS / 4, |_| {
            let (c, h) = (committer.clone(), rt.handle().clone());
            move |_| {
                h.block_on(c.commit(invocation_outcome(0))).expect("commit");
            }
        })
    };

    type Measure<'a> = (&'static str, Box<dyn Fn() -> Sample + 'a>);
    let invoke_measures: Vec<Measure> = vec![
        (
            "runtime alone: `Instance::invoke` (warm instance)",
            Box::new(|| {
                clients(1, RUNTIME_ITERS, |_| {
                    let mut inst = runtime
                        .instantiate(&module, limits.clone(), FunctionEnv::default())
                        .expect("instantiate echo");
                    let first = inst.invoke(&ev);
                    assert!(first.is_success() && first.response == data, "{first:?}");
                    move |_| {
                        black_box(inst.invoke(black_box(&ev)));
                    }
                })
            }),
        ),
        (
            "`Daemon::invoke` in-process, 1 thread",
            Box::new(|| direct(1)),
        ),
        (
            "`Daemon::invoke` in-process, 2 threads",
            Box::new(|| direct(2)),
        ),
        (
            "admin API over loopback HTTP, 1 client thread",
            Box::new(|| over_http(1)),
        ),
        (
            "admin API over loopback HTTP, 2 client threads",
            Box::new(|| over_http(2)),
        ),
        // Pieces of the path, for the interpretation.
        (
            "piece: `Store::resolve` (one read transaction)",
            Box::new(|| {
                clients(1, PIECE_ITERS, |_| {
                    |_| {
                        black_box(store.resolve("echo", &Qualifier::Latest, "e").unwrap());
                    }
                })
            }),
        ),
        (
            "piece: `spawn_blocking` round trip, empty closure",
            Box::new(|| {
                clients(1, PIECE_ITERS, |_| {
                    let h = rt.handle().clone();
                    move |_| {
                        h.block_on(async { tokio::task::spawn_blocking(|| black_box(1)).await })
                            .unwrap();
                    }
                })
            }),
        ),
        (
            "piece: `GET /v1/health` over HTTP (1 client)",
            Box::new(|| {
                clients(1, PIECE_ITERS / 4, |_| {
                    let (agent, url) = (http_agent(), health_url.clone());
                    move |_| {
                        let mut r = agent.get(&url).call().expect("health");
                        black_box(r.body_mut().read_to_vec().expect("health body"));
                    }
                })
            }),
        ),
        (
            "piece: `Committer::commit` of one invocation, 1 thread",
            Box::new(|| group_commit(1)),
        ),
        (
            "piece: `Committer::commit` of one invocation, 2 threads",
            Box::new(|| group_commit(2)),
        ),
    ];
    let store_configs = [
        (Synchronous::Normal, 1),
        (Synchronous::Normal, 16),
        (Synchronous::Normal, 256),
        (Synchronous::Full, 1),
        (Synchronous::Full, 256),
    ];
    let store_names: Vec<String> = store_configs
        .iter()
        .map(|(sync, batch)| {
            format!(
                "`Store::commit`, batch {batch}, synchronous={}",
                match sync {
                    Synchronous::Normal => "NORMAL",
                    Synchronous::Full => "FULL",
                }
            )
        })
        .collect();

    // Rounds are interleaved: every measurement once per round, so a burst of other work on
    // the machine hits one round of each rather than all rounds of one.
    let cpu_start = cpu_times();
    let mut invoke_rounds: Vec<Vec<Sample>> = vec![Vec::new(); invoke_measures.len()];
    let mut store_rounds: Vec<Vec<Sample>> = vec![Vec::new(); store_configs.len()];
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        for (i, (name, measure)) in invoke_measures.iter().enumerate() {
            let s = measure();
            log_round(name, round, &s);
            invoke_rounds[i].push(s);
        }
        for (i, &(sync, batch)) in store_configs.iter().enumerate() {
            let s = store_writes(sync, batch);
            log_round(&store_names[i], round, &s);
            store_rounds[i].push(s);
        }
    }
    let cpu = cpu_busy_since(&cpu_start);
    let invoke_rows: Vec<(&str, Sample)> = invoke_measures
        .iter()
        .zip(invoke_rounds)
        .map(|((name, _), rounds)| (*name, pick_median(rounds)))
        .collect();
    let store_rows: Vec<(String, Sample)> = store_names
        .into_iter()
        .zip(store_rounds)
        .map(|(name, rounds)| (name, pick_median_by_rate(rounds)))
        .collect();
    drop(invoke_measures);
    drop(committer);
    let counts = store.row_counts().expect("row counts");
    eprintln!(
        "agent store after the benchmark: {} invocation records, {} log records",
        counts.invocations, counts.logs
    );
    let _ = stop_tx.send(());
    rt.block_on(server).expect("server task").expect("serve");
    drop(daemon);
    rt.shutdown_timeout(Duration::from_secs(5));

    let load_end = loadavg();
    eprintln!("load average at end: {load_end}");

    // ---- output ----
    let ratio = |a: f64, b: f64| format!("{:.1}x", a / b);
    println!("| Invoke `echo`, 64 B | p50 | p99 | invocations/s | p50 of rounds |");
    println!("|---|---|---|---|---|");
    for (name, s) in &invoke_rows {
        println!(
            "| {name} | {} | {} | {} | {} |",
            fmt_ns(s.p50),
            fmt_ns(s.p99),
            fmt_rate(s.rate),
            s.spread
        );
    }
    println!();
    // The first five rows, in the order of `invoke_measures`.
    let row = |i: usize| &invoke_rows[i].1;
    let (runtime_alone, daemon1, daemon2, http1, http2) = (row(0), row(1), row(2), row(3), row(4));
    println!("| Ratio | p50 latency | invocations/s |");
    println!("|---|---|---|");
    for (name, a, b) in [
        (
            "`Daemon::invoke` (1 thread) vs runtime alone: pool + store overhead",
            daemon1,
            runtime_alone,
        ),
        (
            "admin API (1 client) vs runtime alone: API + store overhead",
            http1,
            runtime_alone,
        ),
        (
            "admin API (1 client) vs `Daemon::invoke` (1 thread): HTTP + axum + JSON",
            http1,
            daemon1,
        ),
        (
            "admin API (2 clients) vs `Daemon::invoke` (2 threads)",
            http2,
            daemon2,
        ),
    ] {
        println!(
            "| {name} | {} slower | {} fewer |",
            ratio(a.p50, b.p50),
            ratio(b.rate, a.rate)
        );
    }
    for (name, two, one) in [
        ("`Daemon::invoke`: 2 threads vs 1", daemon2, daemon1),
        ("admin API: 2 clients vs 1", http2, http1),
    ] {
        println!(
            "| {name} | {} | {} the throughput |",
            ratio(two.p50, one.p50),
            ratio(two.rate, one.rate)
        );
    }
    println!();
    println!(
        "| Store write, invocation + {LOGS_PER_RECORD} log lines each | per commit p50 | per commit p99 | records/s | records/s of rounds | bytes written / record |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, s) in &store_rows {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            fmt_ns(s.p50),
            fmt_ns(s.p99),
            fmt_rate(s.rate),
            s.spread,
            fmt_bytes(s.bytes_per_record)
        );
    }
    let base = store_rows[0].1.rate;
    println!();
    println!(
        "Batching: batch 16 = {} and batch 256 = {} the records/s of batch 1 (NORMAL); FULL batch 256 = {} FULL batch 1.",
        ratio(store_rows[1].1.rate, base),
        ratio(store_rows[2].1.rate, base),
        ratio(store_rows[4].1.rate, store_rows[3].1.rate)
    );
    println!();
    println!(
        "Invoke: p50/p99 from per-call `Instant` timing; invocations/s = calls / wall time of the \
         same loop (all client threads). {RUNTIME_ITERS} (runtime), {DAEMON_ITERS} (daemon) or \
         {HTTP_ITERS} (HTTP) calls per client thread per round after {WARMUP} warm-up calls; \
         {ROUNDS} interleaved rounds, the round with the median p50 is shown, \"p50 of rounds\" \
         shows the spread. Spec `{}`; every daemon and API invocation is committed (record + stats; echo logs nothing) before it \
         answers.",
        SPEC.trim()
    );
    println!();
    println!(
        "Store: a fresh database per round (default options: WAL, 2 readers; synchronous as \
         shown), {STORE_RECORDS} records per round or {} s, whichever comes first; records/s = \
         records / wall time including SQLite checkpoints; the round with the median rate is shown. \
         Bytes written = write syscalls of the process (`wchar` in /proc/self/io: WAL frames and \
         checkpoint copies) / records.",
        STORE_TIME_CAP.as_secs()
    );
    println!();
    println!(
        "Machine during the run: load average (1/5/15 min) {load_start} at start, {load_end} at \
         end; {cpu} (this benchmark included)."
    );
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// An invoke request as the admin API builds it (fresh ULID, event id = invocation id).
fn request(data: &[u8]) -> InvokeRequest {
    let id = ulid::Ulid::new().to_string();
    InvokeRequest {
        function: "echo".into(),
        qualifier: Qualifier::Latest,
        event: OwnedEvent {
            id: id.clone(),
            source: "invoke".into(),
            subject: String::new(),
            time_ms: edgefn_agent::runtime::now_ms(),
            content_type: String::new(),
            data: data.to_vec(),
            attempt: 1,
        },
        invocation_id: id,
    }
}

/// A ureq client like the CLI's: keep-alive (pooled connection), no proxy, no status errors.
fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// One sync invoke over HTTP; checks the status and the outcome, returns the body.
fn http_invoke(agent: &ureq::Agent, url: &str, data: &[u8]) -> Vec<u8> {
    let mut resp = agent
        .post(url)
        .header("authorization", AUTH)
        .content_type("application/octet-stream")
        .send(data)
        .expect("invoke request");
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_vec().expect("invoke body");
    assert!(
        status == 200 && contains(&body, br#""outcome":"success""#),
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs `iters` timed calls (after `WARMUP`) on each of `threads` threads started together;
/// `make(t)` builds thread `t`'s call. Latencies of all threads are merged; the rate is all calls
/// over the wall time from the common start to the last thread's end.
fn clients<F, C>(threads: usize, iters: usize, make: F) -> Sample
where
    F: Fn(usize) -> C + Sync,
    C: FnMut(usize) + Send,
{
    let barrier = Barrier::new(threads);
    let start = std::sync::OnceLock::new();
    let results: Vec<(Vec<f64>, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, start, make) = (&barrier, &start, &make);
                std::thread::Builder::new()
                    .stack_size(WORKER_STACK)
                    .spawn_scoped(s, move || {
                        let mut call = make(t);
                        for i in 0..WARMUP {
                            call(i);
                        }
                        barrier.wait();
                        start.get_or_init(Instant::now);
                        let mut v = Vec::with_capacity(iters);
                        for i in 0..iters {
                            let t0 = Instant::now();
                            call(i);
                            v.push(ns(t0.elapsed()));
                        }
                        (v, Instant::now())
                    })
                    .expect("spawn a client thread")
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = *start.get().expect("started");
    let end = results.iter().map(|r| r.1).max().expect("a thread");
    let mut all: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    let calls = all.len() as f64;
    let mut s = summarize(&mut all);
    s.rate = calls / (end - start).as_secs_f64();
    s
}

/// One round of store writes: a fresh database with `sync`, records committed in batches of
/// `batch`. p50/p99 are per `Store::commit` call; rate is records/s.
fn store_writes(sync: Synchronous, batch: usize) -> Sample {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        synchronous: sync,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path().join("agent.db"), &options).expect("open");
    store
        .create_function("echo", b"\0asm\x01\0\0\0", "", Origin::Local)
        .expect("create");
    let warmup: Vec<_> = (0..64)
        .map(|_| invocation_outcome(LOGS_PER_RECORD))
        .collect();
    for chunk in warmup.chunks(batch) {
        store.commit(chunk).expect("commit");
    }
    let records: Vec<_> = (0..STORE_RECORDS)
        .map(|_| invocation_outcome(LOGS_PER_RECORD))
        .collect();
    let mut per_commit = Vec::with_capacity(STORE_RECORDS / batch + 1);
    let mut written = 0usize;
    let wchar = written_bytes();
    let t = Instant::now();
    for chunk in records.chunks(batch) {
        let t0 = Instant::now();
        let summary = store.commit(chunk).expect("commit");
        per_commit.push(ns(t0.elapsed()));
        debug_assert_eq!(summary.committed, chunk.len());
        written += chunk.len();
        if t.elapsed() >= STORE_TIME_CAP {
            break;
        }
    }
    let elapsed = t.elapsed();
    let bytes = written_bytes() - wchar;
    let counts = store.row_counts().expect("row counts");
    assert_eq!(counts.invocations as usize, written + warmup.len());
    drop(store);
    let slow = per_commit.iter().filter(|&&t| t > 1e6).count();
    let mut s = summarize(&mut per_commit);
    s.rate = written as f64 / elapsed.as_secs_f64();
    s.bytes_per_record = bytes as f64 / written as f64;
    eprintln!(
        "    {written} records in {} commits ({slow} over 1 ms), {:.2} s, {} written, db+wal {}",
        per_commit.len(),
        elapsed.as_secs_f64(),
        mib(bytes),
        mib(dir_bytes(dir.path()))
    );
    s
}

/// A plausible finished invocation of `echo:latest` with `log_lines` log lines.
fn invocation_outcome(log_lines: usize) -> InvocationOutcome {
    let id = ulid::Ulid::new().to_string();
    let now = edgefn_agent::runtime::now_ms() as i64;
    let logs = (0..log_lines)
        .map(|i| InvocationLog {
            time_ms: now,
            level: if i == 0 { Level::Info } else { Level::Debug },
            text: format!("line {i} of invocation {id}: handled {PAYLOAD} bytes"),
        })
        .collect();
    InvocationOutcome {
        record: InvocationRecord {
            id: id.clone(),
            function: "echo".into(),
            version: None,
            qualifier: "latest".into(),
            source: "invoke".into(),
            subject: String::new(),
            event_id: id,
            attempt: 1,
            event_time_ms: now,
            start_ms: now,
            duration_us: 2,
            fuel_used: 1_234,
            outcome: Outcome::Success,
            error: None,
        },
        logs,
        kv_writes: Vec::new(),
        extra: Default::default(),
    }
}

/// Bytes this process has passed to write syscalls (`wchar` in /proc/self/io).
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("read /proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wchar in /proc/self/io")
}

/// The 1/5/15-minute load averages (other work on the machine skews every figure).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Timing and statistics

/// One round (or the reported median round) of a measurement; times in ns.
#[derive(Clone, Default)]
struct Sample {
    p50: f64,
    p99: f64,
    /// Calls (or records) per second.
    rate: f64,
    /// Store rounds: bytes written per record.
    bytes_per_record: f64,
    /// Across rounds, `min–max` (filled in by [`pick_median`] / [`pick_median_by_rate`]).
    spread: String,
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn summarize(v: &mut [f64]) -> Sample {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Sample {
        p50: q(0.50),
        p99: q(0.99),
        ..Sample::default()
    }
}

fn log_round(name: &str, round: usize, r: &Sample) {
    eprintln!(
        "  {name} round {}: p50 {} p99 {} rate {}",
        round + 1,
        fmt_ns(r.p50),
        fmt_ns(r.p99),
        fmt_rate(r.rate)
    );
}

/// The round with the median p50 (its p99 and rate come with it); spread = p50 min–max.
fn pick_median(mut rounds: Vec<Sample>) -> Sample {
    let lo = rounds.iter().map(|r| r.p50).fold(f64::INFINITY, f64::min);
    let hi = rounds.iter().map(|r| r.p50).fold(0.0, f64::max);
    rounds.sort_by(|a, b| a.p50.total_cmp(&b.p50));
    let mid = rounds.swap_remove(rounds.len() / 2);
    Sample {
        spread: format!("{}–{}", fmt_ns(lo), fmt_ns(hi)),
        ..mid
    }
}

/// The round with the median rate; spread = rate min–max.
fn pick_median_by_rate(mut rounds: Vec<Sample>) -> Sample {
    let lo = rounds.iter().map(|r| r.rate).fold(f64::INFINITY, f64::min);
    let hi = rounds.iter().map(|r| r.rate).fold(0.0, f64::max);
    rounds.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let mid = rounds.swap_remove(rounds.len() / 2);
    Sample {
        spread: format!("{}–{}", fmt_rate(lo), fmt_rate(hi)),
        ..mid
    }
}

/// Jiffies of all CPUs from /proc/stat: (user, nice, system, idle, iowait, irq, softirq, steal).
fn cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Busy, iowait and steal share of all CPUs since `start`.
fn cpu_busy_since(start: &[u64]) -> String {
    let now = cpu_times();
    if now.len() < 8 || start.len() < 8 {
        return "CPU use unknown".into();
    }
    let d: Vec<f64> = now.iter().zip(start).map(|(a, b)| (a - b) as f64).collect();
    let total: f64 = d.iter().sum();
    let pct = |x: f64| 100.0 * x / total;
    let busy = d[0] + d[1] + d[2] + d[5] + d[6] + d[7];
    format!(
        "{:.0}% of the {} CPUs busy, {:.0}% iowait, {:.0}% steal",
        pct(busy),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        pct(d[4]),
        pct(d[7])
    )
}

fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        String::new()
    } else if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

fn fmt_rate(r: f64) -> String {
    if r <= 0.0 || !r.is_finite() {
        String::new()
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e4 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
