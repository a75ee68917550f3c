//! `POST /v1/functions/{name}/invoke`: direct invocation, sync or async.

use super::{ApiError, AppState};
use crate::daemon::InvokeRequest;
use crate::pool::OwnedEvent;
use crate::store::{LogRecord, Qualifier};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeQuery {
    qualifier: Option<String>,
    #[serde(rename = "async", default)]
    is_async: bool,
    #[serde(default)]
    log_tail: bool,
}

/// The Invocation document of docs/agent-api.md.
#[derive(Serialize)]
pub struct InvocationDoc {
    invocation_id: String,
    function: String,
    version: Option<u32>,
    outcome: &'static str,
    error: Option<String>,
    response_base64: String,
    duration_us: u64,
    fuel_used: u64,
    logs: Vec<LogRecord>,
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty())
}

pub async fn invoke(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<InvokeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let qualifier = Qualifier::parse(q.qualifier.as_deref().unwrap_or("latest"))?;
    let invocation_id = ulid::Ulid::new().to_string();
    let event = OwnedEvent {
        id: header(&headers, "x-edgefn-event-id").unwrap_or_else(|| invocation_id.clone()),
        source: edgefn_sdk::abi::source::INVOKE.to_string(),
        subject: header(&headers, "x-edgefn-subject").unwrap_or_default(),
        time_ms: crate::runtime::now_ms(),
        content_type: header(&headers, "content-type").unwrap_or_default(),
        data: body.to_vec(),
        attempt: 1,
    };
    let req = InvokeRequest {
        function: name.clone(),
        qualifier: qualifier.clone(),
        event,
        invocation_id: invocation_id.clone(),
    };
    if q.is_async {
        s.daemon.invoke_async(req).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"invocation_id": invocation_id})),
        )
            .into_response());
    }
    // The tail: the newest 100 lines (the log query's default page).
    let (done, logs) = s
        .daemon
        .invoke_direct(req, q.log_tail.then_some(100))
        .await?;
    let inv = done.invocation;
    let doc = InvocationDoc {
        invocation_id: inv.id,
        function: done.function,
        version: done.version,
        outcome: inv.outcome.as_str(),
        error: inv.error,
        response_base64: base64::engine::general_purpose::STANDARD.encode(&inv.response),
        duration_us: inv.duration.as_micros() as u64,
        fuel_used: inv.fuel_used,
        logs,
    };
    Ok(Json(doc).into_response())
}
