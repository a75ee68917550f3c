//! API errors: an HTTP status and `{"error": {"code", "message"}}` (docs/agent-api.md).

use crate::daemon::InvokeError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the admin API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong bearer token (see <data-dir>/admin.token)".into(),
        }
    }

    /// 422: well-formed but unacceptable (bad module, spec, weight...).
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid",
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// The HTTP status (relayed job operations map it to a refusal code).
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }

    /// The `code` of the error body (`not_found`, `conflict`, `disabled`, `invalid`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        let (status, code) = match e {
            StoreError::UnknownFunction(_)
            | StoreError::UnknownVersion { .. }
            | StoreError::UnknownAlias { .. }
            | StoreError::UnknownInvocation(_)
            | StoreError::UnknownMapping(_)
            | StoreError::UnknownDeadLetter(_)
            | StoreError::UnknownJob(_)
            | StoreError::UnknownFlow(_)
            | StoreError::UnknownFlowRun(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::FunctionExists(_)
            | StoreError::VersionInUse { .. }
            | StoreError::MappingExists { .. }
            | StoreError::HttpPathTaken { .. }
            | StoreError::FlowExists(_)
            | StoreError::CloudManaged(_)
            | StoreError::CloudConflict(_)
            | StoreError::JobFinished { .. }
            | StoreError::JobActive(_) => (StatusCode::CONFLICT, "conflict"),
            StoreError::InvalidName { .. }
            | StoreError::InvalidQualifier { .. }
            | StoreError::InvalidAlias { .. }
            | StoreError::InvalidQuery(_)
            | StoreError::InvalidMapping { .. }
            | StoreError::InvalidJob(_)
            | StoreError::InvalidFlow(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> ApiError {
        match e {
            InvokeError::Store(s) => s.into(),
            InvokeError::Disabled(_) => ApiError {
                status: StatusCode::CONFLICT,
                code: "disabled",
                message: e.to_string(),
            },
            InvokeError::Throttled { .. } => ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "throttled",
                message: e.to_string(),
            },
            InvokeError::Invalid(m) => ApiError::invalid(m),
            InvokeError::Commit(m) => ApiError::internal(m),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> ApiError {
        ApiError::internal(format!("task failed: {e}"))
    }
}
