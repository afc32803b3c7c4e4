//! The write path: load state, decide, append with the expected version, wait for
//! the read model to reflect the append. Every command appends to one stream.
//!
//! Beside it: API keys ([`keys`]), answers from the log at a past position
//! ([`history`]), the uniqueness claims the store enforces ([`claims`]) and the
//! in-process locks that serialise repeats ([`locks`]).

use std::sync::{Arc, Mutex, RwLock};

use projections::event::Idempotency;
use projections::{Command, Metadata, Rejection};

use crate::limits::{Exceeded, Limits};
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

/// What a command did. `position` is where the answer stands in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub outcome: Outcome,
    pub position: u64,
    /// The endpoint or webhook event the response is about.
    pub resource_id: String,
    /// For an append: how many events the written stream holds after it.
    pub stream_version: Option<u64>,
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

#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    locks: KeyedLocks,
    limits: RwLock<Limits>,
}

impl Ledger {
    pub fn new(store: Arc<dyn EventStore>, projector: Arc<Projector>) -> Self {
        Ledger {
            store,
            projector,
            locks: KeyedLocks::default(),
            limits: RwLock::new(Limits::default()),
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

    /// Runs a command. `if_match` is the number of events the client expects the
    /// target delivery's stream to hold (its `ETag`); only attempts take it.
    pub async fn execute(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
    ) -> Result<Written, Error> {
        // A stopped projector's model may lack acknowledged writes: deciding
        // against it could repeat an idempotent write, so refuse before appending.
        if let Some(reason) = self.projector.stopped() {
            return Err(projector::Error::Stopped(reason).into());
        }
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
        let claims = claims(&command, ctx);
        // The model may lag appends made by other processes sharing the store;
        // before answering "not found" or 412 from it, catch it up once.
        let mut synced = false;
        for _ in 0..RETRIES {
            if let Some(i) = &ctx.idempotency
                && let Some(done) =
                    self.idempotent_answer(org, i, ctx.request_sha256_as_sent.as_deref())?
            {
                return Ok(done);
            }
            match self
                .try_execute(command.clone(), ctx, if_match, claims.clone())
                .await
            {
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
                other => return other,
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

    fn idempotent_answer(
        &self,
        org: &str,
        i: &Idempotency,
        as_sent: Option<&str>,
    ) -> Result<Option<Written>, Error> {
        let state = self.projector.read();
        let Some(record) = state
            .model
            .tenant(org)
            .and_then(|t| t.idempotency(&i.route, &i.key))
        else {
            return Ok(None);
        };
        let same = record.request_sha256 == i.request_sha256
            || as_sent.is_some_and(|sha| record.request_sha256 == sha);
        if !same {
            return Err(Error::IdempotencyKeyReused);
        }
        Ok(Some(Written {
            outcome: Outcome::Replayed,
            position: record.position,
            resource_id: record.resource_id.clone(),
            stream_version: None,
        }))
    }

    async fn try_execute(
        &self,
        command: Command,
        ctx: &Context,
        if_match: Option<u64>,
        claims: Vec<String>,
    ) -> Result<Written, Error> {
        let (stream, expected, resource_id, events) = {
            let state = self.projector.read();
            let model = &state.model;
            let org = &ctx.organization_id;
            let stream = command.stream(model);
            let (expected, resource_id) = match &command {
                Command::CreateEndpoint { endpoint_id, .. } => {
                    (ExpectedVersion::NoStream, endpoint_id.clone())
                }
                Command::AcceptEvent { event_id, .. } => {
                    (ExpectedVersion::NoStream, event_id.clone())
                }
                Command::UpdateEndpoint { endpoint_id, .. } => {
                    let version = model
                        .tenant(org)
                        .and_then(|t| t.endpoints.get(endpoint_id))
                        .map_or(0, |e| e.version);
                    (ExpectedVersion::count(version), endpoint_id.clone())
                }
                Command::RecordAttempt { delivery_id, .. } => {
                    let delivery = model.tenant(org).and_then(|t| t.delivery(delivery_id));
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
            self.limits().check(model.tenant(org), &command)?;
            let decided = projections::decide(model, command, &mut || new_id("dlv"));
            let events = match decided {
                Ok(events) => events,
                Err(Rejection::DuplicateSourceKey(existing)) => {
                    return Ok(Written {
                        outcome: Outcome::Existing,
                        position: model.position,
                        resource_id: existing,
                        stream_version: None,
                    });
                }
                Err(rejection) => return Err(rejection.into()),
            };
            (stream, expected, resource_id, events)
        };
        if events.is_empty() {
            return Ok(Written {
                outcome: Outcome::Unchanged,
                position: self.projector.position(),
                resource_id,
                stream_version: None,
            });
        }
        let metadata = Metadata {
            request_id: ctx.request_id.clone(),
            key_id: ctx.key_id.clone(),
            idempotency: ctx.idempotency.clone(),
        }
        .to_canonical_bytes();
        let events = events
            .iter()
            .map(|event| NewEvent {
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                data: event.to_canonical_bytes(),
                metadata: metadata.clone(),
            })
            .collect();
        let appended = self
            .store
            .append_claimed(&stream, expected, events, claims)
            .await?;
        let position = *appended.positions.end();
        self.projector.wait_for(position).await?;
        Ok(Written {
            outcome: Outcome::Appended,
            position,
            resource_id,
            stream_version: Some(appended.last_version + 1),
        })
    }
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
mod history;
mod keys;
mod locks;

pub use claims::{claims, claims_of, store_claims_of};
pub use keys::IssuedKey;
use locks::KeyedLocks;
