//! The host side of ABI v1: the `edgefn.*` imports and the per-instance state they work on.
//!
//! Every guest pointer is bounds-checked; a bad one is a [`GuestFault`] trap that fails the
//! invocation (never a host panic). Publishes, kv writes and the response are only buffered here.

use super::kv::KvRead;
use super::outcome::{Effects, LogLine, Publish};
use super::topic;
use super::Limits;
use edgefn_sdk::abi::{self, status};
use edgefn_sdk::{Level, QoS};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmi::{Caller, Engine, Linker, Memory, StoreLimits};

/// Everything a function sees of its environment besides its code and limits.
#[derive(Clone)]
pub struct FunctionEnv {
    /// Values `config_get` returns.
    pub config: Arc<BTreeMap<String, String>>,
    /// Committed kv data `kv_get` reads (overlaid by the invocation's own writes).
    pub kv: Arc<dyn KvRead>,
    /// Topic filters the function may publish to; `None` = any topic.
    pub publish_allow: Option<Arc<Vec<String>>>,
}

impl Default for FunctionEnv {
    fn default() -> Self {
        FunctionEnv {
            config: Arc::default(),
            kv: Arc::new(super::kv::MemoryKv::default()),
            publish_allow: None,
        }
    }
}

impl std::fmt::Debug for FunctionEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionEnv")
            .field("config", &self.config)
            .field("publish_allow", &self.publish_allow)
            .finish_non_exhaustive()
    }
}

/// A guest broke the ABI (bad pointer, oversized response, ...): the invocation traps.
#[derive(Debug)]
pub struct GuestFault(pub String);

impl std::fmt::Display for GuestFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl wasmi::errors::HostError for GuestFault {}

fn fault(msg: String) -> wasmi::Error {
    wasmi::Error::host(GuestFault(msg))
}

/// What the imports of one instance read and write. Lives in the instance's wasmi `Store`.
pub(crate) struct HostState {
    /// The function's limits (memory is also enforced through `store_limits`).
    pub limits: Arc<Limits>,
    /// wasmi's resource limiter: caps memory growth (and traps when exceeded).
    pub store_limits: StoreLimits,
    /// Config, kv backend and publish permissions.
    pub env: FunctionEnv,
    /// The guest's exported memory, cached after instantiation to avoid a lookup per import call.
    pub memory: Option<Memory>,
    /// State of the call in progress; reset before each invocation.
    pub call: CallState,
}

/// What the current invocation has produced so far.
#[derive(Default)]
pub(crate) struct CallState {
    pub response: Option<Vec<u8>>,
    pub effects: Effects,
    /// Bytes held by buffered kv writes, bounded by the memory limit.
    pub kv_write_bytes: usize,
    pub logs: Vec<LogLine>,
    pub logs_dropped: u32,
}

impl HostState {
    fn log(&mut self, level: Level, text: String) {
        if self.call.logs.len() >= self.limits.max_log_lines {
            self.call.logs_dropped += 1;
        } else {
            self.call.logs.push(LogLine {
                time_ms: now_ms(),
                level,
                text,
            });
        }
    }
}

/// Wall clock, Unix milliseconds (what the `now_ms` import returns).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn monotonic_us() -> i64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as i64
}

/// `[ptr, ptr+len)` inside `mem`, or the trap that names the import and the argument.
fn range(
    mem: &[u8],
    ptr: i32,
    len: i32,
    import: &str,
    what: &str,
) -> Result<Range<usize>, wasmi::Error> {
    let (p, l) = (ptr as u32 as usize, len as u32 as usize);
    match p.checked_add(l) {
        Some(end) if end <= mem.len() => Ok(p..end),
        _ => Err(fault(format!(
            "bad pointer: `{import}` {what} [{p:#x}, +{l}) lies outside the guest's {}-byte memory",
            mem.len()
        ))),
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// Copies `value` to `[out, out+cap)` when it fits; returns its length (the ABI lookup convention).
fn copy_out(mem: &mut [u8], out: Range<usize>, value: &[u8]) -> i32 {
    if value.len() <= out.len() {
        mem[out.start..out.start + value.len()].copy_from_slice(value);
    }
    value.len() as i32
}

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory, wasmi::Error> {
    caller
        .data()
        .memory
        .ok_or_else(|| fault("host import called before the instance was ready".into()))
}

/// Checks a kv key: `Ok(None)` when valid, `Ok(Some(status))` when refused.
fn key_status(key: &[u8], limits: &Limits) -> Option<i32> {
    if key.is_empty() {
        Some(status::INVALID)
    } else if key.len() > limits.max_kv_key_bytes {
        Some(status::TOO_LARGE)
    } else {
        None
    }
}

/// Builds the linker that provides all of ABI v1's imports.
pub(crate) fn linker(engine: &Engine) -> Linker<HostState> {
    let mut l = Linker::<HostState>::new(engine);
    let m = abi::IMPORT_MODULE;
    l.func_wrap(
        m,
        "log",
        |mut c: Caller<'_, HostState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> Result<(), wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let r = range(data, ptr, len, "log", "text")?;
            let max = state.limits.max_log_line_bytes;
            let text = cut(String::from_utf8_lossy(&data[r]).into_owned(), max);
            state.log(Level::from_i32(level), text);
            Ok(())
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "respond",
        |mut c: Caller<'_, HostState>, ptr: i32, len: i32| -> Result<(), wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let r = range(data, ptr, len, "respond", "data")?;
            if r.len() > state.limits.max_response_bytes {
                return Err(fault(format!(
                    "response of {} bytes exceeds the limit of {} bytes",
                    r.len(),
                    state.limits.max_response_bytes
                )));
            }
            let buf = state.call.response.get_or_insert_with(Vec::new);
            buf.clear();
            buf.extend_from_slice(&data[r]);
            Ok(())
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "publish",
        |mut c: Caller<'_, HostState>,
         tp: i32,
         tl: i32,
         dp: i32,
         dl: i32,
         qos: i32|
         -> Result<i32, wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let tr = range(data, tp, tl, "publish", "topic")?;
            let dr = range(data, dp, dl, "publish", "data")?;
            let Ok(topic) = std::str::from_utf8(&data[tr]) else {
                return Ok(status::INVALID);
            };
            let Some(qos) = QoS::from_i32(qos) else {
                return Ok(status::INVALID);
            };
            if topic::check_topic(topic).is_err() {
                return Ok(status::INVALID);
            }
            if dr.len() > state.limits.max_publish_bytes {
                return Ok(status::TOO_LARGE);
            }
            if state.call.effects.publishes.len() >= state.limits.max_publishes {
                return Ok(status::QUOTA);
            }
            if let Some(allow) = &state.env.publish_allow {
                if !allow.iter().any(|f| topic::matches(f, topic)) {
                    let msg = format!(
                        "publish to `{topic}` denied: not in the function's publish permissions"
                    );
                    state.log(Level::Warn, msg);
                    return Ok(status::DENIED);
                }
            }
            let p = Publish {
                topic: topic.to_string(),
                data: data[dr].to_vec(),
                qos,
            };
            state.call.effects.publishes.push(p);
            Ok(status::OK)
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "kv_get",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         op: i32,
         oc: i32|
         -> Result<i32, wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let kr = range(data, kp, kl, "kv_get", "key")?;
            let out = range(data, op, oc, "kv_get", "output buffer")?;
            let key = &data[kr];
            if let Some(s) = key_status(key, &state.limits) {
                return Ok(s);
            }
            let value = match state.call.effects.kv_writes.get(key) {
                Some(v) => v.clone(),
                None => state
                    .env
                    .kv
                    .get(key)
                    .map_err(|e| fault(format!("kv store unavailable: {e}")))?,
            };
            Ok(match value {
                Some(v) => copy_out(data, out, &v),
                None => status::NOT_FOUND,
            })
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "kv_set",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         vp: i32,
         vl: i32|
         -> Result<i32, wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let kr = range(data, kp, kl, "kv_set", "key")?;
            let vr = range(data, vp, vl, "kv_set", "value")?;
            if let Some(s) = key_status(&data[kr.clone()], &state.limits) {
                return Ok(s);
            }
            if vr.len() > state.limits.max_kv_value_bytes {
                return Ok(status::TOO_LARGE);
            }
            let size = kr.len() + vr.len();
            if state.call.kv_write_bytes + size > state.limits.memory_bytes {
                return Ok(status::QUOTA);
            }
            state.call.kv_write_bytes += size;
            state
                .call
                .effects
                .kv_writes
                .insert(data[kr].to_vec(), Some(data[vr].to_vec()));
            Ok(status::OK)
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "kv_delete",
        |mut c: Caller<'_, HostState>, kp: i32, kl: i32| -> Result<i32, wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let kr = range(data, kp, kl, "kv_delete", "key")?;
            if let Some(s) = key_status(&data[kr.clone()], &state.limits) {
                return Ok(s);
            }
            state.call.kv_write_bytes += kr.len();
            state.call.effects.kv_writes.insert(data[kr].to_vec(), None);
            Ok(status::OK)
        },
    )
    .expect("unique import");
    l.func_wrap(
        m,
        "config_get",
        |mut c: Caller<'_, HostState>,
         kp: i32,
         kl: i32,
         op: i32,
         oc: i32|
         -> Result<i32, wasmi::Error> {
            let mem = memory(&c)?;
            let (data, state) = mem.data_and_store_mut(&mut c);
            let kr = range(data, kp, kl, "config_get", "key")?;
            let out = range(data, op, oc, "config_get", "output buffer")?;
            let value = std::str::from_utf8(&data[kr])
                .ok()
                .and_then(|k| state.env.config.get(k));
            Ok(match value {
                Some(v) => {
                    let v = v.clone();
                    copy_out(data, out, v.as_bytes())
                }
                None => status::NOT_FOUND,
            })
        },
    )
    .expect("unique import");
    l.func_wrap(m, "now_ms", || -> i64 { now_ms() as i64 })
        .expect("unique import");
    l.func_wrap(m, "monotonic_us", monotonic_us)
        .expect("unique import");
    l
}
