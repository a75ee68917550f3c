//! `/v1/dead-letters...`: events whose delivery failed for good (docs/agent-api.md).

use super::{blocking, ApiError, AppState};
use crate::store::{DeadLetter, DeadLetterFilter, QueuedEvent, StoreError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// A mapping id or name.
    mapping: Option<String>,
    function: Option<String>,
    limit: Option<u32>,
}

/// The DeadLetter document: binary fields in base64.
#[derive(Serialize)]
pub struct DeadLetterDoc {
    id: String,
    mapping_id: Option<String>,
    function: String,
    qualifier: String,
    attempts: u32,
    outcome: String,
    error: String,
    created_ms: i64,
    event: EventDoc,
}

#[derive(Serialize)]
struct EventDoc {
    id: String,
    source: String,
    subject: String,
    time_ms: u64,
    content_type: String,
    data_base64: String,
    attempt: u32,
    depth: u32,
    reply: Option<ReplyDoc>,
}

#[derive(Serialize)]
struct ReplyDoc {
    topic: String,
    correlation_base64: Option<String>,
}

impl From<QueuedEvent> for EventDoc {
    fn from(e: QueuedEvent) -> EventDoc {
        EventDoc {
            id: e.id,
            source: e.source,
            subject: e.subject,
            time_ms: e.time_ms,
            content_type: e.content_type,
            data_base64: STANDARD.encode(&e.data),
            attempt: e.attempt,
            depth: e.depth,
            reply: e.reply.map(|r| ReplyDoc {
                topic: r.topic,
                correlation_base64: r.correlation.map(|c| STANDARD.encode(c)),
            }),
        }
    }
}

impl From<DeadLetter> for DeadLetterDoc {
    fn from(d: DeadLetter) -> DeadLetterDoc {
        DeadLetterDoc {
            id: d.id,
            mapping_id: d.mapping_id,
            function: d.function,
            qualifier: d.qualifier,
            attempts: d.attempts,
            outcome: d.outcome,
            error: d.error,
            created_ms: d.created_ms,
            event: d.event.into(),
        }
    }
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<DeadLetterDoc>>, ApiError> {
    let d = s.daemon.clone();
    let letters = blocking(move || {
        // A mapping name means its id; an unknown one may be the id of a deleted mapping.
        let mapping_id = match q.mapping {
            Some(m) => match d.store().get_mapping(&m) {
                Ok(found) => Some(found.id),
                Err(StoreError::UnknownMapping(_)) => Some(m),
                Err(e) => return Err(e),
            },
            None => None,
        };
        d.store().dead_letters(&DeadLetterFilter {
            mapping_id,
            function: q.function,
            limit: q.limit.unwrap_or(DeadLetterFilter::default().limit),
        })
    })
    .await?;
    Ok(Json(letters.into_iter().map(Into::into).collect()))
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterDoc>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().dead_letter(&id)).await?.into(),
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = s.daemon.clone();
    blocking(move || d.store().delete_dead_letter(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
