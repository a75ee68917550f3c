//! The error body: `{"error": {"code", "message"}}` with the status of its code.

use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::error::RuleKind;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::service::metrics::note_store_error(&e);
        match e {
            StoreError::Rule { kind, message } => match kind {
                RuleKind::BadRequest => ApiError::bad_request(message),
                RuleKind::NotFound => ApiError::not_found(message),
                RuleKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", message),
                RuleKind::Invalid => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
                }
                RuleKind::Unauthorized => ApiError::unauthorized(message),
            },
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::bad_request(e.body_text())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
