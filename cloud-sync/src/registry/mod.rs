//! The agent's rules for what the registry accepts, so that the cloud refuses what a device
//! would refuse (with the same messages): function specs and event-source mappings.
//!
//! The spec rules are a copy of agent/src/spec.rs's validation (the agent depends on this crate,
//! so this crate cannot depend on it); the mapping rules are shared with the agent through
//! [`crate::protocol::mapping`].
//!
//! - [`spec`]: function spec TOML (keys and ranges).
//! - [`mapping`]: mapping sources and destinations (re-exported from `protocol::mapping`).
//! - [`topic`]: MQTT topic names and filters (`protocol::topic`, which the agent uses too).

pub mod mapping;
pub mod spec;
pub use crate::protocol::topic;
