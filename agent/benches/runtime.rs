//! Runtime benchmark (issue 2, item 8): warm invocations, the bare-wasmi floor, cold start,
//! fresh-instance-per-event vs reuse, and memory per warm instance.
//!
//! Run: `cargo bench -p edgefn-agent --bench runtime` (bench profile = release + fat LTO).
//! Prints a markdown table to stdout and progress to stderr. Hand-rolled timing (no criterion):
//! every measurement runs in 3 rounds and the median round is reported. Results and the machine
//! they were taken on live in docs/benchmarks.md.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use edgefn_agent::runtime::{FunctionEnv, FunctionModule, Instance, Limits, Runtime};
use edgefn_sdk::Event;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every measurement is repeated this many times; the median round is reported.
const ROUNDS: usize = 3;
/// Per-call latency samples per round (after warm-up).
const LAT_ITERS: usize = 50_000;
/// Calls in the untimed-per-call throughput loop.
const RATE_ITERS: usize = 100_000;
/// Warm-up calls before each latency or throughput loop.
const WARMUP: usize = 5_000;
/// Cold starts (load + instantiate + first call) per round.
const COLD_REPS: usize = 200;
/// Fresh instances (instantiate + invoke + drop) per round.
const FRESH_REPS: usize = 2_000;
/// Warm instances held at once for the memory measurement.
const MEM_INSTANCES: usize = 1_000;
/// Fuel the runtime hands to the guest per slice (`FUEL_SLICE` in agent/src/runtime/limits.rs).
const FUEL_SLICE: u64 = 1_000_000;
/// Set in a child process of this binary: measure RSS of warm instances of this module.
const RSS_PROBE_ENV: &str = "EDGEFN_BENCH_RSS_PROBE";

/// The floor: the smallest guest call the interpreter can make, same engine config as the runtime.
const FLOOR_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "f") (param i32 i32) (result i32) local.get 0))"#;

/// The runtime's own cost: an ABI v1 guest that does no work (alloc returns a fixed offset, handle
/// responds with the raw event bytes), so `echo` minus this is the SDK's guest-side work.
const TRIVIAL_WAT: &str = r#"(module
  (import "edgefn" "respond" (func $respond (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "edgefn_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "edgefn_handle") (param i32 i32) (result i32)
    local.get 0 local.get 1 call $respond
    i32.const 0))"#;

const CELSIUS_JSON: &[u8] = br#"{"seq":123456,"ts_us":1700000000000000,"temp":21.5}"#;

fn main() {
    if let Ok(path) = std::env::var(RSS_PROBE_ENV) {
        rss_probe(Path::new(&path));
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; wasmi is ~100x slower. Use `cargo bench`.");
    }
    eprintln!("building the example functions (examples/, wasm32)...");
    let echo_wasm = support::example("echo");
    let celsius_wasm = support::example("celsius");
    let rt = Runtime::new();
    let limits = Arc::new(Limits::default());
    let echo = rt.load(&echo_wasm).expect("echo loads");
    let celsius = rt.load(&celsius_wasm).expect("celsius loads");

    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // Timer overhead, so readers know what a per-call sample includes.
    let timer = pick_median(
        "timer: Instant::now() pair",
        (0..ROUNDS).map(|_| lat_loop(|| {})).collect(),
    );

    // 1. Warm echo on one reused instance.
    let data64 = vec![0x5a_u8; 64];
    let data4k = vec![0x5a_u8; 4096];
    let echo64 = warm(
        "echo warm 64 B",
        &rt,
        &echo,
        &limits,
        "sensors/pi-7/temp",
        &data64,
    );
    let echo4k = warm(
        "echo warm 4 KiB",
        &rt,
        &echo,
        &limits,
        "sensors/pi-7/temp",
        &data4k,
    );

    let trivial = rt
        .load(&support::wat(TRIVIAL_WAT))
        .expect("trivial guest loads");
    let trivial64 = warm(
        "trivial ABI guest 64 B",
        &rt,
        &trivial,
        &limits,
        "sensors/pi-7/temp",
        &data64,
    );

    // 2. The floor: a bare wasmi call, fuel set before each call.
    let (floor, floor_resumable) = floor();

    // 3. Cold start.
    let cold = cold_start(&rt, &echo_wasm, &limits, &data64);

    // 4. Fresh instance per event vs a reused one.
    let (fresh, reused, ratio) = fresh_vs_reused(&rt, &echo, &limits, &data64);

    // 6. celsius warm (the MQTT benchmark workload).
    let cels = warm(
        "celsius warm",
        &rt,
        &celsius,
        &limits,
        "sensors/pi-7/temp",
        CELSIUS_JSON,
    );

    // Host-side pieces of one invocation, for the interpretation.
    let ulid = pick_median(
        "ulid::Ulid::new().to_string()",
        (0..ROUNDS)
            .map(|_| rate_loop(|| drop(black_box(ulid::Ulid::new().to_string()))))
            .collect(),
    );
    let now = pick_median(
        "now_ms() (SystemTime)",
        (0..ROUNDS)
            .map(|_| rate_loop(|| _ = black_box(edgefn_agent::runtime::now_ms())))
            .collect(),
    );

    // 5. Memory per warm instance (each round in a fresh child process).
    let mem_echo = memory_per_instance("echo", &support::example_path("echo"));
    let mem_celsius = memory_per_instance("celsius", &support::example_path("celsius"));

    // ---- table ----
    let no = || "".to_string();
    let echo_met = |s: &Sample| met(s.p50 <= 2_000.0);
    let lat = Row::lat;
    rows.extend([
        lat(
            "echo warm, 64 B payload",
            &echo64,
            "p50 ≤ 2 µs",
            echo_met(&echo64),
        ),
        lat(
            "echo warm, 4 KiB payload",
            &echo4k,
            "p50 ≤ 2 µs",
            echo_met(&echo4k),
        ),
        lat(
            "runtime with a trivial WAT guest (no SDK code), 64 B",
            &trivial64,
            "",
            no(),
        ),
        lat(
            "floor: bare wasmi `call` (fuel on, set_fuel per call)",
            &floor,
            "",
            no(),
        ),
        lat(
            "floor variant: bare wasmi `call_resumable`",
            &floor_resumable,
            "",
            no(),
        ),
        Row::text(
            "echo 64 B / floor (p50)",
            format!("{:.1}x", echo64.p50 / floor.p50),
            "",
            no(),
        ),
        lat(
            "cold start: load + instantiate + first call (echo)",
            &cold.total,
            "p50 ≤ 1 ms",
            met(cold.total.p50 <= 1_000_000.0),
        ),
        lat("  of which load (validate)", &cold.load, "", no()),
        lat("  of which instantiate", &cold.instantiate, "", no()),
        lat(
            "  of which first call (incl. lazy translation)",
            &cold.first_call,
            "",
            no(),
        ),
        lat(
            "  of which instantiate + first call",
            &cold.inst_call,
            "",
            no(),
        ),
        lat(
            "fresh instance per event: instantiate + invoke + drop (echo 64 B)",
            &fresh,
            "",
            no(),
        ),
        lat(
            "reused instance per event (echo 64 B, same rounds)",
            &reused,
            "",
            no(),
        ),
        Row::text(
            "fresh / reused (p50)",
            format!("{ratio:.1}x"),
            "reuse ≥ 10x faster",
            met(ratio >= 10.0),
        ),
        lat("celsius warm (JSON in, publish + respond)", &cels, "", no()),
    ]);
    for (name, m) in [("echo", &mem_echo), ("celsius", &mem_celsius)] {
        rows.push(Row::text(
            &format!("memory per warm {name} instance (RSS delta / {MEM_INSTANCES})"),
            format!("{} (rounds {})", kib(m.per_instance), m.spread),
            "",
            no(),
        ));
        rows.push(Row::text(
            &format!("  of which guest linear memory ({name})"),
            kib(m.memory_bytes),
            "",
            no(),
        ));
    }
    rows.extend([
        lat(
            "timer overhead (Instant::now pair, included in p50/p99)",
            &timer,
            "",
            no(),
        ),
        lat(
            "host piece: invocation id (ulid to_string), mean",
            &ulid,
            "",
            no(),
        ),
        lat("host piece: now_ms() (SystemTime), mean", &now, "", no()),
    ]);
    notes.push(format!(
        "p50/p99: per-call `Instant` timing over {LAT_ITERS} calls after {WARMUP} warm-up calls \
         (cold start: {COLD_REPS} reps; fresh/reused: {FRESH_REPS} events); rate: {RATE_ITERS} \
         calls / total time. Median of {ROUNDS} rounds (the round with the median p50); the \
         \"p50 of rounds\" column shows the spread."
    ));
    notes.push(format!(
        "Fuel per warm invocation: echo 64 B {}, echo 4 KiB {}, trivial WAT guest {}, celsius {}.",
        echo64.fuel, echo4k.fuel, trivial64.fuel, cels.fuel
    ));
    notes.push(format!(
        "echo.wasm {} bytes, celsius.wasm {} bytes; Limits::default() (fuel {} in slices of {FUEL_SLICE}).",
        echo_wasm.len(),
        celsius_wasm.len(),
        limits.fuel
    ));

    println!("| Measurement | p50 | p99 | rate | p50 of rounds | Target | Met |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name, r.p50, r.p99, r.rate, r.spread, r.target, r.met
        );
    }
    println!();
    for n in &notes {
        println!("{n}");
        println!();
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn event<'a>(subject: &'a str, data: &'a [u8]) -> Event<'a> {
    Event {
        id: "01J9ZK3V4Q8W6R2T5Y7U9I0P1A",
        source: "mqtt",
        subject,
        time_ms: 1_700_000_000_000,
        content_type: "",
        data,
        attempt: 1,
    }
}

fn instantiate(rt: &Runtime, m: &FunctionModule, limits: &Arc<Limits>) -> Instance {
    rt.instantiate(m, limits.clone(), FunctionEnv::default())
        .expect("instantiate")
}

/// Warm invocations of `m` on one reused instance: per-call latency and throughput.
fn warm(
    name: &str,
    rt: &Runtime,
    m: &FunctionModule,
    limits: &Arc<Limits>,
    subject: &str,
    data: &[u8],
) -> Sample {
    let ev = event(subject, data);
    let mut inst = instantiate(rt, m, limits);
    let first = inst.invoke(&ev);
    assert!(first.is_success(), "{name}: {:?}", first.error);
    assert!(!first.response.is_empty(), "{name}: empty response");
    let rounds = (0..ROUNDS)
        .map(|_| {
            let mut s = lat_loop(|| {
                black_box(inst.invoke(black_box(&ev)));
            });
            s.rate = rate_loop(|| {
                black_box(inst.invoke(black_box(&ev)));
            })
            .rate;
            s
        })
        .collect();
    assert!(
        inst.is_usable(),
        "{name}: instance spent during the benchmark"
    );
    let again = inst.invoke(&ev);
    assert!(again.is_success() && again.response == first.response);
    Sample {
        fuel: again.fuel_used,
        ..pick_median(name, rounds)
    }
}

/// A bare wasmi call loop with the runtime's engine config (fuel on), via `call` and via
/// `call_resumable` (what the runtime uses).
fn floor() -> (Sample, Sample) {
    let mut config = wasmi::Config::default();
    config.consume_fuel(true);
    let engine = wasmi::Engine::new(&config);
    let module = wasmi::Module::new(&engine, support::wat(FLOOR_WAT)).expect("floor module");
    let mut store = wasmi::Store::new(&engine, ());
    let linker = wasmi::Linker::<()>::new(&engine);
    let inst = linker
        .instantiate_and_start(&mut store, &module)
        .expect("floor instance");
    let f = inst
        .get_typed_func::<(i32, i32), i32>(&store, "f")
        .expect("floor export");
    let mut i = 0i32;
    let mut call = || {
        i = i.wrapping_add(1);
        store.set_fuel(FUEL_SLICE).expect("fuel on");
        let r = f.call(&mut store, black_box((i, 64))).expect("floor call");
        debug_assert_eq!(r, i);
        black_box(r);
    };
    let plain = pick_median("floor: wasmi call", rounds_of(&mut call));
    let mut j = 0i32;
    let mut call_resumable = || {
        j = j.wrapping_add(1);
        store.set_fuel(FUEL_SLICE).expect("fuel on");
        match f.call_resumable(&mut store, black_box((j, 64))) {
            Ok(wasmi::TypedResumableCall::Finished(r)) => {
                black_box(r);
            }
            _ => panic!("floor call_resumable did not finish"),
        }
    };
    let resumable = pick_median(
        "floor: wasmi call_resumable",
        rounds_of(&mut call_resumable),
    );
    (plain, resumable)
}

fn rounds_of(f: &mut impl FnMut()) -> Vec<Sample> {
    (0..ROUNDS)
        .map(|_| {
            let mut s = lat_loop(&mut *f);
            s.rate = rate_loop(&mut *f).rate;
            s
        })
        .collect()
}

struct Cold {
    total: Sample,
    load: Sample,
    instantiate: Sample,
    first_call: Sample,
    inst_call: Sample,
}

/// Load (validate) + instantiate + first call, each rep from the raw bytes.
fn cold_start(rt: &Runtime, wasm: &[u8], limits: &Arc<Limits>, data: &[u8]) -> Cold {
    let ev = event("sensors/pi-7/temp", data);
    let mut rounds: Vec<[Sample; 5]> = Vec::new();
    for round in 0..ROUNDS {
        let mut t = [(); 5].map(|_| Vec::with_capacity(COLD_REPS));
        for i in 0..COLD_REPS + 20 {
            let t0 = Instant::now();
            let m = rt.load(black_box(wasm)).expect("load");
            let t1 = Instant::now();
            let mut inst = instantiate(rt, &m, limits);
            let t2 = Instant::now();
            let inv = inst.invoke(&ev);
            let t3 = Instant::now();
            assert!(inv.is_success());
            drop((inv, inst, m));
            if i >= 20 {
                t[0].push(ns(t3 - t0));
                t[1].push(ns(t1 - t0));
                t[2].push(ns(t2 - t1));
                t[3].push(ns(t3 - t2));
                t[4].push(ns(t3 - t1));
            }
        }
        let r = t.map(|mut v| summarize(&mut v, 0.0));
        eprintln!(
            "  cold start round {}: total p50 {} (load {}, instantiate {}, first call {})",
            round + 1,
            fmt_ns(r[0].p50),
            fmt_ns(r[1].p50),
            fmt_ns(r[2].p50),
            fmt_ns(r[3].p50)
        );
        rounds.push(r);
    }
    // Take the round with the median total p50, and report its split.
    rounds.sort_by(|a, b| a[0].p50.total_cmp(&b[0].p50));
    let [total, load, instantiate, first_call, inst_call] = rounds.swap_remove(ROUNDS / 2);
    let spread = spread_of(rounds.iter().map(|r| r[0].p50).chain([total.p50]));
    Cold {
        total: Sample { spread, ..total },
        load,
        instantiate,
        first_call,
        inst_call,
    }
}

/// Per-event time with a fresh instance (instantiate + invoke + drop; module already loaded) vs
/// with one reused instance, measured back to back in each round. Returns (fresh, reused, ratio).
fn fresh_vs_reused(
    rt: &Runtime,
    m: &FunctionModule,
    limits: &Arc<Limits>,
    data: &[u8],
) -> (Sample, Sample, f64) {
    let ev = event("sensors/pi-7/temp", data);
    let mut warm = instantiate(rt, m, limits);
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let mut fresh = Vec::with_capacity(FRESH_REPS);
        for _ in 0..FRESH_REPS {
            let t0 = Instant::now();
            let mut inst = instantiate(rt, m, limits);
            let inv = inst.invoke(black_box(&ev));
            drop(black_box(inv));
            drop(inst);
            fresh.push(ns(t0.elapsed()));
        }
        let mut reused = Vec::with_capacity(FRESH_REPS);
        for _ in 0..FRESH_REPS {
            let t0 = Instant::now();
            let inv = warm.invoke(black_box(&ev));
            drop(black_box(inv));
            reused.push(ns(t0.elapsed()));
        }
        let f = summarize(&mut fresh, 0.0);
        let r = summarize(&mut reused, 0.0);
        let ratio = f.p50 / r.p50;
        eprintln!(
            "  fresh vs reused round {}: fresh p50 {}, reused p50 {}, ratio {ratio:.1}x",
            round + 1,
            fmt_ns(f.p50),
            fmt_ns(r.p50)
        );
        rounds.push((f, r, ratio));
    }
    rounds.sort_by(|a, b| a.2.total_cmp(&b.2));
    let spread_f = spread_of(rounds.iter().map(|r| r.0.p50));
    let spread_r = spread_of(rounds.iter().map(|r| r.1.p50));
    let (f, r, ratio) = rounds.swap_remove(ROUNDS / 2);
    (
        Sample {
            spread: spread_f,
            ..f
        },
        Sample {
            spread: spread_r,
            ..r
        },
        ratio,
    )
}

struct Mem {
    per_instance: f64,
    memory_bytes: f64,
    spread: String,
}

/// Runs [`rss_probe`] in a fresh child process per round (a clean heap: earlier measurements
/// would otherwise leave freed memory that the instances reuse without raising RSS).
fn memory_per_instance(name: &str, wasm: &Path) -> Mem {
    let exe = std::env::current_exe().expect("current exe");
    let mut per = Vec::new();
    let mut mem = 0.0;
    for round in 0..ROUNDS {
        let out = std::process::Command::new(&exe)
            .env(RSS_PROBE_ENV, wasm)
            .output()
            .expect("run the RSS probe");
        assert!(
            out.status.success(),
            "RSS probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let nums: Vec<f64> = text
            .split_whitespace()
            .map(|s| s.parse().expect("number"))
            .collect();
        let [before, after, memory_bytes] = nums[..] else {
            panic!("bad probe output {text:?}")
        };
        let p = (after - before) / MEM_INSTANCES as f64;
        eprintln!(
            "  memory {name} round {}: RSS {} -> {} for {MEM_INSTANCES} instances = {} each, guest memory {} each",
            round + 1,
            kib(before),
            kib(after),
            kib(p),
            kib(memory_bytes)
        );
        per.push(p);
        mem = memory_bytes;
    }
    per.sort_by(f64::total_cmp);
    Mem {
        per_instance: per[ROUNDS / 2],
        memory_bytes: mem,
        spread: format!("{}–{}", kib(per[0]), kib(per[ROUNDS - 1])),
    }
}

/// Child process: RSS before and after creating `MEM_INSTANCES` warm instances (one invocation
/// each), held at once. Prints `rss_before rss_after guest_memory_bytes_per_instance`.
fn rss_probe(wasm: &Path) {
    let bytes = std::fs::read(wasm).expect("read module");
    let rt = Runtime::new();
    let limits = Arc::new(Limits::default());
    let m = rt.load(&bytes).expect("load");
    let is_celsius = wasm.file_stem().is_some_and(|s| s == "celsius");
    let data: Vec<u8> = if is_celsius {
        CELSIUS_JSON.to_vec()
    } else {
        vec![0x5a; 64]
    };
    let ev = event("sensors/pi-7/temp", &data);
    // Warm the engine first (lazy translation of the module's functions is shared, not per
    // instance) so the delta is what each extra instance costs.
    for _ in 0..3 {
        let mut i = instantiate(&rt, &m, &limits);
        assert!(i.invoke(&ev).is_success());
    }
    let mut held: Vec<Instance> = Vec::with_capacity(MEM_INSTANCES);
    let before = rss_bytes();
    for _ in 0..MEM_INSTANCES {
        let mut i = instantiate(&rt, &m, &limits);
        let inv = i.invoke(&ev);
        assert!(inv.is_success(), "{:?}", inv.error);
        held.push(i);
    }
    let after = rss_bytes();
    let mem: usize = held.iter().map(Instance::memory_bytes).sum();
    println!("{before} {after} {}", mem / held.len());
    black_box(&held);
}

/// Resident set size of this process (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// Timing and statistics

/// One round (or the reported median round) of a measurement; times in ns.
#[derive(Clone, Default)]
struct Sample {
    p50: f64,
    p99: f64,
    /// Calls per second from the untimed-per-call loop (0 = not measured).
    rate: f64,
    /// p50 across rounds, `min–max` (filled in by [`pick_median`]).
    spread: String,
    /// Fuel one invocation used (warm invocations only).
    fuel: u64,
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Per-call timing of `f` over `LAT_ITERS` calls after `WARMUP` calls.
fn lat_loop(mut f: impl FnMut()) -> Sample {
    for _ in 0..WARMUP {
        f();
    }
    let mut v = Vec::with_capacity(LAT_ITERS);
    for _ in 0..LAT_ITERS {
        let t = Instant::now();
        f();
        v.push(ns(t.elapsed()));
    }
    summarize(&mut v, 0.0)
}

/// Throughput of `f`: `RATE_ITERS` calls / total time (after `WARMUP` calls). `p50` holds the
/// mean time per call.
fn rate_loop(mut f: impl FnMut()) -> Sample {
    for _ in 0..WARMUP {
        f();
    }
    let t = Instant::now();
    for _ in 0..RATE_ITERS {
        f();
    }
    let total = ns(t.elapsed());
    Sample {
        p50: total / RATE_ITERS as f64,
        p99: f64::NAN,
        rate: RATE_ITERS as f64 / (total / 1e9),
        ..Sample::default()
    }
}

fn summarize(v: &mut [f64], rate: f64) -> Sample {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Sample {
        p50: q(0.50),
        p99: q(0.99),
        rate,
        ..Sample::default()
    }
}

/// The round with the median p50 (its p99 and rate come with it); logs every round.
fn pick_median(name: &str, mut rounds: Vec<Sample>) -> Sample {
    for (i, r) in rounds.iter().enumerate() {
        eprintln!(
            "  {name} round {}: p50 {} p99 {} rate {}",
            i + 1,
            fmt_ns(r.p50),
            fmt_ns(r.p99),
            fmt_rate(r.rate)
        );
    }
    let spread = spread_of(rounds.iter().map(|r| r.p50));
    rounds.sort_by(|a, b| a.p50.total_cmp(&b.p50));
    let mid = rounds.swap_remove(rounds.len() / 2);
    Sample { spread, ..mid }
}

fn spread_of(p50s: impl Iterator<Item = f64>) -> String {
    let v: Vec<f64> = p50s.collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{}–{}", fmt_ns(lo), fmt_ns(hi))
}

// ---------------------------------------------------------------------------------------------
// Output

struct Row {
    name: String,
    p50: String,
    p99: String,
    rate: String,
    spread: String,
    target: String,
    met: String,
}

impl Row {
    fn lat(name: &str, s: &Sample, target: &str, met: String) -> Row {
        Row {
            name: name.into(),
            p50: fmt_ns(s.p50),
            p99: fmt_ns(s.p99),
            rate: fmt_rate(s.rate),
            spread: s.spread.clone(),
            target: target.into(),
            met,
        }
    }

    fn text(name: &str, value: String, target: &str, met: String) -> Row {
        Row {
            name: name.into(),
            p50: value,
            p99: String::new(),
            rate: String::new(),
            spread: String::new(),
            target: target.into(),
            met,
        }
    }
}

fn met(ok: bool) -> String {
    if ok { "yes" } else { "**no**" }.into()
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
    } else {
        format!("{:.0} k/s", r / 1e3)
    }
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}
