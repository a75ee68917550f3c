//! Runtime benchmark (issue 2, item 8): warm invocations, the bare-wasmi floor, cold start,
//! fresh-instance-per-event vs reuse, and memory per warm instance.
//!
//! Run: `cargo bench -p edgefn-agent --bench runtime` (bench profile = release + fat LTO).
//! Prints a markdown table to stdout and progress to stderr. Hand-rolled timing (no criterion).
//! Every measurement runs in 3 rounds and the median round is reported. The rounds are
//! interleaved (round 1 of everything, then round 2, ...) so that a burst of load from other
//! processes on a small machine spoils one round of each measurement rather than all three of
//! one. Results and the machine they were taken on live in docs/benchmarks.md.

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
/// Cold starts (load + instantiate + first invoke) per round, after `COLD_WARMUP` untimed ones.
const COLD_REPS: usize = 200;
const COLD_WARMUP: usize = 20;
/// Fresh instances (instantiate + invoke + drop) per round.
const FRESH_REPS: usize = 2_000;
/// Warm instances held at once for the memory measurement.
const MEM_INSTANCES: usize = 1_000;
/// Fuel the runtime hands to the guest per slice (`FUEL_SLICE` in agent/src/runtime/limits.rs).
const FUEL_SLICE: u64 = 16_384;
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
const SUBJECT: &str = "sensors/pi-7/temp";

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
    let trivial = rt
        .load(&support::wat(TRIVIAL_WAT))
        .expect("trivial guest loads");
    let data64 = vec![0x5a_u8; 64];
    let data4k = vec![0x5a_u8; 4096];

    let mut echo64 = Warm::new("echo warm 64 B", &rt, &echo, &limits, &data64);
    let mut echo4k = Warm::new("echo warm 4 KiB", &rt, &echo, &limits, &data4k);
    let mut trivial64 = Warm::new("trivial WAT guest 64 B", &rt, &trivial, &limits, &data64);
    let mut cels = Warm::new("celsius warm", &rt, &celsius, &limits, CELSIUS_JSON);
    let mut floor = Floor::new();
    let mut fresh_reused = FreshVsReused::new(&rt, &echo, &limits, &data64);

    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu_start = cpu_times();
    let mut r = Rounds::default();
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}");
        // Timer overhead, so readers know what a per-call sample includes.
        r.timer
            .push(log("timer: Instant::now() pair", lat_loop(|| {})));
        // 1. Warm echo on one reused instance; the runtime with a guest that does nothing.
        r.echo64.push(echo64.round());
        r.echo4k.push(echo4k.round());
        r.trivial.push(trivial64.round());
        // 2. The floor: a bare wasmi call, fuel set before each call.
        r.floor.push(log("floor: wasmi call", floor.round(false)));
        r.floor_resumable
            .push(log("floor: wasmi call_resumable", floor.round(true)));
        // 3. Cold start.
        r.cold
            .push(cold_start_round(&rt, &echo_wasm, &limits, &data64));
        // 4. Fresh instance per event vs a reused one.
        r.fresh_reused.push(fresh_reused.round());
        // 6. celsius warm (the MQTT benchmark workload).
        r.celsius.push(cels.round());
        // Host-side pieces of one invocation, for the interpretation.
        r.ulid.push(log(
            "ulid::Ulid::new().to_string()",
            rate_loop(|| drop(black_box(ulid::Ulid::new().to_string()))),
        ));
        r.now_ms.push(log(
            "now_ms()",
            rate_loop(|| _ = black_box(edgefn_agent::runtime::now_ms())),
        ));
        // 5. Memory per warm instance, each round in a fresh child process.
        r.mem_echo
            .push(memory_round("echo", &support::example_path("echo")));
        r.mem_celsius
            .push(memory_round("celsius", &support::example_path("celsius")));
    }
    let cpu = cpu_times().since(&cpu_start);
    echo64.check();
    echo4k.check();
    trivial64.check();
    cels.check();

    // ---- pick the median rounds ----
    let timer = pick_median(r.timer);
    let (e64, e4k, triv, cel) = (
        pick_median(r.echo64),
        pick_median(r.echo4k),
        pick_median(r.trivial),
        pick_median(r.celsius),
    );
    let (fl, flr) = (pick_median(r.floor), pick_median(r.floor_resumable));
    let (ulid, now) = (pick_median(r.ulid), pick_median(r.now_ms));
    let cold = {
        let spread = spread_of(r.cold.iter().map(|c| c.total.p50));
        let mut c = median_by(r.cold, |c| c.total.p50);
        c.total.spread = spread;
        c
    };
    let (fresh, reused, ratio) = {
        let sf = spread_of(r.fresh_reused.iter().map(|x| x.0.p50));
        let sr = spread_of(r.fresh_reused.iter().map(|x| x.1.p50));
        let ratios: Vec<f64> = r.fresh_reused.iter().map(|x| x.2).collect();
        let (mut f, mut re, ratio) = median_by(r.fresh_reused, |x| x.2);
        f.spread = sf;
        re.spread = sr;
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        (f, re, (ratio, format!("{lo:.1}x–{hi:.1}x")))
    };
    let mem_echo = Mem::median(r.mem_echo);
    let mem_celsius = Mem::median(r.mem_celsius);

    // ---- table ----
    let no = String::new;
    let echo_met = |s: &Sample| met(s.p50 <= 2_000.0);
    let lat = Row::lat;
    let mut rows = vec![
        lat(
            "echo warm, 64 B payload",
            &e64,
            "p50 ≤ 2 µs",
            echo_met(&e64),
        ),
        lat(
            "echo warm, 4 KiB payload",
            &e4k,
            "p50 ≤ 2 µs",
            echo_met(&e4k),
        ),
        lat(
            "runtime with a trivial WAT guest (no SDK code), 64 B",
            &triv,
            "",
            no(),
        ),
        lat(
            "floor: bare wasmi `call` (fuel on, set_fuel per call)",
            &fl,
            "",
            no(),
        ),
        lat("floor variant: bare wasmi `call_resumable`", &flr, "", no()),
        Row::text(
            "echo 64 B / floor (p50)",
            format!("{:.1}x", e64.p50 / fl.p50),
            "",
            no(),
        ),
        lat(
            "cold start: load + instantiate + first invoke (echo)",
            &cold.total,
            "p50 ≤ 1 ms",
            met(cold.total.p50 <= 1_000_000.0),
        ),
        lat(
            "  of which load (Runtime::load: validate + translate)",
            &cold.load,
            "",
            no(),
        ),
        lat("  of which instantiate", &cold.instantiate, "", no()),
        lat("  of which first invoke", &cold.first_call, "", no()),
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
        Row {
            spread: ratio.1,
            ..Row::text(
                "fresh / reused (p50)",
                format!("{:.1}x", ratio.0),
                "reuse ≥ 10x faster",
                met(ratio.0 >= 10.0),
            )
        },
        lat("celsius warm (JSON in, publish + respond)", &cel, "", no()),
    ];
    for (name, m) in [("echo", &mem_echo), ("celsius", &mem_celsius)] {
        rows.push(Row {
            spread: m.spread.clone(),
            ..Row::text(
                &format!("memory per warm {name} instance (RSS delta / {MEM_INSTANCES})"),
                kib(m.per_instance),
                "",
                no(),
            )
        });
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
            "host piece: invocation id (`Ulid::new().to_string()`), mean",
            &ulid,
            "",
            no(),
        ),
        lat("host piece: `now_ms()` (SystemTime), mean", &now, "", no()),
    ]);

    println!("| Measurement | p50 | p99 | rate | p50 of the 3 rounds | Target | Met |");
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name, r.p50, r.p99, r.rate, r.spread, r.target, r.met
        );
    }
    println!();
    println!(
        "p50/p99: per-call `Instant` timing of {LAT_ITERS} calls after {WARMUP} warm-up calls \
         (cold start: {COLD_REPS} reps; fresh/reused: {FRESH_REPS} events each); rate: \
         {RATE_ITERS} calls / their total time. {ROUNDS} interleaved rounds; the table shows the \
         round with the median p50 (for fresh/reused: the median ratio)."
    );
    println!();
    println!(
        "Fuel per warm invocation: echo 64 B {}, echo 4 KiB {}, trivial WAT guest {}, celsius {}. \
         echo.wasm {} bytes, celsius.wasm {} bytes; `Limits::default()` (fuel {} in slices of {}).",
        echo64.fuel,
        echo4k.fuel,
        trivial64.fuel,
        cels.fuel,
        echo_wasm.len(),
        celsius_wasm.len(),
        limits.fuel,
        FUEL_SLICE
    );
    println!();
    println!(
        "Machine load during the run: loadavg at start `{}`; CPU time of all processes: {:.0}% busy, \
         {:.1}% steal (of {} CPUs x wall time).",
        load_start.trim(),
        cpu.busy_pct,
        cpu.steal_pct,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
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

/// Warm invocations of one module on one reused instance.
struct Warm<'d> {
    name: &'static str,
    inst: Instance,
    data: &'d [u8],
    first_response: Vec<u8>,
    fuel: u64,
}

impl<'d> Warm<'d> {
    fn new(
        name: &'static str,
        rt: &Runtime,
        m: &FunctionModule,
        limits: &Arc<Limits>,
        data: &'d [u8],
    ) -> Warm<'d> {
        let mut inst = instantiate(rt, m, limits);
        let first = inst.invoke(&event(SUBJECT, data));
        assert!(first.is_success(), "{name}: {:?}", first.error);
        assert!(!first.response.is_empty(), "{name}: empty response");
        Warm {
            name,
            inst,
            data,
            first_response: first.response,
            fuel: first.fuel_used,
        }
    }

    /// One round: per-call latency, then throughput.
    fn round(&mut self) -> Sample {
        let ev = event(SUBJECT, self.data);
        let inst = &mut self.inst;
        let mut s = lat_loop(|| {
            black_box(inst.invoke(black_box(&ev)));
        });
        s.rate = rate_loop(|| {
            black_box(inst.invoke(black_box(&ev)));
        })
        .rate;
        log(self.name, s)
    }

    /// The instance is still healthy and answers as it did at first.
    fn check(&mut self) {
        let again = self.inst.invoke(&event(SUBJECT, self.data));
        assert!(self.inst.is_usable(), "{}: instance spent", self.name);
        assert!(again.is_success() && again.response == self.first_response);
        // Steady-state fuel (the first invocation also pays for the SDK growing its event region).
        self.fuel = again.fuel_used;
    }
}

/// A bare wasmi call loop with the runtime's engine config.
struct Floor {
    store: wasmi::Store<()>,
    f: wasmi::TypedFunc<(i32, i32), i32>,
    i: i32,
}

impl Floor {
    fn new() -> Floor {
        // The runtime's engine config (`Runtime::new` in agent/src/runtime/mod.rs).
        let mut config = wasmi::Config::default();
        config.consume_fuel(true);
        config.compilation_mode(wasmi::CompilationMode::Eager);
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
        Floor { store, f, i: 0 }
    }

    /// One round of `call` (or `call_resumable`, what the runtime uses), fuel set per call.
    fn round(&mut self, resumable: bool) -> Sample {
        let Floor { store, f, i } = self;
        let mut call = || {
            *i = i.wrapping_add(1);
            store.set_fuel(FUEL_SLICE).expect("fuel on");
            let r = if resumable {
                match f.call_resumable(&mut *store, black_box((*i, 64))) {
                    Ok(wasmi::TypedResumableCall::Finished(r)) => r,
                    _ => panic!("floor call_resumable did not finish"),
                }
            } else {
                f.call(&mut *store, black_box((*i, 64)))
                    .expect("floor call")
            };
            assert_eq!(r, *i);
        };
        let mut s = lat_loop(&mut call);
        s.rate = rate_loop(&mut call).rate;
        s
    }
}

struct Cold {
    total: Sample,
    load: Sample,
    instantiate: Sample,
    first_call: Sample,
}

/// One round of load (validate + translate) + instantiate + first invoke, from the raw bytes.
fn cold_start_round(rt: &Runtime, wasm: &[u8], limits: &Arc<Limits>, data: &[u8]) -> Cold {
    let ev = event(SUBJECT, data);
    let mut t = [(); 4].map(|_| Vec::with_capacity(COLD_REPS));
    for i in 0..COLD_WARMUP + COLD_REPS {
        let t0 = Instant::now();
        let m = rt.load(black_box(wasm)).expect("load");
        let t1 = Instant::now();
        let mut inst = instantiate(rt, &m, limits);
        let t2 = Instant::now();
        let inv = inst.invoke(&ev);
        let t3 = Instant::now();
        assert!(inv.is_success());
        drop((inv, inst, m));
        if i >= COLD_WARMUP {
            t[0].push(ns(t3 - t0));
            t[1].push(ns(t1 - t0));
            t[2].push(ns(t2 - t1));
            t[3].push(ns(t3 - t2));
        }
    }
    let [total, load, instantiate, first_call] = t.map(|mut v| summarize(&mut v));
    eprintln!(
        "  cold start: total p50 {} (load {}, instantiate {}, first invoke {})",
        fmt_ns(total.p50),
        fmt_ns(load.p50),
        fmt_ns(instantiate.p50),
        fmt_ns(first_call.p50)
    );
    Cold {
        total,
        load,
        instantiate,
        first_call,
    }
}

/// Per-event time with a fresh instance (instantiate + invoke + drop; module already loaded) vs
/// with one reused instance, measured back to back in each round.
struct FreshVsReused<'a> {
    rt: &'a Runtime,
    module: &'a FunctionModule,
    limits: &'a Arc<Limits>,
    data: &'a [u8],
    warm: Instance,
}

impl<'a> FreshVsReused<'a> {
    fn new(
        rt: &'a Runtime,
        module: &'a FunctionModule,
        limits: &'a Arc<Limits>,
        data: &'a [u8],
    ) -> Self {
        let warm = instantiate(rt, module, limits);
        FreshVsReused {
            rt,
            module,
            limits,
            data,
            warm,
        }
    }

    /// One round: (fresh, reused, fresh p50 / reused p50).
    fn round(&mut self) -> (Sample, Sample, f64) {
        let ev = event(SUBJECT, self.data);
        let mut fresh = Vec::with_capacity(FRESH_REPS);
        for _ in 0..FRESH_REPS {
            let t0 = Instant::now();
            let mut inst = instantiate(self.rt, self.module, self.limits);
            let inv = inst.invoke(black_box(&ev));
            drop(black_box(inv));
            drop(inst);
            fresh.push(ns(t0.elapsed()));
        }
        let mut reused = Vec::with_capacity(FRESH_REPS);
        for _ in 0..FRESH_REPS {
            let t0 = Instant::now();
            let inv = self.warm.invoke(black_box(&ev));
            drop(black_box(inv));
            reused.push(ns(t0.elapsed()));
        }
        let f = summarize(&mut fresh);
        let r = summarize(&mut reused);
        let ratio = f.p50 / r.p50;
        eprintln!(
            "  fresh vs reused: fresh p50 {}, reused p50 {}, ratio {ratio:.1}x",
            fmt_ns(f.p50),
            fmt_ns(r.p50)
        );
        (f, r, ratio)
    }
}

/// Memory per warm instance: one round's numbers.
struct Mem {
    per_instance: f64,
    memory_bytes: f64,
    spread: String,
}

impl Mem {
    fn median(rounds: Vec<Mem>) -> Mem {
        let v: Vec<f64> = rounds.iter().map(|m| m.per_instance).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        Mem {
            spread: format!("{}–{}", kib(lo), kib(hi)),
            ..median_by(rounds, |m| m.per_instance)
        }
    }
}

/// Runs [`rss_probe`] in a fresh child process (a clean heap: memory freed by the other
/// measurements would otherwise be reused by the instances without raising RSS).
fn memory_round(name: &str, wasm: &Path) -> Mem {
    let exe = std::env::current_exe().expect("current exe");
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
    let per_instance = (after - before) / MEM_INSTANCES as f64;
    eprintln!(
        "  memory {name}: RSS {} -> {} for {MEM_INSTANCES} instances = {} each, guest memory {} each",
        kib(before),
        kib(after),
        kib(per_instance),
        kib(memory_bytes)
    );
    Mem {
        per_instance,
        memory_bytes,
        spread: String::new(),
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
    let ev = event(SUBJECT, &data);
    // Warm up first (engine stacks, allocator, any lazily translated code, all shared between
    // instances) so the delta is what each extra instance costs.
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

/// Machine-wide CPU time from /proc/stat (user+nice+system+irq+softirq, steal, total).
struct CpuTimes {
    busy: u64,
    steal: u64,
    total: u64,
}

struct CpuUse {
    busy_pct: f64,
    steal_pct: f64,
}

fn cpu_times() -> CpuTimes {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    CpuTimes {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
        total: (0..8).map(at).sum(),
    }
}

impl CpuTimes {
    fn since(&self, start: &CpuTimes) -> CpuUse {
        let total = self.total.saturating_sub(start.total).max(1) as f64;
        CpuUse {
            busy_pct: 100.0 * self.busy.saturating_sub(start.busy) as f64 / total,
            steal_pct: 100.0 * self.steal.saturating_sub(start.steal) as f64 / total,
        }
    }
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
}

/// Every round of every measurement.
#[derive(Default)]
struct Rounds {
    timer: Vec<Sample>,
    echo64: Vec<Sample>,
    echo4k: Vec<Sample>,
    trivial: Vec<Sample>,
    floor: Vec<Sample>,
    floor_resumable: Vec<Sample>,
    cold: Vec<Cold>,
    fresh_reused: Vec<(Sample, Sample, f64)>,
    celsius: Vec<Sample>,
    ulid: Vec<Sample>,
    now_ms: Vec<Sample>,
    mem_echo: Vec<Mem>,
    mem_celsius: Vec<Mem>,
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
    summarize(&mut v)
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

fn summarize(v: &mut [f64]) -> Sample {
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Sample {
        p50: q(0.50),
        p99: q(0.99),
        ..Sample::default()
    }
}

fn log(name: &str, s: Sample) -> Sample {
    eprintln!(
        "  {name}: p50 {} p99 {} rate {}",
        fmt_ns(s.p50),
        fmt_ns(s.p99),
        fmt_rate(s.rate)
    );
    s
}

/// The round with the median p50 (its p99 and rate come with it), with the spread of p50s.
fn pick_median(rounds: Vec<Sample>) -> Sample {
    let spread = spread_of(rounds.iter().map(|r| r.p50));
    Sample {
        spread,
        ..median_by(rounds, |r| r.p50)
    }
}

fn median_by<T>(mut rounds: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    rounds.sort_by(|a, b| key(a).total_cmp(&key(b)));
    rounds.swap_remove(rounds.len() / 2)
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
