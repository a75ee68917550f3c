//! MQTT nudges (optional, `serve --mqtt URL`): when something changes, the server brings every
//! enrolled device's desired-state document up to date and publishes, for each device whose
//! sequence moved, `{"sequence": N}` (QoS 1, not retained) to `edgefn/devices/{device_id}/desired`
//! on the cloud-side broker. An agent that holds a connection there fetches at once instead of
//! waiting for its next poll; the nudge carries nothing to trust, the fetched document is
//! verified as always. Each replica nudges for the changes it makes or advances.

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, QoS};

use super::ServerError;
use crate::service::Service;

/// The topic of a device's nudges.
pub fn topic(device_id: &str) -> String {
    format!("edgefn/devices/{device_id}/desired")
}

/// Parses `mqtt://HOST[:PORT]` (plain MQTT; TLS to the broker is not supported yet).
fn parse(url: &str) -> Result<(String, u16), ServerError> {
    let rest = url.strip_prefix("mqtt://").ok_or_else(|| {
        ServerError::Setup(format!("--mqtt {url:?}: expected mqtt://HOST[:PORT]"))
    })?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_owned(),
            port.parse()
                .map_err(|_| ServerError::Setup(format!("--mqtt {url:?}: bad port")))?,
        )),
        None => Ok((rest.to_owned(), 1883)),
    }
}

/// Starts the nudger: an MQTT client (reconnecting) and the task that publishes nudges.
pub fn start(service: Service, url: &str) -> Result<(), ServerError> {
    let (host, port) = parse(url)?;
    let mut options = MqttOptions::new(
        crate::keys::random_token("edgefn-cloud-")
            .chars()
            .take(23)
            .collect::<String>(),
        host,
        port,
    );
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    tokio::spawn(async move {
        loop {
            if let Err(e) = eventloop.poll().await {
                eprintln!("mqtt nudges: {e}; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut changes = service.subscribe();
        let mut sent: HashMap<String, u64> = HashMap::new();
        let mut first = true;
        loop {
            changes.borrow_and_update();
            match service.refresh_documents().await {
                Ok(current) => {
                    for (device, sequence) in current {
                        if sent.get(&device) == Some(&sequence) {
                            continue;
                        }
                        if !first {
                            let payload = serde_json::json!({"sequence": sequence}).to_string();
                            if let Err(e) = client
                                .publish(topic(&device), QoS::AtLeastOnce, false, payload)
                                .await
                            {
                                eprintln!("mqtt nudge to {device}: {e}");
                            }
                        }
                        sent.insert(device, sequence);
                    }
                    first = false;
                }
                Err(e) => eprintln!("mqtt nudges: {e}"),
            }
            if changes.changed().await.is_err() {
                return;
            }
            // Let a burst of changes settle into one round of nudges.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    Ok(())
}
