//! The one middleware every request passes: it assigns the request id (the
//! client's `x-request-id` if usable, else a fresh one), opens the span every log
//! line of the request sits in, records the request metrics by route template,
//! echoes the id back, and turns any non-2xx that is not already a problem (a
//! layer's bare status) into `application/problem+json`. A path with an empty
//! segment goes no further: it is an unknown route; nor does a request whose
//! head is refused on its own (no `Host`, two of them, a `Content-Length` over
//! the limit). Whatever a handler leaves of a request body is dealt with here
//! (see [`unread`]), so the connection stays usable or is said to close.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use tracing::Instrument;

use super::error::{ApiError, PROBLEM_JSON, problem_for_status};
use super::{AppState, MAX_BODY_BYTES, unread};

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
    // The route template, never the path: a label takes one value per route,
    // not one per id or per junk path a client makes up.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // One span a request. What it concerns is named on it as it becomes
    // known (`org` by the caller's key, the resource by its handler), so the
    // request's line and anything logged while it runs carry them.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        %method,
        %route,
        org = tracing::field::Empty,
        delivery = tracing::field::Empty,
        event = tracing::field::Empty,
        endpoint = tracing::field::Empty,
    );

    // A path with an empty segment (`/v1/outbound-webhook-deliveries//attempts`)
    // names no resource. The router would hand `{id}` the empty string, and the
    // answer would depend on which check ran first (a key for another
    // organization got 403); it is the unknown route it is.
    let mut response = if path.contains("//") {
        ApiError::NoRoute(path.clone()).into_response()
    } else if let Err(refused) = check_head(&request) {
        let mut response = refused.into_response();
        if !request.body().is_end_stream() {
            // The body stays unread: this connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    } else {
        let (request, leftover) = unread::track(request);
        let mut response = next.run(request).instrument(span.clone()).await;
        leftover.settle(&mut response).await;
        response
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
        .record_request(&route, method_label(&method), status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        );
    });
    response
}

/// The method as a metrics label: the standard ones by name, anything else
/// (a client may send any token as a method) as `other`, so no client can add
/// series to `/metrics`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// What the head alone refuses, before any handler runs:
///
/// - an HTTP/1.1 request must name its host exactly once (RFC 9112 §3.2), and
///   no request may name two;
/// - a `Content-Length` over the body limit is 413 at once, so a client that
///   sent `Expect: 100-continue` is not asked for a body it may not send, and
///   the connection closes rather than read it.
fn check_head(request: &Request) -> Result<(), ApiError> {
    let hosts = request.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
        return Err(ApiError::field(
            "Host",
            "an HTTP/1.1 request must have exactly one Host header",
        ));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(
            "the request body is over 1 MiB".into(),
        ));
    }
    Ok(())
}

/// Names what the current request concerns on its span: `field` is `org`,
/// `delivery`, `event` or `endpoint` (the span declares those; any other name
/// is ignored).
pub(crate) fn name(field: &'static str, value: &str) {
    tracing::Span::current().record(field, value);
}
