//! The MQTT trigger: one connection to the gateway's broker (MQTT 5 or 3.1.1, TCP or TLS), a
//! persistent session, subscriptions following the MQTT mappings, acknowledgements after commit
//! in arrival order, exactly-once processing through dedup marks, and the durable outbox.

mod acks;
mod config;
mod link;
mod wire;

pub use config::{install_crypto_provider, MqttConfig};
pub use link::Link;
