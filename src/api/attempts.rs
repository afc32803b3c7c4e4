//! A delivery's attempts: `POST .../attempts` records one, exactly per the
//! record-attempt contract (`docs/DESIGN.md` §1), and answers the parent
//! event with all its deliveries. Reading them back is [`super::history`].
//!
//! The contract is the authority here: no rule beyond it refuses an attempt.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};
use projections::{Command, JsonObject};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::deliveries::not_found;
use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, IdempotencyKey, IfMatch, Validated, ValidatedJson};
use super::input::{Errors, Field, integer, object, text, type_name};
use super::{AppState, etag, event_answer, reply_event};
use crate::ledger::Outcome;
use crate::limits::{Limits, name};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/attempts",
            get(super::history::history).post(record),
        )
        .route(
            "/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/events",
            get(super::history::raw_events),
        )
}

/// The record-attempt body as sent; unknown fields are ignored, not recorded.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptBody {
    #[serde(default)]
    status: Field,
    #[serde(default)]
    response_status_code: Field,
    #[serde(default)]
    response_body: Field,
    #[serde(default)]
    last_error: Field,
    #[serde(default)]
    next_retry_at: Field,
}

/// An attempt that satisfies the contract.
#[derive(Debug)]
pub struct Attempt {
    status: AttemptStatus,
    response_status_code: Option<HttpStatusCode>,
    response_body: Option<JsonObject>,
    last_error: Option<NonEmptyString>,
    next_retry_at: Option<RetryAt>,
}

impl Validated for Attempt {
    type Dto = AttemptBody;

    fn validate(body: AttemptBody, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let status = errors.take(body.status.required("status").and_then(attempt_status));
        let code = errors.take(
            body.response_status_code
                .nullable()
                .map(status_code)
                .transpose(),
        );
        let response_body = errors.take(
            body.response_body
                .optional()
                .map(|v| object("responseBody", v))
                .transpose(),
        );
        let last_error = errors.take(
            body.last_error
                .nullable()
                .map(|v| last_error(v, limits))
                .transpose(),
        );
        let retry = errors.take(body.next_retry_at.nullable().map(retry_at).transpose());
        let (Some(status), Some(code), Some(response_body), Some(last_error), Some(retry)) =
            (status, code, response_body, last_error, retry)
        else {
            return Err(errors.into_vec());
        };
        Ok(Attempt {
            status,
            response_status_code: code,
            response_body,
            last_error,
            next_retry_at: retry,
        })
    }
}

/// The string a field holds, or `None` for another kind of value.
fn string(value: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(value.get()).ok()
}

fn attempt_status(value: &RawValue) -> Result<AttemptStatus, FieldError> {
    let message = "must be one of pending, retry_scheduled, delivered, failed";
    match string(value) {
        Some(s) => AttemptStatus::parse(&s).ok_or_else(|| FieldError::new("status", message)),
        None => Err(FieldError::new(
            "status",
            format!("{message}, not {}", type_name(value)),
        )),
    }
}

fn status_code(value: &RawValue) -> Result<HttpStatusCode, FieldError> {
    const NAME: &str = "responseStatusCode";
    let code = integer(NAME, value)
        .map_err(|e| FieldError::new(NAME, format!("{} or null", e.message)))?;
    HttpStatusCode::parse(code).ok_or_else(|| FieldError::new(NAME, "must be from 100 to 599"))
}

fn last_error(value: &RawValue, limits: &Limits) -> Result<NonEmptyString, FieldError> {
    const NAME: &str = "lastError";
    if type_name(value) != "a string" {
        return Err(FieldError::new(
            NAME,
            format!("must be a string or null, not {}", type_name(value)),
        ));
    }
    let max = super::input::Max::new(limits.last_error_length, name::LAST_ERROR_LENGTH);
    let text = text(NAME, value, max)?;
    NonEmptyString::parse(text).ok_or_else(|| FieldError::new(NAME, "must not be empty"))
}

fn retry_at(value: &RawValue) -> Result<RetryAt, FieldError> {
    const NAME: &str = "nextRetryAt";
    let message = "must be a UTC date-time with a literal Z, like 2023-11-07T05:31:56Z, or null";
    match string(value) {
        Some(s) => RetryAt::parse(&s).ok_or_else(|| FieldError::new(NAME, message)),
        None => Err(FieldError::new(
            NAME,
            format!("{message}, not {}", type_name(value)),
        )),
    }
}

async fn record(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    if_match: IfMatch,
    idempotency: IdempotencyKey,
    body: ValidatedJson<Attempt>,
) -> Result<Response, ApiError> {
    super::observe::name("delivery", &id.0);
    let org = &caller.organization_id;
    let delivery_id = id.0;
    let version =
        |state: &AppState| state.read(|v| Ok(v.delivery(org, &delivery_id)?.map(|d| d.version)));
    let mut version_now = version(&state)?;
    if version_now.is_none() {
        // The delivery may have been created through another process sharing
        // the store, and not be in this one's model yet.
        version_now = state
            .look_up(&caller, &delivery_id, || version(&state))
            .await?;
    }
    let Some(version_now) = version_now else {
        return Err(not_found(&delivery_id));
    };
    let ctx = caller.context_for(idempotency, &body);
    let attempt = body.value;
    let command = Command::RecordAttempt {
        delivery_id,
        organization_id: org.clone(),
        status: attempt.status,
        response_status_code: attempt.response_status_code,
        response_body: attempt.response_body,
        last_error: attempt.last_error,
        next_retry_at: attempt.next_retry_at,
    };
    let written = state
        .execute(command, &ctx, if_match.expected(Some(version_now)))
        .await?;
    let replayed = written.outcome == Outcome::Replayed;
    // The answer is the event as it stood right after this attempt, whatever
    // landed since: the ledger reads it so.
    let (snapshot, version) = event_answer(written)?;
    // The contract's answer has `payload` an object, erased or not.
    let mut response = reply_event(StatusCode::OK, &snapshot.for_contract(), replayed);
    response
        .headers_mut()
        .insert(header::ETAG, etag(version.unwrap_or(0)));
    Ok(response)
}
