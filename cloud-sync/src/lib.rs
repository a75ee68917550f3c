//! edgefn-cloud: the cloud sync service, its protocol and the operator CLI.
//!
//! Always built (the agent's dependency, `default-features = false`):
//! - [`protocol`]: the sync protocol's wire types and [`protocol::verify_desired`].
//! - [`keys`]: root and signing keys, key certificates, tokens.
//!
//! With the `server` feature (default):
//! - [`store`]: the cloud's durable state over SQLite or PostgreSQL (one schema, one SQL).
//! - [`registry`]: function specs and mapping rules as the agent checks them.
//! - [`service`]: the domain: registry, artifacts, devices, deployments, rollouts, key rotation.
//! - [`api`]: the HTTP API (docs/cloud-api.md) and its TLS listener.
//! - [`server`]: `edgefn-cloud init` / `serve` (directory layout, start-up).
//! - [`cli`]: the `edgefn` operator CLI.

pub mod keys;
pub mod protocol;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
