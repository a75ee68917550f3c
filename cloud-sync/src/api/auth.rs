//! Bearer tokens: the operator's (from `DIR/operator.token`) and devices' credentials.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::keys::hash_token;
use crate::service::Service;

fn bearer(parts: &Parts) -> Result<String, ApiError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer TOKEN`"))
}

/// Present in a handler's arguments: the request carries the operator token.
pub struct Operator;

impl FromRequestParts<Service> for Operator {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        // Hashes compared, so the comparison time says nothing about the token.
        if hash_token(&bearer(parts)?) == service.operator_token_hash {
            Ok(Operator)
        } else {
            Err(ApiError::unauthorized("wrong operator token"))
        }
    }
}

/// Present in a handler's arguments: the request carries a device credential.
pub struct Device(pub String);

impl FromRequestParts<Service> for Device {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        Ok(Device(service.authenticate_device(bearer(parts)?).await?))
    }
}

/// The operator or a device (artifact downloads).
pub struct Anyone;

impl FromRequestParts<Service> for Anyone {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, service: &Service) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if hash_token(&token) == service.operator_token_hash {
            return Ok(Anyone);
        }
        service.authenticate_device(token).await?;
        Ok(Anyone)
    }
}
