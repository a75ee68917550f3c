//! `POST /v1/devices/{device}/invoke`: remote invoke (docs/cloud-api.md, "Remote invoke").

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::auth::Operator;
use super::error::{ApiError, ApiResult};
use crate::protocol::invoke::{refusal, ReplyStatus};
use crate::service::remote_invoke::{RemoteInvoke, RemoteInvokeError};
use crate::service::Service;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    function: String,
    #[serde(default)]
    qualifier: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(rename = "async", default)]
    is_async: bool,
    #[serde(default)]
    log_tail: bool,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl From<RemoteInvokeError> for ApiError {
    fn from(e: RemoteInvokeError) -> Self {
        let message = e.to_string();
        match e {
            RemoteInvokeError::Store(e) => e.into(),
            RemoteInvokeError::NoBroker => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            RemoteInvokeError::BrokerDown(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            RemoteInvokeError::Timeout { .. } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message)
            }
            RemoteInvokeError::BadReply { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "bad_gateway", message)
            }
            RemoteInvokeError::Refused { code, .. } => match code.as_str() {
                refusal::NOT_FOUND => ApiError::not_found(message),
                refusal::DISABLED | refusal::CONFLICT => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", message)
                }
                refusal::THROTTLED => {
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", message)
                }
                refusal::EXPIRED => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", message),
                _ => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message),
            },
        }
    }
}

pub async fn invoke(
    _: Operator,
    State(s): State<Service>,
    Path(device): Path<String>,
    body: Result<Json<InvokeBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    let payload = match b.payload_base64.as_deref() {
        Some(p) => B64
            .decode(p)
            .map_err(|e| ApiError::bad_request(format!("payload_base64 is not base64: {e}")))?,
        None => Vec::new(),
    };
    let answer = s
        .remote_invoke(
            device,
            RemoteInvoke {
                function: b.function,
                qualifier: b.qualifier.unwrap_or_else(|| "latest".into()),
                payload,
                is_async: b.is_async,
                log_tail: b.log_tail,
                timeout_ms: b.timeout_ms,
            },
        )
        .await?;
    let r = answer.reply;
    if r.status == ReplyStatus::Accepted {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "device": answer.device,
                "device_id": answer.device_id,
                "request_id": r.request_id,
                "invocation_id": r.invocation_id,
            })),
        )
            .into_response());
    }
    Ok(Json(json!({
        "device": answer.device,
        "device_id": answer.device_id,
        "request_id": r.request_id,
        "invocation_id": r.invocation_id,
        "function": r.function,
        "version": r.version,
        "outcome": r.outcome,
        "error": r.error,
        "response_base64": r.response_base64,
        "duration_us": r.duration_us,
        "fuel_used": r.fuel_used,
        "logs": r.logs,
        "logs_truncated": r.logs_truncated,
    }))
    .into_response())
}
