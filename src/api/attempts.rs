//! A delivery's attempts: `POST .../attempts` records one, exactly per the
//! record-attempt contract (`docs/DESIGN.md` §1), and answers the parent
//! event with all its deliveries; `GET .../attempts` is the history oldest first;
//! `GET .../events` is the raw hash-chained stream for auditors.
//!
//! The contract is the authority here: no rule beyond it refuses an attempt.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use projections::event::stream;
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};
use projections::{Command, Event, JsonObject};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::instrument;

use super::deliveries::not_found;
use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, IdempotencyKey, IfMatch, Params, Validated, ValidatedJson};
use super::input::{Errors, Field, integer, object, text, type_name};
use super::page::{Page, PageBody, write_json};
use super::{AppState, etag, event_answer, reply_event};
use crate::ledger::Outcome;
use crate::limits::{Limits, name};
use crate::store::RecordedEvent;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/attempts",
            get(history).post(record),
        )
        .route(
            "/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/events",
            get(raw_events),
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

#[instrument(skip_all, fields(org = %caller.organization_id, delivery = %id.0))]
async fn record(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    if_match: IfMatch,
    idempotency: IdempotencyKey,
    body: ValidatedJson<Attempt>,
) -> Result<Response, ApiError> {
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
    let mut response = reply_event(StatusCode::OK, &snapshot, replayed);
    response
        .headers_mut()
        .insert(header::ETAG, etag(version.unwrap_or(0)));
    Ok(response)
}

/// One attempt as the sender reported it, with its place in the log.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    attempt_number: u64,
    status: AttemptStatus,
    response_status_code: Option<HttpStatusCode>,
    response_body: Option<JsonObject>,
    last_error: Option<NonEmptyString>,
    next_retry_at: Option<RetryAt>,
    recorded_at: Timestamp,
    version: u64,
    position: u64,
    hash: String,
}

/// One stored event, bytes as hashed, for an auditor to verify.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent<'a> {
    stream: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema_version: u32,
    version: u64,
    position: u64,
    recorded_at: Timestamp,
    data: &'a RawValue,
    metadata: &'a RawValue,
    prev_hash: String,
    hash: String,
}

/// A page of the delivery's stream, oldest first, after checking the delivery
/// is the caller's (the stream name alone would cross organizations). Events
/// are read a few at a time, more once they prove small, and each is written
/// by `write` until the page is full: a page of large events never holds more
/// of them in memory than it answers with, and a few more.
async fn stream_page(
    state: &AppState,
    caller: &Caller,
    delivery_id: &str,
    params: &Params,
    kind: &str,
    mut write: impl FnMut(&RecordedEvent, &mut Vec<u8>) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let page = Page::read(params, kind, &mut errors);
    let mut from = match &page.after {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(last) => last + 1,
            Err(_) => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this list gave out",
                ));
                0
            }
        },
    };
    errors.check()?;
    let org = &caller.organization_id;
    let exists = state.read(|v| Ok(v.delivery(org, delivery_id)?.is_some()))?;
    if !exists {
        return Err(not_found(delivery_id));
    }
    let stream = stream::delivery(delivery_id);
    let mut body = PageBody::new(&page, state.limits().page_bytes);
    let mut chunk = 4;
    loop {
        // One past the limit, to know whether a next page starts there.
        let want = chunk.min(page.limit + 1 - body.len());
        let events = state.node().store.read_stream(&stream, from, want).await?;
        for event in &events {
            let mut failed = None;
            let taken = body.offer(&event.version.to_string(), |out| {
                failed = write(event, out).err();
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if !taken {
                return Ok(body.into_response(kind));
            }
            from = event.version + 1;
        }
        if events.len() < want {
            return Ok(body.into_response(kind));
        }
        chunk = (chunk * 4).min(64);
    }
}

#[instrument(skip_all, fields(org = %caller.organization_id, delivery = %id.0))]
async fn history(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
    stream_page(
        &state,
        &caller,
        &id.0,
        &params,
        "attempts",
        |stored, out| {
            let recorded =
                crate::model::decode(stored).map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let Event::AttemptRecorded(attempt) = recorded.event else {
                return Err(ApiError::Internal(format!(
                    "a {} event in the stream of delivery {}",
                    stored.event_type, id.0
                )));
            };
            write_json(
                out,
                &AttemptView {
                    attempt_number: stored.version + 1,
                    status: attempt.status,
                    response_status_code: attempt.response_status_code,
                    response_body: attempt.response_body,
                    last_error: attempt.last_error,
                    next_retry_at: attempt.next_retry_at,
                    recorded_at: recorded.recorded_at,
                    version: stored.version,
                    position: stored.position,
                    hash: hex::encode(stored.hash),
                },
            );
            Ok(())
        },
    )
    .await
}

#[instrument(skip_all, fields(org = %caller.organization_id, delivery = %id.0))]
async fn raw_events(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
    stream_page(&state, &caller, &id.0, &params, "events", |e, out| {
        fn raw(bytes: &[u8], position: u64) -> Result<&RawValue, ApiError> {
            std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
                .ok_or_else(|| {
                    ApiError::Unavailable(format!("stored event {position} is not JSON"))
                })
        }
        write_json(
            out,
            &RawEvent {
                data: raw(&e.data, e.position)?,
                metadata: raw(&e.metadata, e.position)?,
                stream: &e.stream,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                version: e.version,
                position: e.position,
                recorded_at: Timestamp::from_micros(e.recorded_at),
                prev_hash: hex::encode(e.prev_hash),
                hash: hex::encode(e.hash),
            },
        );
        Ok(())
    })
    .await
}
