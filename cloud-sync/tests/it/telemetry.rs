//! Telemetry upload and fleet queries (issue 6) on SQLite and PostgreSQL: batches stored exactly
//! once (a re-sent batch is a duplicate answered with the first extent), bad batches refused
//! by name, filters across devices and groups, percentiles merged from two devices'
//! histograms, retention, drop counts and the cloud's own metrics.

use base64::Engine;
use edgefn_cloud::protocol::histogram::Histogram;
use edgefn_cloud::protocol::telemetry::{
    compress, Dropped, InvocationEntry, LogEntry, StatsEntry, UploadBatch,
};
use serde_json::{json, Value};

use crate::both;
use crate::support::{Backend, Device, Server};

const MINUTE: i64 = 60_000;

fn now() -> i64 {
    edgefn_cloud::now_ms()
}

fn log(
    seq: i64,
    time_ms: i64,
    level: &str,
    function: Option<&str>,
    inv: Option<&str>,
    text: &str,
) -> LogEntry {
    LogEntry {
        seq,
        time_ms,
        level: level.into(),
        function: function.map(str::to_owned),
        version: None,
        invocation_id: inv.map(str::to_owned),
        text: text.into(),
    }
}

fn invocation(seq: i64, id: &str, start_ms: i64, duration_us: u64) -> InvocationEntry {
    InvocationEntry {
        seq,
        id: id.into(),
        function: "f".into(),
        version: Some(1),
        qualifier: "prod".into(),
        source: "mqtt".into(),
        subject: "t".into(),
        event_id: format!("e-{id}"),
        attempt: 1,
        event_time_ms: start_ms,
        start_ms,
        duration_us,
        fuel_used: 10,
        outcome: "success".into(),
        error: None,
    }
}

fn b64(h: &Histogram) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.to_bytes())
}

/// One bucket of `function` version 1 holding `durations` (latency 5 ms each).
fn bucket(function: &str, minute_ms: i64, durations: &[u64]) -> StatsEntry {
    let mut d = Histogram::new();
    let mut l = Histogram::new();
    for &v in durations {
        d.record(v);
        l.record(5_000);
    }
    StatsEntry {
        function: function.into(),
        version: "1".into(),
        minute_ms,
        invocations: durations.len() as u64,
        errors: 0,
        throttles: 0,
        retries: 0,
        fuel_sum: 10 * durations.len() as u64,
        duration_sum_us: durations.iter().sum(),
        latency_sum_us: 5_000 * durations.len() as u64,
        duration_hist: b64(&d),
        latency_hist: b64(&l),
    }
}

/// Posts `batch` compressed, as the agent does: (status, answer).
fn upload(d: &Device, batch: &UploadBatch) -> (u16, Value) {
    let body = compress(&serde_json::to_vec(batch).unwrap());
    let url = format!("{}/v1/device/telemetry", d.http.base);
    let mut r = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .post(&url)
        .header("authorization", &d.http.auth)
        .header("content-encoding", "deflate")
        .content_type("application/json")
        .send(&body[..])
        .unwrap();
    let status = r.status().as_u16();
    let v = serde_json::from_slice(&r.body_mut().read_to_vec().unwrap()).unwrap_or(Value::Null);
    (status, v)
}

fn texts(v: &Value) -> Vec<String> {
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_owned())
        .collect()
}

fn exactly_once(backend: Backend) {
    let s = Server::start(backend);
    let devs = s.fleet("lab", 1);
    let d = &devs[0];
    let t = now();
    let first = UploadBatch {
        batch_seq: 1,
        logs_to: 3,
        invocations_to: 2,
        logs: (1..=3)
            .map(|i| log(i, t + i, "info", Some("f"), None, &format!("line {i}")))
            .collect(),
        invocations: vec![invocation(1, "i1", t, 100), invocation(2, "i2", t + 1, 200)],
        stats: vec![bucket("f", t / MINUTE * MINUTE, &[100, 200])],
        dropped: Dropped {
            logs: 0,
            invocations: 0,
        },
    };
    let (st, ack) = upload(d, &first);
    assert_eq!(st, 200, "{ack}");
    assert_eq!(
        ack,
        json!({"batch_seq": 1, "duplicate": false, "logs_to": 3, "invocations_to": 2, "logs": 3, "invocations": 2})
    );

    // The agent crashed before recording the answer and rebuilt batch 1 with more in it.
    let mut rebuilt = first.clone();
    rebuilt
        .logs
        .push(log(4, t + 4, "info", Some("f"), None, "line 4"));
    rebuilt.logs_to = 4;
    rebuilt.stats = vec![bucket("f", t / MINUTE * MINUTE, &[100, 200, 300])];
    let (st, ack) = upload(d, &rebuilt);
    assert_eq!(st, 200, "{ack}");
    assert_eq!(ack["duplicate"], true);
    assert_eq!(ack["logs_to"], 3, "the extent stored the first time");
    assert_eq!(ack["logs"], 3);
    let op = s.op();
    let logs = op.ok("GET", "/v1/logs", None);
    assert_eq!(texts(&logs), ["line 1", "line 2", "line 3"]);
    let stats = op.ok("GET", "/v1/stats?function=f", None);
    assert_eq!(
        stats["totals"]["invocations"], 2,
        "the duplicate's newer bucket was not applied"
    );

    // The next batch carries the rest and the newer bucket (replacing, not adding).
    let next = UploadBatch {
        batch_seq: 2,
        logs_to: 4,
        invocations_to: 2,
        logs: vec![log(4, t + 4, "info", Some("f"), None, "line 4")],
        stats: rebuilt.stats.clone(),
        dropped: Dropped {
            logs: 7,
            invocations: 1,
        },
        ..UploadBatch::default()
    };
    assert_eq!(upload(d, &next).1["duplicate"], false);
    let logs = op.ok("GET", "/v1/logs", None);
    assert_eq!(texts(&logs), ["line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(logs["dropped"][0]["device"], d.name.as_str());
    assert_eq!(logs["dropped"][0]["logs"], 7);
    assert_eq!(logs["dropped"][0]["invocations"], 1);
    let stats = op.ok("GET", "/v1/stats?function=f", None);
    assert_eq!(stats["totals"]["invocations"], 3);
    assert_eq!(
        op.ok("GET", "/v1/invocations", None)
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Drop counts follow the newest batch, also downwards (the device corrected them).
    let later = UploadBatch {
        batch_seq: 3,
        logs_to: 4,
        invocations_to: 2,
        dropped: Dropped {
            logs: 5,
            invocations: 1,
        },
        ..UploadBatch::default()
    };
    upload(d, &later);
    assert_eq!(op.ok("GET", "/v1/logs", None)["dropped"][0]["logs"], 5);

    // Refusals name what is wrong.
    let (st, v) = upload(
        d,
        &UploadBatch {
            batch_seq: 0,
            ..UploadBatch::default()
        },
    );
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch_seq"),
        "{v}"
    );
    let mut loud = next.clone();
    loud.batch_seq = 9;
    loud.logs[0].level = "loud".into();
    let (st, v) = upload(d, &loud);
    assert_eq!(st, 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("\"loud\""),
        "{v}"
    );
    let (st, _, body) = d.http.raw(
        "POST",
        "/v1/device/telemetry",
        None,
        &[("content-encoding", "br")],
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    let (st, _) = op.call("POST", "/v1/device/telemetry", Some(&json!({})));
    assert_eq!(st, 401, "the operator token is not a device credential");
    let (st, v) = op.call("GET", "/v1/logs?level=loud", None);
    assert_eq!(st, 400, "{v}");
    let (st, v) = op.call("GET", "/v1/logs?device=a&group=b", None);
    assert_eq!(st, 400, "{v}");
    let (st, v) = op.call("GET", "/v1/logs?device=nobody", None);
    assert_eq!(st, 404, "{v}");

    // The cloud's own metrics.
    let (st, _, body) = op.raw("GET", "/metrics", None, &[]);
    assert_eq!(st, 200);
    let m = String::from_utf8(body).unwrap();
    assert!(
        m.contains("edgefn_cloud_ingest_batches_total{result=\"stored\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("edgefn_cloud_ingest_batches_total{result=\"duplicate\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("edgefn_cloud_ingest_records_total{kind=\"logs\"} 4"),
        "{m}"
    );
    assert!(m.contains("route=\"/v1/device/telemetry\""), "{m}");
    assert!(m.contains("edgefn_cloud_db_errors_total"), "{m}");
}

both!(batches_are_stored_exactly_once, exactly_once);

fn filters(backend: Backend) {
    let s = Server::start(backend);
    let lab = s.fleet("lab", 2);
    let field = s.fleet("field", 1);
    let t = now() - 10 * MINUTE;
    // Each device logs the same shape with its own name in the text.
    for (n, d) in lab.iter().chain(&field).enumerate() {
        let inv = format!("inv-{n}");
        let batch = UploadBatch {
            batch_seq: 1,
            logs_to: 5,
            invocations_to: 0,
            logs: vec![
                log(
                    1,
                    t,
                    "debug",
                    Some("f"),
                    Some(&inv),
                    &format!("{} debug detail", d.name),
                ),
                log(
                    2,
                    t + MINUTE,
                    "info",
                    Some("f"),
                    Some(&inv),
                    &format!("{} 50% Done", d.name),
                ),
                log(
                    3,
                    t + 2 * MINUTE,
                    "warn",
                    Some("f"),
                    None,
                    &format!("{} hot", d.name),
                ),
                log(
                    4,
                    t + 3 * MINUTE,
                    "error",
                    Some("g"),
                    None,
                    &format!("{} broke", d.name),
                ),
                log(5, t + 4 * MINUTE, "info", None, None, "agent line"),
            ],
            ..UploadBatch::default()
        };
        assert_eq!(upload(d, &batch).0, 200);
    }
    let op = s.op();
    let q = |query: &str| texts(&op.ok("GET", &format!("/v1/logs?{query}"), None));
    // Records of the same time from two devices come in device-id order; compare as sets.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let (a, b, c) = (&lab[0].name, &lab[1].name, &field[0].name);

    assert_eq!(q("").len(), 15);
    assert_eq!(q(&format!("device={a}")).len(), 5);
    assert_eq!(q(&format!("device={}", lab[1].id)).len(), 5, "ids work too");
    assert_eq!(q("group=lab").len(), 10);
    assert_eq!(
        q("group=field"),
        [
            format!("{c} debug detail"),
            format!("{c} 50% Done"),
            format!("{c} hot"),
            format!("{c} broke"),
            "agent line".into()
        ]
    );
    assert_eq!(
        sorted(q("function=g&group=lab")),
        sorted(vec![format!("{a} broke"), format!("{b} broke")])
    );
    assert_eq!(
        q(&format!("level=warn&device={a}")),
        [format!("{a} hot"), format!("{a} broke")]
    );
    assert_eq!(q("level=error").len(), 3);
    assert_eq!(
        q(&format!(
            "device={b}&since_ms={}&until_ms={}",
            t + MINUTE,
            t + 3 * MINUTE
        )),
        [format!("{b} 50% Done"), format!("{b} hot")],
        "since inclusive, until exclusive"
    );
    // grep: case-insensitive, `%` literal.
    assert_eq!(
        sorted(q("grep=50%25%20done&group=lab")),
        sorted(vec![format!("{a} 50% Done"), format!("{b} 50% Done")])
    );
    let (st, v) = op.call("GET", "/v1/logs?group=nowhere", None);
    assert_eq!(
        st, 404,
        "an unknown group is refused, not an empty answer: {v}"
    );
}

both!(queries_filter_across_devices_and_groups, filters);

fn invocation_filter(backend: Backend) {
    let s = Server::start(backend);
    let devs = s.fleet("lab", 2);
    let t = now();
    for (n, d) in devs.iter().enumerate() {
        let batch = UploadBatch {
            batch_seq: 1,
            logs_to: 2,
            invocations_to: 1,
            logs: vec![
                log(1, t, "info", Some("f"), Some(&format!("inv-{n}")), "start"),
                log(
                    2,
                    t + 1,
                    "info",
                    Some("f"),
                    Some(&format!("inv-{n}")),
                    "end",
                ),
            ],
            invocations: vec![invocation(1, &format!("inv-{n}"), t, 10)],
            ..UploadBatch::default()
        };
        upload(d, &batch);
    }
    let op = s.op();
    let v = op.ok("GET", "/v1/logs?invocation=inv-1", None);
    let devices: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["device"].as_str().unwrap())
        .collect();
    assert_eq!(devices, [devs[1].name.as_str(); 2]);
    let v = op.ok("GET", "/v1/invocations?id=inv-0", None);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["device"], devs[0].name.as_str());
    // Follow mode: what arrived since a point, oldest first.
    let v = op.ok(
        "GET",
        &format!("/v1/logs?received_since_ms={}", t - MINUTE),
        None,
    );
    assert_eq!(v["records"].as_array().unwrap().len(), 4);
    let v = op.ok(
        "GET",
        &format!("/v1/logs?received_since_ms={}", now() + MINUTE),
        None,
    );
    assert!(v["records"].as_array().unwrap().is_empty());
}

both!(queries_filter_by_invocation_and_arrival, invocation_filter);

/// The exact nearest-rank quantile of sorted values.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn percentiles(backend: Backend) {
    let s = Server::start(backend);
    let devs = s.fleet("lab", 2);
    let minute = (now() - 5 * MINUTE) / MINUTE * MINUTE;
    // Device 0: 900 fast runs (100..1000 µs), device 1: 100 slow runs (50..150 ms), over two
    // minutes each. The merged p50 is fast, the merged p99 slow; averaging the devices'
    // percentiles would give neither.
    let fast: Vec<u64> = (0..900).map(|i| 100 + i).collect();
    let slow: Vec<u64> = (0..100).map(|i| 50_000 + i * 1000).collect();
    for (d, values) in devs.iter().zip([&fast, &slow]) {
        let half = values.len() / 2;
        let batch = UploadBatch {
            batch_seq: 1,
            stats: vec![
                bucket("f", minute, &values[..half]),
                bucket("f", minute + MINUTE, &values[half..]),
            ],
            ..UploadBatch::default()
        };
        assert_eq!(upload(d, &batch).0, 200);
    }
    let mut all: Vec<u64> = fast.iter().chain(&slow).copied().collect();
    all.sort();
    let r = s.op().ok(
        "GET",
        "/v1/stats?function=f&window_s=3600&series_s=60",
        None,
    );
    let t = &r["totals"];
    assert_eq!(t["invocations"], 1000);
    let close = |got: &Value, want: u64| {
        let got = got.as_u64().unwrap() as f64;
        assert!(
            (got - want as f64).abs() <= want as f64 / 64.0,
            "{got} vs exact {want}\n{r}"
        );
    };
    close(&t["duration_us"]["p50"], exact(&all, 0.50));
    close(&t["duration_us"]["p95"], exact(&all, 0.95));
    close(&t["duration_us"]["p99"], exact(&all, 0.99));
    assert_eq!(t["duration_us"]["max"], 149_000);
    let mean = all.iter().sum::<u64>() as f64 / all.len() as f64;
    assert!((t["duration_us"]["avg"].as_f64().unwrap() - mean).abs() < 1e-6);
    // Per device: each device's own distribution.
    let per: Vec<u64> = r["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["invocations"].as_u64().unwrap())
        .collect();
    assert_eq!(per.iter().sum::<u64>(), 1000);
    // Averages of the devices' p50s (~525 µs and ~100 ms) would be ~50 ms: the merge is not that.
    assert!(t["duration_us"]["p50"].as_u64().unwrap() < 1_000);
    // The series has the two minutes.
    let counts: Vec<u64> = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["invocations"].as_u64().unwrap())
        .filter(|n| *n > 0)
        .collect();
    assert_eq!(counts, [500, 500]);
    // One device, and a qualifier through the registry's alias.
    let one = s.op().ok(
        "GET",
        &format!("/v1/stats?function=f&device={}", devs[1].name),
        None,
    );
    close(&one["totals"]["duration_us"]["p50"], exact(&slow, 0.5));
    let (st, v) = s
        .op()
        .call("GET", "/v1/stats?function=f&qualifier=prod", None);
    assert_eq!(st, 404, "no such alias: {v}");
    let v = s.op().ok("GET", "/v1/stats?function=f&qualifier=1", None);
    assert_eq!(v["totals"]["invocations"], 1000);
    let v = s.op().ok("GET", "/v1/stats?function=f&qualifier=2", None);
    assert_eq!(v["totals"]["invocations"], 0);
    let (st, _) = s.op().call("GET", "/v1/stats?window_s=0", None);
    assert_eq!(st, 400);
}

both!(percentiles_merge_across_devices, percentiles);

fn retention(backend: Backend) {
    let s = Server::start(backend);
    let devs = s.fleet("lab", 1);
    let d = &devs[0];
    let old = now() - 40 * 24 * 3600 * 1000;
    let batch = UploadBatch {
        batch_seq: 1,
        logs_to: 2,
        invocations_to: 1,
        logs: vec![
            log(1, old, "info", None, None, "old"),
            log(2, now(), "info", None, None, "new"),
        ],
        invocations: vec![invocation(1, "i", old, 5)],
        stats: vec![bucket("f", old / MINUTE * MINUTE, &[5])],
        ..UploadBatch::default()
    };
    upload(d, &batch);
    let service = &s.running.as_ref().unwrap().service;
    let pruned =
        s.rt.block_on(service.prune_telemetry(30 * 24 * 3600 * 1000))
            .unwrap();
    assert_eq!((pruned.logs, pruned.invocations, pruned.stats), (1, 1, 1));
    assert_eq!(
        pruned.batches, 0,
        "a device's newest batch stays: it answers a retry"
    );
    assert_eq!(texts(&s.op().ok("GET", "/v1/logs", None)), ["new"]);
    // The kept batch still answers a retry as a duplicate.
    assert_eq!(upload(d, &batch).1["duplicate"], true);
}

both!(
    retention_drops_old_records_and_keeps_the_newest_batch,
    retention
);
