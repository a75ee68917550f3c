//! Nudges (docs/cloud-api.md, "Nudges"): with `[cloud] mqtt = "mqtt://HOST:PORT"` (or
//! `mqtts://`, TLS with `[cloud] mqtt_ca_file`, `mqtt_cert_file`/`mqtt_key_file`) the agent
//! subscribes (QoS 1) to `edgefn/devices/{device_id}/desired` on the cloud-side broker and pokes
//! the sync actor for every `{"sequence": N}` there. A nudge carries nothing to trust: the actor
//! fetches and verifies the document as always. The same connection takes remote invoke
//! requests on `edgefn/devices/{device_id}/invoke` ([`super::remote`]) and publishes their
//! replies. MQTT 3.1.1, over the same connection options (and TLS code: rustls, ring) as the
//! trigger link; a clean session (requests sent while the agent is away are not kept for it);
//! reconnects on its own.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use edgefn_cloud::protocol::invoke::{request_topic, MAX_PACKET_BYTES};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::remote::RemoteInvoker;
use super::SyncMessage;
use crate::triggers::mqtt::MqttConfig;

/// The nudge topic of a device.
pub fn topic(device_id: &str) -> String {
    format!("edgefn/devices/{device_id}/desired")
}

/// Starts the subscriptions on a thread of its own: nudges to `inbox`, remote invoke requests
/// to `invoker`. Fails (naming the file) when the TLS files cannot be used.
pub fn start(
    broker: &MqttConfig,
    device_id: &str,
    inbox: Sender<SyncMessage>,
    invoker: Arc<RemoteInvoker>,
) -> Result<(), String> {
    let mut options = MqttOptions::new(
        format!("edgefn-nudge-{device_id}"),
        broker.host.clone(),
        broker.port,
    );
    options.set_keep_alive(broker.keep_alive);
    // Requests carry payloads and replies responses of up to 1 MiB (base64, in JSON).
    options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    options.set_transport(
        broker
            .transport()
            .map_err(|e| format!("cloud.mqtt {}:{}: {e}", broker.host, broker.port))?,
    );
    if let Some((user, password)) = &broker.credentials {
        options.set_credentials(user.clone(), password.clone());
    }
    let topic = topic(device_id);
    let invoke_topic = request_topic(device_id);
    let scheme = if broker.tls { "mqtts" } else { "mqtt" };
    let at = format!("{scheme}://{}:{}", broker.host, broker.port);
    std::thread::Builder::new()
        .name("edgefn-nudge".into())
        .spawn(move || {
            let (client, mut connection) = Client::new(options, 64);
            let mut down = false;
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        down = false;
                        if let Err(e) = client.try_subscribe(&topic, QoS::AtLeastOnce) {
                            eprintln!("edgefn-agent: sync: cannot subscribe to {topic}: {e}");
                        } else {
                            eprintln!("edgefn-agent: sync: taking nudges on {topic} at {at}");
                        }
                        if let Err(e) = client.try_subscribe(&invoke_topic, QoS::AtLeastOnce) {
                            eprintln!("edgefn-agent: sync: cannot subscribe to {invoke_topic}: {e}");
                        } else {
                            eprintln!(
                                "edgefn-agent: sync: taking remote invoke requests on {invoke_topic} at {at}"
                            );
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic == invoke_topic => {
                        invoker.on_message(&p.payload, &client);
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
                            eprintln!("edgefn-agent: sync: nudge broker {at}: {e}; reconnecting");
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
