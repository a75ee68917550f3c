//! `/v1/deployments...`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::Operator;
use super::error::ApiResult;
use crate::service::deployments::{DeploymentInfo, NewDeployment};
use crate::service::Service;

pub async fn create(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<NewDeployment>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<DeploymentInfo>)> {
    let Json(b) = body?;
    Ok((StatusCode::CREATED, Json(s.create_deployment(b).await?)))
}

pub async fn list(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<DeploymentInfo>>> {
    Ok(Json(s.list_deployments().await?))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentInfo>> {
    Ok(Json(s.get_deployment(id).await?))
}

pub async fn cancel(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentInfo>> {
    Ok(Json(s.cancel_deployment(id).await?))
}
