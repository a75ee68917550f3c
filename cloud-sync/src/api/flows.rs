//! `/v1/flows...`: registry flows (the agent API's shapes and rules, docs/flows.md).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Operator;
use super::error::{ApiError, ApiResult};
use crate::protocol::flow::FlowDef;
use crate::service::flows::Flow;
use crate::service::Service;

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

/// The definition in a request, with serde's message naming the field when it does not fit
/// (as the agent's API says it).
fn definition(v: serde_json::Value) -> ApiResult<FlowDef> {
    serde_json::from_value(v).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("invalid flow: {e}"),
        )
    })
}

pub async fn create(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Flow>)> {
    let Json(b) = body?;
    let def = definition(b.definition)?;
    Ok((StatusCode::CREATED, Json(s.create_flow(b.name, def).await?)))
}

pub async fn update(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> ApiResult<Json<Flow>> {
    let Json(b) = body?;
    let def = definition(b.definition)?;
    Ok(Json(s.update_flow(name, def).await?))
}

pub async fn list(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<Flow>>> {
    Ok(Json(s.list_flows().await?))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<Flow>> {
    Ok(Json(s.get_flow(name).await?))
}

pub async fn delete(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_flow(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<Flow>> {
    Ok(Json(s.set_flow_enabled(name, true).await?))
}

pub async fn disable(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<Flow>> {
    Ok(Json(s.set_flow_enabled(name, false).await?))
}
