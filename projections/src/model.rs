//! The read models and the pure folds that build them: `apply(&mut state, &event)`.
//!
//! No I/O, no clock, no randomness: a rebuild from position 1 and the live model fed
//! event by event are equal, field for field. Business rules live in
//! [`crate::decide`]; a fold only records what an event says happened.

use std::collections::BTreeMap;

use crate::bulk::BulkMap;
use crate::event::{
    ApiKeyIssued, ApiKeyRevoked, AttemptRecorded, EndpointCreated, EndpointUpdated, Event,
    Idempotency, Recorded, WebhookEventAccepted,
};
use crate::key::Key;
use crate::values::{AttemptStatus, EventStatus, Timestamp};

/// Everything the API serves, folded from the whole log in position order.
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
pub struct ReadModel {
    /// The position of the last event applied; 0 before any.
    pub position: u64,
    /// Per organization, so no lookup can cross into another one's data.
    #[rkyv(with = BulkMap)]
    pub tenants: BTreeMap<String, Tenant>,
    /// By key id. Keys are looked up before the organization is known.
    #[rkyv(with = BulkMap)]
    pub api_keys: BTreeMap<String, ApiKey>,
}

/// One organization's resources. Maps are ordered by ULID id, so by creation.
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
pub struct Tenant {
    #[rkyv(with = BulkMap)]
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Boxed, like `deliveries`: keys are ULIDs inserted in ascending order,
    /// which leaves B-tree nodes about half full, so the slots hold a pointer
    /// rather than the whole record.
    ///
    /// Keyed by [`Key`], which a fold can look up with without allocating and
    /// compares without a trip to the heap: these two maps take an attempt's
    /// lookups, the bulk of a replay.
    #[rkyv(with = BulkMap)]
    pub events: BTreeMap<Key, Box<WebhookEvent>>,
    #[rkyv(with = BulkMap)]
    pub deliveries: BTreeMap<Key, Box<Delivery>>,
    /// `sourceKey` -> event id, for idempotent event acceptance.
    #[rkyv(with = BulkMap)]
    pub source_keys: BTreeMap<String, String>,
    /// `route` + "\n" + `Idempotency-Key` -> the write it produced.
    #[rkyv(with = BulkMap)]
    pub idempotency: BTreeMap<String, IdempotencyRecord>,
}

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
}

#[derive(
    Debug, Clone, PartialEq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub id: String,
    pub organization_id: String,
    pub event_type: String,
    pub source_key: Option<String>,
    /// The payload object in canonical JSON.
    pub payload: String,
    pub delivery_ids: Vec<String>,
    pub status: EventStatus,
    /// Deliveries whose latest status is `pending` or `retry_scheduled`, and
    /// those `failed`: what `status` is derived from, kept so an attempt need
    /// not look up every sibling delivery. Derived, so not served.
    #[serde(skip)]
    pub open_deliveries: u32,
    #[serde(skip)]
    pub failed_deliveries: u32,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

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

impl ReadModel {
    /// Folds one event. Events must come in position order; an event at or before
    /// the model's position has been applied already and is ignored, so replaying
    /// an overlapping tail after a snapshot is harmless.
    pub fn apply(&mut self, recorded: &Recorded) {
        if recorded.position <= self.position {
            return;
        }
        self.position = recorded.position;
        let at = recorded.recorded_at;
        match &recorded.event {
            Event::ApiKeyIssued(e) => self.apply_key_issued(e, at),
            Event::ApiKeyRevoked(e) => self.apply_key_revoked(e, at),
            event => {
                // Look up before inserting: `entry` would allocate the key every time.
                let org = event.organization_id();
                match self.tenants.get_mut(org) {
                    Some(tenant) => tenant.apply(recorded),
                    None => {
                        let mut tenant = Tenant::default();
                        tenant.apply(recorded);
                        self.tenants.insert(org.to_owned(), tenant);
                    }
                }
            }
        }
    }

    pub fn tenant(&self, organization_id: &str) -> Option<&Tenant> {
        self.tenants.get(organization_id)
    }

    fn apply_key_issued(&mut self, e: &ApiKeyIssued, at: Timestamp) {
        let mut secret_sha256 = [0u8; 32];
        // The decoder checked the field is a string; a malformed digest leaves the
        // key unusable rather than guessable.
        let decoded = decode_hex32(&e.secret_sha256);
        if let Some(digest) = decoded {
            secret_sha256 = digest;
        }
        self.api_keys.insert(
            e.key_id.clone(),
            ApiKey {
                id: e.key_id.clone(),
                organization_id: e.organization_id.clone(),
                secret_sha256,
                created_at: at,
                revoked_at: decoded.is_none().then_some(at),
            },
        );
    }

    fn apply_key_revoked(&mut self, e: &ApiKeyRevoked, at: Timestamp) {
        if let Some(key) = self.api_keys.get_mut(&e.key_id) {
            key.revoked_at.get_or_insert(at);
        }
    }
}

impl Tenant {
    fn apply(&mut self, recorded: &Recorded) {
        let at = recorded.recorded_at;
        let resource_id: &str = match &recorded.event {
            Event::EndpointCreated(e) => {
                self.endpoints
                    .insert(e.endpoint_id.clone(), Endpoint::created(e, at));
                &e.endpoint_id
            }
            Event::EndpointUpdated(e) => {
                if let Some(endpoint) = self.endpoints.get_mut(&e.endpoint_id) {
                    endpoint.apply(e, at);
                }
                &e.endpoint_id
            }
            Event::WebhookEventAccepted(e) => {
                self.apply_accepted(e, at);
                &e.event_id
            }
            Event::AttemptRecorded(e) => {
                self.apply_attempt(e, at);
                &e.event_id
            }
            Event::ApiKeyIssued(_) | Event::ApiKeyRevoked(_) => return,
        };
        if let Some(Idempotency {
            key,
            route,
            request_sha256,
        }) = &recorded.metadata.idempotency
        {
            self.idempotency
                .entry(idempotency_slot(route, key))
                .or_insert_with(|| IdempotencyRecord {
                    request_sha256: request_sha256.clone(),
                    position: recorded.position,
                    resource_id: resource_id.to_owned(),
                    recorded_at: at,
                });
        }
    }

    fn apply_accepted(&mut self, e: &WebhookEventAccepted, at: Timestamp) {
        for planned in &e.deliveries {
            self.deliveries.insert(
                Key::new(&planned.delivery_id),
                Box::new(Delivery {
                    id: planned.delivery_id.clone(),
                    organization_id: e.organization_id.clone(),
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
                }),
            );
        }
        if let Some(source_key) = &e.source_key {
            self.source_keys
                .entry(source_key.clone())
                .or_insert_with(|| e.event_id.clone());
        }
        let status = EventStatus::derive(e.deliveries.iter().map(|_| AttemptStatus::Pending));
        self.events.insert(
            Key::new(&e.event_id),
            Box::new(WebhookEvent {
                id: e.event_id.clone(),
                organization_id: e.organization_id.clone(),
                event_type: e.event_type.clone(),
                source_key: e.source_key.clone(),
                payload: e.payload.get().to_owned(),
                delivery_ids: e.deliveries.iter().map(|d| d.delivery_id.clone()).collect(),
                status,
                open_deliveries: u32::try_from(e.deliveries.len()).unwrap_or(u32::MAX),
                failed_deliveries: 0,
                created_at: at,
                updated_at: at,
            }),
        );
    }

    fn apply_attempt(&mut self, e: &AttemptRecorded, at: Timestamp) {
        let Some(delivery) = self.deliveries.get_mut(&Key::new(&e.delivery_id)) else {
            return;
        };
        let before = delivery.status;
        delivery.apply(e, at);
        let after = delivery.status;
        let Some(event) = self.events.get_mut(&Key::new(&e.event_id)) else {
            return;
        };
        event.count(before, false);
        event.count(after, true);
        // `EventStatus::derive` over the deliveries, from the counts.
        event.status = if event.delivery_ids.is_empty() {
            EventStatus::Skipped
        } else if event.open_deliveries > 0 {
            EventStatus::Pending
        } else if event.failed_deliveries > 0 {
            EventStatus::Failed
        } else {
            EventStatus::Delivered
        };
        event.updated_at = event.updated_at.max(at);
    }

    pub fn delivery(&self, id: &str) -> Option<&Delivery> {
        self.deliveries.get(&Key::new(id)).map(|d| &**d)
    }

    pub fn event(&self, id: &str) -> Option<&WebhookEvent> {
        self.events.get(&Key::new(id)).map(|e| &**e)
    }

    /// The idempotency record for a key sent to a route, if any.
    pub fn idempotency(&self, route: &str, key: &str) -> Option<&IdempotencyRecord> {
        self.idempotency.get(&idempotency_slot(route, key))
    }
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
}

impl Endpoint {
    fn created(e: &EndpointCreated, at: Timestamp) -> Self {
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
        }
    }

    pub fn apply(&mut self, e: &EndpointUpdated, at: Timestamp) {
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
    pub fn apply(&mut self, e: &AttemptRecorded, at: Timestamp) {
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
        }
        self.updated_at = at;
        self.version += 1;
    }
}

fn idempotency_slot(route: &str, key: &str) -> String {
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
