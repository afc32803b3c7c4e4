//! The JSON shapes the API returns, built from the read model. Nullable fields are
//! always present, as `null` when empty; timestamps are RFC 3339 UTC.

use serde::Serialize;

use crate::body::Body;
use crate::canonical::JsonObject;
use crate::model::{Delivery, Endpoint, WebhookEvent};
use crate::rows::Tenant;
use crate::values::{AttemptStatus, EventStatus, Timestamp};

/// `OutboundWebhookDeliverySnapshot` of the record-attempt contract (`docs/DESIGN.md` §1).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySnapshot {
    pub id: String,
    pub organization_id: String,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub endpoint_url: String,
    pub attempt_count: u64,
    pub response_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_retry_at: Option<Timestamp>,
    pub attempted_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub status: AttemptStatus,
}

/// A delivery on its own: the snapshot plus the event it belongs to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    #[serde(flatten)]
    pub snapshot: DeliverySnapshot,
    pub event_id: String,
}

/// The parent webhook event with all its deliveries: the record-attempt response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSnapshot {
    pub id: String,
    pub organization_id: String,
    pub event_type: String,
    pub source_key: Option<String>,
    pub status: EventStatus,
    pub endpoint_count: u64,
    /// `null` once erased.
    pub payload: Body,
    /// Present, and true, once the payload is erased.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub payload_erased: bool,
    pub deliveries: Vec<DeliverySnapshot>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<&Delivery> for DeliverySnapshot {
    fn from(d: &Delivery) -> Self {
        DeliverySnapshot {
            id: d.id.clone(),
            organization_id: d.organization_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            endpoint_name: d.endpoint_name.clone(),
            endpoint_url: d.endpoint_url.clone(),
            attempt_count: d.attempt_count,
            response_status_code: d.response_status_code,
            last_error: d.last_error.clone(),
            next_retry_at: d.next_retry_at,
            attempted_at: d.attempted_at,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
            status: d.status,
        }
    }
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        DeliveryView {
            snapshot: d.into(),
            event_id: d.event_id.clone(),
        }
    }
}

impl From<&Endpoint> for EndpointView {
    fn from(e: &Endpoint) -> Self {
        EndpointView {
            id: e.id.clone(),
            organization_id: e.organization_id.clone(),
            name: e.name.clone(),
            url: e.url.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

impl EventSnapshot {
    /// The event with `deliveries`, which must be its deliveries in fan-out
    /// order, all as they stood at one moment. The status and `updatedAt` are
    /// derived from them, so an answer about the past is as consistent as one
    /// about the present.
    pub fn new(event: &WebhookEvent, payload: Body, deliveries: Vec<DeliverySnapshot>) -> Self {
        let status = EventStatus::derive(deliveries.iter().map(|d| d.status));
        let updated_at = deliveries
            .iter()
            .map(|d| d.updated_at)
            .fold(event.created_at, Timestamp::max);
        EventSnapshot {
            id: event.id.clone(),
            organization_id: event.organization_id.clone(),
            event_type: event.event_type.clone(),
            source_key: event.source_key.clone(),
            status,
            endpoint_count: event.delivery_ids.len() as u64,
            payload_erased: payload.is_erased(),
            payload,
            deliveries,
            created_at: event.created_at,
            updated_at,
        }
    }
}

impl EventSnapshot {
    /// The snapshot as the record-attempt contract shapes it, which requires
    /// `payload` to be an object: an erased payload is `{}` there, with
    /// `payloadErased` saying so.
    pub fn for_contract(mut self) -> Self {
        if self.payload.is_erased() {
            self.payload = Body::Kept(JsonObject::empty());
        }
        self
    }
}

impl Tenant {
    /// The event with its deliveries as they stand now, with `payload`,
    /// which is kept in the log, not in these rows.
    pub fn event_snapshot(&self, event_id: &str, payload: Body) -> Option<EventSnapshot> {
        self.event_snapshot_as_of(event_id, payload, u64::MAX)
    }

    /// The event with its deliveries as they stood right after global
    /// position `position`.
    pub fn event_snapshot_as_of(
        &self,
        event_id: &str,
        payload: Body,
        position: u64,
    ) -> Option<EventSnapshot> {
        let event = self.event(event_id)?;
        if event.position > position {
            return None;
        }
        let deliveries = event
            .delivery_ids
            .iter()
            .filter_map(|id| self.delivery_as_of(id, position))
            .map(|d| DeliverySnapshot::from(&d))
            .collect();
        Some(EventSnapshot::new(event, payload, deliveries))
    }

    /// The delivery as it stood right after global position `position`.
    pub fn delivery_as_of(&self, id: &str, position: u64) -> Option<Delivery> {
        let now = self.delivery(id)?;
        if now.position <= position {
            return Some(now.clone());
        }
        let latest = (0..now.version)
            .rev()
            .filter_map(|v| self.attempt(id, v))
            .find(|a| a.position <= position);
        let accepted_at = self.event(&now.event_id).map_or(0, |e| e.position);
        Some(now.as_of(latest, accepted_at))
    }
}
