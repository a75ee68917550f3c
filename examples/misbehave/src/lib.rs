//! `misbehave`: a function that fails on purpose, for testing the host's isolation and limits.
//!
//! The event data is a command (surrounding whitespace ignored):
//!
//! | command | what happens |
//! |---|---|
//! | `ok` | responds `ok` |
//! | `error` | returns the function error `misbehave: requested error` |
//! | `panic` | a Rust panic: a trap (`unreachable`) with the SDK's panic handler |
//! | `trap` | executes `unreachable` |
//! | `loop` | loops forever (ends by fuel exhaustion or the wall-clock timeout) |
//! | `grow` | grows memory one page at a time forever, touching every new page, and keeps going even after `memory.grow` fails |
//! | `grow-spin` | executes `memory.grow` forever without ever growing (deltas 0 and one that always fails): only fuel or the timeout ends it |
//! | `recurse` | unbounded, non-tail recursion (a stack-overflow trap) |
//! | `publish-then-error` | publishes `1` to `misbehave/effect`, sets kv `effect` = `1`, then returns an error: the host must drop both effects |
//! | `log N` | logs N info lines, then responds `logged N` |
//! | `instance-count` | responds with the number of events this instance has handled, this one included |
//! | `init-count` | responds with how many times `edgefn_init` ran in this instance (1 unless the host is broken) |
//! | `count KEY [MS]` | spins for MS milliseconds (default 0), then adds 1 to the kv counter KEY and responds with its new value: a task that ran (and committed) twice answers `2` |
//! | `fail-attempts N` | fails while the event's `attempt` is at most N, then responds `attempt A`: retries that succeed later |
//!
//! `edgefn_init` fails (returns non-zero) when config `fail_init` is `1`: the instance does not
//! start and no event reaches it.
#![no_std]

use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use edgefn_sdk::{config, kv, publish, Error, Event, QoS, Response};

/// Events handled by this instance (wasm32 guests are single-threaded: atomics are plain loads
/// and stores here, used only to avoid `static mut`).
static EVENTS: AtomicU32 = AtomicU32::new(0);
/// Times `edgefn_init` ran in this instance.
static INIT_CALLS: AtomicU32 = AtomicU32::new(0);

fn init() -> Result<(), Error> {
    INIT_CALLS.fetch_add(1, Relaxed);
    let mut buf = [0u8; 8];
    if config::get_str("fail_init", &mut buf)?.map(str::trim) == Some("1") {
        return Err(Error::msg(
            "misbehave: init failed because config fail_init = 1",
        ));
    }
    Ok(())
}

fn handle(event: Event) -> Result<Response, Error> {
    let events = EVENTS.fetch_add(1, Relaxed) + 1;
    let command = core::str::from_utf8(event.data)?.trim();
    match command {
        "ok" => Ok(Response::text("ok")),
        "error" => Err(Error::msg("misbehave: requested error")),
        "panic" => panic!("misbehave: requested panic"),
        "trap" => core::arch::wasm32::unreachable(),
        "loop" => spin(),
        "grow" => grow(),
        "grow-spin" => grow_spin(),
        "recurse" => Response::fmt(format_args!("{}", recurse(0))),
        "publish-then-error" => {
            publish("misbehave/effect", b"1", QoS::AtLeastOnce)?;
            kv::set("effect", b"1")?;
            Err(Error::msg(
                "misbehave: error after publish and kv set (the host must drop both)",
            ))
        }
        "instance-count" => Response::fmt(format_args!("{events}")),
        "init-count" => Response::fmt(format_args!("{}", INIT_CALLS.load(Relaxed))),
        _ => {
            if let Some(rest) = command.strip_prefix("count ") {
                let mut words = rest.split_whitespace();
                let key = words.next().unwrap_or("count");
                let ms: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let until = edgefn_sdk::monotonic_us() + ms * 1000;
                while edgefn_sdk::monotonic_us() < until {
                    black_box(0);
                }
                let n = kv::get_u64(key)?.unwrap_or(0) + 1;
                kv::set_u64(key, n)?;
                return Response::fmt(format_args!("{n}"));
            }
            if let Some(n) = command.strip_prefix("fail-attempts ") {
                let n: u32 = n.trim().parse().map_err(|_| {
                    Error::msg("misbehave: `fail-attempts N` needs a whole number N")
                })?;
                if event.attempt <= n {
                    edgefn_sdk::fail!(
                        "misbehave: failing attempt {} of the first {n}",
                        event.attempt
                    );
                }
                return Response::fmt(format_args!("attempt {}", event.attempt));
            }
            if let Some(n) = command.strip_prefix("log ") {
                let n: u32 = n
                    .trim()
                    .parse()
                    .map_err(|_| Error::msg("misbehave: `log N` needs a whole number N"))?;
                for i in 1..=n {
                    edgefn_sdk::info!("misbehave: log line {i} of {n}");
                }
                return Response::fmt(format_args!("logged {n}"));
            }
            edgefn_sdk::fail!(
                "misbehave: unknown command `{command}` (ok, error, panic, trap, loop, grow, grow-spin, \
                 recurse, publish-then-error, log N, instance-count, init-count, count KEY [MS], \
                 fail-attempts N)"
            )
        }
    }
}

/// Loops forever; `black_box` keeps the optimizer from reasoning about the loop.
fn spin() -> ! {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

/// Grows memory by a page at a time forever and writes to each new page; when `memory.grow`
/// fails it keeps trying (and keeps writing to the last page it has).
fn grow() -> ! {
    const PAGE: usize = 65536;
    loop {
        let old = core::arch::wasm32::memory_grow(0, black_box(1));
        let pages = core::arch::wasm32::memory_size(0);
        let page = if old == usize::MAX { pages - 1 } else { old };
        // SAFETY: `page` is below the current memory size, so the whole page is in bounds.
        unsafe {
            let p = (page * PAGE) as *mut u8;
            for off in (0..PAGE).step_by(4096) {
                core::ptr::write_volatile(p.add(off), 0xA5);
            }
        }
    }
}

/// Executes `memory.grow` in a loop with deltas that never change the memory size: 0 (always
/// succeeds) and 65536 pages (4 GiB, always fails without reaching any resource limiter).
fn grow_spin() -> ! {
    loop {
        black_box(core::arch::wasm32::memory_grow(0, black_box(0)));
        black_box(core::arch::wasm32::memory_grow(0, black_box(65536)));
    }
}

/// Recursion with work after the call (and a frame the optimizer must keep), so it cannot
/// become a loop: it runs until the stack or the host's call depth limit traps.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 64];
    frame[(depth % 64) as usize] = depth as u8;
    let frame = black_box(frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(depth + 1);
    below.wrapping_add(frame[(depth % 64) as usize] as u64)
}

edgefn_sdk::export_handler!(handle, init = init);
