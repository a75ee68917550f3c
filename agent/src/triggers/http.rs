//! The HTTP trigger: `POST PATH` on the trigger listener invokes the function mapped to PATH,
//! synchronously (no retries): 200 with the response, 500 with the function's error, 429
//! throttled, 409 disabled or paused, 404 unknown route, 405 other methods.

use super::dispatch::{Carry, Dispatcher, Route};
use super::Mappings;
use crate::daemon::InvokeError;
use crate::pool::OwnedEvent;
use crate::store::Source;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::future::Future;

#[derive(Clone)]
struct HttpState {
    dispatcher: Dispatcher,
    mappings: Mappings,
}

/// Serves the HTTP trigger on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    dispatcher: Dispatcher,
    mappings: Mappings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(HttpState {
            dispatcher,
            mappings,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body.into(),
    )
        .into_response()
}

async fn handle(
    State(s): State<HttpState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let current = s.mappings.borrow().clone();
    let Some(m) = current
        .iter()
        .find(|m| matches!(&m.source, Source::Http { path: p } if p == path))
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no function is mapped to {path}\n"),
        );
    };
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "POST")],
            "use POST\n",
        )
            .into_response();
    }
    if !m.enabled {
        return text(
            StatusCode::CONFLICT,
            format!("the mapping of {path} is paused\n"),
        );
    }
    let id = ulid::Ulid::new().to_string();
    let event = OwnedEvent {
        id: headers
            .get("x-edgefn-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or(id),
        source: edgefn_sdk::abi::source::HTTP.into(),
        subject: path.to_string(),
        time_ms: crate::runtime::now_ms(),
        content_type: headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        data: body.to_vec(),
        attempt: 1,
    };
    match s
        .dispatcher
        .sync(&Route::of(m), event, Carry::default())
        .await
    {
        Ok(done) if done.invocation.is_success() => {
            (StatusCode::OK, done.invocation.response).into_response()
        }
        Ok(done) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{}: {}\n",
                done.invocation.outcome,
                done.invocation.error.unwrap_or_default()
            ),
        ),
        Err(e @ InvokeError::Throttled { .. }) => {
            text(StatusCode::TOO_MANY_REQUESTS, format!("{e}\n"))
        }
        Err(e @ InvokeError::Disabled(_)) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Err(InvokeError::Store(e)) => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
