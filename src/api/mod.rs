//! The HTTP API (axum): the shared [`AppState`], the [`app`] router that joins one
//! router per resource, and [`serve`], which runs it on a listener until shutdown.
//!
//! Handlers translate between HTTP and the ledger and hold no business rule: the
//! rules live in `projections` and the write path in [`crate::ledger`]. Every
//! route answers JSON; every failure is `application/problem+json` (see [`error`]).
//!
//! [`serve`] also keeps slow and idle clients from holding the server: a client
//! gets [`Limits::client_timeout`] to send a request's head (an idle keep-alive
//! connection is closed after as long), as long again for its body, and as long
//! for each write of the answer to make progress ([`conn`]); at most
//! [`Limits::max_connections`] connections are served at once; and lookups
//! that find nothing are budgeted per address and per key ([`throttle`]).
//! Requests take turns by organization when the handlers are busy ([`fair`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use projections::view::{EndpointView, EventSnapshot};
use projections::{Command, Timestamp};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;

use crate::ledger::{Answer, Context, Ledger, Written};
use crate::model::View;
use crate::node::Node;
use crate::signing::KeyRing;

pub mod attempt_list;
pub mod attempts;
pub mod conn;
mod content;
pub mod deliveries;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod extract;
pub mod fair;
pub mod feed;
pub mod history;
pub mod input;
pub mod metrics;
pub mod observe;
pub mod ops;
pub mod page;
pub mod proofs;
pub mod throttle;
pub mod unread;

use error::ApiError;
use extract::Caller;
use metrics::{Metrics, StoreStats, StoreStatsFn};
use throttle::Throttle;

pub use crate::limits::MAX_BODY_BYTES;

/// What every handler shares: the node, the metrics, and how this process began.
/// Extractors and middleware clone it for every request, so it is one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// What an [`AppState`] points to. Set up before serving; copied once if it
/// is changed after it was shared.
#[derive(Clone)]
pub struct Shared {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    started_at: Timestamp,
    store_stats: Option<StoreStatsFn>,
    /// How long a handler waits for a request body before answering 408.
    body_timeout: Duration,
    /// Budgets for lookups of unknown keys and ids.
    throttle: Arc<Throttle>,
    /// Who follows the change feed.
    feeds: Arc<feed::Feeds>,
    /// The keys tree heads are signed with.
    signing_keys: Arc<KeyRing>,
    /// Turns for requests by organization; `None` when off.
    admission: Option<Arc<fair::Admission>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The shared state, to change before serving.
    fn shared_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node", &self.node)
            .field("started_at", &self.started_at)
            .field("store_stats", &self.store_stats.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for serving `node`, with fresh metrics and the start time taken now.
    pub fn new(node: Node) -> Self {
        let metrics = Arc::new(Metrics::new());
        AppState(Arc::new(Shared {
            node: Arc::new(node),
            feeds: Arc::new(feed::Feeds::new(Default::default(), metrics.clone())),
            metrics,
            started_at: Timestamp::from_datetime(chrono::Utc::now()),
            store_stats: None,
            body_timeout: Limits::default().client_timeout,
            throttle: Arc::new(Limits::default().throttle()),
            signing_keys: Arc::new(
                KeyRing::ephemeral().expect("the operating system gives random bytes"),
            ),
            admission: None,
        }))
    }

    /// Signs tree heads with `keys` (`serve` gives the data directory's or
    /// `--signing-key`'s); without it, a key made for this process alone.
    pub fn with_signing_keys(mut self, keys: KeyRing) -> Self {
        self.shared_mut().signing_keys = Arc::new(keys);
        self
    }

    pub fn signing_keys(&self) -> &KeyRing {
        &self.signing_keys
    }

    /// Feeds the store gauges of `/metrics` (appends, fsyncs, batch size) from
    /// `stats`, read at each scrape.
    pub fn with_store_stats(
        mut self,
        stats: impl Fn() -> StoreStats + Send + Sync + 'static,
    ) -> Self {
        self.shared_mut().store_stats = Some(Arc::new(stats));
        self
    }

    /// Bounds the change feed's long-polls and event streams by `limits`.
    pub fn with_feed_limits(mut self, limits: feed::FeedLimits) -> Self {
        let feeds = Arc::new(feed::Feeds::new(limits, self.metrics.clone()));
        self.shared_mut().feeds = feeds;
        self
    }

    pub(crate) fn feeds(&self) -> &Arc<feed::Feeds> {
        &self.feeds
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.node.ledger
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    pub(crate) fn admission(&self) -> Option<&Arc<fair::Admission>> {
        self.admission.as_ref()
    }

    /// Looks `id` up again after catching the model up with the store, for an
    /// id this node's model does not hold but another process sharing the
    /// store may have created: `read` tells whether the model holds it now.
    /// An id looked up in vain a moment ago is not looked up again, and each
    /// key has a budget of such lookups (429 past it).
    pub(crate) async fn look_up<T>(
        &self,
        caller: &Caller,
        id: &str,
        read: impl Fn() -> Result<Option<T>, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        let org = caller.organization_id.as_str();
        if self.throttle.recently_missed(&[org, id]) {
            return Ok(None);
        }
        self.throttle.charge_key(&caller.key_id)?;
        self.ledger().sync().await?;
        let found = read()?;
        if found.is_none() {
            self.throttle.missed(&[org, id]);
        }
        Ok(found)
    }

    /// The limits requests are held to: the ledger's, so there is one set.
    pub fn limits(&self) -> crate::limits::Limits {
        self.node.ledger.limits()
    }

    pub(crate) fn store_stats(&self) -> Option<StoreStats> {
        self.store_stats.as_ref().map(|f| f())
    }

    /// Runs a command through the ledger, timing it for `/metrics`.
    pub(crate) async fn execute(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
    ) -> Result<Written, ApiError> {
        let name = command_name(&command);
        let started = Instant::now();
        let result = self.ledger().execute(command, ctx, if_match).await;
        self.metrics.record_append(name, started.elapsed());
        if let Ok(written) = &result {
            self.metrics.record_waits(name, &written.waits);
        }
        Ok(result?)
    }
}

impl AppState {
    /// A view of the model, for a handler that reads it across awaits (a
    /// view holds no lock). 503 while the model cannot be trusted.
    pub(crate) fn view(&self) -> Result<View, ApiError> {
        self.node
            .projector
            .view()
            .map_err(|e| ApiError::Unavailable(e.to_string()))
    }

    /// Reads the model through `f`. 503 while the model cannot be trusted
    /// (its projector stopped, or it is being rebuilt), and when a read fails;
    /// a read that finds the model's file damaged starts its rebuild.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&View) -> Result<T, crate::model::Error>,
    ) -> Result<T, ApiError> {
        let projector = &self.node.projector;
        let view = projector
            .view()
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        f(&view).map_err(|e| {
            projector.report(&e);
            ApiError::Unavailable(e.to_string())
        })
    }
}

/// The endpoint a command answered with.
pub(crate) fn endpoint_answer(written: Written) -> Result<EndpointView, ApiError> {
    match written.answer {
        Answer::Endpoint(view) => Ok(view),
        _ => Err(ApiError::Internal(format!(
            "no endpoint in the answer about {}",
            written.resource_id
        ))),
    }
}

/// The webhook event a command answered with, and for an attempt the
/// delivery's version right after it.
pub(crate) fn event_answer(written: Written) -> Result<(EventSnapshot, Option<u64>), ApiError> {
    match written.answer {
        Answer::Event {
            snapshot,
            delivery_version,
        } => Ok((snapshot, delivery_version)),
        _ => Err(ApiError::Internal(format!(
            "no event in the answer about {}",
            written.resource_id
        ))),
    }
}

/// A JSON response; a replayed idempotent answer says so in `Idempotent-Replayed`.
pub(crate) fn reply<T: serde::Serialize>(status: StatusCode, body: &T, replayed: bool) -> Response {
    mark_replayed((status, axum::Json(body)).into_response(), replayed)
}

/// [`reply`] for a webhook event with its deliveries, the answer to every
/// recorded attempt: written by the view's own JSON writer, the same bytes
/// `serde_json` would write, in a fraction of the time.
pub(crate) fn reply_event(status: StatusCode, event: &EventSnapshot, replayed: bool) -> Response {
    let json = HeaderValue::from_static("application/json");
    let response = (status, [(header::CONTENT_TYPE, json)], event.to_json()).into_response();
    mark_replayed(response, replayed)
}

fn mark_replayed(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `ETag: "N"` for a delivery at stream version `N`.
pub(crate) fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

fn command_name(command: &Command) -> &'static str {
    match command {
        Command::CreateEndpoint { .. } => "create_endpoint",
        Command::UpdateEndpoint { .. } => "update_endpoint",
        Command::AcceptEvent { .. } => "accept_event",
        Command::RecordAttempt { .. } => "record_attempt",
        Command::IssueApiKey { .. } => "issue_api_key",
        Command::RevokeApiKey { .. } => "revoke_api_key",
        Command::EraseContent { .. } => "erase_content",
    }
}

/// The whole API: every resource's router, the fallbacks that keep unknown routes
/// and methods in problem+json, the 1 MiB body limit and the observing middleware.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(endpoints::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(attempts::router())
        .merge(attempt_list::router())
        .merge(feed::router())
        .merge(ops::router())
        .merge(proofs::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::Internal("a handler panicked".into()).into_response()
            },
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            fair::admit,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

async fn no_route(uri: Uri) -> Response {
    ApiError::NoRoute(uri.path().to_owned()).into_response()
}

async fn method_not_allowed(method: Method) -> Response {
    ApiError::MethodNotAllowed(method.to_string()).into_response()
}

/// What [`serve_with`] allows a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's head, and again its
    /// body, and how long a write of an answer may wait for the client to
    /// read; a keep-alive connection idle for as long is closed.
    pub client_timeout: Duration,
    /// Connections served at once; further ones wait in the listen queue until
    /// one closes.
    pub max_connections: usize,
    /// Requests with unknown or revoked keys per client address, and lookups
    /// of unknown ids per key, per second (bursts of
    /// [`throttle::BURST_SECONDS`] worth); past it, 429.
    pub unknown_lookups_per_second: u32,
    /// Requests running at once, in all and per organization, and waiting
    /// per organization ([`fair`]); a request waits at most the client timeout.
    pub fair: fair::FairLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            client_timeout: Duration::from_secs(30),
            max_connections: 512,
            unknown_lookups_per_second: 20,
            fair: fair::FairLimits::default(),
        }
    }
}

impl Limits {
    /// How long a lookup that found nothing is answered from memory.
    pub const FORGET_MISSES_AFTER: Duration = Duration::from_secs(2);

    fn throttle(&self) -> Throttle {
        Throttle::new(self.unknown_lookups_per_second, Self::FORGET_MISSES_AFTER)
    }
}

/// Serves `app(state)` on `listener` with the default [`Limits`] until
/// `shutdown` resolves; then stops accepting connections and returns once the
/// requests in flight are answered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, Limits::default(), shutdown).await
}

/// [`serve`] with chosen limits. HTTP/1.1 only, as `axum::serve` with axum's
/// default features; hyper is driven directly because `axum::serve` sets no
/// header-read timeout and takes any number of connections.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    mut state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = state.shared_mut();
    shared.body_timeout = limits.client_timeout;
    shared.throttle = Arc::new(limits.throttle());
    shared.admission = (limits.fair.in_flight > 0)
        .then(|| fair::Admission::new(limits.fair, limits.client_timeout));
    let feeds = state.feeds.clone();
    let router = app(state);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Take the permit first: at the cap, new connections wait in the kernel's
        // queue rather than in ours, and idle ones free permits by timing out.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        // Handlers see the client's address (the per-address budgets).
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let io = TokioIo::new(conn::ClientIo::new(stream, limits.client_timeout));
        let connection = http.serve_connection(io, service);
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts and resets of a client's connection are the client's business.
                tracing::debug!(error = %e, "a connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Long-polls and event streams would otherwise hold the shutdown open.
    feeds.close();
    connections.shutdown().await;
    Ok(())
}

/// Keeps accepting after an error: a connection that failed before it was
/// accepted concerns only that client; anything else (out of file descriptors)
/// is logged and waited out, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
