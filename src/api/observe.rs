//! The one middleware every request passes: it assigns the request id (the
//! client's `x-request-id` if usable, else a fresh one), opens the span every log
//! line of the request sits in, records the request metrics by route template,
//! echoes the id back, and turns any non-2xx that is not already a problem (a
//! layer's bare status) into `application/problem+json`. A path with an empty
//! segment goes no further: it is an unknown route.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::error::{ApiError, PROBLEM_JSON, problem_for_status};

pub const REQUEST_ID: &str = "x-request-id";
const MAX_REQUEST_ID: usize = 128;

/// The request's id, for logs and event metadata.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| crate::ledger::new_id("req"));
    request.extensions_mut().insert(RequestId(id.clone()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);

    // A path with an empty segment (`/v1/outbound-webhook-deliveries//attempts`)
    // names no resource. The router would hand `{id}` the empty string, and the
    // answer would depend on which check ran first (a key for another
    // organization got 403); it is the unknown route it is.
    let mut response = if path.contains("//") {
        ApiError::NoRoute(path.clone()).into_response()
    } else {
        next.run(request).instrument(span.clone()).await
    };

    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if (status.is_client_error() || status.is_server_error()) && !is_problem {
        let _entered = span.enter();
        response = problem_for_status(status, &path);
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let elapsed = started.elapsed();
    state
        .metrics()
        .record_request(&route, method.as_str(), status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    response
}
