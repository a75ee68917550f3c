//! `/v1/mappings...`: event-source mappings (docs/agent-api.md, docs/triggers.md).
//!
//! The store validates and records every change, bumping `mappings.revision` in the same
//! transaction; the trigger runtime polls that revision, so a change takes effect without any
//! call into the daemon from here.

use super::{blocking, ApiError, AppState};
use crate::store::mappings::some_nullable;
use crate::store::{Destination, Mapping, MappingPatch, NewMapping, Source, StoreError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// `POST /v1/mappings` body. Destinations are text (`topic:T`, `function:F[:Q]`), parsed here so
/// a bad one is a 422 like every other invalid setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// `NAME`, or `NAME:QUALIFIER` when `qualifier` is not given.
    function: String,
    qualifier: Option<String>,
    source: Source,
    name: Option<String>,
    retries: Option<u32>,
    on_success: Option<String>,
    on_failure: Option<String>,
    /// `false` creates the mapping paused.
    enabled: Option<bool>,
}

/// `PATCH /v1/mappings/{id}` body: absent fields are kept; `null` removes a destination.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    name: Option<String>,
    function: Option<String>,
    qualifier: Option<String>,
    source: Option<Source>,
    enabled: Option<bool>,
    retries: Option<u32>,
    #[serde(default, deserialize_with = "some_nullable")]
    on_success: Option<Option<String>>,
    #[serde(default, deserialize_with = "some_nullable")]
    on_failure: Option<Option<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    function: Option<String>,
}

/// A JSON body, with serde's message (field, line, column) as a 400 when it does not fit.
pub(super) fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing JSON body"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

fn destination(text: Option<String>) -> Result<Option<Destination>, StoreError> {
    text.map(|t| Destination::parse(&t).map_err(crate::store::mappings::invalid))
        .transpose()
}

/// `function` and `qualifier` of a request: `NAME:QUALIFIER` in `function` is accepted when
/// `qualifier` is absent.
fn function_and_qualifier(
    function: String,
    qualifier: Option<String>,
) -> Result<(String, Option<String>), ApiError> {
    if function.starts_with(crate::store::mappings::FLOW_TARGET) {
        // `flow:NAME`: a flow target, not a function qualifier.
        return Ok((function, qualifier));
    }
    match (function.split_once(':'), qualifier) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!(
            "function {function:?} names a qualifier and `qualifier` is given too: give it once"
        ))),
        (Some((name, q)), None) => Ok((name.to_owned(), Some(q.to_owned()))),
        (None, q) => Ok((function, q)),
    }
}

pub async fn create(
    State(s): State<AppState>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Mapping>), ApiError> {
    let b: CreateBody = body(&bytes)?;
    let (function, qualifier) = function_and_qualifier(b.function, b.qualifier)?;
    let new = NewMapping {
        function,
        qualifier,
        source: b.source,
        name: b.name,
        retries: b.retries,
        on_success: destination(b.on_success)?,
        on_failure: destination(b.on_failure)?,
        enabled: b.enabled,
    };
    let d = s.daemon.clone();
    let m = blocking(move || d.store().create_mapping(&new)).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Mapping>>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().list_mappings(q.function.as_deref())).await?,
    ))
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mapping>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().get_mapping(&id)).await?))
}

pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Mapping>, ApiError> {
    let b: PatchBody = body(&bytes)?;
    let (function, qualifier) = match b.function {
        Some(f) => {
            let (f, q) = function_and_qualifier(f, b.qualifier)?;
            (Some(f), q)
        }
        None => (None, b.qualifier),
    };
    let patch = MappingPatch {
        name: b.name,
        function,
        qualifier,
        source: b.source,
        enabled: b.enabled,
        retries: b.retries,
        on_success: b.on_success.map(destination).transpose()?,
        on_failure: b.on_failure.map(destination).transpose()?,
    };
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || d.store().update_mapping(&id, &patch)).await?,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = s.daemon.clone();
    blocking(move || d.store().delete_mapping(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mapping>, ApiError> {
    set_enabled(s, id, false).await
}

pub async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Mapping>, ApiError> {
    set_enabled(s, id, true).await
}

async fn set_enabled(s: AppState, id: String, enabled: bool) -> Result<Json<Mapping>, ApiError> {
    let d = s.daemon.clone();
    let t = blocking(move || d.store().set_mapping_enabled(&id, enabled)).await?;
    Ok(Json(t.mapping))
}
