//! MQTT nudges through the local Mosquitto (127.0.0.1:1883): a change of a device's desired
//! state publishes its new sequence to `edgefn/devices/{id}/desired`.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::support::Server;

#[test]
fn a_deployment_nudges_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    edgefn_cloud::server::init(dir.path(), edgefn_cloud::server::DEFAULT_KEY_VALIDITY).unwrap();
    let db = format!("sqlite://{}", dir.path().join("cloud.db").display());
    let s = Server::start_with(dir, db, None, None, |o| {
        o.mqtt = Some("mqtt://127.0.0.1:1883".into())
    });
    let v = s.publish("f", 1);
    let mut devs = s.fleet("g", 1);
    let d = &mut devs[0];
    let before = d.fetch().sequence;
    let id = edgefn_cloud::keys::random_token("nudge-test-")
        .chars()
        .take(23)
        .collect::<String>();
    let (client, mut conn) = Client::new(MqttOptions::new(id, "127.0.0.1", 1883), 16);
    client
        .subscribe(edgefn_cloud::server::nudge::topic(&d.id), QoS::AtLeastOnce)
        .unwrap();
    // wait for the SUBACK before changing anything
    for e in conn.iter() {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = e {
            break;
        }
    }
    s.op().ok(
        "POST",
        "/v1/deployments",
        Some(&json!({"group": "g", "functions": [format!("f:{v}")]})),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let payload = loop {
        assert!(Instant::now() < deadline, "no nudge");
        match conn.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => break p.payload,
            _ => continue,
        }
    };
    let n: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let seq = n["sequence"].as_u64().unwrap();
    assert!(seq > before, "{n}");
    assert_eq!(
        d.fetch().sequence,
        seq,
        "the nudge names the document the device then gets"
    );
}
