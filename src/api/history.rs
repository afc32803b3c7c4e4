//! Reading a delivery's stream: `GET .../attempts`, the attempt history
//! oldest first, and `GET .../events`, the raw hash-chained stream for
//! auditors. Both show each event's organization `sequence`, never the
//! global position: a tenant must not learn other tenants' volume.

use axum::extract::State;
use axum::response::Response;
use projections::event::stream;
use projections::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};
use projections::{Body, Event};
use serde::Serialize;
use serde_json::value::RawValue;

use super::AppState;
use super::content::{self, ContentView};
use super::deliveries::not_found;
use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, Params};
use super::input::Errors;
use super::page::{Page, PageBody, write_json};
use crate::model::View;
use crate::store::RecordedEvent;

/// One attempt as the sender reported it, with its place in its stream and
/// in its organization's sequence.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AttemptView {
    pub attempt_number: u64,
    pub status: AttemptStatus,
    pub response_status_code: Option<HttpStatusCode>,
    /// `null` when none was reported, and once erased.
    pub response_body: Option<Body>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub response_body_erased: bool,
    pub last_error: Option<NonEmptyString>,
    pub next_retry_at: Option<RetryAt>,
    pub recorded_at: Timestamp,
    pub version: u64,
    pub sequence: u64,
    pub hash: String,
}

impl AttemptView {
    /// The attempt recorded by `stored`, the `sequence`-th event of its
    /// organization, with its response body as `view` lets it be served.
    pub fn of(view: &View, stored: &RecordedEvent, sequence: u64) -> Result<AttemptView, ApiError> {
        let recorded = view
            .decode_servable(stored)
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let Event::AttemptRecorded(attempt) = recorded.event else {
            return Err(ApiError::Internal(format!(
                "a {} event at position {} where an attempt was expected",
                stored.event_type, stored.position
            )));
        };
        Ok(AttemptView {
            attempt_number: stored.version + 1,
            status: attempt.status,
            response_status_code: attempt.response_status_code,
            response_body_erased: attempt.response_body.as_ref().is_some_and(Body::is_erased),
            response_body: attempt.response_body,
            last_error: attempt.last_error,
            next_retry_at: attempt.next_retry_at,
            recorded_at: recorded.recorded_at,
            version: stored.version,
            sequence,
            hash: hex::encode(stored.hash),
        })
    }
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
    sequence: u64,
    recorded_at: Timestamp,
    data: &'a RawValue,
    metadata: &'a RawValue,
    prev_hash: String,
    hash: String,
    content: Option<ContentView<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    content_erased: bool,
}

/// A page of the delivery's stream, oldest first, after checking the delivery
/// is the caller's (the stream name alone would cross organizations). Events
/// are read a few at a time, more once they prove small, and each is written
/// by `write`, with its organization's sequence number, until the page is
/// full: a page of large events never holds more of them in memory than it
/// answers with, and a few more.
async fn stream_page(
    state: &AppState,
    caller: &Caller,
    delivery_id: &str,
    params: &Params,
    kind: &str,
    mut write: impl FnMut(&RecordedEvent, u64, &mut Vec<u8>) -> Result<(), ApiError>,
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
        let sequences = sequences(state, org, delivery_id, &events).await?;
        for (event, sequence) in events.iter().zip(sequences) {
            let mut failed = None;
            let taken = body.offer(&event.version.to_string(), |out| {
                failed = write(event, sequence, out).err();
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

/// The organization's sequence numbers of `events` of a delivery's stream,
/// read from the model once it has folded them (it may lag the log by the
/// moment a fold takes).
async fn sequences(
    state: &AppState,
    org: &str,
    delivery_id: &str,
    events: &[RecordedEvent],
) -> Result<Vec<u64>, ApiError> {
    let Some(last) = events.last() else {
        return Ok(Vec::new());
    };
    state
        .node()
        .projector
        .wait_for(last.position)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    state.read(|v| {
        events
            .iter()
            .map(|e| {
                let attempt = v.attempt(org, delivery_id, e.version)?;
                attempt.map(|a| a.sequence).ok_or_else(|| {
                    crate::model::Error::Inconsistent(format!(
                        "attempt {} of {delivery_id} is in the log but not in the model",
                        e.version
                    ))
                })
            })
            .collect()
    })
}

pub(super) async fn history(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
    super::observe::name("delivery", &id.0);
    let view = state.view()?;
    stream_page(
        &state,
        &caller,
        &id.0,
        &params,
        "attempts",
        |stored, sequence, out| {
            write_json(out, &AttemptView::of(&view, stored, sequence)?);
            Ok(())
        },
    )
    .await
}

pub(super) async fn raw_events(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
    super::observe::name("delivery", &id.0);
    let view = state.view()?;
    stream_page(
        &state,
        &caller,
        &id.0,
        &params,
        "events",
        |e, sequence, out| {
            fn raw(bytes: &[u8], position: u64) -> Result<&RawValue, ApiError> {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
                    .ok_or_else(|| {
                        ApiError::Unavailable(format!("stored event {position} is not JSON"))
                    })
            }
            let shown = view
                .shown_content(e)
                .map_err(|err| ApiError::Unavailable(err.to_string()))?;
            let (content, content_erased) = content::fields(shown, e.position)?;
            write_json(
                out,
                &RawEvent {
                    content,
                    content_erased,
                    data: raw(&e.data, e.position)?,
                    metadata: raw(&e.metadata, e.position)?,
                    stream: &e.stream,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    version: e.version,
                    sequence,
                    recorded_at: Timestamp::from_micros(e.recorded_at),
                    prev_hash: hex::encode(e.prev_hash),
                    hash: hex::encode(e.hash),
                },
            );
            Ok(())
        },
    )
    .await
}
