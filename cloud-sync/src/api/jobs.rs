//! `/v1/devices/{device}/jobs...`: batch jobs on one device, relayed over the cloud-side MQTT
//! broker (docs/cloud-api.md, "Batch jobs on a device"). Answers are the device's own (the
//! agent API's Job documents, docs/agent-api.md "Jobs") with the device added; errors map as
//! remote invoke's (`404` no such job or function, `409` cancel of a finished job or disabled
//! function, `422` bad input, `504` the device did not answer).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Operator;
use super::error::{ApiError, ApiResult};
use crate::protocol::jobs::{JobOp, ResultsPage};
use crate::service::remote_jobs::JobAnswer;
use crate::service::Service;

/// Header naming the index of the next page of results (as the agent's).
pub const NEXT_HEADER: &str = "x-edgefn-next-index";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    function: String,
    #[serde(default)]
    qualifier: Option<String>,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    format: Option<String>,
    /// The input file's text.
    input: String,
    #[serde(default)]
    parallelism: Option<u32>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The device's document with `device` and `device_id` added (objects only).
fn with_device(a: JobAnswer) -> Value {
    match a.body {
        Value::Object(mut m) => {
            m.insert("device".into(), Value::String(a.device));
            m.insert("device_id".into(), Value::String(a.device_id));
            Value::Object(m)
        }
        other => other,
    }
}

pub async fn submit(
    _: Operator,
    State(s): State<Service>,
    Path(device): Path<String>,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(b) = body?;
    let op = JobOp::Submit {
        function: b.function,
        qualifier: b.qualifier.unwrap_or_else(|| "latest".into()),
        format: b.format.unwrap_or_else(|| "jsonl".into()),
        input: b.input,
        parallelism: b.parallelism.unwrap_or(1),
        retries: b.retries.unwrap_or(2),
    };
    let a = s.remote_job(device, op, b.timeout_ms).await?;
    Ok((StatusCode::CREATED, Json(with_device(a))).into_response())
}

pub async fn list(
    _: Operator,
    State(s): State<Service>,
    Path(device): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let op = JobOp::List {
        state: q.state.filter(|s| !s.is_empty()),
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(s.remote_job(device, op, q.timeout_ms).await?.body))
}

pub async fn get(
    _: Operator,
    State(s): State<Service>,
    Path((device, id)): Path<(String, String)>,
    Query(q): Query<Wait>,
) -> ApiResult<Json<Value>> {
    let a = s
        .remote_job(device, JobOp::Status { id }, q.timeout_ms)
        .await?;
    Ok(Json(with_device(a)))
}

pub async fn cancel(
    _: Operator,
    State(s): State<Service>,
    Path((device, id)): Path<(String, String)>,
    Query(q): Query<Wait>,
) -> ApiResult<Json<Value>> {
    let a = s
        .remote_job(device, JobOp::Cancel { id }, q.timeout_ms)
        .await?;
    Ok(Json(with_device(a)))
}

/// JSON lines as the agent's `GET /v1/jobs/{id}/results` (a page of at most 1 MiB of lines).
pub async fn results(
    _: Operator,
    State(s): State<Service>,
    Path((device, id)): Path<(String, String)>,
    Query(q): Query<ResultsQuery>,
) -> ApiResult<Response> {
    let op = JobOp::Results {
        id,
        from: q.from.unwrap_or(0),
        limit: q.limit.unwrap_or(1000),
    };
    let a = s.remote_job(device, op, q.timeout_ms).await?;
    let page: ResultsPage = serde_json::from_value(a.body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!(
                "device {} sent a results page that is not valid: {e}",
                a.device
            ),
        )
    })?;
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], page.lines).into_response();
    if let Some(n) = page.next_index {
        resp.headers_mut().insert(NEXT_HEADER, HeaderValue::from(n));
    }
    Ok(resp)
}
