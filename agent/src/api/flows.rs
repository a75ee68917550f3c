//! `/v1/flows...` and `/v1/flow-runs/{id}`: flow definitions and runs (docs/agent-api.md,
//! docs/flows.md). The store validates definitions; the flow engine picks up started runs.

use super::mappings::body;
use super::{blocking, ApiError, AppState};
use crate::flows::{FlowDef, RunStatus};
use crate::store::{CommitExtra, FlowInfo, FlowRun, StoreError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use std::time::Duration;

/// `POST /v1/flows` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Defaults to the definition's `name`.
    name: Option<String>,
    definition: serde_json::Value,
}

/// `PUT /v1/flows/{name}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    definition: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    /// Wait up to this long for the run to end before answering.
    wait_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    status: Option<String>,
    limit: Option<u32>,
}

/// The definition in a request, with serde's message naming the field when it does not fit.
fn definition(v: serde_json::Value) -> Result<FlowDef, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("invalid flow: {e}")))
}

pub async fn create(
    State(s): State<AppState>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<FlowInfo>), ApiError> {
    let b: CreateBody = body(&bytes)?;
    let def = definition(b.definition)?;
    let Some(name) = b.name.or_else(|| def.name.clone()) else {
        return Err(ApiError::invalid(
            "the flow has no name: give `name` in the definition or the request",
        ));
    };
    let d = s.daemon.clone();
    let f = blocking(move || d.store().create_flow(&name, &def)).await?;
    Ok((StatusCode::CREATED, Json(f)))
}

pub async fn update(
    State(s): State<AppState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<FlowInfo>, ApiError> {
    let b: UpdateBody = body(&bytes)?;
    let def = definition(b.definition)?;
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().update_flow(&name, &def)).await?,
    ))
}

pub async fn list(State(s): State<AppState>) -> Result<Json<Vec<FlowInfo>>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().list_flows()).await?))
}

pub async fn get(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlowInfo>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().get_flow(&name)).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlowInfo>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().delete_flow(&name)).await?))
}

pub async fn enable(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlowInfo>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().set_flow_enabled(&name, true)).await?,
    ))
}

pub async fn disable(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<FlowInfo>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().set_flow_enabled(&name, false)).await?,
    ))
}

/// `POST /v1/flows/{name}/start`: the body is the run's input (JSON; other bytes become a
/// JSON string). Answers 201 with the run, after it ended if `wait_ms` is given and it ends
/// in time (else as it stands then).
pub async fn start(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<StartQuery>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<FlowRun>), ApiError> {
    let input = crate::flows::value_from_bytes(&bytes);
    let mut run =
        crate::flows::start(&s.daemon, &name, input, "manual", CommitExtra::default()).await?;
    if let Some(ms) = q.wait_ms {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms.min(600_000));
        let mut every = Duration::from_millis(2);
        while run.status == RunStatus::Running && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(every).await;
            every = (every * 2).min(Duration::from_millis(100));
            let (d, id) = (s.daemon.clone(), run.id.clone());
            run = blocking(move || d.store().flow_run(&id)).await?;
        }
    }
    Ok((StatusCode::CREATED, Json(run)))
}

pub async fn runs(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Vec<FlowRun>>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some("running") => Some(RunStatus::Running),
        Some("succeeded") => Some(RunStatus::Succeeded),
        Some("failed") => Some(RunStatus::Failed),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "status {other:?}: expected running, succeeded or failed"
            )))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || {
            // An unknown flow is a 404, unless it still has runs (deleted flows keep them).
            let runs = d.store().flow_runs(&name, status, limit)?;
            if runs.is_empty() {
                d.store().get_flow(&name)?;
            }
            Ok::<_, StoreError>(runs)
        })
        .await?,
    ))
}

pub async fn run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FlowRun>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().flow_run(&id)).await?))
}
