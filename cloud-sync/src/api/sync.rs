//! The device endpoints: enrollment, the desired state (ETag, long-poll), status reports and
//! artifact downloads (HTTP Range, for resume).

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::auth::{Anyone, Device};
use super::error::{ApiError, ApiResult};
use crate::protocol::{EnrollRequest, EnrollResponse, StatusReport};
use crate::service::Service;

/// Longest long-poll.
pub const MAX_WAIT_S: u64 = 300;
/// How often a waiting long-poll re-checks its document even without a change notification
/// (a document re-issued because half of its validity passed). Changes, also those of other
/// replicas (through the store's revision), wake it at once.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);

pub async fn enroll(
    State(s): State<Service>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> ApiResult<Json<EnrollResponse>> {
    let Json(b) = body?;
    Ok(Json(s.enroll(b.token).await?))
}

#[derive(Deserialize)]
pub struct DesiredQuery {
    /// Seconds to wait for a change when `If-None-Match` matches.
    #[serde(default)]
    wait: u64,
}

/// The ETag of sequence `seq`: the number in quotes.
fn etag_of(seq: u64) -> String {
    format!("\"{seq}\"")
}

fn etag_value(seq: u64) -> HeaderValue {
    HeaderValue::from_str(&etag_of(seq)).expect("an ETag is ASCII")
}

pub async fn desired(
    Device(device): Device,
    State(s): State<Service>,
    Query(q): Query<DesiredQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(MAX_WAIT_S));
    let mut changes = s.subscribe();
    loop {
        changes.borrow_and_update();
        // The current sequence: from memory while nothing changed (no store, no signing),
        // else from the document built now.
        let (seq, doc) = match s.known_sequence(&device) {
            Some(seq) => (seq, None),
            None => {
                let (seq, doc) = s.desired(device.clone()).await?;
                (seq, Some(doc))
            }
        };
        if known.as_deref() != Some(etag_of(seq).as_str()) {
            let (seq, doc) = match doc {
                Some(doc) => (seq, doc),
                None => s.desired(device.clone()).await?,
            };
            let mut r = Json(doc).into_response();
            r.headers_mut().insert(header::ETAG, etag_value(seq));
            return Ok(r);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().insert(header::ETAG, etag_value(seq));
            return Ok(r);
        }
        let nap = RECHECK_INTERVAL.min(deadline - now);
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

pub async fn status(
    Device(device): Device,
    State(s): State<Service>,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(b) = body?;
    s.report_status(device, b).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `bytes=START-` or `bytes=START-END` (one range).
fn parse_range(text: &str, total: u64) -> Option<(u64, u64)> {
    let spec = text.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    if a.is_empty() {
        let n: u64 = b.parse().ok()?; // suffix: the last n bytes
        return (n > 0 && total > 0).then(|| (total.saturating_sub(n), total - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        total.checked_sub(1)?
    } else {
        b.parse::<u64>().ok()?.min(total.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

pub async fn artifact(
    _: Anyone,
    State(s): State<Service>,
    Path(sha): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let bytes = s
        .artifacts
        .get(&sha)
        .ok_or_else(|| ApiError::not_found(format!("no artifact {sha}")))?;
    let total = bytes.len() as u64;
    let mut response = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => Response::new(Body::from(bytes)),
        Some(range) => match parse_range(range, total) {
            Some((start, end)) => {
                let mut r =
                    Response::new(Body::from(bytes[start as usize..=end as usize].to_vec()));
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).unwrap(),
                );
                r
            }
            None => {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{total}")).unwrap(),
                );
                return Ok(r);
            }
        },
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{sha}\"")).unwrap(),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-6", 10), Some((4, 6)));
        assert_eq!(parse_range("bytes=4-60", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("lines=1-2", 10), None);
    }
}
