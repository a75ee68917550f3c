//! Nudges (docs/cloud-api.md, "Nudges"): with `[cloud] mqtt = "mqtt://HOST:PORT"` the agent
//! subscribes (QoS 1) to `edgefn/devices/{device_id}/desired` on the cloud-side broker and
//! pokes the sync actor for every `{"sequence": N}` there. A nudge carries nothing to trust:
//! the actor fetches and verifies the document as always. Plain MQTT 3.1.1 (the cloud nudges
//! over plain MQTT for now); reconnects on its own.

use std::sync::mpsc::Sender;
use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::SyncMessage;

/// The nudge topic of a device.
pub fn topic(device_id: &str) -> String {
    format!("edgefn/devices/{device_id}/desired")
}

/// Starts the subscription on a thread of its own.
pub fn start(url: &str, device_id: &str, inbox: Sender<SyncMessage>) -> Result<(), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("cloud.mqtt {url:?}: expected mqtt://HOST[:PORT]"))?;
    let (host, port) = match rest.trim_end_matches('/').rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse::<u16>()
                .map_err(|_| format!("cloud.mqtt {url:?}: bad port"))?,
        ),
        None => (rest.trim_end_matches('/').to_owned(), 1883),
    };
    let mut options = MqttOptions::new(format!("edgefn-nudge-{device_id}"), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let topic = topic(device_id);
    std::thread::Builder::new()
        .name("edgefn-nudge".into())
        .spawn(move || {
            let (client, mut connection) = Client::new(options, 16);
            let mut down = false;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        down = false;
                        if let Err(e) = client.try_subscribe(&topic, QoS::AtLeastOnce) {
                            eprintln!("edgefn-agent: sync: cannot subscribe to {topic}: {e}");
                        } else {
                            eprintln!("edgefn-agent: sync: taking nudges on {topic}");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let seq = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| v["sequence"].as_u64())
                            .unwrap_or(0);
                        if inbox.send(SyncMessage::Nudge(seq)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !down {
                            eprintln!("edgefn-agent: sync: nudge broker: {e}; reconnecting");
                            down = true;
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the nudge thread: {e}"))?;
    Ok(())
}
