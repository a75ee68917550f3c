//! The agent's rules for what the registry accepts, so that the cloud refuses what a device
//! would refuse (with the same messages): function specs and event-source mappings.
//!
//! These are copies of agent/src/spec.rs and agent/src/store/mappings.rs's validation (the agent
//! will depend on this crate, so this crate cannot depend on it; the copies are small). Moving
//! them into `protocol` for both to share is a follow-up once the agent side syncs.
//!
//! - [`spec`]: function spec TOML (keys and ranges).
//! - [`mapping`]: mapping sources and destinations.
//! - [`topic`]: MQTT topic names and filters (`protocol::topic`, which the agent uses too).

pub mod mapping;
pub mod spec;
pub use crate::protocol::topic;
