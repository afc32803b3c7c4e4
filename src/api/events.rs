//! `/v1/outbound-webhook-events`: accept an event (201, fanned out to every
//! enabled subscribed endpoint; `skipped` when none), list with filters, get.
//!
//! Acceptance is idempotent on `(organization, sourceKey)`: a repeat appends
//! nothing and answers the first event with 200.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};
use projections::JsonObject;
use projections::event::ErasureReason;
use projections::view::EventSnapshot;
use projections::{Command, EventStatus, Timestamp};
use serde::Deserialize;

use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, IdempotencyKey, Params, Validated, ValidatedJson};
use super::input::{Errors, Field, Max, label, object, text};
use super::page::{Page, PageBody};
use super::{AppState, event_answer, reply_event};
use crate::ledger::{self, Outcome};
use crate::limits::{Limits, name};
use crate::model::EventFilter;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/outbound-webhook-events", post(accept).get(list))
        .route("/v1/outbound-webhook-events/{id}", get(show))
        .route("/v1/outbound-webhook-events/{id}/content", delete(erase))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    #[serde(default)]
    event_type: Field,
    #[serde(default)]
    source_key: Field,
    #[serde(default)]
    payload: Field,
}

/// A webhook event as the API accepts it, checked field by field (the log's
/// `store::NewEvent` is what gets appended).
#[derive(Debug)]
pub struct NewWebhookEvent {
    event_type: String,
    source_key: Option<String>,
    payload: JsonObject,
}

impl Validated for NewWebhookEvent {
    type Dto = EventBody;

    fn validate(body: EventBody, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let mut errors = Errors::default();
        let event_type = errors.take(body.event_type.required("eventType").and_then(|v| {
            label(
                "eventType",
                v,
                Max::new(limits.event_type_length, name::EVENT_TYPE_LENGTH),
            )
        }));
        let source_key = errors.take(
            body.source_key
                .nullable()
                .map(|v| {
                    text(
                        "sourceKey",
                        v,
                        Max::new(limits.source_key_length, name::SOURCE_KEY_LENGTH),
                    )
                })
                .transpose(),
        );
        let payload = errors.take(
            body.payload
                .required("payload")
                .and_then(|v| object("payload", v)),
        );
        let (Some(event_type), Some(source_key), Some(payload)) = (event_type, source_key, payload)
        else {
            return Err(errors.into_vec());
        };
        Ok(NewWebhookEvent {
            event_type,
            source_key,
            payload,
        })
    }
}

async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    body: ValidatedJson<NewWebhookEvent>,
) -> Result<Response, ApiError> {
    let ctx = caller.context_for(idempotency, &body);
    let org = &caller.organization_id;
    let event = body.value;
    let command = Command::AcceptEvent {
        event_id: ledger::new_id("evt"),
        organization_id: org.clone(),
        event_type: event.event_type,
        source_key: event.source_key,
        payload: event.payload,
    };
    let written = state.execute(command, &ctx, None).await?;
    let outcome = written.outcome;
    let status = match outcome {
        Outcome::Existing => StatusCode::OK,
        Outcome::Replayed | Outcome::Appended | Outcome::Unchanged => StatusCode::CREATED,
    };
    let (snapshot, _) = event_answer(written)?;
    Ok(reply_event(status, &snapshot, outcome == Outcome::Replayed))
}

/// The list filters; each unknown value is a 400 naming its parameter.
#[derive(Debug, Default)]
struct Filters {
    status: Option<EventStatus>,
    event_type: Option<String>,
    created_after: Option<Timestamp>,
    created_before: Option<Timestamp>,
}

impl Filters {
    fn read(params: &Params, limits: &Limits, errors: &mut Errors) -> Filters {
        let status = errors
            .take(params.get("status").and_then(|v| {
                v.map(|s| {
                    EventStatus::parse(s).ok_or_else(|| {
                        FieldError::new(
                            "status",
                            "must be one of pending, delivered, failed, skipped",
                        )
                    })
                })
                .transpose()
            }))
            .flatten();
        let event_type = errors
            .take(params.get("eventType").and_then(|v| {
                let max = limits.event_type_length;
                v.map(|s| match s.chars().count() {
                    n if (1..=max).contains(&n) => Ok(s.to_owned()),
                    _ => Err(FieldError::new(
                        "eventType",
                        format!(
                            "must be 1 to {max} characters (limit {})",
                            name::EVENT_TYPE_LENGTH
                        ),
                    )),
                })
                .transpose()
            }))
            .flatten();
        let created_after = errors.take(timestamp(params, "createdAfter")).flatten();
        let created_before = errors.take(timestamp(params, "createdBefore")).flatten();
        Filters {
            status,
            event_type,
            created_after,
            created_before,
        }
    }

    fn to_model(&self) -> EventFilter {
        EventFilter {
            status: self.status,
            event_type: self.event_type.clone(),
            created_after: self.created_after,
            created_before: self.created_before,
        }
    }
}

pub(super) fn timestamp(params: &Params, name: &str) -> Result<Option<Timestamp>, FieldError> {
    params.get(name)?.map_or(Ok(None), |text| {
        Timestamp::parse_rfc3339(text).map(Some).ok_or_else(|| {
            FieldError::new(
                name,
                "must be an RFC 3339 date-time like 2023-11-07T05:31:56Z",
            )
        })
    })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let limits = state.limits();
    let filters = Filters::read(&params, &limits, &mut errors);
    let page = Page::read(&params, "evt", &mut errors);
    errors.check()?;
    let org = &caller.organization_id;
    let (listed, parts) = state.read(|v| {
        let listed = v.event_list(org, &filters.to_model(), &page.to_model())?;
        let mut parts = Vec::with_capacity(listed.items.len());
        for event in &listed.items {
            if let Some(p) = v.event_snapshot(org, &event.id, None)? {
                parts.push(p);
            }
        }
        Ok((listed, parts))
    })?;
    let events: Vec<_> = parts.iter().map(|p| p.event.clone()).collect();
    let payloads = state.ledger().payloads(&events).await?;
    let mut body = PageBody::new(&page, limits.page_bytes);
    for (parts, payload) in parts.into_iter().zip(payloads) {
        let id = parts.event.id.clone();
        let snapshot = parts.with_payload(payload);
        if !body.offer(&id, |out| snapshot.write_json(out)) {
            return Ok(body.into_response("evt"));
        }
    }
    body.go_on_at(listed.next);
    Ok(body.into_response("evt"))
}

async fn show(State(state): State<AppState>, caller: Caller, id: Id) -> Result<Response, ApiError> {
    super::observe::name("event", &id.0);
    current(&state, &caller.organization_id, &id.0)
        .await?
        .map(|event| reply_event(StatusCode::OK, &event, false))
        .ok_or_else(|| not_found(&id.0))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no outbound webhook event {id}"))
}

async fn current(state: &AppState, org: &str, id: &str) -> Result<Option<EventSnapshot>, ApiError> {
    let Some(parts) = state.read(|v| v.event_snapshot(org, id, None))? else {
        return Ok(None);
    };
    let mut payloads = state
        .ledger()
        .payloads(std::slice::from_ref(&parts.event))
        .await?;
    let payload = payloads
        .pop()
        .ok_or_else(|| ApiError::Internal(format!("no payload read for event {id}")))?;
    Ok(Some(parts.with_payload(payload)))
}

/// `DELETE /v1/outbound-webhook-events/{id}/content`: erases the event's
/// payload and the response bodies of every attempt recorded on its
/// deliveries so far. The erasure is an event of the event's stream, so the
/// history shows who asked and when; the answer is the event as it stands
/// after it, payload `null` and `payloadErased: true`. The bytes leave the
/// disk when compaction next runs; nothing serves them from now on. A body
/// is refused rather than ignored: an erasure cannot be undone, so one sent
/// with options this route does not have (which delivery, which field) must
/// not erase the whole event.
async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::observe::name("event", &id.0);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() != b"0");
    if declared || headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::field(
            "body",
            "must be empty: erasing an event's content takes no options",
        ));
    }
    // Erasing again erases what was recorded since: no key is needed to
    // make a repeat safe.
    let ctx = caller.context(None);
    let command = Command::EraseContent {
        organization_id: caller.organization_id.clone(),
        event_id: Some(id.0.clone()),
        recorded_before: None,
        reason: ErasureReason::Request,
    };
    let written = state.execute(command, &ctx, None).await?;
    let replayed = written.outcome == Outcome::Replayed;
    let (snapshot, _) = event_answer(written)?;
    Ok(reply_event(StatusCode::OK, &snapshot, replayed))
}
