//! `GET /v1/outbound-webhook-attempts`: the organization's attempts across
//! all its deliveries, newest first, filtered by delivery, event, endpoint,
//! status, response code or its class, and time: "why didn't my webhook
//! arrive?" asked of an endpoint or a time window.
//!
//! The model finds the page in its attempt indexes (`crate::model`'s
//! attempt list); the items' response bodies, errors, retry times and hashes
//! are read from the log, where the attempts' events are, in one read for
//! the page. Each event read must be the attempt the model named: an index
//! entry that points at another event is refused, never served.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use projections::event::stream;
use serde::Serialize;

use super::AppState;
use super::deliveries::{id_param, status_param};
use super::error::{ApiError, FieldError};
use super::events::timestamp;
use super::extract::{Caller, Params};
use super::history::AttemptView;
use super::input::Errors;
use super::page::{Page, PageBody, write_json};
use crate::model::{AttemptFilter, AttemptMark};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/outbound-webhook-attempts", get(list))
}

/// The cursors of this list.
const KIND: &str = "att";

/// An attempt with the delivery, event and endpoint it belongs to.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedAttempt<'a> {
    delivery_id: &'a str,
    event_id: &'a str,
    endpoint_id: &'a str,
    #[serde(flatten)]
    attempt: AttemptView,
}

fn read_filter(params: &Params, errors: &mut Errors) -> AttemptFilter {
    let status = errors.take(status_param(params)).flatten();
    let response_status_code = errors
        .take(params.get("responseStatusCode").and_then(|v| {
            v.map(|s| {
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| {
                        FieldError::new("responseStatusCode", "must be an integer from 100 to 599")
                    })
            })
            .transpose()
        }))
        .flatten();
    let status_class = errors
        .take(params.get("statusCodeClass").and_then(|v| {
            v.map(|s| match s.as_bytes() {
                [d @ b'1'..=b'5', b'x', b'x'] => Ok(d - b'0'),
                _ => Err(FieldError::new(
                    "statusCodeClass",
                    "must be one of 1xx, 2xx, 3xx, 4xx, 5xx",
                )),
            })
            .transpose()
        }))
        .flatten();
    if response_status_code.is_some() && status_class.is_some() {
        errors.push(FieldError::new(
            "statusCodeClass",
            "cannot be combined with responseStatusCode: give one or the other",
        ));
    }
    let recorded_after = errors.take(timestamp(params, "recordedAfter")).flatten();
    let recorded_before = errors.take(timestamp(params, "recordedBefore")).flatten();
    AttemptFilter {
        delivery_id: errors.take(id_param(params, "deliveryId")).flatten(),
        event_id: errors.take(id_param(params, "eventId")).flatten(),
        endpoint_id: errors.take(id_param(params, "endpointId")).flatten(),
        status,
        response_status_code,
        status_class,
        recorded_after,
        recorded_before,
    }
}

/// A cursor names the last attempt of a page: `recordedAt.sequence`.
fn mark_text(mark: AttemptMark) -> String {
    format!("{}.{}", mark.recorded_at, mark.sequence)
}

fn read_mark(page: &Page, errors: &mut Errors) -> Option<AttemptMark> {
    let text = page.after.as_deref()?;
    let mark = text.split_once('.').and_then(|(at, sequence)| {
        Some(AttemptMark {
            recorded_at: at.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    });
    if mark.is_none() {
        errors.push(FieldError::new(
            "cursor",
            "is not a cursor this list gave out",
        ));
    }
    mark
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let filter = read_filter(&params, &mut errors);
    let page = Page::read(&params, KIND, &mut errors);
    let before = read_mark(&page, &mut errors);
    errors.check()?;
    let org = &caller.organization_id;
    let listed = state.read(|v| v.attempt_list(org, &filter, page.limit, before))?;
    let positions: Vec<u64> = listed.items.iter().map(|a| a.position).collect();
    let stored = state.node().store.read_positions(&positions).await?;
    let view = state.view()?;
    let mut body = PageBody::new(&page, state.limits().page_bytes);
    for (attempt, stored) in listed.items.iter().zip(&stored) {
        if stored.version != attempt.version
            || stored.stream != stream::delivery(&attempt.delivery_id)
        {
            return Err(ApiError::Unavailable(
                crate::model::Error::Inconsistent(format!(
                    "the model places attempt {} of {} at position {}, which holds version {} of {}",
                    attempt.version,
                    attempt.delivery_id,
                    attempt.position,
                    stored.version,
                    stored.stream
                ))
                .to_string(),
            ));
        }
        let item = ListedAttempt {
            delivery_id: &attempt.delivery_id,
            event_id: &attempt.event_id,
            endpoint_id: &attempt.endpoint_id,
            attempt: AttemptView::of(&view, stored, attempt.sequence)?,
        };
        let cursor = mark_text(AttemptMark::of(attempt));
        if !body.offer(&cursor, |out| write_json(out, &item)) {
            return Ok(body.into_response(KIND));
        }
    }
    body.go_on_at(listed.next.map(mark_text));
    Ok(body.into_response(KIND))
}
