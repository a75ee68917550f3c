//! `/v1/keys...`: signing keys and rotation.

use axum::extract::State;
use axum::Json;

use super::auth::Operator;
use super::error::ApiResult;
use crate::service::signing::KeyInfo;
use crate::service::Service;

pub async fn list(_: Operator, State(s): State<Service>) -> ApiResult<Json<Vec<KeyInfo>>> {
    Ok(Json(s.list_keys().await?))
}

pub async fn rotate(_: Operator, State(s): State<Service>) -> ApiResult<Json<KeyInfo>> {
    Ok(Json(s.rotate_key().await?))
}
