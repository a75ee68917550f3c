//! What a device reports about the deployments it applied.

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/device/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// The sequence of the desired state the device runs now (0 before the first).
    pub sequence: u64,
    /// The signing key id of that document (lets the cloud retire old keys).
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub deployments: Vec<DeploymentReport>,
}

/// The state of one deployment on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentReport {
    pub deployment: String,
    pub state: ReportState,
    /// Why, for `failed` (e.g. "celsius version 3: init failed: ...").
    #[serde(default)]
    pub error: Option<String>,
}

/// A deployment's state on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// Activated; the health window is running.
    Applied,
    /// Activated and its health window passed without failures.
    Healthy,
    /// Init failed or the version trapped repeatedly: the device rolled back to its last good
    /// version.
    Failed,
}

impl ReportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Applied => "applied",
            ReportState::Healthy => "healthy",
            ReportState::Failed => "failed",
        }
    }
}
