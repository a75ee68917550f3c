//! MQTT nudges (optional, `serve --mqtt URL`): when something changes, the server brings every
//! enrolled device's desired-state document up to date and publishes, for each device whose
//! sequence moved, `{"sequence": N}` (QoS 1, not retained) to `edgefn/devices/{device_id}/desired`
//! on the cloud-side broker. An agent that holds a connection there fetches at once instead of
//! waiting for its next poll; the nudge carries nothing to trust, the fetched document is
//! verified as always. Each replica nudges for every change it sees (its own, and through the
//! store's revision the others'). The connection ([`BrokerLink`]) is shared with remote invoke.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::service::Service;

pub use crate::service::broker::{BrokerLink, BrokerOptions};

/// The topic of a device's nudges.
pub fn topic(device_id: &str) -> String {
    format!("edgefn/devices/{device_id}/desired")
}

/// Starts the task that publishes nudges through `link`.
pub fn start(service: Service, link: Arc<BrokerLink>) {
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
                            if let Err(e) = link.publish(topic(&device), payload.into()).await {
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
}
