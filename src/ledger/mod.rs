//! The write path: load what the command needs, decide, append with the
//! expected version, wait for the read model to reflect the append, and
//! answer with the resource as it stands right after this write.
//!
//! Beside it: API keys ([`keys`]), the uniqueness claims the store enforces
//! ([`claims`]) and the in-process locks that serialise repeats ([`locks`]).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use projections::body::SALT_LEN;
use projections::event::Idempotency;
use projections::model::idempotency_slot;
use projections::view::{EndpointView, EventSnapshot};
use projections::{Command, MemoryRows, Metadata, Rejection, Rows, Settings, Timestamp};

use crate::limits::{Exceeded, Limits};
use crate::model::{self, View};
use crate::projector::{self, Projector};
use crate::store::{self, EventStore, ExpectedVersion, NewEvent};

/// How often an optimistic write is retried after losing a race it did not ask to
/// detect (e.g. two patches of one endpoint).
const RETRIES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command refers to something absent, or is refused by a rule.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// `If-Match` named a version the delivery is no longer at.
    #[error("the delivery is at version {current}, not {expected}")]
    PreconditionFailed { expected: u64, current: u64 },
    /// The `Idempotency-Key` was used before with a different request body.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// The command would take the organization past one of its limits.
    #[error(transparent)]
    LimitExceeded(#[from] Exceeded),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Projector(#[from] projector::Error),
    #[error(transparent)]
    Model(#[from] model::Error),
}

/// Who is asking, for the event metadata.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub organization_id: String,
    pub key_id: Option<String>,
    pub request_id: Option<String>,
    pub idempotency: Option<Idempotency>,
    /// The SHA-256 of the request body as sent, where `idempotency` holds that
    /// of its canonical form: an `Idempotency-Key` recorded by an earlier
    /// version, which hashed the bytes as sent, still finds its repeat.
    pub request_sha256_as_sent: Option<String>,
}

/// What a command did, and the answer to give.
#[derive(Debug, Clone)]
pub struct Written {
    pub outcome: Outcome,
    /// Where the answer stands in the log.
    pub position: u64,
    /// The endpoint, webhook event or key the command was about.
    pub resource_id: String,
    pub answer: Answer,
    /// What the write waited for; zero for a command that wrote nothing.
    pub waits: Waits,
}

/// Where a write's time went while it waited: for the store to make its
/// events durable (the group commit's queue and the commit itself), then for
/// the read model to fold them, so that its answer could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    pub store: Duration,
    pub model: Duration,
}

/// The resource a command answers with, as it stood right after the write
/// (for a repeat, right after the first one).
#[derive(Debug, Clone)]
pub enum Answer {
    Endpoint(EndpointView),
    Event {
        snapshot: EventSnapshot,
        /// For an attempt: the delivery's stream version right after it.
        delivery_version: Option<u64>,
    },
    /// Commands of the command line answer with nothing but the outcome.
    Nothing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// New events were appended and the read model reflects them.
    Appended,
    /// The command changed nothing, so nothing was appended.
    Unchanged,
    /// An earlier request with this `Idempotency-Key` was answered at `position`.
    Replayed,
    /// An event with this `sourceKey` was accepted earlier.
    Existing,
}

/// What a command did to the log, before the answer is read.
struct Done {
    outcome: Outcome,
    /// `None`: the answer is the resource as it stands now.
    position: Option<u64>,
    resource_id: String,
    waits: Waits,
}

#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    settings: Settings,
    locks: KeyedLocks,
    limits: RwLock<Limits>,
    payload_cache: PayloadCache,
}

impl Ledger {
    /// A ledger on `store`, keeping about `payload_cache` bytes of payloads
    /// read lately in memory.
    pub fn new(
        store: Arc<dyn EventStore>,
        projector: Arc<Projector>,
        settings: Settings,
        payload_cache: usize,
    ) -> Self {
        Ledger {
            store,
            projector,
            settings,
            locks: KeyedLocks::default(),
            limits: RwLock::new(Limits::default()),
            payload_cache: PayloadCache::new(payload_cache),
        }
    }

    /// The limits commands are held to from now on.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    pub fn projector(&self) -> &Arc<Projector> {
        &self.projector
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<store::RecordedEvent>, Error> {
        Ok(store::read_whole_stream(self.store.as_ref(), stream).await?)
    }

    /// A view of the read model, or why there is none to trust.
    pub fn view(&self) -> Result<View, Error> {
        Ok(self.projector.view()?)
    }

    /// Runs a command and answers with its resource as it stands right after
    /// the write. `if_match` is the number of events the client expects the
    /// target delivery's stream to hold (its `ETag`); only attempts take it.
    pub async fn execute(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
    ) -> Result<Written, Error> {
        let result = self.run(command, ctx, if_match).await;
        if let Err(Error::Model(e)) = &result {
            self.projector.report(e);
        }
        result
    }

    async fn run(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
    ) -> Result<Written, Error> {
        // A model that cannot be trusted may lack acknowledged writes: deciding
        // against it could repeat an idempotent write, so refuse before appending.
        self.view()?;
        let org = &ctx.organization_id;
        // Requests that must not run twice are serialised on their key, so a race
        // of repeats produces one event and the others find it in the model.
        let _idempotency = match &ctx.idempotency {
            Some(i) => Some(
                self.locks
                    .lock(format!("{org}\nidem\n{}\n{}", i.route, i.key))
                    .await,
            ),
            None => None,
        };
        let _source = match &command {
            Command::AcceptEvent {
                source_key: Some(key),
                ..
            } => Some(self.locks.lock(format!("{org}\nsource\n{key}")).await),
            _ => None,
        };
        // Endpoint changes of one organization are decided one at a time, so
        // each sees the last one's effect on the counts its limits bound.
        let _endpoints = match &command {
            Command::CreateEndpoint { .. } | Command::UpdateEndpoint { .. } => {
                Some(self.locks.lock(format!("{org}\nendpoints")).await)
            }
            _ => None,
        };
        let wants = Wants::of(&command);
        let claims = claims(&command, ctx, &self.settings);
        // The model may lag appends made by other processes sharing the store;
        // before answering "not found" or 412 from it, catch it up once.
        let mut synced = false;
        for _ in 0..RETRIES {
            if let Some(i) = &ctx.idempotency
                && let Some(done) =
                    self.idempotent_answer(org, i, ctx.request_sha256_as_sent.as_deref())?
            {
                return self.answer(&wants, org, done).await;
            }
            match self
                .try_execute(command.clone(), ctx, if_match, claims.clone())
                .await
            {
                Ok(done) => return self.answer(&wants, org, done).await,
                Err(Error::Store(store::Error::Conflict { actual, .. })) => {
                    if let Some(expected) = if_match {
                        return Err(Error::PreconditionFailed {
                            expected,
                            current: actual.map_or(0, |v| v + 1),
                        });
                    }
                    // Lost a race: let the model see the winner, then decide again.
                    self.sync().await?;
                }
                // Another request with the same key won, maybe in another
                // process: once the model has its append, it is the answer.
                Err(Error::Store(store::Error::Duplicate { position, .. })) => {
                    self.projector.wait_for(position).await?;
                }
                Err(Error::PreconditionFailed { expected, current })
                    if expected > current && !synced =>
                {
                    synced = true;
                    self.sync().await?;
                }
                Err(Error::Rejected(
                    Rejection::DeliveryNotFound(_)
                    | Rejection::EndpointNotFound(_)
                    | Rejection::ApiKeyNotFound(_),
                )) if !synced => {
                    synced = true;
                    self.sync().await?;
                }
                Err(other) => return Err(other),
            }
        }
        Err(Error::Store(store::Error::Unavailable(
            "too much contention on one stream; try again".into(),
        )))
    }

    /// Brings the read model up to everything the store had acknowledged at the
    /// call, including appends made by other processes sharing it.
    pub async fn sync(&self) -> Result<(), Error> {
        let head = self.store.sync_head().await?;
        self.projector.wait_for(head).await?;
        Ok(())
    }

    /// The first answer to this `Idempotency-Key`, while it is kept. A repeat
    /// matches the canonical form of the first body, or (for keys recorded
    /// before bodies were compared canonically) its bytes as sent.
    fn idempotent_answer(
        &self,
        org: &str,
        i: &Idempotency,
        as_sent: Option<&str>,
    ) -> Result<Option<Done>, Error> {
        let view = self.view()?;
        let Some(record) = view.idempotency(org, &idempotency_slot(&i.route, &i.key))? else {
            return Ok(None);
        };
        let now = Timestamp::from_datetime(chrono::Utc::now());
        if !record.live_at(now, &self.settings) {
            return Ok(None);
        }
        let same = record.request_sha256 == i.request_sha256
            || as_sent.is_some_and(|sha| record.request_sha256 == sha);
        if !same {
            return Err(Error::IdempotencyKeyReused);
        }
        Ok(Some(Done {
            outcome: Outcome::Replayed,
            position: Some(record.position),
            resource_id: record.resource_id,
            waits: Waits::default(),
        }))
    }

    /// Reads the answer `wants` names, as it stood at `done.position`.
    async fn answer(&self, wants: &Wants, org: &str, done: Done) -> Result<Written, Error> {
        let view = self.view()?;
        let position = done.position.unwrap_or_else(|| view.position());
        let vanished =
            || model::Error::Inconsistent(format!("{} is not in the read model", done.resource_id));
        let answer = match wants {
            Wants::Endpoint => Answer::Endpoint(EndpointView::from(
                &view
                    .endpoint_as_of(org, &done.resource_id, position)?
                    .ok_or_else(vanished)?,
            )),
            Wants::Event { delivery_id } => {
                let parts = view
                    .event_snapshot(org, &done.resource_id, done.position)?
                    .ok_or_else(vanished)?;
                let mut payloads = self.payloads(std::slice::from_ref(&parts.event)).await?;
                let snapshot = parts.with_payload(payloads.pop().ok_or_else(vanished)?);
                let delivery_version = delivery_id.as_ref().map(|id| {
                    snapshot
                        .deliveries
                        .iter()
                        .find(|d| d.id == *id)
                        .map_or(0, |d| d.attempt_count)
                });
                Answer::Event {
                    snapshot,
                    delivery_version,
                }
            }
            Wants::Nothing => Answer::Nothing,
        };
        Ok(Written {
            outcome: done.outcome,
            position,
            resource_id: done.resource_id,
            answer,
            waits: done.waits,
        })
    }

    async fn try_execute(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
        claims: Vec<store::Claim>,
    ) -> Result<Done, Error> {
        let view = self.view()?;
        let rows = load(&view, &command)?;
        let org = &ctx.organization_id;
        let stream = command.stream(&rows);
        let (expected, resource_id) = match &command {
            Command::CreateEndpoint { endpoint_id, .. } => {
                (ExpectedVersion::NoStream, endpoint_id.clone())
            }
            Command::AcceptEvent { event_id, .. } => (ExpectedVersion::NoStream, event_id.clone()),
            Command::EraseContent {
                event_id: Some(event_id),
                ..
            } => (ExpectedVersion::Any, event_id.clone()),
            Command::EraseContent {
                organization_id, ..
            } => (ExpectedVersion::Any, organization_id.clone()),
            Command::UpdateEndpoint { endpoint_id, .. } => {
                let version = rows
                    .tenant(org)
                    .and_then(|t| t.endpoints.get(endpoint_id))
                    .map_or(0, |e| e.version);
                (ExpectedVersion::count(version), endpoint_id.clone())
            }
            Command::RecordAttempt { delivery_id, .. } => {
                let delivery = rows.tenant(org).and_then(|t| t.delivery(delivery_id));
                let Some(delivery) = delivery else {
                    return Err(Rejection::DeliveryNotFound(delivery_id.clone()).into());
                };
                let expected = match if_match {
                    // Refuse early from the model; the store checks again.
                    Some(n) if n != delivery.version => {
                        return Err(Error::PreconditionFailed {
                            expected: n,
                            current: delivery.version,
                        });
                    }
                    Some(n) => ExpectedVersion::count(n),
                    None => ExpectedVersion::Any,
                };
                (expected, delivery.event_id.clone())
            }
            Command::IssueApiKey { key_id, .. } | Command::RevokeApiKey { key_id } => {
                (ExpectedVersion::Any, key_id.clone())
            }
        };
        self.limits().check(rows.tenant(org), &command)?;
        let erases = matches!(command, Command::EraseContent { .. });
        let events = match projections::decide(&rows, command, &mut || new_id("dlv")) {
            Ok(events) => events,
            Err(Rejection::DuplicateSourceKey(existing)) => {
                return Ok(Done {
                    outcome: Outcome::Existing,
                    position: None,
                    resource_id: existing,
                    waits: Waits::default(),
                });
            }
            Err(rejection) => return Err(rejection.into()),
        };
        if events.is_empty() {
            return Ok(Done {
                outcome: Outcome::Unchanged,
                position: None,
                resource_id,
                waits: Waits::default(),
            });
        }
        let metadata = Metadata {
            request_id: ctx.request_id.clone(),
            key_id: ctx.key_id.clone(),
            idempotency: ctx.idempotency.clone(),
        }
        .to_canonical_bytes();
        // A fresh salt for each body, drawn before anything is written.
        let mut salts = vec![[0u8; SALT_LEN]; events.len()];
        getrandom::fill(salts.as_flattened_mut())
            .map_err(|e| store::Error::Unavailable(format!("no random salt for a body: {e}")))?;
        let mut salts = salts.into_iter();
        let mut salt = || salts.next().unwrap_or_default();
        let events = events
            .iter()
            .map(|event| {
                let encoded = event.encode(&mut salt);
                NewEvent {
                    event_type: event.event_type().to_owned(),
                    schema_version: event.schema_version(),
                    data: encoded.data,
                    metadata: metadata.clone(),
                    content: encoded.content,
                }
            })
            .collect();
        let started = Instant::now();
        let appended = self
            .store
            .append_claimed(&stream, expected, events, claims)
            .await?;
        let position = *appended.positions.end();
        let stored = Instant::now();
        self.projector.wait_for(position).await?;
        let waits = Waits {
            store: stored - started,
            model: stored.elapsed(),
        };
        if erases {
            // Served bodies are checked against the erasure anyway; this
            // keeps the erased ones from lingering in memory.
            self.payload_cache.clear();
        }
        Ok(Done {
            outcome: Outcome::Appended,
            position: Some(position),
            resource_id,
            waits,
        })
    }
}

/// What a command answers with.
enum Wants {
    Endpoint,
    Event { delivery_id: Option<String> },
    Nothing,
}

impl Wants {
    fn of(command: &Command) -> Wants {
        match command {
            Command::CreateEndpoint { .. } | Command::UpdateEndpoint { .. } => Wants::Endpoint,
            Command::AcceptEvent { .. } => Wants::Event { delivery_id: None },
            Command::RecordAttempt { delivery_id, .. } => Wants::Event {
                delivery_id: Some(delivery_id.clone()),
            },
            Command::EraseContent {
                event_id: Some(_), ..
            } => Wants::Event { delivery_id: None },
            Command::IssueApiKey { .. }
            | Command::RevokeApiKey { .. }
            | Command::EraseContent { .. } => Wants::Nothing,
        }
    }
}

/// The rows `decide` reads for `command`, loaded from the model.
fn load(view: &View, command: &Command) -> Result<MemoryRows, model::Error> {
    let needs = command.needs();
    let mut rows = MemoryRows::default();
    // Putting rows into memory cannot fail.
    let put = |done: Result<(), std::convert::Infallible>| {
        let Ok(()) = done;
    };
    if let Some(org) = needs.organization_id {
        if let Some(id) = needs.endpoint
            && let Some(endpoint) = view.endpoint(org, id)?
        {
            put(rows.put_endpoint(endpoint));
        }
        if needs.all_endpoints {
            for endpoint in view.endpoints(org)? {
                put(rows.put_endpoint(endpoint));
            }
        }
        if let Some(id) = needs.delivery
            && let Some(delivery) = view.delivery(org, id)?
        {
            put(rows.put_delivery(delivery));
        }
        if let Some(id) = needs.event
            && let Some(event) = view.event(org, id)?
        {
            put(rows.put_event(event));
        }
        if let Some(key) = needs.source_key
            && let Some(event) = view.source_key(org, key)?
        {
            put(rows.put_source_key(org, key, &event));
        }
    }
    if let Some(id) = needs.api_key
        && let Some(key) = view.api_key(id)?
    {
        put(rows.put_api_key(key));
    }
    Ok(rows)
}

/// A fresh id: the type prefix and a ULID, so ids sort by creation time.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", new_ulid())
}

/// ULIDs from one generator per process: strictly increasing even within one
/// millisecond, so "newest first" is exact for everything this process creates.
fn new_ulid() -> ulid::Ulid {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    generator
        .generate()
        .unwrap_or_else(|overflow| overflow.commit_overflow_increment())
}

mod claims;
mod keys;
mod locks;
mod payloads;

pub use claims::{claims, claims_of, store_claims_of};
pub use keys::IssuedKey;
use locks::KeyedLocks;
use payloads::PayloadCache;
