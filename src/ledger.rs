//! The write path: load state, decide, append with the expected version, wait for
//! the read model to reflect the append. Every command appends to one stream.
//!
//! It also answers the questions that need the log rather than the live model:
//! what a resource looked like at a past position or version, for idempotent
//! replays and `asOfVersion`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use projections::event::{Idempotency, stream};
use projections::view::{DeliveryView, EndpointView, EventSnapshot};
use projections::{ApiKey, Command, Metadata, ReadModel, Rejection};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::projector::{self, Projector};
use crate::store::{self, EventStore, ExpectedVersion, NewEvent, RecordedEvent};

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

/// A newly issued API key. `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key_id: String,
    pub organization_id: String,
    pub token: String,
}

#[derive(Debug)]
pub struct Ledger {
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    locks: KeyedLocks,
}

impl Ledger {
    pub fn new(store: Arc<dyn EventStore>, projector: Arc<Projector>) -> Self {
        Ledger {
            store,
            projector,
            locks: KeyedLocks::default(),
        }
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
        let claims = claims(&command, ctx);
        // The model may lag appends made by other processes sharing the store;
        // before answering "not found" or 412 from it, catch it up once.
        let mut synced = false;
        for _ in 0..RETRIES {
            if let Some(i) = &ctx.idempotency
                && let Some(done) = self.idempotent_answer(org, i)?
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

    fn idempotent_answer(&self, org: &str, i: &Idempotency) -> Result<Option<Written>, Error> {
        let state = self.projector.read();
        let Some(record) = state
            .model
            .tenant(org)
            .and_then(|t| t.idempotency(&i.route, &i.key))
        else {
            return Ok(None);
        };
        if record.request_sha256 != i.request_sha256 {
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
                    let delivery = model
                        .tenant(org)
                        .and_then(|t| t.deliveries.get(delivery_id));
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

    /// Issues a key for `organization_id`. The token is returned once; only the
    /// SHA-256 of its secret is stored.
    pub async fn issue_key(&self, organization_id: &str) -> Result<IssuedKey, Error> {
        let ulid = new_ulid().to_string();
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            store::Error::Unavailable(format!("the system random source failed: {e}"))
        })?;
        let secret = hex::encode(secret);
        let key_id = format!("key_{ulid}");
        let command = Command::IssueApiKey {
            key_id: key_id.clone(),
            organization_id: organization_id.to_owned(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        let ctx = Context {
            organization_id: organization_id.to_owned(),
            ..Context::default()
        };
        self.execute(command, &ctx, None).await?;
        Ok(IssuedKey {
            key_id,
            organization_id: organization_id.to_owned(),
            token: format!("hlk_{ulid}_{secret}"),
        })
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), Error> {
        let org = self
            .projector
            .read()
            .model
            .api_keys
            .get(key_id)
            .map(|k| k.organization_id.clone())
            .ok_or_else(|| Rejection::ApiKeyNotFound(key_id.to_owned()))?;
        let ctx = Context {
            organization_id: org,
            ..Context::default()
        };
        let command = Command::RevokeApiKey {
            key_id: key_id.to_owned(),
        };
        self.execute(command, &ctx, None).await.map(drop)
    }

    /// [`Ledger::authenticate`], and if the model does not know the key, again
    /// after catching it up with the store: a key issued through another process
    /// sharing the store works at once.
    pub async fn authenticate_synced(&self, token: &str) -> Result<Option<ApiKey>, Error> {
        if let Some(key) = self.authenticate(token) {
            return Ok(Some(key));
        }
        if !token.starts_with("hlk_") {
            return Ok(None);
        }
        self.sync().await?;
        Ok(self.authenticate(token))
    }

    /// The live key a bearer token belongs to, if it is valid and not revoked.
    /// The secret is compared in constant time.
    pub fn authenticate(&self, token: &str) -> Option<ApiKey> {
        let (ulid, secret) = token.strip_prefix("hlk_")?.split_once('_')?;
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let state = self.projector.read();
        let key = state.model.api_keys.get(&format!("key_{ulid}"))?;
        let matches: bool = key.secret_sha256.ct_eq(&presented).into();
        (matches && key.revoked_at.is_none()).then(|| key.clone())
    }

    /// The webhook event with its deliveries as it stood at `position`.
    pub async fn event_as_of(
        &self,
        org: &str,
        event_id: &str,
        position: u64,
    ) -> Result<Option<EventSnapshot>, Error> {
        let delivery_ids = {
            let state = self.projector.read();
            match state.model.tenant(org).and_then(|t| t.events.get(event_id)) {
                Some(event) => event.delivery_ids.clone(),
                None => return Ok(None),
            }
        };
        let mut streams = vec![stream::event(event_id)];
        streams.extend(delivery_ids.iter().map(|id| stream::delivery(id)));
        let model = self
            .fold_streams(&streams, |e| e.position <= position)
            .await?;
        Ok(model.tenant(org).and_then(|t| t.event_snapshot(event_id)))
    }

    /// The endpoint as it stood at `position`.
    pub async fn endpoint_as_of(
        &self,
        org: &str,
        endpoint_id: &str,
        position: u64,
    ) -> Result<Option<EndpointView>, Error> {
        let model = self
            .fold_streams(&[stream::endpoint(endpoint_id)], |e| e.position <= position)
            .await?;
        Ok(model
            .tenant(org)
            .and_then(|t| t.endpoints.get(endpoint_id))
            .map(EndpointView::from))
    }

    /// The delivery as it stood after the first `version` events of its stream.
    pub async fn delivery_as_of_version(
        &self,
        org: &str,
        delivery_id: &str,
        version: u64,
    ) -> Result<Option<DeliveryView>, Error> {
        let event_id = {
            let state = self.projector.read();
            match state
                .model
                .tenant(org)
                .and_then(|t| t.deliveries.get(delivery_id))
            {
                Some(d) if version <= d.version => d.event_id.clone(),
                _ => return Ok(None),
            }
        };
        let delivery_stream = stream::delivery(delivery_id);
        let streams = [stream::event(&event_id), delivery_stream.clone()];
        let model = self
            .fold_streams(&streams, |e| {
                e.stream != delivery_stream || e.version < version
            })
            .await?;
        Ok(model
            .tenant(org)
            .and_then(|t| t.deliveries.get(delivery_id))
            .map(DeliveryView::from))
    }

    /// Every event of one stream, in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>, Error> {
        Ok(store::read_whole_stream(self.store.as_ref(), stream).await?)
    }

    /// Folds the chosen events of some streams, in position order, into a fresh model.
    async fn fold_streams(
        &self,
        streams: &[String],
        keep: impl Fn(&RecordedEvent) -> bool,
    ) -> Result<ReadModel, Error> {
        let mut events = Vec::new();
        for name in streams {
            events.extend(self.read_stream(name).await?.into_iter().filter(&keep));
        }
        events.sort_by_key(|e| e.position);
        let mut model = ReadModel::default();
        for event in &events {
            model.apply(&projector::decode(event)?);
        }
        Ok(model)
    }
}

/// The claims a command takes in the store (see
/// [`EventStore::append_claimed`]): its `Idempotency-Key` per organization and
/// route, and an accepted event's `sourceKey` per organization. The store makes
/// them unique across every process that shares it, which the in-process locks
/// in [`Ledger::execute`] cannot.
pub fn claims(command: &Command, ctx: &Context) -> Vec<String> {
    let org = &ctx.organization_id;
    let mut claims = Vec::new();
    if let Some(i) = &ctx.idempotency {
        claims.push(idempotency_claim(org, &i.route, &i.key));
    }
    if let Command::AcceptEvent {
        source_key: Some(key),
        organization_id,
        ..
    } = command
    {
        claims.push(source_key_claim(organization_id, key));
    }
    claims
}

fn idempotency_claim(org: &str, route: &str, key: &str) -> String {
    format!("idempotency\n{org}\n{route}\n{key}")
}

fn source_key_claim(org: &str, key: &str) -> String {
    format!("sourceKey\n{org}\n{key}")
}

/// The claims [`claims`] gave the append that recorded `event`, recognised from
/// the event itself, so a store that keeps no claims can rebuild them on open.
pub fn claims_of(event: &RecordedEvent) -> Vec<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Owner {
        organization_id: String,
        #[serde(default)]
        source_key: Option<String>,
    }
    let accepted = event.event_type == "WebhookEventAccepted";
    // Most events carry neither: skip them without parsing anything.
    let keyed = memchr_find(&event.metadata, b"\"idempotency\"");
    if !accepted && !keyed {
        return Vec::new();
    }
    let Ok(owner) = serde_json::from_slice::<Owner>(&event.data) else {
        return Vec::new();
    };
    let mut claims = Vec::new();
    if keyed
        && let Ok(Metadata {
            idempotency: Some(i),
            ..
        }) = Metadata::decode(&event.metadata)
    {
        claims.push(idempotency_claim(&owner.organization_id, &i.route, &i.key));
    }
    if accepted && let Some(key) = &owner.source_key {
        claims.push(source_key_claim(&owner.organization_id, key));
    }
    claims
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// [`claims_of`] in the form the embedded store's options take.
pub fn store_claims_of() -> store::ClaimsOf {
    store::ClaimsOf(Arc::new(claims_of))
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

/// Async mutexes by key, created on demand and dropped when no one holds them.
#[derive(Debug, Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: String) -> KeyGuard<'_> {
        let mutex = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Only the map's own reference left: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Node;

    /// The embedded log rebuilds claims with `claims_of` from the records alone:
    /// it must find exactly the claims the command took when it was appended.
    #[tokio::test]
    async fn claims_of_a_recorded_event_are_the_claims_its_command_took() {
        let node = Node::in_memory().await;
        let ctx = Context {
            organization_id: "org_1".into(),
            idempotency: Some(Idempotency {
                key: "k-1".into(),
                route: "POST /v1/outbound-webhook-events".into(),
                request_sha256: "0".repeat(64),
            }),
            ..Context::default()
        };
        let command = Command::AcceptEvent {
            event_id: "evt_1".into(),
            organization_id: "org_1".into(),
            event_type: "invoice.paid".into(),
            source_key: Some("order-42".into()),
            payload: serde_json::json!({"n": 1}),
        };
        let taken = claims(&command, &ctx);
        assert_eq!(taken.len(), 2);
        node.ledger.execute(command, &ctx, None).await.unwrap();
        let recorded = node.ledger.read_stream("event-evt_1").await.unwrap();
        assert_eq!(claims_of(&recorded[0]), taken);

        // Without either key, nothing is claimed and nothing is recognised.
        let plain = Context {
            organization_id: "org_1".into(),
            ..Context::default()
        };
        let command = Command::AcceptEvent {
            event_id: "evt_2".into(),
            organization_id: "org_1".into(),
            event_type: "invoice.paid".into(),
            source_key: None,
            payload: serde_json::json!({"n": 2}),
        };
        assert!(claims(&command, &plain).is_empty());
        node.ledger.execute(command, &plain, None).await.unwrap();
        let recorded = node.ledger.read_stream("event-evt_2").await.unwrap();
        assert!(claims_of(&recorded[0]).is_empty());
    }
}
