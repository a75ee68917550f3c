//! The admin API (docs/agent-api.md): axum routes over [`Daemon`], bearer-token auth.
//! [`serve`] takes a bound listener and a shutdown future, so tests bind port 0.

mod dead_letters;
mod error;
mod flows;
mod functions;
mod invoke;
pub mod jobs;
mod mappings;
mod observe;
mod status;

pub use error::ApiError;

use crate::daemon::Daemon;
use crate::runtime::Runtime;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use std::future::Future;
use std::sync::Arc;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    daemon: Daemon,
    /// Validates uploaded modules before they are stored.
    runtime: Runtime,
    /// The bearer token every `/v1/` request must carry.
    token: Arc<str>,
    /// When the router was built (the agent's start), for `GET /v1/status`'s uptime.
    started: std::time::Instant,
}

/// Largest request body (a module upload in base64).
const MAX_BODY: usize = 64 << 20;

/// The router for `daemon`, requiring `token`.
pub fn router(daemon: Daemon, token: &str) -> Router {
    let state = AppState {
        daemon,
        runtime: Runtime::new(),
        token: token.into(),
        started: std::time::Instant::now(),
    };
    let v1 = Router::new()
        .route("/functions", get(functions::list).post(functions::create))
        .route(
            "/functions/{name}",
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete),
        )
        .route("/functions/{name}/publish", post(functions::publish))
        .route("/functions/{name}/enable", post(functions::enable))
        .route("/functions/{name}/disable", post(functions::disable))
        .route(
            "/functions/{name}/versions/{version}",
            get(functions::get_version).delete(functions::delete_version),
        )
        .route("/functions/{name}/aliases", get(functions::list_aliases))
        .route(
            "/functions/{name}/aliases/{alias}",
            put(functions::set_alias).delete(functions::delete_alias),
        )
        .route("/functions/{name}/invoke", post(invoke::invoke))
        .route("/mappings", get(mappings::list).post(mappings::create))
        .route(
            "/mappings/{id}",
            get(mappings::get)
                .patch(mappings::update)
                .delete(mappings::delete),
        )
        .route("/mappings/{id}/pause", post(mappings::pause))
        .route("/mappings/{id}/resume", post(mappings::resume))
        .route("/flows", get(flows::list).post(flows::create))
        .route(
            "/flows/{name}",
            get(flows::get).put(flows::update).delete(flows::delete),
        )
        .route("/flows/{name}/enable", post(flows::enable))
        .route("/flows/{name}/disable", post(flows::disable))
        .route("/flows/{name}/start", post(flows::start))
        .route("/flows/{name}/runs", get(flows::runs))
        .route("/flow-runs/{id}", get(flows::run))
        .route("/dead-letters", get(dead_letters::list))
        .route(
            "/dead-letters/{id}",
            get(dead_letters::get).delete(dead_letters::delete),
        )
        .route("/jobs", get(jobs::list).post(jobs::submit))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/results", get(jobs::results))
        .route("/logs", get(observe::logs))
        .route("/stats", get(observe::stats))
        .route("/status", get(status::status))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .nest("/v1", v1)
        .route("/v1/health", get(observe::health))
        .route("/metrics", get(observe::metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    daemon: Daemon,
    token: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(daemon, token))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), s.token.as_bytes()) => Ok(next.run(req).await),
        _ => Err(ApiError::unauthorized()),
    }
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs blocking store work off the reactor.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?.map_err(Into::into)
}
