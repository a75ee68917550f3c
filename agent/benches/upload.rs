//! Telemetry upload benchmark (issue 6, item 6): the agent's record write throughput with a
//! chatty function running, with and without the upload actor draining to a real cloud; and
//! upload + ingest throughput of a large backlog (records/s, bytes per record on the wire),
//! from which the drain time of a day of a chatty function is extrapolated.
//!
//! Run: `cargo build --release -p edgefn-cloud --bins && cargo bench -p edgefn-agent --bench upload`
//! (optionally `EDGEFN_BENCH_PG=postgres://postgres@127.0.0.1:5432/test` to also drain into
//! PostgreSQL). The cloud is the release `edgefn-cloud serve` as a separate process on
//! loopback (SQLite in a temporary directory); the agent side runs in this process: a `Daemon`
//! as `edgefn-agent run` builds it, and the same upload code (`UploadActor`, or its steps).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgefn_agent::config::AgentConfig;
use edgefn_agent::daemon::{Daemon, InvokeRequest};
use edgefn_agent::pool::OwnedEvent;
use edgefn_agent::store::{
    InvocationLog, InvocationOutcome, InvocationRecord, Level, Origin, Outcome, Qualifier, Store,
};
use edgefn_agent::sync::{CloudClient, UploadActor, UploadSettings};
use edgefn_cloud::protocol::telemetry::compress;

/// Length of one write-throughput round.
const WRITE_SECONDS: u64 = 8;
/// Invocations in the backlog (each with 2 log lines).
const BACKLOG_INVOCATIONS: usize = 60_000;
const LOGS_PER_INVOCATION: usize = 2;
const BATCH_RECORDS: usize = 2000;
const WORKER_STACK: usize = 8 << 20;

struct Cloud {
    child: Child,
    url: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cloud_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release -p edgefn-cloud --bins` first",
        path.display()
    );
    path
}

fn start_cloud(db: Option<&str>) -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(cloud_bin("edgefn-cloud"))
        .args(["init", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let mut cmd = Command::new(cloud_bin("edgefn-cloud"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path());
    if let Some(db) = db {
        cmd.args(["--db", db]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let l = lines.next().expect("serve exited").unwrap();
        if let Some(u) = l.strip_prefix("listening on ") {
            break u.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    Cloud {
        child,
        url,
        token,
        _dir: dir,
    }
}

/// Enrolls a device `name`; returns a client with its credential.
fn enroll(cloud: &Cloud, name: &str) -> CloudClient {
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let body = serde_json::to_vec(&serde_json::json!({"name": name})).unwrap();
    let mut resp = http
        .post(format!("{}/v1/devices", cloud.url))
        .header("authorization", format!("Bearer {}", cloud.token))
        .content_type("application/json")
        .send(&body[..])
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
    let anon = CloudClient::new(&cloud.url, None, None).unwrap();
    let r = anon.enroll(v["token"].as_str().unwrap()).unwrap();
    CloudClient::new(&cloud.url, None, Some(&r.credential)).unwrap()
}

/// A guest that writes two log lines (~60 bytes each) per event.
fn chatty() -> Vec<u8> {
    let a = "sensor 7 reading 21.5 C, within limits, nothing to do";
    let b = "published summary to bench/out/7 (qos 1, 48 bytes)";
    support::wat(&format!(
        r#"(module
  (import "edgefn" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{a}")
  (data (i32.const 128) "{b}")
  (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "edgefn_handle") (param i32 i32) (result i32)
    (call $log (i32.const 2) (i32.const 16) (i32.const {la}))
    (call $log (i32.const 1) (i32.const 128) (i32.const {lb}))
    (i32.const 0)))"#,
        la = a.len(),
        lb = b.len()
    ))
}

fn request() -> InvokeRequest {
    let id = ulid::Ulid::new().to_string();
    InvokeRequest {
        function: "chatty".into(),
        qualifier: Qualifier::Latest,
        event: OwnedEvent {
            id: id.clone(),
            source: "invoke".into(),
            subject: String::new(),
            time_ms: edgefn_agent::runtime::now_ms(),
            content_type: String::new(),
            data: b"{\"temp\":21.5}".to_vec(),
            attempt: 1,
        },
        invocation_id: id,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Invocations/s of `chatty` from 2 client threads for [`WRITE_SECONDS`]; with `upload`, the
/// upload actor drains to `cloud` meanwhile. Returns (invocations/s, records/s, uploaded
/// records).
fn write_round(cloud: &Cloud, upload: bool, tag: &str) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("agent.db")).unwrap();
    store
        .create_function("chatty", &chatty(), "max_concurrency = 2\n", Origin::Local)
        .unwrap();
    let config = AgentConfig::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(WORKER_STACK)
        .enable_all()
        .build()
        .unwrap();
    let daemon = Daemon::new(store.clone(), &config);
    if upload {
        let client = enroll(cloud, &format!("write-{tag}"));
        store.upload_bind_device(tag).unwrap();
        let actor = UploadActor::new(
            daemon.clone(),
            client,
            UploadSettings {
                interval: Duration::from_millis(500),
                batch_records: BATCH_RECORDS,
                ..UploadSettings::default()
            },
        );
        std::thread::spawn(move || actor.run());
    }
    let deadline = Instant::now() + Duration::from_secs(WRITE_SECONDS);
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (d, h) = (daemon.clone(), rt.handle().clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let done = h.block_on(d.invoke(request())).unwrap();
                    assert!(done.invocation.is_success());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    let uploaded = daemon.metrics().upload_records.get();
    let records = n * (1 + LOGS_PER_INVOCATION as u64);
    (n as f64 / secs, records as f64 / secs, uploaded)
}

/// Fills a store with a backlog and drains it to `client` batch by batch, as the actor does.
/// Returns (records, seconds, wire bytes, raw JSON bytes, batches).
fn drain(client: &CloudClient, device: &str) -> (u64, f64, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("agent.db")).unwrap();
    store.upload_bind_device(device).unwrap();
    let t0 = edgefn_agent::runtime::now_ms() as i64 - 24 * 3600 * 1000;
    for chunk in 0..BACKLOG_INVOCATIONS / 500 {
        let batch: Vec<InvocationOutcome> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                let start = t0 + n as i64 * 1000;
                InvocationOutcome {
                    record: InvocationRecord {
                        id: ulid::Ulid::new().to_string(),
                        function: "chatty".into(),
                        version: Some(3),
                        qualifier: "prod".into(),
                        source: "mqtt".into(),
                        subject: "sensors/pi-7/temp".into(),
                        event_id: ulid::Ulid::new().to_string(),
                        attempt: 1,
                        event_time_ms: start - 2,
                        start_ms: start,
                        duration_us: 150 + (n % 50) as u64,
                        fuel_used: 5_000 + (n % 300) as u64,
                        outcome: Outcome::Success,
                        error: None,
                    },
                    logs: vec![
                        InvocationLog {
                            time_ms: start,
                            level: Level::Info,
                            text: format!(
                                "sensor 7 reading {}.{} C, within limits",
                                20 + n % 5,
                                n % 10
                            ),
                        },
                        InvocationLog {
                            time_ms: start + 1,
                            level: Level::Debug,
                            text: format!(
                                "published summary to bench/out/7 (qos 1, {} bytes)",
                                40 + n % 20
                            ),
                        },
                    ],
                    kv_writes: Vec::new(),
                    extra: Default::default(),
                }
            })
            .collect();
        store.commit(&batch).unwrap();
    }
    let start = Instant::now();
    let (mut records, mut wire, mut raw, mut batches) = (0u64, 0u64, 0u64, 0u64);
    while let Some(batch) = store.upload_batch(BATCH_RECORDS, 1000).unwrap() {
        let json = serde_json::to_vec(&batch).unwrap();
        let body = compress(&json);
        let ack = client.telemetry(&body).unwrap();
        store.upload_acked(&batch, &ack).unwrap();
        records += batch.records() as u64;
        wire += body.len() as u64;
        raw += json.len() as u64;
        batches += 1;
    }
    (records, start.elapsed().as_secs_f64(), wire, raw, batches)
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("WARNING: debug build; use `cargo bench`.");
    }
    eprintln!("load average at start: {}", loadavg());
    let cloud = start_cloud(None);
    eprintln!("cloud at {}", cloud.url);

    println!(
        "### Record writes with a chatty function running (2 clients, {WRITE_SECONDS} s rounds)\n"
    );
    println!("| upload actor | invocations/s | records/s (1 invocation + 2 lines) | uploaded meanwhile |");
    println!("|---|---|---|---|");
    for (i, upload) in [false, true, false, true].into_iter().enumerate() {
        let (inv, rec, up) = write_round(&cloud, upload, &format!("w{i}"));
        eprintln!("round {i}: upload={upload} {inv:.0} inv/s {rec:.0} records/s uploaded {up}");
        println!(
            "| {} | {inv:.0} | {rec:.0} | {up} |",
            if upload { "on" } else { "off" }
        );
    }

    let mut clouds = vec![("SQLite", cloud)];
    if let Ok(pg) = std::env::var("EDGEFN_BENCH_PG") {
        let schema = format!("bench_{}", std::process::id());
        clouds.push((
            "PostgreSQL",
            start_cloud(Some(&format!("{pg}?schema={schema}"))),
        ));
    }
    println!(
        "\n### Backlog drain ({BACKLOG_INVOCATIONS} invocations x (1 record + {LOGS_PER_INVOCATION} lines), batches of {BATCH_RECORDS})\n"
    );
    println!("| cloud store | records | seconds | records/s | wire bytes/record | raw JSON bytes/record | batches |");
    println!("|---|---|---|---|---|---|---|");
    for (name, cloud) in &clouds {
        let client = enroll(cloud, &format!("drain-{name}"));
        let (records, secs, wire, raw, batches) = drain(&client, &format!("drain-{name}"));
        eprintln!("{name}: {records} records in {secs:.1}s");
        println!(
            "| {name} | {records} | {secs:.1} | {:.0} | {:.1} | {:.1} | {batches} |",
            records as f64 / secs,
            wire as f64 / records as f64,
            raw as f64 / records as f64
        );
        // A chatty function: one invocation a second with two log lines, for a day.
        let day = 86_400.0 * (1.0 + LOGS_PER_INVOCATION as f64);
        eprintln!(
            "{name}: a day of a chatty function ({day:.0} records) drains in ~{:.0} s (extrapolated)",
            day / (records as f64 / secs)
        );
    }
    eprintln!("load average at end: {}", loadavg());
}
