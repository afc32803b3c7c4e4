//! The API's one error type and its one rendering: every non-2xx answer is an
//! `application/problem+json` body `{type, title, status, detail, errors}`.
//!
//! Internal causes (store I/O, a stopped projector) are logged here with the
//! request id and never put in the body: a client learns what to do, not how the
//! server is built.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::ledger;
use crate::limits::Exceeded;
use crate::store;
use projections::Rejection;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// How long a client should wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// One invalid input: the field, header, parameter or `body` it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; every offending field is named.
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    /// 401: no usable `authorization: Bearer` key (missing, malformed, unknown or revoked).
    #[error("a valid API key is required")]
    Unauthorized,
    /// 403: the key belongs to another organization than `x-organization-id`.
    #[error("this API key does not belong to the organization in x-organization-id")]
    Forbidden,
    /// 404: no such resource in this organization (another one's is not found either).
    #[error("{0}")]
    NotFound(String),
    /// 404: no route has this path.
    #[error("no route matches {0}")]
    NoRoute(String),
    /// 405: the route exists but not with this method.
    #[error("{0} is not allowed on this route")]
    MethodNotAllowed(String),
    /// 408: the request body did not arrive within the client timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: the `Idempotency-Key` was already used with a different body.
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    /// 409: the write would take the organization past one of its limits
    /// (endpoints, or deliveries per event); the field and the limit are named.
    #[error("{0}")]
    LimitExceeded(Exceeded),
    /// 412: `If-Match` names a version the delivery is no longer at; nothing was appended.
    #[error("the delivery is at version {current}, not {expected}")]
    PreconditionFailed { expected: u64, current: u64 },
    /// 413: the request body is over the limit (or would make an oversized event).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 414: the request target is over the 64 KB hyper reads.
    #[error("the request target (path and query) is over 64 KB")]
    UriTooLong,
    /// 415: POST and PATCH take `application/json` (PATCH also `application/merge-patch+json`).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429: too many requests with unknown keys or ids, which cost the store
    /// a lookup each; retry after `retry_after` seconds.
    #[error("{what}; retry in {retry_after} s")]
    TooManyRequests { what: String, retry_after: u64 },
    /// 431: more headers, or longer ones, than the server reads.
    #[error("the request headers are too many or too large")]
    HeaderFieldsTooLarge,
    /// 503: the store or the read model cannot serve now; the cause is only logged.
    #[error("the ledger is temporarily unavailable; retry shortly")]
    Unavailable(String),
    /// 500: a bug on our side; the cause is only logged.
    #[error("an internal error occurred")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    errors: &'a [FieldError],
}

impl ApiError {
    /// A 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::IdempotencyKeyReused | ApiError::LimitExceeded(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Invalid(_) => ("/problems/invalid-request", "Invalid request"),
            ApiError::Unauthorized => ("/problems/unauthorized", "Unauthorized"),
            ApiError::Forbidden => ("/problems/forbidden", "Forbidden"),
            ApiError::NotFound(_) | ApiError::NoRoute(_) => ("/problems/not-found", "Not found"),
            ApiError::MethodNotAllowed(_) => ("/problems/method-not-allowed", "Method not allowed"),
            ApiError::RequestTimeout(_) => ("/problems/request-timeout", "Request timeout"),
            ApiError::IdempotencyKeyReused => {
                ("/problems/idempotency-key-reused", "Idempotency key reused")
            }
            ApiError::LimitExceeded(_) => ("/problems/limit-exceeded", "Limit exceeded"),
            ApiError::PreconditionFailed { .. } => {
                ("/problems/precondition-failed", "Precondition failed")
            }
            ApiError::PayloadTooLarge(_) => ("/problems/payload-too-large", "Payload too large"),
            ApiError::UriTooLong => ("/problems/uri-too-long", "URI too long"),
            ApiError::UnsupportedMediaType(_) => {
                ("/problems/unsupported-media-type", "Unsupported media type")
            }
            ApiError::TooManyRequests { .. } => {
                ("/problems/too-many-requests", "Too many requests")
            }
            ApiError::HeaderFieldsTooLarge => (
                "/problems/header-fields-too-large",
                "Request header fields too large",
            ),
            ApiError::Unavailable(_) => ("/problems/unavailable", "Service unavailable"),
            ApiError::Internal(_) => ("/problems/internal", "Internal error"),
        }
    }
}

impl From<ledger::Error> for ApiError {
    fn from(e: ledger::Error) -> Self {
        match e {
            ledger::Error::Rejected(Rejection::DeliveryNotFound(id)) => {
                ApiError::NotFound(format!("no outbound webhook delivery {id}"))
            }
            ledger::Error::Rejected(Rejection::EndpointNotFound(id)) => {
                ApiError::NotFound(format!("no outbound webhook endpoint {id}"))
            }
            ledger::Error::Rejected(Rejection::EventNotFound(id)) => {
                ApiError::NotFound(format!("no outbound webhook event {id}"))
            }
            ledger::Error::Rejected(other) => {
                ApiError::Internal(format!("unexpected rejection: {other}"))
            }
            ledger::Error::PreconditionFailed { expected, current } => {
                ApiError::PreconditionFailed { expected, current }
            }
            ledger::Error::IdempotencyKeyReused => ApiError::IdempotencyKeyReused,
            ledger::Error::LimitExceeded(e) => ApiError::LimitExceeded(e),
            ledger::Error::Store(e) => e.into(),
            ledger::Error::Projector(e) => ApiError::Unavailable(e.to_string()),
            ledger::Error::Model(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            // Only an event grown past the store's limit gets here from a request:
            // the body was within 1 MiB but its canonical form is not, or the
            // store's own limit is lower (KurrentDB's maximum append size). The
            // reason names sizes and limits only.
            store::Error::Invalid(reason) => {
                tracing::warn!(%reason, "the store refused an append");
                ApiError::PayloadTooLarge(format!(
                    "the request would record an event over the store's size limit: {reason}"
                ))
            }
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

impl ApiError {
    /// The detail line: what went wrong, never how the server is built.
    fn detail(&self) -> String {
        match self {
            ApiError::Unavailable(cause) => {
                tracing::error!(%cause, "answering 503");
                self.to_string()
            }
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "answering 500");
                self.to_string()
            }
            ApiError::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        }
    }

    /// The fields a problem names: a limit names the one it holds.
    fn errors(&self) -> Cow<'_, [FieldError]> {
        match self {
            ApiError::Invalid(errors) => Cow::Borrowed(errors),
            ApiError::LimitExceeded(e) => {
                Cow::Owned(vec![FieldError::new(e.field, e.message.clone())])
            }
            _ => Cow::Borrowed(&[]),
        }
    }

    /// The problem+json body of this error.
    pub fn problem_body(&self) -> Vec<u8> {
        let (kind, title) = self.kind_and_title();
        problem_body(self.status(), kind, title, self.detail(), &self.errors())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = problem_response(status, self.problem_body());
        let headers = response.headers_mut();
        match self {
            ApiError::Unavailable(_) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            ApiError::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// A problem response for a bare status produced outside our handlers (a layer's
/// rejection), so every non-2xx keeps the one shape.
pub fn problem_for_status(status: StatusCode, path: &str) -> Response {
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::NoRoute(path.to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed("this method".into()),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("the request body is over 1 MiB".into())
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("unsupported content type".into())
        }
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
        StatusCode::FORBIDDEN => ApiError::Forbidden,
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable(format!("a layer answered {status}"))
        }
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::Internal(format!("a layer answered {status} on {path}"))
        }
        s => {
            let title = s.canonical_reason().unwrap_or("Error");
            return problem(s, "about:blank", title, title.to_owned(), &[]);
        }
    };
    error.into_response()
}

fn problem(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: String,
    errors: &[FieldError],
) -> Response {
    problem_response(status, problem_body(status, kind, title, detail, errors))
}

fn problem_body(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: String,
    errors: &[FieldError],
) -> Vec<u8> {
    serde_json::to_vec(&Problem {
        kind,
        title,
        status: status.as_u16(),
        detail,
        errors,
    })
    .unwrap_or_default()
}

fn problem_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}
