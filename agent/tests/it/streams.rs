//! Ordered streams end to end (issue 7 item 2): real `edgefn-agent run` processes, the real
//! Mosquitto (127.0.0.1:1883), the `stream-audit` example function (examples/stream-audit),
//! which keeps per partition the last `seq` it saw (`last/<partition>`), counts `seq`s that are
//! not the last plus one (`gaps`: a lost, repeated or reordered record) and counts records
//! (`records`), all committed with the batch's invocation. So `last == N`, `gaps == 0` and
//! `records == total` together say: nothing lost, nothing reordered within a partition, and no
//! record's effects twice.

use crate::daemon_support::Agent;
use crate::support::{example_path, TempDir};
use edgefn_agent::store::Store;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event, MqttOptions};
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const BROKER: &str = "mqtt://127.0.0.1:1883";
const WAIT: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "edgefn-it/{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn agent(tag: &str) -> Agent {
    let a = Agent::start_with(tag, &["--mqtt", BROKER]);
    a.cli(&[
        "function",
        "create",
        "audit",
        "--module",
        example_path("stream_audit").to_str().unwrap(),
    ])
    .ok();
    a
}

#[track_caller]
fn map(a: &Agent, args: &[&str]) -> String {
    a.cli(&[&["mapping", "create", "--function", "audit"], args].concat())
        .ok()
        .trim()
        .to_string()
}

fn store(a: &Agent) -> Store {
    Store::open(a.data_dir().join("agent.db")).expect("the agent's store")
}

fn kv(s: &Store, key: &str) -> u64 {
    match s.kv_get("audit", key.as_bytes()).unwrap() {
        Some(v) => u64::from_le_bytes(v.try_into().expect("8 bytes")),
        None => 0,
    }
}

/// Waits until `last/<p>` is `n` for every partition.
#[track_caller]
fn wait_last(a: &Agent, partitions: &[String], n: u64) {
    let s = store(a);
    a.poll(&format!("last/<p> = {n} in {partitions:?}"), WAIT, || {
        partitions
            .iter()
            .all(|p| kv(&s, &format!("last/{p}")) >= n)
            .then_some(())
    });
}

/// A publishing MQTT 5 client that counts PUBACKs and keeps received messages.
struct Publisher {
    client: Client,
    acks: Arc<AtomicUsize>,
    got: mpsc::Receiver<(String, Vec<u8>)>,
    /// CONNACKs and SUBACKs.
    up: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
}

impl Publisher {
    fn connect(id: &str) -> Publisher {
        let mut o = MqttOptions::new(id, "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut connection) = Client::new(o, 8192);
        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, got) = mpsc::channel();
        let (a, st) = (acks.clone(), stop.clone());
        let (up_tx, up) = mpsc::channel();
        std::thread::spawn(move || {
            for ev in connection.iter() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let _ = tx.send((topic, p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_))) => {
                        let _ = up_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        up.recv_timeout(WAIT).expect("CONNACK");
        Publisher {
            client,
            acks,
            got,
            up,
            stop,
        }
    }

    fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .unwrap();
    }

    fn subscribe(&self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        self.up.recv_timeout(WAIT).expect("SUBACK");
    }

    #[track_caller]
    fn wait_acks(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.acks.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "only {} PUBACKs of {n}",
                self.acks.load(Ordering::Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages received on `topic` within `quiet` of each other.
    fn received(&self, topic: &str, first: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut wait = first;
        while let Ok((t, p)) = self.got.recv_timeout(wait) {
            if t == topic {
                out.push(p);
            }
            wait = Duration::from_millis(500);
        }
        out
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

/// Waits until the link is subscribed to every mapping's filter: a plain MQTT probe mapping of
/// `echo` on `~probe/...` (the link subscribes to one change's filters in sorted order; `~`
/// sorts last) answers on a topic.
fn wait_subscribed(a: &Agent, prefix: &str, p: &Publisher) {
    let probe = format!("~probe/{prefix}");
    let ack = format!("{probe}/ack");
    a.cli(&[
        "function",
        "create",
        "probe",
        "--module",
        example_path("echo").to_str().unwrap(),
    ])
    .ok();
    a.cli(&[
        "mapping",
        "create",
        "--function",
        "probe",
        "--mqtt",
        &probe,
        "--on-success",
        &format!("topic:{ack}"),
    ])
    .ok();
    p.subscribe(&ack);
    a.poll("the MQTT link to subscribe", WAIT, || {
        p.publish(&probe, "probe");
        (!p.received(&ack, Duration::from_millis(300)).is_empty()).then_some(())
    });
}

fn record(seq: u64, dev: &str) -> String {
    format!(r#"{{"dev":"{dev}","seq":{seq}}}"#)
}

/// `stats --json` stream lag rows of mapping `m`.
fn lag(a: &Agent, m: &str) -> Vec<Value> {
    a.cli(&["stats", "--json"]).json()["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["mapping"] == m)
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn order_per_partition_under_concurrency() {
    const PER: u64 = 150;
    let prefix = unique("order");
    let a = agent("stream-order");
    let m = map(
        &a,
        &[
            "--stream-mqtt",
            &format!("{prefix}/+/data"),
            "--partition-key",
            "topic:3",
            "--batch-size",
            "20",
        ],
    );
    let p = Publisher::connect(&format!("{}-pub", prefix.replace('/', "-")));
    wait_subscribed(&a, &prefix, &p);
    let devices: Vec<String> = (0..8).map(|i| format!("dev{i}")).collect();
    // Interleaved: seq 1 of every partition, then seq 2, ... Paced to stay well within what
    // Mosquitto queues for a subscriber (`max_queued_messages` 1000; beyond, QoS 1 messages are
    // dropped): at most 400 ahead of what the agent appended.
    let s = store(&a);
    let appended = || -> u64 {
        s.stream_lag(Some("audit"))
            .unwrap()
            .iter()
            .map(|r| r.appended as u64)
            .sum()
    };
    let mut sent = 0;
    for seq in 1..=PER {
        for d in &devices {
            p.publish(&format!("{prefix}/{d}/data"), record(seq, d));
            sent += 1;
        }
        if sent % 200 == 0 {
            a.poll("the agent to append", WAIT, || {
                (appended() + 400 >= sent).then_some(())
            });
        }
    }
    p.wait_acks(devices.len() * PER as usize + 1);
    wait_last(&a, &devices, PER);
    assert_eq!(kv(&s, "gaps"), 0, "a record lost, repeated or out of order");
    a.poll("every record counted", WAIT, || {
        (kv(&s, "records") == 8 * PER).then_some(())
    });
    for d in &devices {
        assert!(
            s.stream_read(&m, d, 0, 10).unwrap().is_empty(),
            "log trimmed"
        );
    }
    // Lag in stats: every partition caught up.
    let rows = lag(&a, &m);
    assert_eq!(rows.len(), 8, "{rows:?}");
    for r in &rows {
        assert_eq!(
            (r["appended"].as_u64(), r["lag"].as_u64()),
            (Some(PER), Some(0)),
            "{r}"
        );
    }
    // Batches: several records per invocation, not one each.
    let v = a.cli(&["stats", "audit", "--json"]).json();
    let invocations = v["totals"]["invocations"].as_u64().unwrap();
    assert!(
        invocations < 8 * PER,
        "{invocations} invocations for {} records",
        8 * PER
    );
}

#[test]
fn poison_record_is_isolated_by_bisect_and_sent_to_on_failure() {
    let prefix = unique("poison");
    let a = agent("stream-poison");
    let failed = format!("{prefix}/failed");
    let m = map(
        &a,
        &[
            "--stream-mqtt",
            &format!("{prefix}/in"),
            "--partition-key",
            "json:/dev",
            "--batch-size",
            "50",
            "--batch-window",
            "2s",
            "--retries",
            "1",
            "--on-failure",
            &format!("topic:{failed}"),
        ],
    );
    let p = Publisher::connect(&format!("{}-pub", prefix.replace('/', "-")));
    p.subscribe(&failed);
    wait_subscribed(&a, &prefix, &p);
    let input = format!("{prefix}/in");
    for seq in 1..=40 {
        p.publish(&input, record(seq, "a"));
        if seq == 17 {
            p.publish(&input, r#"{"dev":"a","poison":true}"#);
        }
    }
    p.wait_acks(42);
    wait_last(&a, &["a".to_string()], 40);
    let s = store(&a);
    assert_eq!(kv(&s, "gaps"), 0);
    a.poll("40 records counted", WAIT, || {
        (kv(&s, "records") == 40).then_some(())
    });
    let got = p.received(&failed, WAIT);
    assert_eq!(got.len(), 1, "exactly the poison record goes to on-failure");
    let envelope: Value = serde_json::from_slice(&got[0]).unwrap();
    assert_eq!(envelope["mapping"], m.as_str());
    assert_eq!(envelope["source"], "stream");
    assert_eq!(envelope["subject"], "a");
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(envelope["data_base64"].as_str().unwrap())
        .unwrap();
    let batch: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(batch.as_array().unwrap().len(), 1, "{batch}");
    assert_eq!(batch[0]["payload"]["poison"], true);
    assert_eq!(batch[0]["offset"], 18);
    assert_eq!(lag(&a, &m)[0]["lag"], 0);
}

#[test]
fn kill_9_mid_stream_loses_nothing_reorders_nothing_and_counts_once() {
    const PER: u64 = 250;
    let prefix = unique("kill");
    let mut a = agent("stream-kill9");
    let m = map(
        &a,
        &[
            "--stream-mqtt",
            &format!("{prefix}/+"),
            "--partition-key",
            "topic:3",
            "--batch-size",
            "10",
        ],
    );
    let p = Publisher::connect(&format!("{}-pub", prefix.replace('/', "-")));
    wait_subscribed(&a, &prefix, &p);
    let parts: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
    for seq in 1..=PER {
        for part in &parts {
            p.publish(&format!("{prefix}/{part}"), record(seq, part));
        }
    }
    let s = store(&a);
    let at_kill = a.poll("~200 records done", WAIT, || {
        let n = kv(&s, "records");
        (n >= 200).then_some(n)
    });
    a.kill9();
    drop(s);
    p.wait_acks(4 * PER as usize + 1);
    assert!(at_kill < 4 * PER, "killed too late: {at_kill} done");
    a.restart();
    wait_last(&a, &parts, PER);
    let s = store(&a);
    a.poll("every record counted", WAIT, || {
        (kv(&s, "records") >= 4 * PER).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (kv(&s, "records"), kv(&s, "gaps")),
        (4 * PER, 0),
        "records counted and gaps after kill -9 at {at_kill}; stderr:\n{}",
        a.stderr_text()
    );
    for r in lag(&a, &m) {
        assert_eq!(
            (r["appended"].as_u64(), r["lag"].as_u64()),
            (Some(PER), Some(0)),
            "{r}"
        );
    }
}

#[test]
fn file_sources_read_once_and_followed_across_restarts() {
    let dir = TempDir::new("stream-files");
    let mut a = agent("stream-files");
    // CSV read once: header, quoted fields, two partitions by a column.
    let csv = dir.path().join("readings.csv");
    let mut text = String::from("dev,n,note\n");
    for seq in 1..=30u64 {
        text.push_str(&format!("c{},{},\"n, {seq}\"\n", seq % 2, seq.div_ceil(2)));
    }
    std::fs::write(&csv, text).unwrap();
    let once = map(
        &a,
        &[
            "--stream-file",
            csv.to_str().unwrap(),
            "--partition-key",
            "json:/dev",
            "--batch-size",
            "7",
        ],
    );
    let get = a.cli(&["mapping", "get", &once]).ok();
    assert!(
        get.contains("stream file") && get.contains("(csv,"),
        "{get}"
    );
    wait_last(&a, &["c0".into(), "c1".into()], 15);

    // JSON lines followed: lines appended later, one of them written in two parts.
    let jsonl = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&jsonl).unwrap();
    for seq in 1..=10 {
        writeln!(f, "{}", record(seq, "j")).unwrap();
    }
    map(
        &a,
        &[
            "--stream-file",
            jsonl.to_str().unwrap(),
            "--follow",
            "--partition-key",
            "json:/dev",
        ],
    );
    wait_last(&a, &["j".into()], 10);
    write!(f, r#"{{"dev":"j","#).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    writeln!(f, "\"seq\":11}}").unwrap();
    for seq in 12..=20 {
        writeln!(f, "{}", record(seq, "j")).unwrap();
    }
    wait_last(&a, &["j".into()], 20);

    // kill -9, then more lines while the agent is down, and to the CSV read once.
    a.kill9();
    for seq in 21..=30 {
        writeln!(f, "{}", record(seq, "j")).unwrap();
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&csv)
        .unwrap()
        .write_all(b"c0,16,late\n")
        .unwrap();
    a.restart();
    wait_last(&a, &["j".into()], 30);
    std::thread::sleep(Duration::from_millis(1500));
    let s = store(&a);
    assert_eq!(kv(&s, "gaps"), 0, "no line re-read or skipped");
    assert_eq!(kv(&s, "last/c0"), 15, "a file read once is not read again");
    assert_eq!(kv(&s, "records"), 30 + 30);
}

#[test]
fn pause_resume_with_lag_in_stats() {
    let prefix = unique("pause");
    let a = agent("stream-pause");
    let m = map(
        &a,
        &[
            "--stream-mqtt",
            &format!("{prefix}/+"),
            "--partition-key",
            "topic:3",
        ],
    );
    let p = Publisher::connect(&format!("{}-pub", prefix.replace('/', "-")));
    wait_subscribed(&a, &prefix, &p);
    a.cli(&["mapping", "pause", &m]).ok();
    std::thread::sleep(Duration::from_millis(500));
    for seq in 1..=10 {
        p.publish(&format!("{prefix}/x"), record(seq, "x"));
        p.publish(&format!("{prefix}/y"), record(seq, "y"));
    }
    // Appended (and acknowledged) while paused: lag in stats, nothing consumed.
    p.wait_acks(21);
    let rows = a.poll("lag of 10 in both partitions", WAIT, || {
        let rows = lag(&a, &m);
        (rows.len() == 2 && rows.iter().all(|r| r["lag"] == 10)).then_some(rows)
    });
    std::thread::sleep(Duration::from_millis(300));
    for r in lag(&a, &m) {
        assert!(r["oldest_age_ms"].as_u64().unwrap() >= 300, "{r}");
    }
    assert_eq!(rows[0]["checkpoint"], 0);
    let s = store(&a);
    assert_eq!(kv(&s, "records"), 0, "nothing consumed while paused");
    let text = a.cli(&["stats"]).ok();
    assert!(text.contains("LAG") && text.contains("PARTITION"), "{text}");

    a.cli(&["mapping", "resume", &m]).ok();
    wait_last(&a, &["x".into(), "y".into()], 10);
    assert_eq!(kv(&s, "gaps"), 0);
    let rows = a.poll("lag 0", WAIT, || {
        let rows = lag(&a, &m);
        rows.iter().all(|r| r["lag"] == 0).then_some(rows)
    });
    assert!(rows.iter().all(|r| r["oldest_age_ms"].is_null()));
}

#[test]
fn bad_stream_mappings_are_refused_clearly() {
    let a = agent("stream-bad");
    for (args, needle) in [
        (
            vec!["--stream-mqtt", "a/+", "--partition-key", "topic:5"],
            "has only 2 levels",
        ),
        (
            vec!["--stream-mqtt", "a/+", "--partition-key", "device"],
            "bad partition key",
        ),
        (
            vec!["--stream-mqtt", "a", "--batch-size", "0"],
            "batch size 0",
        ),
        (
            vec!["--stream-file", "/tmp/x.txt"],
            "give --format csv or --format jsonl",
        ),
        (
            vec!["--stream-file", "/tmp/x.csv", "--partition-key", "topic"],
            "is for MQTT streams",
        ),
        (
            vec!["--mqtt", "a", "--batch-size", "5"],
            "apply to stream mappings",
        ),
        (
            vec!["--stream-mqtt", "a", "--qos", "0"],
            "do not apply to streams",
        ),
    ] {
        let out = a.cli(&[&["mapping", "create", "--function", "audit"], &args[..]].concat());
        assert_ne!(out.code, Some(0), "{args:?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}
