//! Simulated fleet polling one `edgefn-cloud` (issue 5, docs/benchmarks.md).
//!
//! Starts the release `edgefn-cloud` (`init` + `serve --listen 127.0.0.1:0`, the binary cargo
//! built for this bench, or `EDGEFN_BENCH_CLOUD=PATH`), publishes a function, creates a group
//! with a deployment, enrolls N simulated devices into it through the operator API
//! (`POST /v1/devices` + `POST /v1/enroll`, concurrently) and fetches each device's desired
//! state once (so every device holds a real signed document and its ETag, as a running agent
//! does). Then, for the measured window, every device polls `GET /v1/device/desired` with
//! `If-None-Match` once per interval, the polls spread uniformly (N / interval requests per
//! second), through a bounded pool of keep-alive HTTP/1.1 connections (plain blocking sockets,
//! one per worker thread). Latency is measured from the moment a poll is *scheduled*, so a
//! client falling behind shows up as latency (no coordinated omission); the service time (from
//! sending the request) is reported too. The server's CPU is utime+stime of its process over the
//! window (/proc/PID/stat), as % of one core; RSS from /proc/PID/status.
//!
//! ```sh
//! cargo bench -p edgefn-cloud --bench fleet [-- --devices N --secs S --interval S --workers W
//!     --deploy-at S|never --mqtt mqtt://127.0.0.1:1883 --db sqlite --db postgres://postgres@127.0.0.1:5432/test]
//! ```
//!
//! Mid-window (`--deploy-at S`, default 15 s; `never` to keep the fleet's state unchanged) the
//! operator publishes version 2 of the function, moves the alias to it and deploys it to the
//! whole group (one batch, health wait 1 s), so each
//! device's next poll gets a newly built and signed document (`200`) and keeps its new ETag,
//! then reports `applied` (`POST /v1/device/status`) as an agent does; the bench watches the
//! deployment until it succeeds.
//!
//! Env: EDGEFN_BENCH_DEVICES (default 10000), EDGEFN_BENCH_SECS (window, default 60),
//! EDGEFN_BENCH_CLOUD (server binary). Default backends: SQLite, then the local PostgreSQL
//! (each run in a schema `bench_...` of its own, dropped afterwards; skipped if unreachable).
//! Progress on stderr, a markdown table on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PG_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
const CLK_TCK: f64 = 100.0;

struct Opts {
    devices: usize,
    secs: u64,
    interval: f64,
    workers: usize,
    dbs: Vec<String>,
    /// Seconds into the window at which the operator publishes version 2 and moves `prod` to it,
    /// so every device's next poll fetches a new signed document (`200`) instead of a `304`.
    deploy_at: Option<f64>,
    /// `--mqtt URL`: the server also nudges every device over this broker on each change
    /// (`serve --mqtt`), as a fleet with nudges would run it.
    mqtt: Option<String>,
}

fn parse_opts() -> Opts {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mut o = Opts {
        devices: env("EDGEFN_BENCH_DEVICES").unwrap_or(10_000) as usize,
        secs: env("EDGEFN_BENCH_SECS").unwrap_or(60),
        interval: 30.0,
        workers: 64,
        dbs: vec![],
        deploy_at: Some(15.0),
        mqtt: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--devices" => o.devices = val().parse().expect("--devices N"),
            "--secs" => o.secs = val().parse().expect("--secs S"),
            "--interval" => o.interval = val().parse().expect("--interval S"),
            "--workers" => o.workers = val().parse().expect("--workers W"),
            "--db" => o.dbs.push(val()),
            "--mqtt" => o.mqtt = Some(val()),
            "--deploy-at" => {
                o.deploy_at = match val().as_str() {
                    "never" => None,
                    s => Some(s.parse().expect("--deploy-at SECONDS|never")),
                }
            }
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    if o.dbs.is_empty() {
        o.dbs = vec!["sqlite".into(), PG_DEFAULT.into()];
    }
    o
}

// ---------------------------------------------------------------- a minimal HTTP/1.1 client

/// One keep-alive connection.
struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
    reconnects: usize,
}

struct Resp {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_owned(),
            stream: None,
            reconnects: 0,
        }
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        extra: Option<(&str, &str)>,
        body: Option<&Value>,
    ) -> std::io::Result<Resp> {
        // One retry on a connection the server closed while idle.
        match self.try_request(method, path, auth, extra, body) {
            Ok(r) => Ok(r),
            Err(_) => {
                self.stream = None;
                self.try_request(method, path, auth, extra, body)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        auth: &str,
        extra: Option<(&str, &str)>,
        body: Option<&Value>,
    ) -> std::io::Result<Resp> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(BufReader::new(s));
            self.reconnects += 1;
        }
        let r = self.stream.as_mut().unwrap();
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {auth}\r\n",
            self.addr
        );
        if let Some((k, v)) = extra {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        match &body {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            None => req.push_str("\r\n"),
        }
        let mut out = req.into_bytes();
        if let Some(b) = body {
            out.extend_from_slice(&b);
        }
        r.get_mut().write_all(&out)?;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut len, mut etag, mut close) = (0usize, None, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                match k.to_ascii_lowercase().as_str() {
                    "content-length" => len = v.parse().unwrap_or(0),
                    "etag" => etag = Some(v.to_owned()),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    "transfer-encoding" => {
                        return Err(std::io::Error::other("chunked responses not supported"))
                    }
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        if close {
            self.stream = None;
        }
        Ok(Resp { status, etag, body })
    }
}

// ---------------------------------------------------------------- the server

struct Server {
    child: Child,
    addr: String,
    token: String,
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = &self.schema {
            if let Ok(mut c) = postgres::Client::connect(PG_DEFAULT, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"));
            }
        }
    }
}

fn cloud_binary() -> PathBuf {
    std::env::var_os("EDGEFN_BENCH_CLOUD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_edgefn-cloud")))
}

fn start_server(db: &str, mqtt: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let bin = cloud_binary();
    let ok = Command::new(&bin)
        .args(["init", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("edgefn-cloud init");
    assert!(ok.success(), "edgefn-cloud init failed");
    let (db_url, schema) = if db == "sqlite" {
        (
            format!("sqlite://{}", dir.path().join("cloud.db").display()),
            None,
        )
    } else {
        let s = format!("bench_{}", std::process::id()) + &format!("_{}", now_ms() % 1_000_000);
        let sep = if db.contains('?') { '&' } else { '?' };
        (format!("{db}{sep}schema={s}"), Some(s))
    };
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .args(["--db", &db_url])
        .args(mqtt.map(|url| ["--mqtt", url]).into_iter().flatten())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("edgefn-cloud serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("edgefn-cloud serve exited: {log}");
        }
        if let Some(u) = line.trim().strip_prefix("listening on http://") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let token = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    Server {
        child,
        addr,
        token,
        schema,
        _dir: dir,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// utime+stime in seconds, RSS and peak RSS in KiB.
fn proc_stats(pid: &str) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / CLK_TCK;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmRSS:"), kib("VmHWM:"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- setup

struct Dev {
    credential: String,
    /// The ETag of the document the device holds: a `200` in the window replaces it.
    etag: Mutex<String>,
}

/// A minimal valid core module.
fn module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[0, 6, 5, b'b', b'e', b'n', b'c', b'h']);
    m
}

/// Setup requests the server refused with `500 serialization failure` (PostgreSQL under
/// concurrent enrollment), retried.
static SETUP_RETRIES: AtomicUsize = AtomicUsize::new(0);

fn retrying(c: &mut Conn, m: &str, p: &str, auth: &str, body: Option<&Value>) -> Resp {
    for _ in 0..100 {
        let r = c.request(m, p, auth, None, body).unwrap();
        if r.status == 500 && String::from_utf8_lossy(&r.body).contains("serialization") {
            SETUP_RETRIES.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        return r;
    }
    panic!("{m} {p}: serialization failures 100 times in a row");
}

fn setup(server: &Server, o: &Opts) -> (Vec<Dev>, f64, usize) {
    use base64::Engine;
    let mut op = Conn::new(&server.addr);
    let t = &server.token;
    let mut ok = |m: &str, p: &str, b: Value| {
        let r = op.request(m, p, t, None, Some(&b)).unwrap();
        assert!(
            (200..300).contains(&r.status),
            "{m} {p}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
    };
    let m64 = base64::engine::general_purpose::STANDARD.encode(module());
    ok(
        "POST",
        "/v1/functions",
        json!({"name": "bench", "module_base64": m64}),
    );
    ok("POST", "/v1/functions/bench/publish", json!({}));
    ok(
        "PUT",
        "/v1/functions/bench/aliases/prod",
        json!({"version": 1}),
    );
    ok(
        "POST",
        "/v1/mappings",
        json!({"name": "tick", "function": "bench:prod",
               "source": {"kind": "every", "interval_ms": 10000}}),
    );
    ok("POST", "/v1/groups", json!({"name": "fleet"}));
    // An empty group: the deployment succeeds at once and every device that joins gets it.
    ok(
        "POST",
        "/v1/deployments",
        json!({"group": "fleet", "functions": ["bench:prod"], "mappings": ["tick"]}),
    );

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let threads = 16.min(o.devices.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, done, addr, token, n) = (
                next.clone(),
                done.clone(),
                server.addr.clone(),
                server.token.clone(),
                o.devices,
            );
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                let mut out = vec![];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return out;
                    }
                    let body = json!({"name": format!("sim-{i:05}"), "groups": ["fleet"]});
                    let r = retrying(&mut c, "POST", "/v1/devices", &token, Some(&body));
                    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
                    let v: Value = serde_json::from_slice(&r.body).unwrap();
                    let body = json!({"token": v["token"]});
                    let r = retrying(&mut c, "POST", "/v1/enroll", "none", Some(&body));
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let v: Value = serde_json::from_slice(&r.body).unwrap();
                    let credential = v["credential"].as_str().unwrap().to_owned();
                    let r = retrying(&mut c, "GET", "/v1/device/desired", &credential, None);
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let doc: Value = serde_json::from_slice(&r.body).unwrap();
                    assert!(doc["document"]["payload_base64"].is_string());
                    out.push((
                        i,
                        Dev {
                            credential,
                            etag: Mutex::new(r.etag.expect("an ETag")),
                        },
                    ));
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d % 500 == 0 || d == n {
                        eprintln!(
                            "  enrolled {d}/{n} ({:.0}/s)",
                            d as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<(usize, Dev)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_by_key(|(i, _)| *i);
    // The document's size, as the fleet got it.
    let r = op
        .request(
            "GET",
            "/v1/device/desired",
            &all[0].1.credential,
            None,
            None,
        )
        .unwrap();
    (
        all.into_iter().map(|(_, d)| d).collect(),
        started.elapsed().as_secs_f64(),
        r.body.len(),
    )
}

// ---------------------------------------------------------------- the measured window

#[derive(Default)]
struct Window {
    total: Vec<u32>,             // µs from the scheduled time to the answer
    service: Vec<u32>,           // µs from sending the request to the answer
    total_200: Vec<u32>,         // `total` of the polls answered with a new document
    deployed_after: Option<f64>, // s into the window when the new version was live
    reports: Vec<u32>,           // µs per status report (`applied`) after a new document
    report_errors: usize,        // reports not answered `204`
    rollout: Option<Rollout>,    // how the mid-window deployment ended
    ok200: usize,
    not_modified: usize,
    other: usize,
    errors: usize,
    reconnects: usize,
    elapsed: f64,
    server_cpu: f64,
    client_cpu: f64,
    rss_kib: u64,
    hwm_kib: u64,
    load_start: String,
    load_end: String,
}

fn run_window(server: &Server, devs: Arc<Vec<Dev>>, o: &Opts) -> Window {
    let n = devs.len();
    let (tx, rx) = mpsc::sync_channel::<(usize, Instant)>(100_000);
    let rx = Arc::new(Mutex::new(rx));
    let results = Arc::new(Mutex::new(Window::default()));
    let workers: Vec<_> = (0..o.workers)
        .map(|_| {
            let (rx, devs, results, addr) = (
                rx.clone(),
                devs.clone(),
                results.clone(),
                server.addr.clone(),
            );
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                let mut w = Window::default();
                loop {
                    let job = rx.lock().unwrap().recv();
                    let Ok((i, scheduled)) = job else { break };
                    let d = &devs[i];
                    let etag = d.etag.lock().unwrap().clone();
                    let sent = Instant::now();
                    let r = c.request(
                        "GET",
                        "/v1/device/desired",
                        &d.credential,
                        Some(("If-None-Match", &etag)),
                        None,
                    );
                    let end = Instant::now();
                    let total = (end - scheduled).as_micros() as u32;
                    w.total.push(total);
                    w.service.push((end - sent).as_micros() as u32);
                    match r {
                        Ok(r) if r.status == 304 => w.not_modified += 1,
                        Ok(r) if r.status == 200 => {
                            w.ok200 += 1;
                            w.total_200.push(total);
                            if let Some(e) = r.etag {
                                *d.etag.lock().unwrap() = e;
                            }
                            // As an agent does once it activated the document: `applied` for
                            // each deployment in it (what drives the rollout).
                            if let Some(report) = status_report(&r.body) {
                                let sent = Instant::now();
                                let r = c.request(
                                    "POST",
                                    "/v1/device/status",
                                    &d.credential,
                                    None,
                                    Some(&report),
                                );
                                w.reports.push(sent.elapsed().as_micros() as u32);
                                if !matches!(r, Ok(ref r) if r.status == 204) {
                                    w.report_errors += 1;
                                }
                            }
                        }
                        Ok(_) => w.other += 1,
                        Err(_) => w.errors += 1,
                    }
                }
                w.reconnects = c.reconnects.saturating_sub(1);
                let mut all = results.lock().unwrap();
                all.total.extend(w.total);
                all.service.extend(w.service);
                all.total_200.extend(w.total_200);
                all.reports.extend(w.reports);
                all.report_errors += w.report_errors;
                all.ok200 += w.ok200;
                all.not_modified += w.not_modified;
                all.other += w.other;
                all.errors += w.errors;
                all.reconnects += w.reconnects;
            })
        })
        .collect();

    let pid = server.child.id().to_string();
    let me = std::process::id().to_string();
    let (cpu0, _, _) = proc_stats(&pid);
    let (ccpu0, _, _) = proc_stats(&me);
    let load_start = loadavg();
    let start = Instant::now();
    let window_end = Duration::from_secs(o.secs);
    // The operator's change, on a thread of its own so the schedule keeps its pace.
    let deployer = o.deploy_at.map(|at| {
        let (addr, token) = (server.addr.clone(), server.token.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(at));
            let id = deploy_version_2(&addr, &token);
            let deployed = start.elapsed().as_secs_f64();
            (
                deployed,
                watch_rollout(&addr, &token, &id, start, window_end),
            )
        })
    });
    let window = Duration::from_secs(o.secs);
    let gap = Duration::from_secs_f64(o.interval / n as f64);
    let mut j: u64 = 0;
    let mut last_report = start;
    loop {
        let at = start + gap.mul_f64(j as f64);
        if at >= start + window {
            break;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        tx.send(((j % n as u64) as usize, at)).unwrap();
        j += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "  {:>3.0} s: {j} polls scheduled, load {}",
                start.elapsed().as_secs_f64(),
                loadavg()
            );
        }
    }
    drop(tx);
    for w in workers {
        w.join().unwrap();
    }
    let (deployed_after, rollout) = match deployer.map(|d| d.join().unwrap()) {
        Some((at, rollout)) => (Some(at), Some(rollout)),
        None => (None, None),
    };
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu1, rss, hwm) = proc_stats(&pid);
    let (ccpu1, _, _) = proc_stats(&me);
    let mut w = std::mem::take(&mut *results.lock().unwrap());
    w.elapsed = elapsed;
    w.server_cpu = (cpu1 - cpu0) / elapsed * 100.0;
    w.client_cpu = (ccpu1 - ccpu0) / elapsed * 100.0;
    w.rss_kib = rss;
    w.hwm_kib = hwm;
    w.load_start = load_start;
    w.load_end = loadavg();
    w.total.sort_unstable();
    w.service.sort_unstable();
    w.total_200.sort_unstable();
    w.reports.sort_unstable();
    w.deployed_after = deployed_after;
    w.rollout = rollout;
    w
}

/// The body of `applied` reports for a `200` answer of `GET /v1/device/desired`.
fn status_report(body: &[u8]) -> Option<Value> {
    use base64::Engine;
    let doc: Value = serde_json::from_slice(body).ok()?;
    let signed = &doc["document"];
    let payload = base64::engine::general_purpose::STANDARD
        .decode(signed["payload_base64"].as_str()?)
        .ok()?;
    let state: Value = serde_json::from_slice(&payload).ok()?;
    let mut deployments: Vec<&str> = state["functions"]
        .as_array()?
        .iter()
        .filter_map(|f| f["deployment"].as_str())
        .collect();
    deployments.sort_unstable();
    deployments.dedup();
    Some(json!({
        "sequence": state["sequence"],
        "key_id": signed["key_id"],
        "deployments": deployments.iter()
            .map(|d| json!({"deployment": d, "state": "applied"}))
            .collect::<Vec<_>>(),
    }))
}

/// How the mid-window deployment ended (as `GET /v1/deployments/{id}` says).
#[derive(Default)]
struct Rollout {
    /// `succeeded`, `running`, ... at the end of the watch.
    status: String,
    /// Seconds into the window when it became `succeeded` (`None`: not within the window + 30 s).
    succeeded_at: Option<f64>,
    /// Its per-state device counts at the end.
    counts: String,
}

/// Polls the deployment every 250 ms until it ends or 30 s after the window.
fn watch_rollout(addr: &str, token: &str, id: &str, start: Instant, window: Duration) -> Rollout {
    let mut op = Conn::new(addr);
    let mut r = Rollout::default();
    while start.elapsed() < window + Duration::from_secs(30) {
        let resp = op
            .request("GET", &format!("/v1/deployments/{id}"), token, None, None)
            .unwrap();
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        r.status = v["status"].as_str().unwrap_or("?").to_owned();
        r.counts = v["counts"].to_string();
        if r.status != "running" {
            if r.status == "succeeded" {
                r.succeeded_at = Some(start.elapsed().as_secs_f64());
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    r
}

/// The operator's change mid-window: a new module for `bench`, published as version 2, `prod`
/// moved to it and deployed to the group. Every device's desired state changes (new manifest,
/// new sequence, new signature).
fn deploy_version_2(addr: &str, token: &str) -> String {
    use base64::Engine;
    let mut op = Conn::new(addr);
    let mut m = module();
    m.extend_from_slice(&[0, 3, 2, b'v', b'2']);
    let m64 = base64::engine::general_purpose::STANDARD.encode(m);
    for (method, path, body) in [
        ("PUT", "/v1/functions/bench", json!({"module_base64": m64})),
        ("POST", "/v1/functions/bench/publish", json!({})),
        (
            "PUT",
            "/v1/functions/bench/aliases/prod",
            json!({"version": 2}),
        ),
        // A deployment holds the versions its aliases pointed at when it was created: the
        // fleet moves with a new one (one batch: every device released at once).
        (
            "POST",
            "/v1/deployments",
            json!({"group": "fleet", "functions": ["bench:prod"], "mappings": ["tick"],
                   "batch_percent": 100, "health_wait_ms": 1000}),
        ),
    ] {
        let r = retrying(&mut op, method, path, token, Some(&body));
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if path == "/v1/deployments" {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            return v["id"].as_str().expect("a deployment id").to_owned();
        }
    }
    unreachable!("the deployment is the last request")
}

fn pct(v: &[u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

struct Run {
    name: String,
    setup_retries: usize,
    enroll_s: f64,
    doc_bytes: usize,
    w: Window,
}

fn main() {
    let o = parse_opts();
    eprintln!(
        "fleet bench: {} devices, one poll each per {} s ({:.0} req/s), {} s window, {} connections; server {}",
        o.devices,
        o.interval,
        o.devices as f64 / o.interval,
        o.secs,
        o.workers,
        cloud_binary().display()
    );
    let mut runs = vec![];
    for db in &o.dbs {
        let name = if db == "sqlite" {
            "SQLite".to_owned()
        } else {
            "PostgreSQL".to_owned()
        };
        if db != "sqlite" && postgres::Client::connect(db, postgres::NoTls).is_err() {
            eprintln!("{name}: {db} unreachable, skipped");
            continue;
        }
        eprintln!(
            "{name}: starting edgefn-cloud, enrolling {} devices",
            o.devices
        );
        let server = start_server(db, o.mqtt.as_deref());
        SETUP_RETRIES.store(0, Ordering::Relaxed);
        let (devs, enroll_s, doc_bytes) = setup(&server, &o);
        let setup_retries = SETUP_RETRIES.load(Ordering::Relaxed);
        eprintln!(
            "{name}: enrolled in {enroll_s:.1} s; measuring {} s",
            o.secs
        );
        let w = run_window(&server, Arc::new(devs), &o);
        eprintln!(
            "{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} x 200, {} x 304, {} errors, CPU {:.0}%",
            pct(&w.total, 0.5),
            pct(&w.total, 0.99),
            pct(&w.total, 1.0),
            w.ok200,
            w.not_modified,
            w.errors + w.other,
            w.server_cpu
        );
        drop(server);
        runs.push(Run {
            name,
            setup_retries,
            enroll_s,
            doc_bytes,
            w,
        });
    }
    if runs.is_empty() {
        return;
    }

    let mut rows: Vec<(String, Vec<String>, &str)> = vec![];
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String, target: &'static str| {
        rows.push((label.to_owned(), runs.iter().map(f).collect(), target));
    };
    row("devices", &|_| o.devices.to_string(), "10,000");
    row(
        "poll interval per device",
        &|_| format!("{} s", o.interval),
        "30 s",
    );
    row("measured window", &|r| format!("{:.1} s", r.w.elapsed), "");
    row(
        "polls (200 / 304 / other / errors)",
        &|r| {
            format!(
                "{} / {} / {} / {}",
                r.w.ok200, r.w.not_modified, r.w.other, r.w.errors
            )
        },
        "",
    );
    row(
        "achieved rate",
        &|r| format!("{:.0} req/s", r.w.total.len() as f64 / r.w.elapsed),
        "",
    );
    row(
        "latency p50",
        &|r| format!("{:.1} ms", pct(&r.w.total, 0.5)),
        "",
    );
    row(
        "**latency p99**",
        &|r| format!("**{:.1} ms**", pct(&r.w.total, 0.99)),
        "**≤ 100 ms**",
    );
    row(
        "latency max",
        &|r| format!("{:.1} ms", pct(&r.w.total, 1.0)),
        "",
    );
    row(
        "new version published at (s into the window)",
        &|r| match r.w.deployed_after {
            Some(s) => format!("{s:.1} s"),
            None => "no change (--deploy-at never)".into(),
        },
        "",
    );
    row(
        "status reports `applied` p50 / p99 (errors)",
        &|r| {
            format!(
                "{:.1} / {:.1} ms ({})",
                pct(&r.w.reports, 0.5),
                pct(&r.w.reports, 0.99),
                r.w.report_errors
            )
        },
        "",
    );
    row(
        "rollout: status, when it succeeded, device counts",
        &|r| match &r.w.rollout {
            Some(x) => format!(
                "{} at {} {}",
                x.status,
                x.succeeded_at
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s")),
                x.counts
            ),
            None => "-".into(),
        },
        "",
    );
    row(
        "latency p50 / p99 of the `200`s (new signed document)",
        &|r| {
            format!(
                "{:.1} / {:.1} ms",
                pct(&r.w.total_200, 0.5),
                pct(&r.w.total_200, 0.99)
            )
        },
        "",
    );
    row(
        "service time p50 / p99 (from send)",
        &|r| {
            format!(
                "{:.1} / {:.1} ms",
                pct(&r.w.service, 0.5),
                pct(&r.w.service, 0.99)
            )
        },
        "",
    );
    row(
        "server CPU (% of one core)",
        &|r| format!("{:.0} %", r.w.server_cpu),
        "",
    );
    row(
        "server RSS end / peak",
        &|r| format!("{} / {} MiB", r.w.rss_kib / 1024, r.w.hwm_kib / 1024),
        "",
    );
    row(
        "bench client CPU (% of one core)",
        &|r| format!("{:.0} %", r.w.client_cpu),
        "",
    );
    row(
        "loadavg start → end of window",
        &|r| format!("{} → {}", r.w.load_start, r.w.load_end),
        "",
    );
    row(
        "setup: enroll + first fetch",
        &|r| {
            format!(
                "{:.0} s ({:.0} devices/s)",
                r.enroll_s,
                o.devices as f64 / r.enroll_s
            )
        },
        "",
    );
    row(
        "desired-state document",
        &|r| format!("{} bytes", r.doc_bytes),
        "",
    );
    row(
        "setup requests retried (500 serialization failure)",
        &|r| r.setup_retries.to_string(),
        "",
    );
    row("reconnects", &|r| r.w.reconnects.to_string(), "");

    println!();
    println!(
        "| | {} | target |",
        runs.iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(runs.len()));
    for (label, vals, target) in rows {
        println!("| {label} | {} | {target} |", vals.join(" | "));
    }
}
