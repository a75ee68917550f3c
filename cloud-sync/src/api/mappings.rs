//! `/v1/mappings...`: registry mappings (the agent's shape and rules).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Operator;
use super::error::ApiResult;
use crate::service::mappings::{Mapping, MappingInput};
use crate::service::Service;

#[derive(Deserialize)]
pub struct ListQuery {
    function: Option<String>,
}

pub async fn create(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<MappingInput>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Mapping>)> {
    let Json(b) = body?;
    Ok((StatusCode::CREATED, Json(s.create_mapping(b).await?)))
}

pub async fn list(
    _: Operator,
    State(s): State<Service>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<Mapping>>> {
    Ok(Json(s.list_mappings(q.function).await?))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<Mapping>> {
    Ok(Json(s.get_mapping(id).await?))
}

pub async fn update(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
    body: Result<Json<MappingInput>, JsonRejection>,
) -> ApiResult<Json<Mapping>> {
    let Json(b) = body?;
    Ok(Json(s.update_mapping(id, b).await?))
}

pub async fn delete(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_mapping(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<Mapping>> {
    let input = MappingInput {
        enabled: Some(false),
        ..Default::default()
    };
    Ok(Json(s.update_mapping(id, input).await?))
}

pub async fn resume(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<Mapping>> {
    let input = MappingInput {
        enabled: Some(true),
        ..Default::default()
    };
    Ok(Json(s.update_mapping(id, input).await?))
}
