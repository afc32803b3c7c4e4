//! Operational routes: liveness (`/healthz`), readiness (`/readyz`: the read
//! model caught up with the store and its projector running), Prometheus
//! `/metrics` and the API document `/openapi.json`. They are the operator's:
//! `/readyz` and `/metrics` show the ledger's global position.
//!
//! The linear ledger digest is not served to tenants: its position would tell
//! any tenant the volume of all the others. Operators print it with
//! `hookledger audit digest`; tenants keep signed tree heads of their own
//! tree instead (`proofs`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use projections::Timestamp;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// The OpenAPI 3.1 document, served as written and checked against every
/// response in the integration tests.
pub const OPENAPI: &str = include_str!("../../schemas/openapi.json");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Health {
    status: &'static str,
    version: &'static str,
    started_at: Timestamp,
}

async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        started_at: state.started_at(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    status: &'static str,
    position: u64,
    head: u64,
}

async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let node = state.node();
    if let Err(e) = node.projector.view() {
        return Err(ApiError::Unavailable(e.to_string()));
    }
    let (position, head) = (node.projector.position(), node.store.head());
    if !node.projector.caught_up() {
        return Err(ApiError::Unavailable(format!(
            "the read model is at position {position} of {head}"
        )));
    }
    Ok(Json(Readiness {
        status: "ready",
        position,
        head,
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let node = state.node();
    let lag = node.store.head().saturating_sub(node.projector.position());
    if let Some(admission) = state.admission() {
        let (running, waiting) = admission.counts();
        state.metrics().set_admission(running, waiting);
    }
    let text = state.metrics().render(lag, state.store_stats());
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
