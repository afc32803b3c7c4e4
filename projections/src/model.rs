//! The rows of the read model, and the pure folds that write them:
//! [`apply`]`(rows, event)`.
//!
//! No I/O, no clock, no randomness: a fold reads and writes rows through the
//! [`Rows`] interface only, so the same fold feeds the in-memory rows of the
//! tests and the on-disk store of the server, and a rebuild from position 1
//! equals the live model row for row. Business rules live in
//! [`crate::decide`]; a fold only records what an event says happened.

use crate::event::{
    ApiKeyIssued, ApiKeyRevoked, AttemptRecorded, ContentErased, EndpointCreated, EndpointUpdated,
    Event, Idempotency, Recorded, WebhookEventAccepted,
};
use crate::rows::Rows;
use crate::values::{AttemptStatus, EventStatus, Timestamp};

/// What a fold needs besides the events: settings that every node and every
/// rebuild must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long an `Idempotency-Key` is kept, in microseconds of log time: a
    /// key used again after this is a new request.
    pub idempotency_ttl: i64,
}

impl Settings {
    /// Seven days.
    pub const DEFAULT_IDEMPOTENCY_TTL: i64 = 7 * 24 * 3600 * 1_000_000;
    /// A day: the shortest time a key is kept.
    pub const MIN_IDEMPOTENCY_TTL: i64 = 24 * 3600 * 1_000_000;
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idempotency_ttl: Settings::DEFAULT_IDEMPOTENCY_TTL,
        }
    }
}

/// A registered endpoint as it stands after its stream's latest event.
#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Events in the endpoint's stream.
    pub version: u64,
    /// The global position of the stream's latest event.
    pub position: u64,
}

/// An accepted webhook event. Its payload is not in the read model: it is
/// the content of the event that accepted it, read from the log at
/// `position`, so erasing it leaves no copy behind here.
#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub id: String,
    pub organization_id: String,
    pub event_type: String,
    pub source_key: Option<String>,
    pub delivery_ids: Vec<String>,
    pub status: EventStatus,
    /// Deliveries whose latest status is `pending` or `retry_scheduled`, and
    /// those `failed`: what `status` is derived from, kept so an attempt need
    /// not look up every sibling delivery.
    pub open_deliveries: u32,
    pub failed_deliveries: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The global position it was accepted at.
    pub position: u64,
    /// Its payload, and the response bodies of its deliveries' attempts at
    /// positions before this one, are erased; 0 when none is.
    pub erased_before: u64,
}

/// What an organization's erasures that are not about one event cover
/// (an event's own is [`WebhookEvent::erased_before`]). Every read of a
/// body asks [`Erasures::covers`] before it serves the body.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    serde::Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Erasures {
    /// Every body of the organization's events before this position is
    /// erased (offboarding); 0 when none is.
    pub all_before: u64,
    /// Bodies recorded before this time are erased (retention).
    pub recorded_before: Option<Timestamp>,
    /// The position of the latest retention erasure, and the organization's
    /// sequence number there: where the next one starts looking.
    pub retention_position: u64,
    pub retention_sequence: u64,
    /// The position of the latest erasure of one event's bodies; 0 when
    /// none. No event's own erasure ([`WebhookEvent::erased_before`])
    /// reaches a body at or after it.
    pub events_before: u64,
}

impl Erasures {
    /// Whether the body of the event at `position`, recorded at
    /// `recorded_at`, of an event whose own erasure is `event_erased_before`
    /// (0: none), is erased.
    pub fn covers(&self, position: u64, recorded_at: Timestamp, event_erased_before: u64) -> bool {
        position < self.all_before
            || position < event_erased_before
            || self
                .recorded_before
                .is_some_and(|before| recorded_at < before)
    }

    /// Whether an erasure of one event may cover the body at `position`:
    /// only then does the event's own `erased_before` need reading.
    pub fn one_event_may_cover(&self, position: u64) -> bool {
        position < self.events_before
    }
}

/// A delivery of an event to one endpoint, as its latest attempt left it.
#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub organization_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub endpoint_url: String,
    pub status: AttemptStatus,
    pub attempt_count: u64,
    pub response_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<Timestamp>,
    pub attempted_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Events in the delivery's stream: the `ETag`, and `asOfVersion`'s unit.
    pub version: u64,
    /// The global position of the latest change: the latest attempt's, or the
    /// event's acceptance before any attempt.
    pub position: u64,
    /// The 0-based stream version of the first `delivered` attempt, which set
    /// `delivered_at`.
    pub first_delivered: Option<u64>,
}

/// One recorded attempt, as the sender reported it, with its place in the log.
/// Attempts are never changed: a delivery as it stood at any version or
/// position is its static fields plus the attempt that was latest then.
#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub organization_id: String,
    pub delivery_id: String,
    /// The delivery's event and endpoint, so a list across deliveries can
    /// filter and show them without reading the delivery.
    pub event_id: String,
    pub endpoint_id: String,
    /// 0-based version in the delivery's stream; `attemptNumber` is one more.
    pub version: u64,
    pub position: u64,
    /// The organization's sequence number of the event that recorded it.
    pub sequence: u64,
    pub recorded_at: Timestamp,
    pub status: AttemptStatus,
    pub response_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<Timestamp>,
}

#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub organization_id: String,
    /// SHA-256 of the key's secret part; the secret itself is never stored.
    pub secret_sha256: [u8; 32],
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What an `Idempotency-Key` produced, so a repeat can answer with the same
/// response: the resource it was about, as it stood at `position`.
#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyRecord {
    pub request_sha256: String,
    pub position: u64,
    pub resource_id: String,
    pub recorded_at: Timestamp,
}

impl IdempotencyRecord {
    /// Whether the record still answers a repeat at time `now`.
    pub fn live_at(&self, now: Timestamp, settings: &Settings) -> bool {
        now.micros()
            <= self
                .recorded_at
                .micros()
                .saturating_add(settings.idempotency_ttl)
    }
}

/// Folds one event into `rows`. Events must come in position order, each once;
/// the caller keeps the position (see the projector).
pub fn apply<R: Rows + ?Sized>(
    rows: &mut R,
    recorded: &Recorded,
    settings: &Settings,
) -> Result<(), R::Error> {
    let at = recorded.recorded_at;
    let position = recorded.position;
    let sequence = rows.sequence(recorded.event.organization_id(), position)?;
    let resource_id: &str = match &recorded.event {
        Event::ApiKeyIssued(e) => return key_issued(rows, e, at),
        Event::ApiKeyRevoked(e) => return key_revoked(rows, e, at),
        Event::EndpointCreated(e) => {
            rows.put_endpoint(Endpoint::created(e, at, position))?;
            &e.endpoint_id
        }
        Event::EndpointUpdated(e) => {
            if let Some(endpoint) = rows.endpoint_mut(&e.organization_id, &e.endpoint_id)? {
                endpoint.apply(e, at, position);
                let updated = endpoint.clone();
                rows.put_endpoint(updated)?;
            }
            &e.endpoint_id
        }
        Event::WebhookEventAccepted(e) => {
            accepted(rows, e, at, position)?;
            &e.event_id
        }
        Event::AttemptRecorded(e) => {
            attempt(rows, e, at, (position, sequence))?;
            &e.event_id
        }
        Event::ContentErased(e) => {
            erased(rows, e, (position, sequence))?;
            match &e.event_id {
                Some(id) => id,
                None => return Ok(()),
            }
        }
    };
    if let Some(i) = &recorded.metadata.idempotency {
        idempotency(rows, recorded, i, resource_id, settings)?;
    }
    Ok(())
}

fn idempotency<R: Rows + ?Sized>(
    rows: &mut R,
    recorded: &Recorded,
    i: &Idempotency,
    resource_id: &str,
    settings: &Settings,
) -> Result<(), R::Error> {
    let org = recorded.event.organization_id();
    let slot = idempotency_slot(&i.route, &i.key);
    // The first use of a key stands until it expires; a use after that starts anew.
    let taken = rows
        .idempotency(org, &slot)?
        .is_some_and(|r| r.live_at(recorded.recorded_at, settings));
    if !taken {
        rows.put_idempotency(
            org,
            &slot,
            IdempotencyRecord {
                request_sha256: i.request_sha256.clone(),
                position: recorded.position,
                resource_id: resource_id.to_owned(),
                recorded_at: recorded.recorded_at,
            },
        )?;
    }
    Ok(())
}

fn key_issued<R: Rows + ?Sized>(
    rows: &mut R,
    e: &ApiKeyIssued,
    at: Timestamp,
) -> Result<(), R::Error> {
    // The decoder checked the field is a string; a malformed digest leaves the
    // key unusable rather than guessable.
    let decoded = decode_hex32(&e.secret_sha256);
    rows.put_api_key(ApiKey {
        id: e.key_id.clone(),
        organization_id: e.organization_id.clone(),
        secret_sha256: decoded.unwrap_or([0; 32]),
        created_at: at,
        revoked_at: decoded.is_none().then_some(at),
    })
}

fn key_revoked<R: Rows + ?Sized>(
    rows: &mut R,
    e: &ApiKeyRevoked,
    at: Timestamp,
) -> Result<(), R::Error> {
    if let Some(key) = rows.api_key_mut(&e.key_id)? {
        key.revoked_at.get_or_insert(at);
    }
    Ok(())
}

fn accepted<R: Rows + ?Sized>(
    rows: &mut R,
    e: &WebhookEventAccepted,
    at: Timestamp,
    position: u64,
) -> Result<(), R::Error> {
    let org = &e.organization_id;
    for planned in &e.deliveries {
        rows.put_delivery(Delivery {
            id: planned.delivery_id.clone(),
            organization_id: org.clone(),
            event_id: e.event_id.clone(),
            endpoint_id: planned.endpoint_id.clone(),
            endpoint_name: planned.endpoint_name.clone(),
            endpoint_url: planned.endpoint_url.clone(),
            status: AttemptStatus::Pending,
            attempt_count: 0,
            response_status_code: None,
            last_error: None,
            next_retry_at: None,
            attempted_at: None,
            delivered_at: None,
            created_at: at,
            updated_at: at,
            version: 0,
            position,
            first_delivered: None,
        })?;
    }
    if let Some(source_key) = &e.source_key
        && rows.source_key(org, source_key)?.is_none()
    {
        rows.put_source_key(org, source_key, &e.event_id)?;
    }
    let status = EventStatus::derive(e.deliveries.iter().map(|_| AttemptStatus::Pending));
    rows.put_event(WebhookEvent {
        id: e.event_id.clone(),
        organization_id: org.clone(),
        event_type: e.event_type.clone(),
        source_key: e.source_key.clone(),
        delivery_ids: e.deliveries.iter().map(|d| d.delivery_id.clone()).collect(),
        status,
        open_deliveries: u32::try_from(e.deliveries.len()).unwrap_or(u32::MAX),
        failed_deliveries: 0,
        created_at: at,
        updated_at: at,
        position,
        erased_before: 0,
    })
}

/// Records what an erasure covers; the bodies themselves are in the log,
/// whose reads ask [`Erasures::covers`].
fn erased<R: Rows + ?Sized>(
    rows: &mut R,
    e: &ContentErased,
    (position, sequence): (u64, u64),
) -> Result<(), R::Error> {
    let org = &e.organization_id;
    if let Some(id) = &e.event_id {
        // What the fold changes through `event_mut` is kept.
        if let Some(event) = rows.event_mut(org, id)? {
            event.erased_before = position;
        }
        let erasures = rows.erasures_mut(org)?;
        erasures.events_before = erasures.events_before.max(position);
        return Ok(());
    }
    let erasures = rows.erasures_mut(org)?;
    match e.recorded_before {
        Some(before) => {
            erasures.recorded_before =
                Some(erasures.recorded_before.map_or(before, |b| b.max(before)));
            erasures.retention_position = position;
            erasures.retention_sequence = sequence;
        }
        None => erasures.all_before = position,
    }
    Ok(())
}

/// `place`: the event's global position and the organization's sequence.
fn attempt<R: Rows + ?Sized>(
    rows: &mut R,
    e: &AttemptRecorded,
    at: Timestamp,
    (position, sequence): (u64, u64),
) -> Result<(), R::Error> {
    let org = &e.organization_id;
    let Some(delivery) = rows.delivery_mut(org, &e.delivery_id)? else {
        return Ok(());
    };
    let before = delivery.status;
    let version = delivery.version;
    delivery.apply(e, at, position);
    let after = delivery.status;
    let endpoint_id = delivery.endpoint_id.clone();
    let code = e.response_status_code.map(|c| c.get());
    crate::health::count(rows, org, &endpoint_id, (e.status, code), at)?;
    rows.put_attempt(Attempt {
        organization_id: org.clone(),
        delivery_id: e.delivery_id.clone(),
        event_id: e.event_id.clone(),
        endpoint_id,
        version,
        position,
        sequence,
        recorded_at: at,
        status: e.status,
        response_status_code: code,
        last_error: e.last_error.as_ref().map(|s| s.as_str().to_owned()),
        next_retry_at: e.next_retry_at.as_ref().map(|r| r.at()),
    })?;
    if let Some(event) = rows.event_mut(org, &e.event_id)? {
        event.count(before, false);
        event.count(after, true);
        event.status = event.derived_status();
        event.updated_at = event.updated_at.max(at);
    }
    Ok(())
}

impl WebhookEvent {
    /// Counts a delivery into (`add`) or out of the status counts.
    fn count(&mut self, status: AttemptStatus, add: bool) {
        let counter = match status {
            AttemptStatus::Pending | AttemptStatus::RetryScheduled => &mut self.open_deliveries,
            AttemptStatus::Failed => &mut self.failed_deliveries,
            AttemptStatus::Delivered => return,
        };
        *counter = if add {
            counter.saturating_add(1)
        } else {
            counter.saturating_sub(1)
        };
    }

    /// [`EventStatus::derive`] over the deliveries, from the counts.
    fn derived_status(&self) -> EventStatus {
        if self.delivery_ids.is_empty() {
            EventStatus::Skipped
        } else if self.open_deliveries > 0 {
            EventStatus::Pending
        } else if self.failed_deliveries > 0 {
            EventStatus::Failed
        } else {
            EventStatus::Delivered
        }
    }
}

impl Endpoint {
    fn created(e: &EndpointCreated, at: Timestamp, position: u64) -> Self {
        Endpoint {
            id: e.endpoint_id.clone(),
            organization_id: e.organization_id.clone(),
            name: e.name.clone(),
            url: e.url.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            created_at: at,
            updated_at: at,
            version: 1,
            position,
        }
    }

    pub fn apply(&mut self, e: &EndpointUpdated, at: Timestamp, position: u64) {
        if let Some(name) = &e.name {
            self.name.clone_from(name);
        }
        if let Some(url) = &e.url {
            self.url.clone_from(url);
        }
        if let Some(event_types) = &e.event_types {
            self.event_types.clone_from(event_types);
        }
        if let Some(enabled) = e.enabled {
            self.enabled = enabled;
        }
        self.updated_at = at;
        self.version += 1;
        self.position = position;
    }

    /// Whether an event of `event_type` fans out to this endpoint.
    pub fn subscribes_to(&self, event_type: &str) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

impl Delivery {
    /// The latest attempt decides status, response code, error and retry time
    /// (absent fields count as null); `deliveredAt` keeps the first success.
    pub fn apply(&mut self, e: &AttemptRecorded, at: Timestamp, position: u64) {
        self.status = e.status;
        self.response_status_code = e.response_status_code.map(|c| c.get());
        match (&mut self.last_error, &e.last_error) {
            // Reuse the allocation: retries usually report errors of similar length.
            (Some(mine), Some(theirs)) => theirs.as_str().clone_into(mine),
            (mine, theirs) => *mine = theirs.as_ref().map(|s| s.as_str().to_owned()),
        }
        self.next_retry_at = e.next_retry_at.as_ref().map(|r| r.at());
        self.attempt_count += 1;
        self.attempted_at = Some(at);
        if e.status == AttemptStatus::Delivered && self.delivered_at.is_none() {
            self.delivered_at = Some(at);
            self.first_delivered = Some(self.version);
        }
        self.updated_at = at;
        self.version += 1;
        self.position = position;
    }

    /// The delivery as it stood after its first `latest.version + 1` events,
    /// given the attempt that was latest then (`None`: before any attempt).
    /// Everything an attempt changes comes from that attempt alone.
    pub fn as_of(&self, latest: Option<&Attempt>, accepted_at: u64) -> Delivery {
        let mut then = self.clone();
        match latest {
            None => {
                then.status = AttemptStatus::Pending;
                then.attempt_count = 0;
                then.response_status_code = None;
                then.last_error = None;
                then.next_retry_at = None;
                then.attempted_at = None;
                then.delivered_at = None;
                then.first_delivered = None;
                then.updated_at = self.created_at;
                then.version = 0;
                then.position = accepted_at;
            }
            Some(a) => {
                then.status = a.status;
                then.attempt_count = a.version + 1;
                then.response_status_code = a.response_status_code;
                then.last_error.clone_from(&a.last_error);
                then.next_retry_at = a.next_retry_at;
                then.attempted_at = Some(a.recorded_at);
                if self.first_delivered.is_none_or(|first| first > a.version) {
                    then.delivered_at = None;
                    then.first_delivered = None;
                }
                then.updated_at = a.recorded_at;
                then.version = a.version + 1;
                then.position = a.position;
            }
        }
        then
    }
}

/// The key of an idempotency record within its organization.
pub fn idempotency_slot(route: &str, key: &str) -> String {
    format!("{route}\n{key}")
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}
