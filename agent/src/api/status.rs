//! `GET /v1/status` (`edgefn-agent status`): one look at the agent: what it runs, what it is
//! enrolled as, and what is still waiting to leave it (outbox, queued events, telemetry not yet
//! uploaded, records dropped before upload).

use super::{blocking, ApiError, AppState};
use crate::store::{Dropped, StoreCounts, UploadStatus};
use axum::extract::State;
use axum::Json;
use serde::Serialize;

#[derive(Serialize)]
pub struct Status {
    version: &'static str,
    /// Seconds since the admin API started (the agent's start, give or take its set-up).
    uptime_s: u64,
    store: StoreInfo,
    #[serde(flatten)]
    counts: StoreCounts,
    /// The desired-state sequence activated last (`null` before the first).
    cloud_sequence: Option<u64>,
    /// The enrollment in the data directory (`null` when not enrolled); never the credential.
    enrollment: Option<EnrollmentInfo>,
    upload: UploadInfo,
    /// Rows retention deleted since the store was created (age, row caps, the disk budget).
    retention_dropped: Dropped,
}

#[derive(Serialize)]
struct StoreInfo {
    /// The database file (`null` for an in-memory store).
    path: Option<String>,
    schema_version: u32,
    /// Size of the database file and its write-ahead log.
    bytes: u64,
}

#[derive(Serialize)]
struct EnrollmentInfo {
    cloud: String,
    device_name: String,
    groups: Vec<String>,
    enrolled_ms: i64,
}

#[derive(Serialize)]
struct UploadInfo {
    #[serde(flatten)]
    store: UploadStatus,
    /// Batches the cloud acknowledged, and failed attempts, since the agent started.
    batches_uploaded: u64,
    failures: u64,
}

/// The enrollment next to the store (the data directory), if there is a readable one.
fn enrollment(store_path: Option<&std::path::Path>) -> Option<EnrollmentInfo> {
    let e = crate::sync::Enrollment::load(store_path?.parent()?).ok()??;
    Some(EnrollmentInfo {
        cloud: e.cloud,
        device_name: e.device_name,
        groups: e.groups,
        enrolled_ms: e.enrolled_ms,
    })
}

pub async fn status(State(s): State<AppState>) -> Result<Json<Status>, ApiError> {
    let store = s.daemon.store().clone();
    let uptime_s = s.started.elapsed().as_secs();
    let metrics = s.daemon.metrics();
    let (batches_uploaded, failures) =
        (metrics.upload_batches.get(), metrics.upload_failures.get());
    let status = blocking(move || {
        let path = store.path().map(|p| p.to_path_buf());
        let bytes = path.as_ref().map_or(0, |p| {
            let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = p.as_os_str().to_owned();
            wal.push("-wal");
            size(p) + size(std::path::Path::new(&wal))
        });
        Ok::<_, crate::store::StoreError>(Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_s,
            store: StoreInfo {
                path: path.map(|p| p.display().to_string()),
                schema_version: store.schema_version()?,
                bytes,
            },
            counts: store.status_counts()?,
            cloud_sequence: store.cloud_sequence()?.map(|(seq, _)| seq),
            enrollment: enrollment(store.path()),
            upload: UploadInfo {
                store: store.upload_status()?,
                batches_uploaded,
                failures,
            },
            retention_dropped: store.dropped_totals()?,
        })
    })
    .await?;
    Ok(Json(status))
}
