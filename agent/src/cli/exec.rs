//! `edgefn-agent exec MODULE.wasm`: the local runner for function authors.
//!
//! stdout carries exactly the response bytes (each followed by a newline with `--repeat`), or one
//! JSON object per invocation with `--json`; stderr carries log lines and publishes. Exit 0 on
//! success, 1 when the function fails, 2 for usage errors or a module that cannot load.

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use edgefn_agent::runtime::{
    FunctionEnv, Instance, Invocation, Limits, LogLine, MemoryKv, Outcome, Runtime,
};
use edgefn_sdk::Event;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The function module (.wasm).
    module: PathBuf,
    /// Event payload as text.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// Event payload read from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
    /// Event subject (MQTT topic, HTTP path, ...).
    #[arg(long, default_value = "")]
    subject: String,
    /// Event source: mqtt, schedule, http, invoke, stream, batch, function.
    #[arg(long, default_value = "invoke")]
    source: String,
    /// Event content type.
    #[arg(long, default_value = "")]
    content_type: String,
    /// A config value the function reads with config_get (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    config: Vec<(String, String)>,
    /// File holding the function's kv store, kept between runs (default: in memory).
    #[arg(long, value_name = "PATH")]
    kv: Option<PathBuf>,
    /// Fuel per invocation.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "N")]
    memory_mb: Option<usize>,
    /// Wall-clock timeout per invocation in milliseconds.
    #[arg(long, value_name = "N")]
    timeout_ms: Option<u64>,
    /// Largest event in bytes.
    #[arg(long, value_name = "N")]
    max_event_bytes: Option<usize>,
    /// Run N invocations on the same warm instance (stops at the first failure).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    repeat: Option<u64>,
    /// One JSON object per invocation on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    let data = match (&args.data, &args.data_file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("cannot read data from stdin")?;
            buf
        }
        (None, Some(p)) => {
            std::fs::read(p).with_context(|| format!("cannot read data file {}", p.display()))?
        }
        (None, None) => Vec::new(),
    };
    let mut limits = Limits::default();
    if let Some(f) = args.fuel {
        limits.fuel = f;
    }
    if let Some(m) = args.memory_mb {
        limits.memory_bytes = m
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("--memory-mb {m} is too large"))?;
    }
    if let Some(t) = args.timeout_ms {
        limits.timeout = Duration::from_millis(t);
    }
    if let Some(n) = args.max_event_bytes {
        limits.max_event_bytes = n;
    }
    let limits = Arc::new(limits);

    let kv_file = args.kv.as_deref().map(KvFile::load).transpose()?;
    let kv = Arc::new(
        kv_file
            .as_ref()
            .map(|f| MemoryKv::from_map(f.entries.clone()))
            .unwrap_or_default(),
    );
    let env = FunctionEnv {
        config: Arc::new(args.config.iter().cloned().collect()),
        kv: kv.clone(),
        publish_allow: None,
    };

    let runtime = Runtime::new();
    let module = runtime
        .load(&wasm)
        .with_context(|| format!("cannot load {}", args.module.display()))?;

    let mut stdout = std::io::stdout().lock();
    let mut instance: Option<Instance> = None;
    let n = args.repeat.unwrap_or(1);
    for i in 0..n {
        let inst = match instance.as_mut().filter(|i| i.is_usable()) {
            Some(inst) => inst,
            None => match runtime.instantiate(&module, limits.clone(), env.clone()) {
                Ok(mut inst) => {
                    print_logs("init", &inst.take_init_logs());
                    instance.insert(inst)
                }
                Err(e) => {
                    if let edgefn_agent::runtime::InstanceError::Init { logs, .. } = &e {
                        print_logs("init", logs);
                    }
                    eprintln!("error: init_failed: {e}");
                    if args.json {
                        let v = serde_json::json!({"outcome": Outcome::InitFailed.as_str(), "error": e.to_string()});
                        writeln!(stdout, "{v}")?;
                    }
                    return Ok(ExitCode::from(super::EXIT_FUNCTION));
                }
            },
        };
        let event_id = format!("exec-{}-{i}", std::process::id());
        let event = Event {
            id: &event_id,
            source: &args.source,
            subject: &args.subject,
            time_ms: edgefn_agent::runtime::now_ms(),
            content_type: &args.content_type,
            data: &data,
            attempt: 1,
        };
        let inv = inst.invoke(&event);
        print_logs(&inv.id, &inv.logs);
        if inv.logs_dropped > 0 {
            eprintln!(
                "warn  {} {} log lines dropped (limit {} per invocation)",
                inv.id, inv.logs_dropped, limits.max_log_lines
            );
        }
        for p in &inv.effects.publishes {
            eprintln!(
                "publish {} qos={} bytes={}",
                p.topic,
                p.qos as u8,
                p.data.len()
            );
        }
        if args.json {
            serde_json::to_writer(&mut stdout, &JsonInvocation::from(&inv))?;
            stdout.write_all(b"\n")?;
        } else if inv.is_success() {
            stdout.write_all(&inv.response)?;
            if args.repeat.is_some() {
                stdout.write_all(b"\n")?;
            }
        }
        stdout.flush()?;
        if !inv.is_success() {
            eprintln!(
                "error: {}: {}",
                inv.outcome,
                inv.error.as_deref().unwrap_or("")
            );
            return Ok(ExitCode::from(super::EXIT_FUNCTION));
        }
        if !inv.effects.kv_writes.is_empty() {
            kv.apply(&inv.effects.kv_writes);
            if let (Some(file), Some(path)) = (&kv_file, &args.kv) {
                file.save(path, kv.snapshot())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_logs(id: &str, logs: &[LogLine]) {
    let mut err = std::io::stderr().lock();
    for l in logs {
        let _ = writeln!(err, "{:<5} {id} {}", l.level, l.text);
    }
}

/// Bytes as JSON: UTF-8 text when possible, else `{"base64": ...}`.
#[derive(Serialize, Deserialize, Clone)]
#[serde(untagged)]
enum JsonBytes {
    Text(String),
    Binary { base64: String },
}

impl JsonBytes {
    fn from_bytes(b: &[u8]) -> JsonBytes {
        match std::str::from_utf8(b) {
            Ok(s) => JsonBytes::Text(s.to_string()),
            Err(_) => JsonBytes::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(b),
            },
        }
    }

    fn into_bytes(self) -> anyhow::Result<Vec<u8>> {
        match self {
            JsonBytes::Text(s) => Ok(s.into_bytes()),
            JsonBytes::Binary { base64 } => base64::engine::general_purpose::STANDARD
                .decode(base64)
                .context("bad base64 value"),
        }
    }
}

#[derive(Serialize)]
struct JsonInvocation {
    invocation_id: String,
    outcome: &'static str,
    error: Option<String>,
    response: JsonBytes,
    duration_us: u64,
    fuel_used: u64,
    logs: Vec<JsonLog>,
    logs_dropped: u32,
    publishes: Vec<JsonPublish>,
}

#[derive(Serialize)]
struct JsonLog {
    time_ms: u64,
    level: &'static str,
    text: String,
}

#[derive(Serialize)]
struct JsonPublish {
    topic: String,
    qos: u8,
    data: JsonBytes,
}

impl From<&Invocation> for JsonInvocation {
    fn from(inv: &Invocation) -> Self {
        JsonInvocation {
            invocation_id: inv.id.clone(),
            outcome: inv.outcome.as_str(),
            error: inv.error.clone(),
            response: JsonBytes::from_bytes(&inv.response),
            duration_us: inv.duration.as_micros() as u64,
            fuel_used: inv.fuel_used,
            logs: inv
                .logs
                .iter()
                .map(|l| JsonLog {
                    time_ms: l.time_ms,
                    level: l.level.as_str(),
                    text: l.text.clone(),
                })
                .collect(),
            logs_dropped: inv.logs_dropped,
            publishes: inv
                .effects
                .publishes
                .iter()
                .map(|p| JsonPublish {
                    topic: p.topic.clone(),
                    qos: p.qos as u8,
                    data: JsonBytes::from_bytes(&p.data),
                })
                .collect(),
        }
    }
}

/// `--kv PATH`: a JSON object of key → value (text, or `{"base64": ...}` for binary values).
/// Keys are UTF-8 (the SDK's kv API takes `&str`). Written atomically (temp file + rename).
struct KvFile {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvFile {
    fn load(path: &Path) -> anyhow::Result<KvFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(KvFile {
                    entries: BTreeMap::new(),
                })
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read kv file {}", path.display()))
            }
        };
        if text.trim().is_empty() {
            return Ok(KvFile {
                entries: BTreeMap::new(),
            });
        }
        let map: BTreeMap<String, JsonBytes> = serde_json::from_str(&text).with_context(|| {
            format!(
                "kv file {} is not a JSON object of key -> value",
                path.display()
            )
        })?;
        let mut entries = BTreeMap::new();
        for (k, v) in map {
            let v = v
                .into_bytes()
                .with_context(|| format!("kv file {}: key `{k}`", path.display()))?;
            entries.insert(k.into_bytes(), v);
        }
        Ok(KvFile { entries })
    }

    fn save(&self, path: &Path, entries: BTreeMap<Vec<u8>, Vec<u8>>) -> anyhow::Result<()> {
        let mut map = BTreeMap::new();
        for (k, v) in entries {
            let Ok(k) = String::from_utf8(k) else {
                bail!("a kv key is not UTF-8: the kv file keeps text keys only")
            };
            map.insert(k, JsonBytes::from_bytes(&v));
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&map)?)
            .with_context(|| format!("cannot write kv file {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace kv file {}", path.display()))?;
        Ok(())
    }
}
