//! Telemetry: the device's upload (`POST /v1/device/telemetry`), the operator's fleet queries
//! (`GET /v1/logs`, `/v1/invocations`, `/v1/stats`) and the cloud's own `GET /metrics`.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::auth::{Device, Operator};
use super::error::{ApiError, ApiResult};
use super::MAX_BODY;
use crate::protocol::telemetry::{decompress, level_number, UploadAck, UploadBatch};
use crate::service::fleet_logs::{
    DeviceScope, FleetInvocation, InvocationQuery, LogPage, LogQuery,
};
use crate::service::fleet_stats::{StatsQuery, StatsReport};
use crate::service::Service;

pub async fn upload(
    Device(device): Device,
    State(s): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<UploadAck>> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let json = match encoding {
        "deflate" => decompress(&body, MAX_BODY)
            .map_err(|e| ApiError::bad_request(format!("telemetry body: {e}")))?,
        "identity" => body.to_vec(),
        other => {
            return Err(ApiError::bad_request(format!(
                "Content-Encoding {other:?}: send deflate (zlib) or identity"
            )))
        }
    };
    let batch: UploadBatch = serde_json::from_slice(&json)
        .map_err(|e| ApiError::bad_request(format!("telemetry batch: {e}")))?;
    let wire = body.len() as u64;
    let (ack, counts) = s.ingest(device, batch, wire).await?;
    s.metrics.ingested(&counts, wire);
    Ok(Json(ack))
}

fn scope(device: Option<String>, group: Option<String>) -> ApiResult<DeviceScope> {
    match (device, group) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give device or group, not both")),
        (Some(d), None) => Ok(DeviceScope::Device(d)),
        (None, Some(g)) => Ok(DeviceScope::Group(g)),
        (None, None) => Ok(DeviceScope::All),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    function: Option<String>,
    device: Option<String>,
    group: Option<String>,
    level: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    grep: Option<String>,
    invocation: Option<String>,
    received_since_ms: Option<i64>,
    limit: Option<u32>,
}

pub async fn logs(
    _: Operator,
    State(s): State<Service>,
    Query(q): Query<LogsParams>,
) -> ApiResult<Json<LogPage>> {
    let min_level = match q.level.as_deref() {
        Some(l) => Some(level_number(l).ok_or_else(|| {
            ApiError::bad_request(format!(
                "level must be trace, debug, info, warn or error, not {l:?}"
            ))
        })?),
        None => None,
    };
    let query = LogQuery {
        function: q.function,
        scope: scope(q.device, q.group)?,
        min_level,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        grep: q.grep.filter(|g| !g.is_empty()),
        invocation: q.invocation,
        received_since_ms: q.received_since_ms,
        limit: q.limit.unwrap_or(1000),
    };
    Ok(Json(s.fleet_logs(query).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvocationsParams {
    function: Option<String>,
    device: Option<String>,
    group: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    id: Option<String>,
    limit: Option<u32>,
}

pub async fn invocations(
    _: Operator,
    State(s): State<Service>,
    Query(q): Query<InvocationsParams>,
) -> ApiResult<Json<Vec<FleetInvocation>>> {
    let query = InvocationQuery {
        function: q.function,
        scope: scope(q.device, q.group)?,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        id: q.id,
        limit: q.limit.unwrap_or(1000),
    };
    Ok(Json(s.fleet_invocations(query).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    function: Option<String>,
    qualifier: Option<String>,
    device: Option<String>,
    group: Option<String>,
    window_s: Option<i64>,
    series_s: Option<i64>,
}

pub async fn stats(
    _: Operator,
    State(s): State<Service>,
    Query(q): Query<StatsParams>,
) -> ApiResult<Json<StatsReport>> {
    let window_s = q.window_s.unwrap_or(3600);
    if window_s < 1 {
        return Err(ApiError::bad_request(format!(
            "window_s must be at least 1, not {window_s}"
        )));
    }
    // As the agent: per minute up to a day, coarser beyond (at most 1440 points by default).
    let series_s = q
        .series_s
        .unwrap_or_else(|| ((window_s + 1439) / 1440 + 59) / 60 * 60)
        .max(0);
    if series_s < 1 {
        return Err(ApiError::bad_request("series_s must be at least 1"));
    }
    let query = StatsQuery {
        function: q.function,
        qualifier: q.qualifier,
        scope: scope(q.device, q.group)?,
        window_ms: window_s * 1000,
        step_ms: series_s * 1000,
        now_ms: crate::now_ms(),
    };
    Ok(Json(s.fleet_stats(query).await?))
}

pub async fn metrics(State(s): State<Service>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Counts every answered request by method, matched route and status (middleware).
pub async fn count_requests(
    State(s): State<Service>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .request(&method, &route, resp.status().as_u16(), started.elapsed());
    resp
}
