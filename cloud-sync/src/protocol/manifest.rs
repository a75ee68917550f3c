//! The manifest of a published version: what a device checks a module against.

use serde::{Deserialize, Serialize};

/// Payload of a `Signed<Manifest>` (context `manifest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub function: String,
    pub version: u32,
    /// Lowercase hex sha256 of the module bytes.
    pub sha256: String,
    /// Module size in bytes.
    pub size: u64,
    /// The function spec (TOML text, docs/function-spec.md), as published.
    pub spec: String,
    pub description: String,
    pub published_ms: i64,
}
