//! A device's desired state: what it should run, signed by a signing key.

use serde::{Deserialize, Serialize};

use super::keycert::KeyCert;
use super::manifest::Manifest;
use super::signed::Signed;

/// The body of `GET /v1/device/desired`: the signing keys (certified by the root) and the
/// signed document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredDocument {
    /// Certificates of the signing keys currently in use (context `key`, signed by `root`).
    pub keys: Vec<Signed<KeyCert>>,
    /// The desired state (context `desired`), signed by one of `keys`.
    pub document: Signed<DesiredState>,
}

/// Payload of the signed desired-state document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The device id this document is for.
    pub device: String,
    /// Grows by at least one with every change; a device never applies a lower one.
    pub sequence: u64,
    pub issued_ms: i64,
    /// A device refuses the document after this time (freeze attack).
    pub expires_ms: i64,
    /// Every function the device should have, by name; functions not listed are removed.
    pub functions: Vec<FunctionState>,
    /// Every cloud mapping the device should have; cloud mappings not listed are removed.
    pub mappings: Vec<MappingState>,
    /// Every cloud flow the device should have; cloud flows not listed are removed. Left out
    /// when empty, so documents without flows read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowState>,
}

/// One function of the desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionState {
    pub name: String,
    pub enabled: bool,
    /// The deployment that brought this function (status reports name it).
    pub deployment: String,
    /// The versions to hold, each with its signed manifest (context `manifest`).
    pub versions: Vec<Signed<Manifest>>,
    pub aliases: Vec<AliasState>,
}

/// An alias: `version`, with `weight` (0..=1) of the events going to `also_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasState {
    pub name: String,
    pub version: u32,
    pub also_version: Option<u32>,
    pub weight: Option<f64>,
}

/// An event-source mapping, in the agent admin API's JSON shape (docs/agent-api.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingState {
    pub id: String,
    pub name: String,
    pub function: String,
    pub qualifier: String,
    /// `{"kind": "mqtt" | "cron" | "every" | "http", ...}` exactly as the agent's API takes it.
    pub source: serde_json::Value,
    pub enabled: bool,
    pub retries: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub deployment: String,
}

/// A flow (docs/flows.md) as the registry holds it, pinned by a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowState {
    pub name: String,
    /// The registry's flag: a disabled flow starts no new runs.
    pub enabled: bool,
    /// The definition in JSON (`protocol::flow::FlowDef`), checked by the cloud with the
    /// agent's rules and again by the device.
    pub definition: serde_json::Value,
    /// The deployment that brought it (status reports name it).
    pub deployment: String,
}
