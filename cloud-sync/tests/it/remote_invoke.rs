//! The cloud's half of remote invoke, with a simulated device on the local Mosquitto: the request
//! it publishes verifies as a device checks it (`verify_invoke`), replies on another device's
//! topic or for another request are ignored, the right one is returned; no reply is a 504 naming
//! the device; a server without `--mqtt` says it needs one. (The agent's half, end to end with a
//! real agent: agent/tests/it/remote_invoke.rs.)

use edgefn_cloud::protocol::invoke::{
    reply_prefix, request_topic, verify_invoke, InvokeMessage, InvokeReply, ReplyStatus,
};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::support::{b64, Backend, Device, Server};

fn server_with_mqtt() -> Server {
    let dir = tempfile::tempdir().unwrap();
    edgefn_cloud::server::init(dir.path(), edgefn_cloud::server::DEFAULT_KEY_VALIDITY).unwrap();
    let db = format!("sqlite://{}", dir.path().join("cloud.db").display());
    Server::start_with(dir, db, None, None, |o| {
        o.mqtt = Some(edgefn_cloud::server::nudge::BrokerOptions {
            url: "mqtt://127.0.0.1:1883".into(),
            ca: None,
            client_cert: None,
        })
    })
}

/// A device on the broker: subscribed to its request topic, answering from a thread.
fn simulated_device(d: &Device, answer: impl Fn(&InvokeMessage, &Client) + Send + 'static) {
    let id: String = d.id.chars().rev().take(12).collect();
    let mut o = MqttOptions::new(format!("sim-{id}"), "127.0.0.1", 1883);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn) = Client::new(o, 16);
    client
        .subscribe(request_topic(&d.id), QoS::AtLeastOnce)
        .unwrap();
    for e in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = e {
            break;
        }
    }
    std::thread::spawn(move || {
        for e in conn.iter() {
            if let Ok(Event::Incoming(Packet::Publish(p))) = e {
                let msg: InvokeMessage = serde_json::from_slice(&p.payload).unwrap();
                answer(&msg, &client);
            }
        }
    });
}

#[test]
fn the_cloud_relays_a_request_and_takes_only_its_reply() {
    let s = server_with_mqtt();
    let d = Device::enroll(&s, "sim-1", &[]);
    let (root, device) = (d.root, d.id.clone());
    simulated_device(&d, move |msg, client| {
        let now = edgefn_cloud::now_ms();
        let req = verify_invoke(msg, &root, &device, now).expect("a request the device accepts");
        assert_eq!(req.function, "f");
        assert_eq!(req.qualifier, "prod");
        assert_eq!(req.payload_base64, b64(b"hi"));
        assert!(req.log_tail && !req.is_async);
        assert_eq!(req.timeout_ms, 5_000);
        assert!(req.expires_ms > now && req.expires_ms <= req.issued_ms + 10_000);
        assert!(req.reply_to.starts_with(&reply_prefix(&device)));
        let reply = |request_id: &str, text: &[u8]| InvokeReply {
            status: ReplyStatus::Done,
            outcome: Some("success".into()),
            response_base64: b64(text),
            invocation_id: Some("01J0000000000000000000000".into()),
            function: "f".into(),
            ..InvokeReply::refused(request_id, &device, "", String::new())
        };
        let send = |topic: String, r: InvokeReply| {
            client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    serde_json::to_vec(&r).unwrap(),
                )
                .unwrap();
        };
        // Another device's topic with the same replica and request id: not taken.
        let elsewhere = req.reply_to.replace(&device, "d-intruder");
        send(elsewhere, reply(&req.request_id, b"intruder"));
        // The right topic, the right request id, but another device in the body: refused.
        let mut lying = reply(&req.request_id, b"liar");
        lying.device = "d-intruder".into();
        send(req.reply_to.clone(), lying);
    });
    let (status, v) = s.op().call(
        "POST",
        &format!("/v1/devices/{}/invoke", d.name),
        Some(
            &json!({"function": "f", "qualifier": "prod", "payload_base64": b64(b"hi"),
                     "log_tail": true, "timeout_ms": 5000}),
        ),
    );
    // The intruder's reply was dropped; the liar's was taken and refused as not valid.
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sent a reply that is not valid"),
        "{v}"
    );

    // A device that answers properly.
    let d2 = Device::enroll(&s, "sim-2", &[]);
    let (root, device) = (d2.root, d2.id.clone());
    simulated_device(&d2, move |msg, client| {
        let req = verify_invoke(msg, &root, &device, edgefn_cloud::now_ms()).unwrap();
        let r = InvokeReply {
            status: ReplyStatus::Done,
            outcome: Some("success".into()),
            response_base64: b64(b"pong"),
            invocation_id: Some("01J0000000000000000000000".into()),
            function: "f".into(),
            ..InvokeReply::refused(&req.request_id, &device, "", String::new())
        };
        client
            .publish(
                req.reply_to,
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
    });
    let v = s.op().ok(
        "POST",
        &format!("/v1/devices/{}/invoke", d2.id),
        Some(&json!({"function": "f"})),
    );
    assert_eq!(v["outcome"], "success");
    assert_eq!(v["response_base64"], b64(b"pong"));
    assert_eq!(v["device"], "sim-2");

    // A device that never answers (nobody on its topic): 504 naming it.
    let d3 = Device::enroll(&s, "sim-3", &[]);
    let (status, v) = s.op().call(
        "POST",
        "/v1/devices/sim-3/invoke",
        Some(&json!({"function": "f", "timeout_ms": 300})),
    );
    assert_eq!(status, 504, "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(&format!(
            "device sim-3 ({}) did not answer within 300ms",
            d3.id
        )),
        "{m}"
    );
    assert!(m.contains("never seen") || m.contains("last seen"), "{m}");

    // Bad input.
    for (body, want) in [
        (json!({"function": "-f"}), 422),
        (json!({"function": "f", "qualifier": "0"}), 422),
        (json!({"function": "f", "timeout_ms": 0}), 422),
        (json!({"function": "f", "timeout_ms": 300_001}), 422),
        (json!({"function": "f", "payload_base64": "%%"}), 400),
        (json!({"function": "f", "extra": 1}), 400),
    ] {
        let (status, v) = s.op().call("POST", "/v1/devices/sim-3/invoke", Some(&body));
        assert_eq!(status, want, "{body}: {v}");
    }
    let (status, _) = s.op().call(
        "POST",
        "/v1/devices/nobody/invoke",
        Some(&json!({"function": "f"})),
    );
    assert_eq!(status, 404);
    let (status, _) = s.with_token("wrong").call(
        "POST",
        "/v1/devices/sim-3/invoke",
        Some(&json!({"function": "f"})),
    );
    assert_eq!(status, 401);
}

#[test]
fn without_a_broker_remote_invoke_says_what_it_needs() {
    let s = Server::start(Backend::Sqlite);
    Device::enroll(&s, "plain", &[]);
    let (status, v) = s.op().call(
        "POST",
        "/v1/devices/plain/invoke",
        Some(&json!({"function": "f"})),
    );
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("edgefn-cloud serve --mqtt URL"),
        "{v}"
    );
}
