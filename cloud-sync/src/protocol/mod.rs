//! The sync protocol between the cloud and its agents: wire types and their verification.
//!
//! Everything here builds without the `server` feature, so the agent depends on it with
//! `default-features = false`. docs/cloud-api.md is the language-neutral description.
//!
//! - [`signed`]: the signed envelope (`payload_base64`, `key_id`, `signature_base64`) and the
//!   exact bytes a signature covers.
//! - [`keycert`]: a signing key's certificate, signed by the root key.
//! - [`manifest`]: a published version's manifest (function, version, module sha256/size, spec).
//! - [`desired`]: a device's desired-state document.
//! - [`enroll`]: enrollment request and response.
//! - [`flow`], [`flow_trigger`]: flow definitions and their triggers and waits: parsing (TOML,
//!   JSON) and validation, the agent's and the cloud registry's one copy.
//! - [`invoke`]: remote invoke: the signed request the cloud relays to a device over MQTT, the
//!   device's reply, and [`verify_invoke`].
//! - [`jobs`]: batch job operations relayed over the remote-invoke channel, the job document
//!   and the progress bar both CLIs draw.
//! - [`status`]: the per-deployment status report of a device.
//! - [`names`]: function/alias names and qualifiers (the agent's rules).
//! - [`verify`]: [`verify_desired`] and [`verify_module`], which check everything a device must.
//! - [`check`]: [`ModuleCheck`], the same module check on a download as it arrives (and resumes).
//! - [`telemetry`]: log/invocation/stats upload batches, their answer and their compression.
//! - [`histogram`]: the mergeable histogram that stats buckets carry (agent and cloud merge it).
//! - [`topic`]: MQTT topic names and filters: validation and matching (agent and cloud).
//! - [`mapping`]: mapping sources (all kinds), destinations, names, retries and targets: the
//!   rules the agent's store and the cloud's registry both apply.
//! - [`partition`]: stream partition keys and file formats (part of a stream source).

pub mod check;
pub mod desired;
pub mod enroll;
pub mod flow;
pub mod flow_trigger;
pub mod histogram;
pub mod invoke;
pub mod jobs;
pub mod keycert;
pub mod manifest;
pub mod mapping;
pub mod names;
pub mod partition;
pub mod signed;
pub mod status;
pub mod telemetry;
pub mod topic;
pub mod verify;

pub use check::ModuleCheck;
pub use desired::{
    AliasState, DesiredDocument, DesiredState, FlowState, FunctionState, MappingState,
};
pub use enroll::{EnrollRequest, EnrollResponse};
pub use invoke::{verify_invoke, InvokeMessage, InvokeReply, InvokeRequest, ReplyStatus};
pub use keycert::KeyCert;
pub use manifest::Manifest;
pub use signed::{Context, Signed};
pub use status::{DeploymentReport, ReportState, StatusReport};
pub use verify::{verify_desired, verify_key_cert, verify_module, VerifiedState, VerifyError};

/// Paths of the device endpoints (relative to the cloud URL).
pub mod paths {
    pub const ENROLL: &str = "/v1/enroll";
    pub const DESIRED: &str = "/v1/device/desired";
    pub const STATUS: &str = "/v1/device/status";
    /// Telemetry upload batches (zlib-compressed JSON).
    pub const TELEMETRY: &str = "/v1/device/telemetry";
    /// Followed by `/{sha256}`.
    pub const ARTIFACTS: &str = "/v1/artifacts";
}
