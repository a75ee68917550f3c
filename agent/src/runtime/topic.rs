//! MQTT topic names and filters: the protocol's rules (`edgefn_cloud::protocol::topic`), shared
//! with the cloud's registry so both sides accept the same topics.

pub use edgefn_cloud::protocol::topic::{check_filter, check_topic, matches};
