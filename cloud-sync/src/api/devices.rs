//! `/v1/devices...` and `/v1/groups...`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::Operator;
use super::error::ApiResult;
use crate::service::devices::{DeviceInfo, EnrollmentToken};
use crate::service::groups::GroupInfo;
use crate::service::Service;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollBody {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    name: String,
}

pub async fn enroll_token(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<EnrollBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<EnrollmentToken>)> {
    let Json(b) = body?;
    Ok((
        StatusCode::CREATED,
        Json(s.enroll_token(b.name, b.groups).await?),
    ))
}

pub async fn list(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<DeviceInfo>>> {
    Ok(Json(s.list_devices().await?))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeviceInfo>> {
    Ok(Json(s.get_device(id).await?))
}

pub async fn delete(
    _: Operator,
    State(s): State<Service>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_device(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_group(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<GroupBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<GroupInfo>)> {
    let Json(b) = body?;
    Ok((StatusCode::CREATED, Json(s.create_group(b.name).await?)))
}

pub async fn list_groups(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<GroupInfo>>> {
    Ok(Json(s.list_groups().await?))
}

pub async fn get_group(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(s.get_group(name).await?))
}

pub async fn delete_group(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_group(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_member(
    _: Operator,
    State(s): State<Service>,
    Path((name, device)): Path<(String, String)>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(s.set_member(name, device, true).await?))
}

pub async fn remove_member(
    _: Operator,
    State(s): State<Service>,
    Path((name, device)): Path<(String, String)>,
) -> ApiResult<Json<GroupInfo>> {
    Ok(Json(s.set_member(name, device, false).await?))
}
