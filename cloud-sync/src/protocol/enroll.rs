//! Enrollment: a one-time token becomes a device id and a credential.

use serde::{Deserialize, Serialize};

use super::keycert::KeyCert;
use super::signed::Signed;

/// Body of `POST /v1/enroll`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time enrollment token (`edgefn device enroll`).
    pub token: String,
}

/// Response of `POST /v1/enroll`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollResponse {
    pub device_id: String,
    pub device_name: String,
    /// The device's bearer credential for `/v1/device/*` and `/v1/artifacts/*`. Shown once.
    pub credential: String,
    /// The root public key (base64, 32 bytes): the device's trust anchor.
    pub root_public_key: String,
    /// The current signing keys' certificates.
    pub keys: Vec<Signed<KeyCert>>,
    pub groups: Vec<String>,
}
