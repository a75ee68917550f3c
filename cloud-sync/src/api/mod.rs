//! The HTTP API (docs/cloud-api.md): JSON under `/v1`, one file per resource.
//!
//! - operator endpoints (`Authorization: Bearer <operator token>`): [`functions`], [`mappings`],
//!   [`flows`],
//!   [`devices`] (and groups), [`deployments`], [`keys`], and [`invoke`] (remote invoke of a
//!   function on one device, relayed over the cloud-side MQTT broker) and [`jobs`] (batch jobs
//!   on one device, relayed the same way);
//! - device endpoints (`Authorization: Bearer <device credential>`): [`sync`] (enroll, desired
//!   state with ETag and long-poll, status reports, artifacts with Range);
//! - [`telemetry`]: devices' upload batches, the fleet's logs, invocations and stats for
//!   operators, and the cloud's own `GET /metrics` (no token: health figures only);
//! - [`auth`]: the two bearer checks; [`error`]: the error body; [`tls`]: the rustls listener.

pub mod auth;
pub mod deployments;
pub mod devices;
pub mod error;
pub mod flows;
pub mod functions;
pub mod invoke;
pub mod jobs;
pub mod keys;
pub mod mappings;
pub mod sync;
pub mod telemetry;
pub mod tls;

use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::service::Service;

/// Largest request body.
pub const MAX_BODY: usize = 64 << 20;

/// Every route.
pub fn router(service: Service) -> Router {
    Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/v1/functions",
            post(functions::create).get(functions::list),
        )
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete),
        )
        .route("/v1/functions/{name}/publish", post(functions::publish))
        .route("/v1/functions/{name}/enable", post(functions::enable))
        .route("/v1/functions/{name}/disable", post(functions::disable))
        .route(
            "/v1/functions/{name}/versions/{version}",
            get(functions::get_version).delete(functions::delete_version),
        )
        .route("/v1/functions/{name}/aliases", get(functions::list_aliases))
        .route(
            "/v1/functions/{name}/aliases/{alias}",
            put(functions::set_alias).delete(functions::delete_alias),
        )
        .route("/v1/mappings", post(mappings::create).get(mappings::list))
        .route(
            "/v1/mappings/{id}",
            get(mappings::get)
                .patch(mappings::update)
                .delete(mappings::delete),
        )
        .route("/v1/flows", post(flows::create).get(flows::list))
        .route(
            "/v1/flows/{name}",
            get(flows::get).put(flows::update).delete(flows::delete),
        )
        .route("/v1/flows/{name}/enable", post(flows::enable))
        .route("/v1/flows/{name}/disable", post(flows::disable))
        .route("/v1/mappings/{id}/pause", post(mappings::pause))
        .route("/v1/mappings/{id}/resume", post(mappings::resume))
        .route(
            "/v1/devices",
            post(devices::enroll_token).get(devices::list),
        )
        .route(
            "/v1/devices/{id}",
            get(devices::get).delete(devices::delete),
        )
        .route("/v1/devices/{id}/invoke", post(invoke::invoke))
        .route("/v1/devices/{id}/jobs", post(jobs::submit).get(jobs::list))
        .route("/v1/devices/{id}/jobs/{job}", get(jobs::get))
        .route("/v1/devices/{id}/jobs/{job}/cancel", post(jobs::cancel))
        .route("/v1/devices/{id}/jobs/{job}/results", get(jobs::results))
        .route(
            "/v1/groups",
            post(devices::create_group).get(devices::list_groups),
        )
        .route(
            "/v1/groups/{name}",
            get(devices::get_group).delete(devices::delete_group),
        )
        .route(
            "/v1/groups/{name}/devices/{device}",
            put(devices::add_member).delete(devices::remove_member),
        )
        .route(
            "/v1/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route("/v1/deployments/{id}", get(deployments::get))
        .route("/v1/deployments/{id}/cancel", post(deployments::cancel))
        .route("/v1/keys", get(keys::list))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/enroll", post(sync::enroll))
        .route("/v1/device/desired", get(sync::desired))
        .route("/v1/device/status", post(sync::status))
        .route("/v1/artifacts/{sha256}", get(sync::artifact))
        .route("/v1/device/telemetry", post(telemetry::upload))
        .route("/v1/logs", get(telemetry::logs))
        .route("/v1/invocations", get(telemetry::invocations))
        .route("/v1/stats", get(telemetry::stats))
        .route("/metrics", get(telemetry::metrics))
        .fallback(|| async { error::ApiError::not_found("no such endpoint") })
        // Module uploads travel base64 in JSON: allow 64 MiB bodies (axum's default is 2 MiB).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            telemetry::count_requests,
        ))
        .with_state(service)
}
