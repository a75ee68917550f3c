//! `/v1/functions...`: the registry's function lifecycle.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use super::auth::Operator;
use super::error::{ApiError, ApiResult};
use crate::service::aliases::AliasInfo;
use crate::service::functions::{FunctionDetail, FunctionSummary, Published, VersionInfo};
use crate::service::Service;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    module_base64: String,
    #[serde(default)]
    spec: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    module_base64: Option<String>,
    spec: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasBody {
    version: u32,
    also_version: Option<u32>,
    weight: Option<f64>,
}

fn module(text: &str) -> ApiResult<Vec<u8>> {
    B64.decode(text)
        .map_err(|e| ApiError::bad_request(format!("module_base64 is not base64: {e}")))
}

fn version_number(text: &str) -> ApiResult<u32> {
    text.parse::<u32>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::bad_request(format!("bad version {text:?}: expected a number from 1"))
    })
}

pub async fn create(
    _: Operator,
    State(s): State<Service>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<FunctionDetail>)> {
    let Json(b) = body?;
    let f = s
        .create_function(b.name, module(&b.module_base64)?, b.spec)
        .await?;
    Ok((StatusCode::CREATED, Json(f)))
}

pub async fn update(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> ApiResult<Json<FunctionDetail>> {
    let Json(b) = body?;
    let m = b.module_base64.as_deref().map(module).transpose()?;
    Ok(Json(s.update_function(name, m, b.spec).await?))
}

pub async fn publish(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
    body: Option<Json<PublishBody>>,
) -> ApiResult<Json<Published>> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    Ok(Json(s.publish(name, b.description).await?))
}

pub async fn list(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<FunctionSummary>>> {
    Ok(Json(s.list_functions().await?))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionDetail>> {
    Ok(Json(s.get_function(name).await?))
}

pub async fn delete(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_function(name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionDetail>> {
    Ok(Json(s.set_enabled(name, true).await?))
}

pub async fn disable(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionDetail>> {
    Ok(Json(s.set_enabled(name, false).await?))
}

pub async fn get_version(
    _: Operator,
    State(s): State<Service>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<Json<VersionInfo>> {
    Ok(Json(s.get_version(name, version_number(&version)?).await?))
}

pub async fn delete_version(
    _: Operator,
    State(s): State<Service>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.delete_version(name, version_number(&version)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_aliases(
    _: Operator,
    State(s): State<Service>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<AliasInfo>>> {
    Ok(Json(s.list_aliases(name).await?))
}

pub async fn set_alias(
    _: Operator,
    State(s): State<Service>,
    Path((name, alias)): Path<(String, String)>,
    body: Result<Json<AliasBody>, JsonRejection>,
) -> ApiResult<Json<AliasInfo>> {
    let Json(b) = body?;
    Ok(Json(
        s.set_alias(name, alias, b.version, b.also_version, b.weight)
            .await?,
    ))
}

pub async fn delete_alias(
    _: Operator,
    State(s): State<Service>,
    Path((name, alias)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.delete_alias(name, alias).await?;
    Ok(StatusCode::NO_CONTENT)
}
