//! Fair admission: the server's handlers are shared between organizations, so
//! that one organization's load cannot take every other one's turn.
//!
//! Every API request belongs to a class: the organization its API key belongs
//! to (the key is looked up first, from the read model, which is cheap), or
//! one class for every request without a known key. At most
//! [`FairLimits::in_flight`] requests run their handlers at once, at most
//! [`FairLimits::in_flight_per_class`] of them of one class. A request past
//! either waits in its class's queue. When a handler finishes, the next
//! request admitted is the first waiting one of the class that has used the
//! least handler time lately (each class's use halves every
//! [`USE_HALF_LIFE`]), so a class sending many costly requests waits behind
//! those that send few or cheap ones, and within a class requests keep their
//! order.
//!
//! It must not grow without bound: a class keeps at most
//! [`FairLimits::queued_per_class`] requests waiting (one more is 429 with
//! `Retry-After`), a request waits at most the client timeout (then
//! 429), and classes with nothing running or waiting are forgotten past
//! [`MAX_IDLE_CLASSES`]. Probes and scrapes (`/healthz`, `/readyz`,
//! `/metrics`, `/openapi.json`) and the change feed, whose long-polls hold
//! their request open and which has limits of its own, are not queued.
//!
//! A request holds its place from its handler's start to the head of its
//! answer: a body streamed after that (a list, an event stream) runs outside,
//! and so does the time a client takes to read it.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use projections::ApiKey;

use super::AppState;
use super::extract::bearer_token;

mod turns;

pub use turns::{Admission, Permit};

/// A class's use of handler time halves over this long.
pub const USE_HALF_LIFE: Duration = Duration::from_secs(1);
/// Classes remembered with nothing running or waiting, at most.
pub const MAX_IDLE_CLASSES: usize = 4096;
/// Routes never queued: probes, scrapes and the change feed.
const UNQUEUED_ROUTES: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/v1/ledger/feed",
];

/// How many requests run and wait, per server and per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairLimits {
    /// Requests running their handlers at once; 0 turns fair admission off.
    pub in_flight: usize,
    /// Requests of one class running at once.
    pub in_flight_per_class: usize,
    /// Requests of one class waiting at once; one more is 429.
    pub queued_per_class: usize,
}

impl Default for FairLimits {
    fn default() -> Self {
        FairLimits {
            in_flight: 64,
            in_flight_per_class: 32,
            queued_per_class: 128,
        }
    }
}

/// Whom a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Class {
    /// The organization of the request's API key.
    Organization(String),
    /// Requests without a known API key.
    Unauthenticated,
}

/// The key the admission found for a request, so that authenticating the
/// caller does not look it up twice.
#[derive(Debug, Clone)]
pub struct AdmittedKey(pub ApiKey);

/// The middleware: classifies the request, waits for its turn, runs it.
pub async fn admit(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(admission) = state.admission().cloned() else {
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>();
    if route.is_some_and(|r| UNQUEUED_ROUTES.contains(&r.as_str())) {
        return next.run(request).await;
    }
    let class = classify(&state, &mut request);
    let permit = match admission.acquire(class).await {
        Ok(permit) => permit,
        Err(refused) => {
            state.metrics().refused_busy();
            return refused.into_response();
        }
    };
    let (response, busy) = timed(next.run(request)).await;
    permit.finish(busy);
    response
}

/// The request's class: its key's organization if the key is known and live.
fn classify(state: &AppState, request: &mut Request) -> Class {
    let key = bearer_token(request.headers())
        .and_then(|token| state.ledger().authenticate(token).ok().flatten());
    match key {
        Some(key) => {
            let class = Class::Organization(key.organization_id.clone());
            request.extensions_mut().insert(AdmittedKey(key));
            class
        }
        None => Class::Unauthenticated,
    }
}

/// Runs `future`, adding up the time its polls take: the handler's own use
/// of the server's threads, not the time it waits for the disk or a client.
async fn timed<F: Future>(future: F) -> (F::Output, Duration) {
    let mut future = std::pin::pin!(future);
    let mut busy = Duration::ZERO;
    let output = std::future::poll_fn(|cx| {
        let started = Instant::now();
        let polled = future.as_mut().poll(cx);
        busy += started.elapsed();
        polled
    })
    .await;
    (output, busy)
}
