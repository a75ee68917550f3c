//! Remote invoke end to end (issue 6): `edgefn invoke NAME --device D` against a real
//! `edgefn-cloud serve --mqtt` and a real agent, both on the local Mosquitto: sync with the
//! response and the log tail, async then visible in the agent's records, a function error, a
//! device that is offline (a clear timeout naming when it was last seen, exit 1), a cloud
//! without a broker; and requests published straight to the broker: a forged key, a replay and
//! an expired request are refused by the agent.
//!
//! Every test has its own cloud, so its own device ids, so its own topics.

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use edgefn_cloud::keys;
use edgefn_cloud::protocol::invoke::{
    reply_prefix, request_topic, InvokeMessage, InvokeReply, InvokeRequest, ReplyStatus,
    MAX_TAIL_BYTES,
};
use edgefn_cloud::protocol::keycert::key_id;
use edgefn_cloud::protocol::{Context, KeyCert, Signed};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::daemon_support::Agent;
use crate::support::example_path;
use crate::sync::{cloud_bin, enrolled_agent_with, poll, Cloud};

const MQTT: &str = "mqtt://127.0.0.1:1883";
const WAIT: Duration = Duration::from_secs(60);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A cloud with `--mqtt`, an enrolled agent taking requests, and `misbehave` on the agent.
/// Returns them and the device's (name, id).
pub(crate) fn online(tag: &str) -> (Cloud, Agent, String, String) {
    let cloud = Cloud::start_with(&["--mqtt", MQTT]);
    let name = format!("pi-{tag}");
    let token = cloud.device(&name, tag);
    let agent = enrolled_agent_with(
        &format!("remote-{tag}"),
        &cloud.url,
        &token,
        &format!(
            "[cloud]\npoll_wait = \"5s\"\nretry_max = \"1s\"\nmqtt = \"{MQTT}\"\n\
             [upload]\ninterval = \"1s\"\nretry_max = \"1s\"\n"
        ),
    );
    poll(
        "the remote invoke subscription",
        || agent.stderr_text(),
        || {
            agent
                .stderr_text()
                .contains("taking remote invoke requests on edgefn/devices/")
                .then_some(())
        },
    );
    agent.create("misbehave", &example_path("misbehave"), None);
    let id = cloud.ok("GET", &format!("/v1/devices/{name}"), None)["id"]
        .as_str()
        .unwrap()
        .to_string();
    (cloud, agent, name, id)
}

/// Runs the operator CLI against `cloud`.
pub(crate) fn edgefn(cloud: &Cloud, args: &[&str]) -> Output {
    Command::new(cloud_bin("edgefn"))
        .args(args)
        .env("EDGEFN_CLOUD", &cloud.url)
        .env("EDGEFN_TOKEN", &cloud.token)
        .env_remove("EDGEFN_CA")
        .output()
        .unwrap()
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The agent's log records of one invocation.
fn invocation_logs(agent: &Agent, id: &str) -> Vec<Value> {
    agent
        .http()
        .get(&format!("/v1/logs?invocation={id}"))
        .json()["records"]
        .as_array()
        .unwrap()
        .clone()
}

/// How many invocations of `function` the agent recorded.
fn invocations(agent: &Agent, function: &str) -> u64 {
    agent
        .http()
        .get(&format!("/v1/stats?function={function}"))
        .json()["totals"]["invocations"]
        .as_u64()
        .unwrap()
}

#[test]
fn sync_async_log_tail_and_function_errors() {
    let (cloud, agent, name, id) = online("sync");

    // Sync, with the log tail: the response on stdout, the lines on stderr.
    let o = edgefn(
        &cloud,
        &[
            "invoke",
            "misbehave",
            "--device",
            &name,
            "--data",
            "log 3",
            "--log-tail",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "logged 3");
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    for (i, line) in lines.iter().enumerate() {
        // time level invocation text, as `edgefn-agent invoke --log-tail` prints them
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], "info", "{line}");
        assert_eq!(fields[2].len(), 26, "an invocation id: {line}");
        assert!(
            line.ends_with(&format!("misbehave: log line {} of 3", i + 1)),
            "{line}"
        );
    }

    // --json by device id: the cloud's answer, and the invocation is the agent's.
    let o = edgefn(
        &cloud,
        &[
            "--json",
            "invoke",
            "misbehave:latest",
            "--device",
            &id,
            "--data",
            "ok",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["device"], name.as_str());
    assert_eq!(v["device_id"], id.as_str());
    assert_eq!(v["response_base64"], b64(b"ok"));
    assert_eq!(v["logs"], json!([]));
    assert_eq!(v["invocation_id"].as_str().unwrap().len(), 26, "{v}");

    // The tail keeps the newest 4 KiB of lines.
    let v = cloud.ok(
        "POST",
        &format!("/v1/devices/{name}/invoke"),
        Some(json!({"function": "misbehave", "payload_base64": b64(b"log 400"), "log_tail": true})),
    );
    assert_eq!(v["outcome"], "success", "{v}");
    assert_eq!(v["logs_truncated"], true);
    let logs = v["logs"].as_array().unwrap();
    let bytes: usize = logs.iter().map(|l| l["text"].as_str().unwrap().len()).sum();
    assert!(
        bytes <= MAX_TAIL_BYTES && bytes > MAX_TAIL_BYTES - 100,
        "{bytes}"
    );
    assert_eq!(
        logs.last().unwrap()["text"],
        "misbehave: log line 400 of 400"
    );

    // A function error: its message on stderr, exit 1.
    let o = edgefn(
        &cloud,
        &["invoke", "misbehave", "--device", &name, "--data", "error"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stdout).is_empty());
    assert!(
        text(&o.stderr).contains("error: error: misbehave: requested error"),
        "{}",
        text(&o.stderr)
    );
    let o = edgefn(
        &cloud,
        &["invoke", "misbehave", "--device", &name, "--data", "trap"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("error: trap"),
        "{}",
        text(&o.stderr)
    );

    // Refused on the device: an unknown function (404), a disabled one (409).
    let o = edgefn(&cloud, &["invoke", "nope", "--device", &name]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("device {name} ({id}) refused")),
        "{err}"
    );
    assert!(err.contains("HTTP 404"), "{err}");

    // Async: the invocation id at once; the outcome then in the agent's records.
    let o = edgefn(
        &cloud,
        &[
            "invoke",
            "misbehave",
            "--device",
            &name,
            "--data",
            "log 1",
            "--async",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let inv = text(&o.stdout).trim().to_string();
    assert_eq!(inv.len(), 26, "a ULID: {inv}");
    let lines = poll(
        "the async invocation's records",
        || agent.stderr_text(),
        || {
            let l = invocation_logs(&agent, &inv);
            l.iter()
                .any(|r| {
                    r["text"]
                        .as_str()
                        .unwrap()
                        .starts_with("async invocation finished: success")
                })
                .then_some(l)
        },
    );
    assert!(
        lines
            .iter()
            .any(|r| r["text"] == "misbehave: log line 1 of 1"),
        "{lines:?}"
    );

    // Unknown device, bad target: clear errors.
    let o = edgefn(
        &cloud,
        &["invoke", "misbehave", "--device", "no-such-device"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no device no-such-device"),
        "{}",
        text(&o.stderr)
    );
    let o = edgefn(&cloud, &["invoke", "mis:behave:x", "--device", &name]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn an_offline_device_times_out_clearly() {
    let (cloud, mut agent, name, _) = online("offline");
    let o = edgefn(
        &cloud,
        &["invoke", "misbehave", "--device", &name, "--data", "ok"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    agent.kill9();
    let o = edgefn(
        &cloud,
        &[
            "invoke",
            "misbehave",
            "--device",
            &name,
            "--data",
            "ok",
            "--timeout",
            "2s",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("device {name} (")) && err.contains("did not answer within 2s"),
        "{err}"
    );
    assert!(err.contains("last seen "), "{err}");
    assert!(err.contains("HTTP 504 timeout"), "{err}");

    // A cloud without a broker says what it needs.
    let plain = Cloud::start();
    plain.device("pi-plain", "plain");
    let (s, v) = plain.call(
        "POST",
        "/v1/devices/pi-plain/invoke",
        Some(json!({"function": "misbehave"})),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("edgefn-cloud serve --mqtt URL"),
        "{v}"
    );
}

// ---------------------------------------------------------------- crafted requests

/// A test client on the cloud-side broker: publishes requests and collects the replies of
/// one device.
struct Wire {
    client: Client,
    replies: mpsc::Receiver<InvokeReply>,
}

impl Wire {
    fn connect(device: &str) -> Wire {
        let mut o = MqttOptions::new(
            format!("remote-test-{}", &device[device.len().saturating_sub(12)..]),
            "127.0.0.1",
            1883,
        );
        o.set_max_packet_size(4 << 20, 4 << 20);
        let (client, mut connection) = Client::new(o, 64);
        let (tx, replies) = mpsc::channel();
        let (subscribed_tx, subscribed) = mpsc::channel();
        let filter = format!("{}test/#", reply_prefix(device));
        let sub = client.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        sub.try_subscribe(&filter, QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(r) = serde_json::from_slice(&p.payload) {
                            if tx.send(r).is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        subscribed.recv_timeout(WAIT).expect("subscribed");
        Wire { client, replies }
    }

    fn send(&self, device: &str, msg: &InvokeMessage) {
        self.client
            .publish(
                request_topic(device),
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(msg).unwrap(),
            )
            .unwrap();
    }

    fn reply(&self) -> InvokeReply {
        self.replies.recv_timeout(WAIT).expect("a reply")
    }
}

/// A request for `device` (data `ok`), issued now, expiring in 10 s.
fn request(device: &str, request_id: &str) -> InvokeRequest {
    let now = edgefn_cloud::now_ms();
    InvokeRequest {
        device: device.into(),
        request_id: request_id.into(),
        function: "misbehave".into(),
        qualifier: "latest".into(),
        payload_base64: b64(b"ok"),
        is_async: false,
        log_tail: false,
        timeout_ms: 5_000,
        issued_ms: now,
        expires_ms: now + 10_000,
        reply_to: format!("{}test/{request_id}", reply_prefix(device)),
        job: None,
    }
}

/// Signs with the cloud's own signing key (from its directory).
fn signed_by_cloud(cloud: &Cloud, r: &InvokeRequest) -> InvokeMessage {
    let key = keys::read_secret_file(&cloud.dir().join("signing.key")).unwrap();
    let cert: Signed<KeyCert> =
        serde_json::from_str(&std::fs::read_to_string(cloud.dir().join("signing.cert")).unwrap())
            .unwrap();
    InvokeMessage {
        keys: vec![cert],
        request: Signed::sign(r, Context::Invoke, &key_id(&key.verifying_key()), &key),
    }
}

/// Waits for the agent's log record containing `needle`.
fn refusal_logged(agent: &Agent, needle: &str) {
    poll(
        &format!("a log record with {needle:?}"),
        || agent.stderr_text(),
        || {
            let v = agent.http().get("/v1/logs?level=warn&limit=1000").json();
            v["records"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["text"].as_str().unwrap().contains(needle))
                .then_some(())
        },
    );
}

#[test]
fn forged_replayed_and_expired_requests_are_refused() {
    let (cloud, agent, _, id) = online("crafted");
    let wire = Wire::connect(&id);

    // A request signed like the cloud's runs and is answered.
    let good = signed_by_cloud(&cloud, &request(&id, "r-good"));
    wire.send(&id, &good);
    let r = wire.reply();
    assert_eq!(r.request_id, "r-good");
    assert_eq!(r.device, id);
    assert_eq!(r.status, ReplyStatus::Done);
    assert_eq!(r.outcome.as_deref(), Some("success"));
    assert_eq!(r.response_base64, b64(b"ok"));
    assert_eq!(invocations(&agent, "misbehave"), 1);

    // The same message again: a replay, refused (logged, not answered, not run).
    wire.send(&id, &good);
    refusal_logged(
        &agent,
        "remote invoke r-good refused: request already received (replay)",
    );

    // Signed by a key the root never certified (a certificate signed by another root).
    let other_root = keys::generate();
    let (k, c) = keys::issue_signing_key(&other_root, edgefn_cloud::now_ms() - 1000, 3_600_000);
    let forged = InvokeMessage {
        keys: vec![c],
        request: Signed::sign(
            &request(&id, "r-forged"),
            Context::Invoke,
            &key_id(&k.verifying_key()),
            &k,
        ),
    };
    wire.send(&id, &forged);
    refusal_logged(
        &agent,
        "remote invoke refused: bad signature on key certificate",
    );
    // And with no certificate at all: an unknown key.
    let unknown = InvokeMessage {
        keys: vec![],
        request: forged.request.clone(),
    };
    wire.send(&id, &unknown);
    refusal_logged(&agent, "is signed by unknown key");

    // Expired: authentic and for this device, so it is answered with the reason.
    let mut old = request(&id, "r-expired");
    old.expires_ms = edgefn_cloud::now_ms() - 1;
    wire.send(&id, &signed_by_cloud(&cloud, &old));
    let r = wire.reply();
    assert_eq!(r.request_id, "r-expired");
    assert_eq!(r.status, ReplyStatus::Refused);
    assert_eq!(r.code.as_deref(), Some("expired"));
    assert!(r.error.as_deref().unwrap().contains("expired at"), "{r:?}");
    refusal_logged(
        &agent,
        "remote invoke r-expired refused: invoke request r-expired expired at",
    );

    // For another device (signed by the cloud, published on this device's topic).
    let mut elsewhere = request(&id, "r-other");
    elsewhere.device = "d-someone-else".into();
    wire.send(&id, &signed_by_cloud(&cloud, &elsewhere));
    refusal_logged(&agent, "is for device d-someone-else");

    // None of them ran; a new request still does (and its reply is the next one).
    wire.send(&id, &signed_by_cloud(&cloud, &request(&id, "r-after")));
    let r = wire.reply();
    assert_eq!(
        r.request_id, "r-after",
        "no reply to the refused ones but the expired"
    );
    assert_eq!(r.status, ReplyStatus::Done);
    assert_eq!(invocations(&agent, "misbehave"), 2);
}
