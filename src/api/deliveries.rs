//! `/v1/outbound-webhook-deliveries`: list with filters, and get one delivery with
//! its `ETag` (stream version), optionally as it stood after its first
//! `?asOfVersion=N` events.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use projections::AttemptStatus;
use projections::view::DeliveryView;
use tracing::instrument;

use super::error::{ApiError, FieldError};
use super::extract::{Caller, Id, Params};
use super::input::Errors;
use super::page::{Page, newest_first, write_json};
use super::{AppState, etag};

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
        let status = errors
            .take(params.get("status").and_then(|v| {
                v.map(|s| {
                    AttemptStatus::parse(s).ok_or_else(|| {
                        FieldError::new(
                            "status",
                            "must be one of pending, retry_scheduled, delivered, failed",
                        )
                    })
                })
                .transpose()
            }))
            .flatten();
        let endpoint_id = errors.take(id_param(params, "endpointId")).flatten();
        let event_id = errors.take(id_param(params, "eventId")).flatten();
        Filters {
            status,
            endpoint_id,
            event_id,
        }
    }

    fn keep(&self, d: &projections::Delivery) -> bool {
        self.status.is_none_or(|s| d.status == s)
            && self
                .endpoint_id
                .as_ref()
                .is_none_or(|id| d.endpoint_id == *id)
            && self.event_id.as_ref().is_none_or(|id| d.event_id == *id)
    }
}

fn id_param(params: &Params, name: &str) -> Result<Option<String>, FieldError> {
    match params.get(name)? {
        Some("") => Err(FieldError::new(name, "must not be empty")),
        other => Ok(other.map(str::to_owned)),
    }
}

#[instrument(skip_all, fields(org = %caller.organization_id))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Params,
) -> Result<Response, ApiError> {
    let mut errors = Errors::default();
    let filters = Filters::read(&params, &mut errors);
    let page = Page::read(&params, "dlv", &mut errors);
    errors.check()?;
    let budget = state.limits().page_bytes;
    let body = state.tenant(&caller.organization_id, |t| {
        newest_first(
            &t.deliveries,
            &page,
            budget,
            |d| filters.keep(d),
            |d, out| write_json(out, &DeliveryView::from(d)),
        )
    })?;
    Ok(body.into_response("dlv"))
}

#[instrument(skip_all, fields(org = %caller.organization_id, delivery = %id.0))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    id: Id,
    params: Params,
) -> Result<Response, ApiError> {
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
    let current = state
        .tenant(org, |t| {
            t.delivery(&id.0)
                .map(|d| (DeliveryView::from(d), d.version))
        })?
        .ok_or_else(|| not_found(&id.0))?;
    let (view, version) = match as_of {
        None => current,
        Some(n) if n > current.1 => {
            return Err(ApiError::field(
                "asOfVersion",
                format!("must be at most {}, the delivery's version", current.1),
            ));
        }
        Some(n) => {
            let view = state
                .ledger()
                .delivery_as_of_version(org, &id.0, n)
                .await?
                .ok_or_else(|| not_found(&id.0))?;
            (view, n)
        }
    };
    Ok(([(header::ETAG, etag(version))], Json(view)).into_response())
}
