//! `/v1/jobs...`: batch jobs (docs/agent-api.md, "Jobs"). The runner (`jobs/runner.rs`) picks
//! a submitted job up from the store within its tick; a cancel reaches it the same way.
//!
//! Each operation is a blocking function of the daemon ([`submit_job`], [`job_doc`],
//! [`list_jobs`], [`results_page`]) that the handlers run on the blocking pool and that job
//! operations relayed from the cloud (`sync/remote.rs`) call too, so both give the same
//! answers and errors.

use super::{blocking, ApiError, AppState};
use crate::daemon::Daemon;
use crate::jobs::{input, results, Format};
use crate::spec::FunctionSpec;
use crate::store::jobs::{TaskFailure, MAX_PAGE};
use crate::store::{Job, JobState, NewJob, Qualifier, TaskInput};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// Failed tasks shown in a Job document (all of them are in the results).
const FAILURES_SHOWN: u32 = 100;

/// `POST /v1/jobs`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Submit {
    pub function: String,
    pub qualifier: Option<String>,
    /// `jsonl` or `csv`, with `input`.
    pub format: Option<String>,
    /// The input file's text.
    pub input: Option<String>,
    /// Or the payloads themselves (each a task, as plain text).
    pub items: Option<Vec<String>>,
    pub parallelism: Option<u32>,
    pub retries: Option<u32>,
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
    let d = s.daemon.clone();
    let doc = blocking(move || submit_job(&d, req)).await?;
    Ok((StatusCode::CREATED, Json(doc)))
}

/// Stores a submitted job (the runner picks it up): the Job document with `warnings`.
pub fn submit_job(d: &Daemon, req: Submit) -> Result<JobDoc, ApiError> {
    let qualifier = req.qualifier.clone().unwrap_or_else(|| "latest".into());
    let parsed = Qualifier::parse(&qualifier)?;
    let parallelism = req.parallelism.unwrap_or(1);
    if parallelism == 0 {
        return Err(ApiError::invalid("parallelism must be at least 1"));
    }
    let retries = req.retries.unwrap_or(2);
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
    Ok(JobDoc {
        job,
        failures: None,
        warnings,
    })
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
    let d = s.daemon.clone();
    Ok(Json(
        blocking(move || list_jobs(&d, q.state.as_deref(), q.limit.unwrap_or(100))).await?,
    ))
}

/// The newest `limit` jobs (of `state`), oldest first.
pub fn list_jobs(d: &Daemon, state: Option<&str>, limit: u32) -> Result<Vec<Job>, ApiError> {
    let state = match state {
        None | Some("") => None,
        Some(st) => Some(st.parse::<JobState>().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown state {st:?}: running, cancelling, succeeded, failed or cancelled"
            ))
        })?),
    };
    Ok(d.store().jobs(state, limit)?)
}

pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobDoc>, ApiError> {
    let d = s.daemon.clone();
    Ok(Json(blocking(move || job_doc(&d, &id)).await?))
}

/// The Job document with its first failed tasks.
pub fn job_doc(d: &Daemon, id: &str) -> Result<JobDoc, ApiError> {
    let job = d.store().job(id)?;
    let failures = if job.failed > 0 {
        d.store().job_failures(id, FAILURES_SHOWN)?
    } else {
        Vec::new()
    };
    Ok(JobDoc {
        job,
        failures: Some(failures),
        warnings: Vec::new(),
    })
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

/// A page of results from index `from`: JSON lines (at most `limit`, and with `max_bytes` at
/// most that many bytes but at least one line) and the index of the next page, if any.
pub fn results_page(
    d: &Daemon,
    id: &str,
    from: u64,
    limit: u32,
    max_bytes: Option<usize>,
) -> Result<(String, Option<u64>), ApiError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let job = d.store().job(id)?;
    let page = d.store().job_results(id, from, limit)?;
    let mut body = String::new();
    let mut last = None;
    for r in &page {
        let line = results::line(r);
        if max_bytes.is_some_and(|max| last.is_some() && body.len() + line.len() > max) {
            break;
        }
        body.push_str(&line);
        last = Some(r.index);
    }
    let next = last.map(|i| i + 1).filter(|n| *n < job.tasks);
    Ok((body, next))
}

/// Header naming the index of the next page of results (absent on the last page).
pub const NEXT_HEADER: &str = "x-edgefn-next-index";

/// `GET /v1/jobs/{id}/results?from=0&limit=1000`: JSON lines, one per task in input order.
pub async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ResultsQuery>,
) -> Result<Response, ApiError> {
    let d = s.daemon.clone();
    let (from, limit) = (q.from.unwrap_or(0), q.limit.unwrap_or(1000));
    let (body, next) = blocking(move || results_page(&d, &id, from, limit, None)).await?;
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Some(n) = next {
        resp.headers_mut().insert(NEXT_HEADER, HeaderValue::from(n));
    }
    Ok(resp)
}
