//! `/v1/outbound-webhook-endpoints`: register (201), list, get and patch the
//! endpoints events fan out to, and read an endpoint's health (`/stats`). A
//! patch that changes nothing appends nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use projections::health::HealthView;
use projections::view::EndpointView;
use projections::{Command, RetryAt, Timestamp};
use serde::Deserialize;

use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, IdempotencyKey, Params, Validated, ValidatedJson};
use super::input::{Errors, Field, Max, boolean, http_url, label, label_list};
use super::page::{self, Page, write_json};
use super::{AppState, endpoint_answer, reply};
use crate::ledger::{self, Outcome};
use crate::limits::{Limits, name};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/outbound-webhook-endpoints", post(create).get(list))
        .route(
            "/v1/outbound-webhook-endpoints/{id}",
            get(show).patch(update),
        )
        .route("/v1/outbound-webhook-endpoints/{id}/stats", get(stats))
}

/// The endpoint body as sent, for both create and patch.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointBody {
    #[serde(default)]
    name: Field,
    #[serde(default)]
    url: Field,
    #[serde(default)]
    event_types: Field,
    #[serde(default)]
    enabled: Field,
}

/// A valid registration.
#[derive(Debug)]
pub struct NewEndpoint {
    name: String,
    url: String,
    event_types: Vec<String>,
    enabled: bool,
}

/// The size limits of an endpoint's fields.
struct Sizes {
    name: Max,
    url: Max,
    event_type: Max,
    event_types: Max,
}

impl Sizes {
    fn of(limits: &Limits) -> Sizes {
        Sizes {
            name: Max::new(limits.name_length, name::NAME_LENGTH),
            url: Max::new(limits.url_length, name::URL_LENGTH),
            event_type: Max::new(limits.event_type_length, name::EVENT_TYPE_LENGTH),
            event_types: Max::new(
                limits.event_types_per_endpoint,
                name::EVENT_TYPES_PER_ENDPOINT,
            ),
        }
    }

    fn event_types(&self, value: &serde_json::value::RawValue) -> Result<Vec<String>, FieldError> {
        label_list("eventTypes", value, self.event_type, self.event_types)
    }
}

impl Validated for NewEndpoint {
    type Dto = EndpointBody;

    fn validate(body: EndpointBody, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let sizes = Sizes::of(limits);
        let mut errors = Errors::default();
        let name = errors.take(
            body.name
                .required("name")
                .and_then(|v| label("name", v, sizes.name)),
        );
        let url = errors.take(
            body.url
                .required("url")
                .and_then(|v| http_url("url", v, sizes.url)),
        );
        let event_types = errors.take(
            body.event_types
                .optional()
                .map(|v| sizes.event_types(v))
                .transpose(),
        );
        let enabled = errors.take(
            body.enabled
                .optional()
                .map(|v| boolean("enabled", v))
                .transpose(),
        );
        let (Some(name), Some(url), Some(event_types), Some(enabled)) =
            (name, url, event_types, enabled)
        else {
            return Err(errors.into_vec());
        };
        Ok(NewEndpoint {
            name,
            url,
            event_types: event_types.unwrap_or_default(),
            enabled: enabled.unwrap_or(true),
        })
    }
}

/// A valid patch: absent fields stay as they are; `null` is refused.
#[derive(Debug)]
pub struct EndpointPatch {
    name: Option<String>,
    url: Option<String>,
    event_types: Option<Vec<String>>,
    enabled: Option<bool>,
}

impl Validated for EndpointPatch {
    type Dto = EndpointBody;

    fn validate(body: EndpointBody, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let sizes = Sizes::of(limits);
        let mut errors = Errors::default();
        let name = errors.take(
            body.name
                .not_null("name")
                .and_then(|v| v.map(|v| label("name", v, sizes.name)).transpose()),
        );
        let url = errors.take(
            body.url
                .not_null("url")
                .and_then(|v| v.map(|v| http_url("url", v, sizes.url)).transpose()),
        );
        let event_types = errors.take(
            body.event_types
                .not_null("eventTypes")
                .and_then(|v| v.map(|v| sizes.event_types(v)).transpose()),
        );
        let enabled = errors.take(
            body.enabled
                .not_null("enabled")
                .and_then(|v| v.map(|v| boolean("enabled", v)).transpose()),
        );
        let (Some(name), Some(url), Some(event_types), Some(enabled)) =
            (name, url, event_types, enabled)
        else {
            return Err(errors.into_vec());
        };
        Ok(EndpointPatch {
            name,
            url,
            event_types,
            enabled,
        })
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    idempotency: IdempotencyKey,
    body: ValidatedJson<NewEndpoint>,
) -> Result<Response, ApiError> {
    let ctx = caller.context_for(idempotency, &body);
    let org = &caller.organization_id;
    let endpoint = body.value;
    let command = Command::CreateEndpoint {
        endpoint_id: ledger::new_id("ep"),
        organization_id: org.clone(),
        name: endpoint.name,
        url: endpoint.url,
        event_types: endpoint.event_types,
        enabled: endpoint.enabled,
    };
    let written = state.execute(command, &ctx, None).await?;
    let replayed = written.outcome == Outcome::Replayed;
    let view = endpoint_answer(written)?;
    Ok(reply(StatusCode::CREATED, &view, replayed))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let page = Page::read(&params, "ep", &mut errors);
    errors.check()?;
    let budget = state.limits().page_bytes;
    let listed = state.read(|v| v.endpoint_list(&caller.organization_id, &page.to_model()))?;
    let body = page::of_listed(
        &page,
        budget,
        listed,
        |e| &e.id,
        |e, out| write_json(out, &EndpointView::from(e)),
    );
    Ok(body.into_response("ep"))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
) -> Result<Json<EndpointView>, ApiError> {
    super::observe::name("endpoint", &id.0);
    current(&state, &caller.organization_id, &id.0)?
        .map(Json)
        .ok_or_else(|| not_found(&id.0))
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    body: ValidatedJson<EndpointPatch>,
) -> Result<Response, ApiError> {
    super::observe::name("endpoint", &id.0);
    let org = &caller.organization_id;
    // An endpoint created through another process sharing the store may not
    // be in this node's model yet; one that is nowhere is 404 without a write.
    if current(&state, org, &id.0)?.is_none()
        && state
            .look_up(&caller, &id.0, || current(&state, org, &id.0))
            .await?
            .is_none()
    {
        return Err(not_found(&id.0));
    }
    let patch = body.value;
    let command = Command::UpdateEndpoint {
        endpoint_id: id.0.clone(),
        organization_id: caller.organization_id.clone(),
        name: patch.name,
        url: patch.url,
        event_types: patch.event_types,
        enabled: patch.enabled,
    };
    let written = state.execute(command, &caller.context(None), None).await?;
    Ok(reply(StatusCode::OK, &endpoint_answer(written)?, false))
}

/// Counts of the endpoint's attempts by status and by status-code class, and
/// its latest success and failure, at or after `since` (absent: ever).
async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Json<HealthView>, ApiError> {
    super::observe::name("endpoint", &id.0);
    let mut errors = Errors::default();
    let since = errors.take(since(&params)).flatten();
    errors.check()?;
    let org = &caller.organization_id;
    state
        .read(|v| {
            if v.endpoint(org, &id.0)?.is_none() {
                return Ok(None);
            }
            let tally = v.endpoint_health(org, &id.0, since)?;
            Ok(Some(HealthView::new(&id.0, since, &tally)))
        })?
        .map(Json)
        .ok_or_else(|| not_found(&id.0))
}

/// `since`, in the record-attempt contract's date-time form (as `nextRetryAt`).
fn since(params: &Params) -> Result<Option<Timestamp>, FieldError> {
    const SINCE: &str = "since";
    params.get(SINCE)?.map_or(Ok(None), |text| {
        RetryAt::parse(text).map(|t| Some(t.at())).ok_or_else(|| {
            FieldError::new(
                SINCE,
                "must be a UTC date-time with a literal Z, like 2023-11-07T05:31:56Z",
            )
        })
    })
}

fn current(state: &AppState, org: &str, id: &str) -> Result<Option<EndpointView>, ApiError> {
    state.read(|v| Ok(v.endpoint(org, id)?.as_ref().map(EndpointView::from)))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no outbound webhook endpoint {id}"))
}
