//! Cloud sync: the device side of docs/cloud-api.md.
//!
//! - [`enrollment`]: `edgefn-agent enroll` stores the device id, credential, root key and the
//!   cloud URL in `<data_dir>/cloud.json` (mode 0600).
//! - [`client`]: the cloud's device endpoints over HTTP(S) (ureq + rustls/ring).
//! - [`stage`]: module downloads with retries, resume (`Range`) and size/sha256 checks.
//! - [`actor`]: the sync actor: one thread with its state and an inbox (nudges), `run(self)`:
//!   long-polls the desired state with its ETag, verifies it (`verify_desired`), stages the
//!   modules, activates it in one store transaction (`Store::cloud_activate`), watches the
//!   health window of new versions and rolls back (`Store::cloud_rollback`), and sends status
//!   reports.
//! - [`upload`]: the upload actor: log records, invocation records and stats buckets to
//!   `POST /v1/device/telemetry` in compressed batches read after the store's upload cursors,
//!   with capped exponential backoff while the cloud is unreachable.
//! - [`nudge`]: the optional MQTT connection to a cloud-side broker: `edgefn/devices/{id}/desired`
//!   (a nudge makes the actor poll at once) and `edgefn/devices/{id}/invoke`.
//! - [`remote`]: remote invoke requests taken there: verified (signature, device, expiry,
//!   replay), run through the daemon's direct invoke path, answered on the request's reply topic.
//!
//! [`start`] wires it into a running daemon (called once from `edgefn-agent run`).
//!
//! Test hook: `EDGEFN_TEST_SYNC_PAUSE=download` stops the actor after half of the first module
//! it downloads was written to its `.part` file; `=activate` stops it inside the activation
//! transaction, after every row was written and before the commit. Either prints
//! `sync: test hook: paused at STEP` on stderr and blocks, so a test can `kill -9` the agent
//! there. Nothing else reads the variable.

pub mod actor;
pub mod client;
pub mod enrollment;
pub mod nudge;
pub mod remote;
pub mod stage;
pub mod upload;

pub use actor::{SyncActor, SyncMessage, SyncSettings};
pub use client::{ClientError, CloudClient};
pub use enrollment::Enrollment;
pub use upload::{UploadActor, UploadSettings};

use std::path::Path;
use std::sync::mpsc;

use crate::daemon::Daemon;

/// The environment variable of the test hook (see the module docs).
pub const TEST_PAUSE_ENV: &str = "EDGEFN_TEST_SYNC_PAUSE";

/// Whether the test hook asks to pause at `step`.
pub(crate) fn test_hook(step: &str) -> bool {
    std::env::var(TEST_PAUSE_ENV).is_ok_and(|v| v == step)
}

/// A running sync actor: its inbox.
pub struct SyncHandle {
    pub inbox: mpsc::Sender<SyncMessage>,
    pub device_id: String,
    pub cloud: String,
}

/// Starts cloud sync for `daemon` if `data_dir` holds an enrollment and `settings.enabled`.
/// Returns `None` (and starts nothing) otherwise. Call on the daemon's tokio runtime (remote
/// invocations run there).
pub fn start(
    daemon: Daemon,
    data_dir: &Path,
    settings: SyncSettings,
    upload: UploadSettings,
) -> Result<Option<SyncHandle>, String> {
    if !settings.enabled {
        return Ok(None);
    }
    let Some(enrollment) = Enrollment::load(data_dir)? else {
        return Ok(None);
    };
    let (tx, rx) = mpsc::channel();
    let device_id = enrollment.device_id.clone();
    let cloud = enrollment.cloud.clone();
    if let Some(broker) = &settings.nudge_mqtt {
        let invoker =
            remote::RemoteInvoker::new(daemon.clone(), &device_id, &enrollment.root_public_key)?;
        nudge::start(broker, &device_id, tx.clone(), std::sync::Arc::new(invoker))?;
    }
    if upload.enabled {
        let client = CloudClient::new(
            &enrollment.cloud,
            enrollment.ca_file.as_deref(),
            Some(enrollment.credential.as_str()),
        )
        .map_err(|e| e.to_string())?;
        daemon
            .store()
            .upload_bind_device(&device_id)
            .map_err(|e| format!("upload state: {e}"))?;
        let actor = UploadActor::new(daemon.clone(), client, upload);
        std::thread::Builder::new()
            .name("edgefn-upload".into())
            .spawn(move || actor.run())
            .map_err(|e| format!("cannot start the upload thread: {e}"))?;
    }
    let actor = SyncActor::new(daemon, data_dir, enrollment, settings, rx)?;
    std::thread::Builder::new()
        .name("edgefn-sync".into())
        .spawn(move || actor.run())
        .map_err(|e| format!("cannot start the sync thread: {e}"))?;
    Ok(Some(SyncHandle {
        inbox: tx,
        device_id,
        cloud,
    }))
}
