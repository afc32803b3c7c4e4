//! `/v1/outbound-webhook-deliveries`: list with filters, and get one delivery with
//! its `ETag` (stream version), optionally as it stood after its first
//! `?asOfVersion=N` events. With `nextRetryBefore=T` the list is the retry
//! queue: the deliveries whose latest attempt scheduled a retry due by `T`,
//! soonest first, which a dispatcher polls.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use projections::view::DeliveryView;
use projections::{AttemptStatus, Timestamp};

use super::error::{ApiError, FieldError};
use super::events::timestamp;
use super::extract::{Caller, Id, Params};
use super::input::Errors;
use super::page::{self, Page, PageBody, write_json};
use super::{AppState, etag};
use crate::model::{DeliveryFilter, RetryMark};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/outbound-webhook-deliveries", get(list))
        .route("/v1/outbound-webhook-deliveries/{id}", get(show))
}

pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no outbound webhook delivery {id}"))
}

#[derive(Debug, Default)]
struct Filters {
    status: Option<AttemptStatus>,
    endpoint_id: Option<String>,
    event_id: Option<String>,
}

impl Filters {
    fn read(params: &Params, errors: &mut Errors) -> Filters {
        let status = errors.take(status_param(params)).flatten();
        let endpoint_id = errors.take(id_param(params, "endpointId")).flatten();
        let event_id = errors.take(id_param(params, "eventId")).flatten();
        Filters {
            status,
            endpoint_id,
            event_id,
        }
    }

    fn to_model(&self) -> DeliveryFilter {
        DeliveryFilter {
            status: self.status,
            endpoint_id: self.endpoint_id.clone(),
            event_id: self.event_id.clone(),
        }
    }
}

/// `status`, an attempt's or a delivery's.
pub(super) fn status_param(params: &Params) -> Result<Option<AttemptStatus>, FieldError> {
    params.get("status")?.map_or(Ok(None), |s| {
        AttemptStatus::parse(s).map(Some).ok_or_else(|| {
            FieldError::new(
                "status",
                "must be one of pending, retry_scheduled, delivered, failed",
            )
        })
    })
}

pub(super) fn id_param(params: &Params, name: &str) -> Result<Option<String>, FieldError> {
    match params.get(name)? {
        Some("") => Err(FieldError::new(name, "must not be empty")),
        other => Ok(other.map(str::to_owned)),
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let filters = Filters::read(&params, &mut errors);
    let due_by = errors.take(timestamp(&params, "nextRetryBefore")).flatten();
    if let Some(due_by) = due_by {
        if filters
            .status
            .is_some_and(|s| s != AttemptStatus::RetryScheduled)
        {
            errors.push(FieldError::new(
                "status",
                "must be retry_scheduled (or absent) with nextRetryBefore",
            ));
        }
        let page = Page::read(&params, RETRY_KIND, &mut errors);
        let after = read_retry_mark(&page, &mut errors);
        errors.check()?;
        return retry_queue(&state, &caller, &filters, due_by, &page, after);
    }
    let page = Page::read(&params, "dlv", &mut errors);
    errors.check()?;
    let budget = state.limits().page_bytes;
    let listed = state.read(|v| {
        v.delivery_list(
            &caller.organization_id,
            &filters.to_model(),
            &page.to_model(),
        )
    })?;
    let body = page::of_listed(
        &page,
        budget,
        listed,
        |d| &d.id,
        |d, out| write_json(out, &DeliveryView::from(d)),
    );
    Ok(body.into_response("dlv"))
}

/// The cursors of the retry queue.
const RETRY_KIND: &str = "rtq";

/// A retry queue cursor: `due.deliveryId`, `due` in microseconds.
fn retry_mark_text(mark: &RetryMark) -> String {
    format!("{}.{}", mark.due, mark.delivery_id)
}

fn read_retry_mark(page: &Page, errors: &mut Errors) -> Option<RetryMark> {
    let text = page.after.as_deref()?;
    let mark = text.split_once('.').and_then(|(due, id)| {
        Some(RetryMark {
            due: due.parse().ok()?,
            delivery_id: id.to_owned(),
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

fn retry_queue(
    state: &AppState,
    caller: &Caller,
    filters: &Filters,
    due_by: Timestamp,
    page: &Page,
    after: Option<RetryMark>,
) -> Result<Response, ApiError> {
    let org = &caller.organization_id;
    let queue = state
        .read(|v| v.retry_queue(org, due_by, page.limit, after.as_ref(), &filters.to_model()))?;
    let mut body = PageBody::new(page, state.limits().page_bytes);
    for delivery in &queue.items {
        let cursor = retry_mark_text(&RetryMark::of(delivery));
        if !body.offer(&cursor, |out| {
            write_json(out, &DeliveryView::from(delivery))
        }) {
            return Ok(body.into_response(RETRY_KIND));
        }
    }
    body.go_on_at(queue.next.as_ref().map(retry_mark_text));
    Ok(body.into_response(RETRY_KIND))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
    super::observe::name("delivery", &id.0);
    let org = &caller.organization_id;
    let as_of = params
        .get("asOfVersion")
        .and_then(|v| {
            v.map(|n| {
                n.parse::<u64>()
                    .map_err(|_| FieldError::new("asOfVersion", "must be a non-negative integer"))
            })
            .transpose()
        })
        .map_err(|e| ApiError::Invalid(vec![e]))?;
    let (current, then) = state.read(|v| {
        let Some(current) = v.delivery(org, &id.0)? else {
            return Ok((None, None));
        };
        let then = match as_of {
            Some(n) if n < current.version => v.delivery_at_version(org, &id.0, n)?,
            _ => None,
        };
        Ok((Some(current), then))
    })?;
    let current = current.ok_or_else(|| not_found(&id.0))?;
    let delivery = match as_of {
        Some(n) if n > current.version => {
            return Err(ApiError::field(
                "asOfVersion",
                format!(
                    "must be at most {}, the delivery's version",
                    current.version
                ),
            ));
        }
        Some(n) if n < current.version => then.ok_or_else(|| not_found(&id.0))?,
        _ => current,
    };
    let version = delivery.version;
    Ok((
        [(header::ETAG, etag(version))],
        Json(DeliveryView::from(&delivery)),
    )
        .into_response())
}
