//! Extractors whose rejection is always [`ApiError`]: the caller's identity
//! (bearer key + `x-organization-id`), a validated JSON body, path ids, query
//! parameters, `If-Match` and `Idempotency-Key`.
//!
//! Handlers never see axum's own rejections, so no input reaches a client as a
//! plain-text error or a 500.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use projections::ApiKey;
use projections::canonical::{self, Reason};
use projections::event::Idempotency;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, FieldError};
use super::fair::AdmittedKey;
use super::observe::RequestId;
use crate::ledger::Context;
use crate::limits::{self, Limits};

/// An authenticated caller acting in its own organization.
#[derive(Debug, Clone)]
pub struct Caller {
    pub organization_id: String,
    pub key_id: String,
    pub request_id: Option<String>,
}

impl Caller {
    /// The ledger context for a write by this caller, without a body.
    pub fn context(&self, idempotency: Option<Idempotency>) -> Context {
        Context {
            organization_id: self.organization_id.clone(),
            key_id: Some(self.key_id.clone()),
            request_id: self.request_id.clone(),
            idempotency,
            request_sha256_as_sent: None,
        }
    }

    /// The ledger context for a write of `body` by this caller: an
    /// `Idempotency-Key` is bound to the body's canonical form.
    pub fn context_for<T>(&self, idempotency: IdempotencyKey, body: &ValidatedJson<T>) -> Context {
        let bound = idempotency.bind(&body.sha256);
        Context {
            request_sha256_as_sent: bound.as_ref().map(|_| body.sha256_as_sent.clone()),
            ..self.context(bound)
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers);
        // Fair admission looked the key up already when it knew it.
        let admitted = parts.extensions.get::<AdmittedKey>().map(|k| k.0.clone());
        let known = match (admitted, token) {
            (Some(key), _) => Some(key),
            (None, Some(t)) => state.ledger().authenticate(t)?,
            (None, None) => None,
        };
        let key = match known {
            Some(key) => key,
            None => authenticate_unknown(parts, state, token).await?,
        };
        let organization = parts
            .headers
            .get("x-organization-id")
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()
            .map_err(|_| ApiError::field("x-organization-id", "must be visible ASCII"))?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::field("x-organization-id", "is required"))?;
        if organization != key.organization_id {
            return Err(ApiError::Forbidden);
        }
        super::observe::name("org", &organization);
        Ok(Caller {
            organization_id: organization,
            key_id: key.id,
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
        })
    }
}

/// The token of an `authorization: Bearer` header, if there is a non-empty one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
}

/// A key this node's model does not know (or none): it may have been issued
/// through another process sharing the store, so the store is asked, within
/// the client address's budget of such requests, unless the same key was
/// asked about in vain a moment ago.
async fn authenticate_unknown(
    parts: &Parts,
    state: &AppState,
    token: Option<&str>,
) -> Result<ApiKey, ApiError> {
    let address = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let throttle = state.throttle();
    throttle.charge_address(address)?;
    let token = token.ok_or(ApiError::Unauthorized)?;
    if throttle.recently_missed(&["key", token]) {
        return Err(ApiError::Unauthorized);
    }
    match state.ledger().authenticate_synced(token).await? {
        Some(key) => Ok(key),
        None => {
            throttle.missed(&["key", token]);
            Err(ApiError::Unauthorized)
        }
    }
}

/// A request DTO and the domain value it converts into ("parse, don't validate").
pub trait Validated: Sized {
    /// The body as sent: every field a [`super::input::Field`]; unknown fields are ignored.
    type Dto: DeserializeOwned;

    /// The domain value, or every field that is wrong; sizes are held to `limits`.
    fn validate(dto: Self::Dto, limits: &Limits) -> Result<Self, Vec<FieldError>>;
}

/// A JSON body, read strictly, converted to `T`, with the SHA-256 of its
/// canonical form: what an `Idempotency-Key` is bound to, so the same JSON with
/// its keys in another order or other whitespace is a repeat.
#[derive(Debug)]
pub struct ValidatedJson<T> {
    pub value: T,
    pub sha256: String,
    /// The SHA-256 of the bytes as sent, which earlier versions bound keys to.
    pub sha256_as_sent: String,
}

impl<T: Validated> FromRequest<AppState> for ValidatedJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        check_content_type(request.method(), request.headers())?;
        // A body trickled in byte by byte must not hold the request forever.
        let read = tokio::time::timeout(state.body_timeout(), Bytes::from_request(request, state));
        let bytes = read
            .await
            .map_err(|_| {
                ApiError::RequestTimeout("the request body did not arrive in time".into())
            })?
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge("the request body is over 1 MiB".into())
                } else {
                    ApiError::field("body", "could not be read")
                }
            })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::field(
                "body",
                format!("is not valid UTF-8 (at byte {})", e.valid_up_to()),
            )
        })?;
        // One strict pass: JSON as RFC 8259 has it, no key twice in an
        // object, bounded nesting; numbers and every value kept as sent.
        let body = canonical::from_text(text).map_err(|e| {
            let field = match (&e.reason, e.path()) {
                (Reason::Syntax { .. }, _) => "body".to_owned(),
                (_, path) if path.is_empty() => "body".to_owned(),
                (_, path) => path,
            };
            ApiError::field(field, e.reason.to_string())
        })?;
        let kind = canonical::kind(&body);
        if kind != "an object" {
            return Err(ApiError::field(
                "body",
                format!("must be a JSON object, not {kind}"),
            ));
        }
        let dto: T::Dto = serde_json::from_str(&body).map_err(|e| {
            ApiError::field("body", format!("does not have the expected shape: {e}"))
        })?;
        let value = T::validate(dto, &state.limits()).map_err(ApiError::Invalid)?;
        Ok(ValidatedJson {
            value,
            sha256: hex::encode(Sha256::digest(body.as_bytes())),
            sha256_as_sent: hex::encode(Sha256::digest(&bytes)),
        })
    }
}

/// 415 unless the body is JSON: `application/json` (any parameters), and for PATCH
/// also `application/merge-patch+json`.
fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let accepted = match essence.as_deref() {
        Some("application/json") => true,
        Some("application/merge-patch+json") => method == Method::PATCH,
        _ => false,
    };
    if accepted {
        return Ok(());
    }
    let expected = if method == Method::PATCH {
        "application/json or application/merge-patch+json"
    } else {
        "application/json"
    };
    Err(ApiError::UnsupportedMediaType(match essence {
        Some(got) => format!("content type {got} is not supported; send {expected}"),
        None => format!("a content-type header is required; send {expected}"),
    }))
}

/// The resource id in the path (`{id}`, `{outboundWebhookDeliveryId}`).
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::field("path", e.body_text()))?;
        Ok(Id(id))
    }
}

/// The query string as name/value pairs, decoded.
#[derive(Debug, Clone, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}

impl Params {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The parameter's value; given twice is ambiguous and refused.
    pub fn get(&self, name: &str) -> Result<Option<&str>, FieldError> {
        let values: Vec<&str> = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        match values.as_slice() {
            [] => Ok(None),
            [value] => Ok(Some(value)),
            _ => Err(FieldError::new(name, "must be given at most once")),
        }
    }
}

/// `Idempotency-Key`, with the route it was sent to (method and actual path).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: Option<String>,
    route: String,
}

impl IdempotencyKey {
    /// The record to store beside the write, bound to the request body's digest.
    pub fn bind(self, request_sha256: &str) -> Option<Idempotency> {
        self.key.map(|key| Idempotency {
            key,
            route: self.route,
            request_sha256: request_sha256.to_owned(),
        })
    }
}

impl FromRequestParts<AppState> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        const NAME: &str = "Idempotency-Key";
        let max = state.limits().idempotency_key_length;
        let key = match parts.headers.get(NAME) {
            None => None,
            Some(v) => {
                let key = v
                    .to_str()
                    .map_err(|_| ApiError::field(NAME, "must be visible ASCII"))?;
                if key.is_empty() || key.chars().count() > max {
                    return Err(ApiError::field(
                        NAME,
                        format!(
                            "must be 1 to {max} characters (limit {})",
                            limits::name::IDEMPOTENCY_KEY_LENGTH
                        ),
                    ));
                }
                Some(key.to_owned())
            }
        };
        Ok(IdempotencyKey {
            key,
            route: format!("{} {}", parts.method, parts.uri.path()),
        })
    }
}

/// `If-Match`: the delivery versions the client accepts; `None` for absent or `*`.
#[derive(Debug, Clone, Default)]
pub struct IfMatch(pub Option<Vec<u64>>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        const NAME: &str = "If-Match";
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let invalid = || ApiError::field(NAME, "must be \"*\" or a version like \"3\"");
        let value = value.to_str().map_err(|_| invalid())?.trim();
        if value == "*" {
            return Ok(IfMatch(None));
        }
        let versions = value
            .split(',')
            .map(|tag| {
                let tag = tag.trim();
                let bare = tag
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(tag);
                bare.parse::<u64>().map_err(|_| invalid())
            })
            .collect::<Result<Vec<u64>, ApiError>>()?;
        Ok(IfMatch(Some(versions)))
    }
}

impl IfMatch {
    /// Whether several tags were sent, so the one to use depends on the
    /// version the delivery is at.
    pub fn is_several(&self) -> bool {
        self.0.as_ref().is_some_and(|v| v.len() > 1)
    }

    /// The one version to hand the ledger: with several tags, the one the
    /// delivery is at now if listed (the ledger checks again atomically).
    pub fn expected(&self, current: Option<u64>) -> Option<u64> {
        let versions = self.0.as_ref()?;
        match current {
            Some(c) if versions.contains(&c) => Some(c),
            _ => versions.first().copied(),
        }
    }
}
