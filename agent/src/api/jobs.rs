//! `/v1/jobs...`: batch jobs (docs/agent-api.md, "Jobs"). The runner (`jobs/runner.rs`) picks
//! a submitted job up from the store within its tick; a cancel reaches it the same way.

use super::{blocking, ApiError, AppState};
use crate::jobs::{input, results, Format};
use crate::spec::FunctionSpec;
use crate::store::jobs::{TaskFailure, MAX_PAGE};
use crate::store::{Job, JobState, NewJob, Qualifier, StoreError, TaskInput};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Failed tasks shown in a Job document (all of them are in the results).
const FAILURES_SHOWN: u32 = 100;

/// `POST /v1/jobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    function: String,
    qualifier: Option<String>,
    /// `jsonl` or `csv`, with `input`.
    format: Option<String>,
    /// The input file's text.
    input: Option<String>,
    /// Or the payloads themselves (each a task, as plain text).
    items: Option<Vec<String>>,
    parallelism: Option<u32>,
    retries: Option<u32>,
}

/// The Job document.
#[derive(Serialize)]
pub struct JobDoc {
    #[serde(flatten)]
    job: Job,
    /// The first failed tasks (with `GET /v1/jobs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<Vec<TaskFailure>>,
    /// Things worth knowing about a submission (with `POST` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

pub async fn submit(
    State(s): State<AppState>,
    Json(req): Json<Submit>,
) -> Result<(StatusCode, Json<JobDoc>), ApiError> {
    let qualifier = req.qualifier.clone().unwrap_or_else(|| "latest".into());
    let parsed = Qualifier::parse(&qualifier)?;
    let parallelism = req.parallelism.unwrap_or(1);
    if parallelism == 0 {
        return Err(ApiError::invalid("parallelism must be at least 1"));
    }
    let retries = req.retries.unwrap_or(2);
    let d = s.daemon.clone();
    let (job, warnings) = blocking(move || -> Result<_, ApiError> {
        let (tasks, source) = tasks_of(&req)?;
        let r = d.store().resolve(&req.function, &parsed, "")?;
        if !r.enabled {
            return Err(crate::daemon::InvokeError::Disabled(req.function.clone()).into());
        }
        let mut warnings = Vec::new();
        if let Ok(spec) = FunctionSpec::parse(&r.spec) {
            if parallelism as usize > spec.max_concurrency {
                warnings.push(format!(
                    "parallelism {parallelism} is more than {}'s max_concurrency {}: at most {} \
                     instance(s) run at once (raise max_concurrency in its spec)",
                    req.function, spec.max_concurrency, spec.max_concurrency
                ));
            }
        }
        let job = d.store().create_job(&NewJob {
            function: req.function,
            qualifier,
            parallelism,
            retries,
            input: source.to_string(),
            tasks,
        })?;
        Ok((job, warnings))
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(JobDoc {
            job,
            failures: None,
            warnings,
        }),
    ))
}

/// The tasks of a submission and where they came from.
fn tasks_of(req: &Submit) -> Result<(Vec<TaskInput>, &'static str), ApiError> {
    match (&req.input, &req.items) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either `input` (with `format`) or `items`, not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "no tasks: give `input` (with `format`: jsonl or csv) or `items`",
        )),
        (Some(text), None) => {
            let format = match req.format.as_deref() {
                Some(f) => Format::parse(f).ok_or_else(|| {
                    ApiError::bad_request(format!("unknown format {f:?}: jsonl or csv"))
                })?,
                None => Format::JsonLines,
            };
            let tasks = input::parse(format, text.as_bytes())
                .map_err(|e| ApiError::invalid(format!("{format} input: {e}")))?;
            Ok((tasks, format.as_str()))
        }
        (None, Some(items)) => {
            if items.is_empty() {
                return Err(ApiError::invalid(
                    "`items` is empty: a job needs at least one task",
                ));
            }
            let tasks = items
                .iter()
                .map(|i| TaskInput {
                    payload: i.clone().into_bytes(),
                    json: false,
                })
                .collect();
            Ok((tasks, "items"))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

pub async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(st) => Some(st.parse::<JobState>().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown state {st:?}: running, cancelling, succeeded, failed or cancelled"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().jobs(state, limit)).await?))
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobDoc>, ApiError> {
    let d = s.daemon.clone();
    let (job, failures) = blocking(move || -> Result<_, StoreError> {
        let job = d.store().job(&id)?;
        let failures = if job.failed > 0 {
            d.store().job_failures(&id, FAILURES_SHOWN)?
        } else {
            Vec::new()
        };
        Ok((job, failures))
    })
    .await?;
    Ok(Json(JobDoc {
        job,
        failures: Some(failures),
        warnings: Vec::new(),
    }))
}

pub async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || d.store().cancel_job(&id)).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let d = s.daemon.clone();
    blocking(move || d.store().delete_job(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    from: Option<u64>,
    limit: Option<u32>,
}

/// Header naming the index of the next page of results (absent on the last page).
pub const NEXT_HEADER: &str = "x-edgefn-next-index";

/// `GET /v1/jobs/{id}/results?from=0&limit=1000`: JSON lines, one per task in input order.
pub async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let d = s.daemon.clone();
    let (body, next) = blocking(move || -> Result<_, StoreError> {
        let job = d.store().job(&id)?;
        let page = d.store().job_results(&id, from, limit)?;
        let next = page.last().map(|r| r.index + 1).filter(|n| *n < job.tasks);
        let body: String = page.iter().map(results::line).collect();
        Ok((body, next))
    })
    .await?;
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Some(n) = next {
        resp.headers_mut().insert(NEXT_HEADER, HeaderValue::from(n));
    }
    Ok(resp)
}
