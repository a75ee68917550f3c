//! `/v1/logs`, `/v1/stats`, `/metrics` and `/v1/health`.

use super::{blocking, ApiError, AppState};
use crate::store::{Level, LogFilter, LogRecord, Qualifier, StatsQuery};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    function: Option<String>,
    level: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    grep: Option<String>,
    invocation: Option<String>,
    after_seq: Option<i64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct LogsPage {
    records: Vec<LogRecord>,
    next_seq: i64,
}

pub async fn logs(
    State(s): State<AppState>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<LogsPage>, ApiError> {
    let min_level = match q.level.as_deref() {
        Some(l) => Some(Level::parse(l).ok_or_else(|| {
            ApiError::bad_request(format!(
                "level must be trace, debug, info, warn or error, not {l:?}"
            ))
        })?),
        None => None,
    };
    let filter = LogFilter {
        function: q.function,
        min_level,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        grep: q.grep,
        invocation_id: q.invocation,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(1000),
    };
    let d = s.daemon.clone();
    let records = blocking(move || d.store().logs(&filter)).await?;
    let next_seq = records.last().map(|r| r.seq).or(q.after_seq).unwrap_or(0);
    Ok(Json(LogsPage { records, next_seq }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    function: Option<String>,
    qualifier: Option<String>,
    window_s: Option<u64>,
    series_s: Option<u64>,
}

pub async fn stats(
    State(s): State<AppState>,
    Query(q): Query<StatsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let window_s = q.window_s.unwrap_or(3600);
    if window_s == 0 {
        return Err(ApiError::bad_request("window_s must be at least 1"));
    }
    // docs/agent-api.md: per minute unless asked otherwise; a window longer than a day gets
    // coarser default buckets (at most 1440), so a long --window alone never asks too much.
    let series_s = q
        .series_s
        .unwrap_or_else(|| window_s.div_ceil(1440).div_ceil(60).max(1) * 60);
    if series_s == 0 {
        return Err(ApiError::bad_request("series_s must be at least 1"));
    }
    if q.qualifier.is_some() && q.function.is_none() {
        return Err(ApiError::bad_request("qualifier needs function"));
    }
    let d = s.daemon.clone();
    let function = q.function.clone();
    let report = blocking(move || {
        let versions = match (&q.function, &q.qualifier) {
            (Some(f), Some(qual)) => Some(d.store().version_keys(f, &Qualifier::parse(qual)?)?),
            (Some(f), None) => {
                d.store().get_function(f)?; // unknown function: 404, not empty figures
                None
            }
            _ => None,
        };
        let now = crate::runtime::now_ms() as i64;
        d.store().stats(&StatsQuery {
            function: q.function.clone(),
            versions,
            since_ms: now - (window_s as i64) * 1000,
            until_ms: None,
            step_ms: Some(series_s as i64 * 1000),
        })
    })
    .await?;
    let d = s.daemon.clone();
    // Stream lag is a present state, not a window: every partition of the stream mappings.
    let lag = blocking(move || d.store().stream_lag(function.as_deref())).await?;
    let mut v = serde_json::to_value(&report).map_err(|e| ApiError::internal(e.to_string()))?;
    v["window_s"] = window_s.into();
    v["streams"] = serde_json::to_value(&lag).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(v))
}

pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.daemon.metrics().encode(),
    )
}

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}
