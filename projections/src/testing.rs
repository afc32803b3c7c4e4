//! Given / when / then: `given([events]).when(command).then([events])`, and the
//! read model that the given events plus the decided ones fold into.
//!
//! Also small builders for the events and commands the tests repeat, so a test
//! spells out only what it is about. Test-only: nothing here is compiled into the
//! library.

use serde_json::{Value, json};

use crate::body::Body;
use crate::canonical::JsonObject;
use crate::decide::{Command, Rejection, decide};
use crate::event::{
    AttemptRecorded, ContentErased, EndpointCreated, EndpointUpdated, ErasureReason, Event,
    Metadata, PlannedDelivery, Recorded, WebhookEventAccepted,
};
use crate::model::{Delivery, Settings, WebhookEvent, apply};
use crate::rows::{MemoryRows, Tenant};
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};
use crate::view::EventSnapshot;

/// Events start at this instant and are one second apart.
pub const T0: i64 = 1_700_000_000_000_000;

/// The time the harness records the event at global position `n` with.
pub fn at(n: u64) -> Timestamp {
    Timestamp::from_micros(T0 + n as i64 * 1_000_000)
}

#[derive(Debug, Default)]
pub struct Scenario {
    pub model: MemoryRows,
    /// The position of the last event folded.
    pub position: u64,
    /// Every event folded so far, as the log would hand it to a rebuild.
    pub log: Vec<Recorded>,
    next_id: u64,
}

pub fn given(events: impl IntoIterator<Item = Event>) -> Scenario {
    let mut scenario = Scenario::default();
    for event in events {
        scenario.fold(event, Metadata::default());
    }
    scenario
}

impl Scenario {
    /// Folds one event at the next position, one second after the previous one.
    pub fn fold(&mut self, event: Event, metadata: Metadata) -> &mut Self {
        let position = self.position + 1;
        let recorded = Recorded {
            position,
            // Folds take versions from their own state, not from here.
            version: 0,
            recorded_at: at(position),
            metadata,
            event,
        };
        let Ok(()) = apply(&mut self.model, &recorded, &Settings::default());
        self.position = position;
        self.log.push(recorded);
        self
    }

    pub fn when(mut self, command: impl Into<Command>) -> Outcome {
        let mut next_id = self.next_id;
        let result = decide(&self.model, command.into(), &mut || {
            next_id += 1;
            format!("dlv_{next_id:04}")
        });
        self.next_id = next_id;
        if let Ok(events) = &result {
            for event in events.clone() {
                self.fold(event, Metadata::default());
            }
        }
        Outcome {
            scenario: self,
            result,
        }
    }

    /// The payload the log holds for `event_id`, as a read takes it from the
    /// accepted event (the read model keeps none).
    #[track_caller]
    pub fn payload_in_log(&self, event_id: &str) -> Body {
        self.log
            .iter()
            .find_map(|r| match &r.event {
                Event::WebhookEventAccepted(e) if e.event_id == event_id => Some(e.payload.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no accepted event {event_id} in the log"))
    }

    /// The event's snapshot as it stands now, its payload read from the log.
    #[track_caller]
    pub fn snapshot(&self, org: &str, event_id: &str) -> EventSnapshot {
        self.model
            .org(org)
            .event_snapshot(event_id, self.payload_in_log(event_id))
            .unwrap_or_else(|| panic!("no snapshot of {event_id} in {org}"))
    }

    /// Decides and folds a step that comes before the one under test; it must
    /// be accepted.
    #[track_caller]
    pub fn and(self, command: impl Into<Command>) -> Scenario {
        let outcome = self.when(command);
        if let Err(rejection) = &outcome.result {
            panic!("a given step was rejected: {rejection:?}");
        }
        outcome.scenario
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub scenario: Scenario,
    pub result: Result<Vec<Event>, Rejection>,
}

impl Outcome {
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = Event>) -> MemoryRows {
        let expected: Vec<Event> = expected.into_iter().collect();
        assert_eq!(self.result, Ok(expected));
        self.scenario.model
    }

    #[track_caller]
    pub fn then_err(self, expected: Rejection) -> MemoryRows {
        assert_eq!(self.result, Err(expected));
        self.scenario.model
    }
}

// --- Builders -------------------------------------------------------------------

pub const ORG: &str = "org_a";
pub const OTHER_ORG: &str = "org_b";

pub fn endpoint_name(id: &str) -> String {
    format!("endpoint {id}")
}

pub fn endpoint_url(id: &str) -> String {
    format!("https://receiver.example/{id}")
}

/// An enabled endpoint subscribed to `event_types` (empty: every type).
pub fn endpoint(id: &str, org: &str, event_types: &[&str]) -> Event {
    Event::EndpointCreated(EndpointCreated {
        endpoint_id: id.to_owned(),
        organization_id: org.to_owned(),
        name: endpoint_name(id),
        url: endpoint_url(id),
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        enabled: true,
    })
}

pub fn disabled_endpoint(id: &str, org: &str, event_types: &[&str]) -> Event {
    let Event::EndpointCreated(mut created) = endpoint(id, org, event_types) else {
        unreachable!()
    };
    created.enabled = false;
    Event::EndpointCreated(created)
}

pub fn payload() -> JsonObject {
    JsonObject::from_value(&json!({"order": {"id": 42, "total": "9.99"}, "tags": ["a", "b"]}))
        .expect("an object")
}

pub fn accept(event_id: &str, org: &str, event_type: &str) -> Command {
    Command::AcceptEvent {
        event_id: event_id.to_owned(),
        organization_id: org.to_owned(),
        event_type: event_type.to_owned(),
        source_key: None,
        payload: payload(),
    }
}

pub fn accept_keyed(event_id: &str, org: &str, event_type: &str, source_key: &str) -> Command {
    let Command::AcceptEvent {
        event_id,
        organization_id,
        event_type,
        payload,
        ..
    } = accept(event_id, org, event_type)
    else {
        unreachable!()
    };
    Command::AcceptEvent {
        event_id,
        organization_id,
        event_type,
        source_key: Some(source_key.to_owned()),
        payload,
    }
}

/// The event `accept(event_id, org, event_type)` decides, given the planned deliveries.
pub fn accepted(
    event_id: &str,
    org: &str,
    event_type: &str,
    deliveries: impl IntoIterator<Item = PlannedDelivery>,
) -> Event {
    Event::WebhookEventAccepted(WebhookEventAccepted {
        event_id: event_id.to_owned(),
        organization_id: org.to_owned(),
        event_type: event_type.to_owned(),
        source_key: None,
        payload: Body::Kept(payload()),
        deliveries: deliveries.into_iter().collect(),
    })
}

/// A delivery to an endpoint built by [`endpoint`], with its name and url unchanged.
pub fn planned(delivery_id: &str, endpoint_id: &str) -> PlannedDelivery {
    PlannedDelivery {
        delivery_id: delivery_id.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        endpoint_name: endpoint_name(endpoint_id),
        endpoint_url: endpoint_url(endpoint_id),
    }
}

/// An attempt as a sender reports it; every optional field starts absent.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: String,
    pub organization_id: String,
    pub status: AttemptStatus,
    pub response_status_code: Option<HttpStatusCode>,
    pub response_body: Option<JsonObject>,
    pub last_error: Option<NonEmptyString>,
    pub next_retry_at: Option<RetryAt>,
}

pub fn attempt(delivery_id: &str, org: &str, status: AttemptStatus) -> Attempt {
    Attempt {
        delivery_id: delivery_id.to_owned(),
        organization_id: org.to_owned(),
        status,
        response_status_code: None,
        response_body: None,
        last_error: None,
        next_retry_at: None,
    }
}

impl Attempt {
    pub fn code(mut self, code: i64) -> Self {
        self.response_status_code = Some(HttpStatusCode::parse(code).expect("a valid status code"));
        self
    }

    pub fn body(mut self, body: Value) -> Self {
        self.response_body = Some(JsonObject::from_value(&body).expect("an object"));
        self
    }

    pub fn error(mut self, error: &str) -> Self {
        self.last_error = Some(NonEmptyString::parse(error).expect("a non-empty error"));
        self
    }

    pub fn retry_at(mut self, at: &str) -> Self {
        self.next_retry_at = Some(RetryAt::parse(at).expect("a valid nextRetryAt"));
        self
    }

    /// The event deciding this attempt appends, for a delivery of `event_id`.
    pub fn recorded(&self, event_id: &str) -> Event {
        Event::AttemptRecorded(AttemptRecorded {
            delivery_id: self.delivery_id.clone(),
            event_id: event_id.to_owned(),
            organization_id: self.organization_id.clone(),
            status: self.status,
            response_status_code: self.response_status_code,
            response_body: self.response_body.clone().map(Body::Kept),
            last_error: self.last_error.clone(),
            next_retry_at: self.next_retry_at.clone(),
        })
    }
}

impl From<Attempt> for Command {
    fn from(a: Attempt) -> Command {
        Command::RecordAttempt {
            delivery_id: a.delivery_id,
            organization_id: a.organization_id,
            status: a.status,
            response_status_code: a.response_status_code,
            response_body: a.response_body,
            last_error: a.last_error,
            next_retry_at: a.next_retry_at,
        }
    }
}

/// A `PATCH` of an endpoint; every field starts absent (unchanged).
#[derive(Debug, Clone)]
pub struct Patch {
    pub endpoint_id: String,
    pub organization_id: String,
    pub name: Option<String>,
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

pub fn patch(endpoint_id: &str, org: &str) -> Patch {
    Patch {
        endpoint_id: endpoint_id.to_owned(),
        organization_id: org.to_owned(),
        name: None,
        url: None,
        event_types: None,
        enabled: None,
    }
}

impl Patch {
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn url(mut self, url: &str) -> Self {
        self.url = Some(url.to_owned());
        self
    }

    pub fn event_types(mut self, event_types: &[&str]) -> Self {
        self.event_types = Some(event_types.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }

    /// The event recording exactly the fields this patch carries.
    pub fn updated(&self) -> Event {
        Event::EndpointUpdated(EndpointUpdated {
            endpoint_id: self.endpoint_id.clone(),
            organization_id: self.organization_id.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            event_types: self.event_types.clone(),
            enabled: self.enabled,
        })
    }
}

impl From<Patch> for Command {
    fn from(p: Patch) -> Command {
        Command::UpdateEndpoint {
            endpoint_id: p.endpoint_id,
            organization_id: p.organization_id,
            name: p.name,
            url: p.url,
            event_types: p.event_types,
            enabled: p.enabled,
        }
    }
}

/// `EraseContent` of one event's bodies, as `DELETE .../{id}/content` asks.
pub fn erase_event(event_id: &str, org: &str) -> Command {
    Command::EraseContent {
        organization_id: org.to_owned(),
        event_id: Some(event_id.to_owned()),
        recorded_before: None,
        reason: ErasureReason::Request,
    }
}

/// `EraseContent` of every body of an organization (offboarding).
pub fn erase_org(org: &str) -> Command {
    Command::EraseContent {
        organization_id: org.to_owned(),
        event_id: None,
        recorded_before: None,
        reason: ErasureReason::Offboarding,
    }
}

/// `EraseContent` of an organization's bodies recorded before `before` (retention).
pub fn erase_before(org: &str, before: Timestamp) -> Command {
    Command::EraseContent {
        organization_id: org.to_owned(),
        event_id: None,
        recorded_before: Some(before),
        reason: ErasureReason::Retention,
    }
}

/// The event an `EraseContent` command decides: the command's fields as they are.
pub fn content_erased(command: &Command) -> Event {
    let Command::EraseContent {
        organization_id,
        event_id,
        recorded_before,
        reason,
    } = command.clone()
    else {
        panic!("not an EraseContent: {command:?}")
    };
    Event::ContentErased(ContentErased {
        organization_id,
        event_id,
        recorded_before,
        reason,
    })
}

// --- Reading the model ----------------------------------------------------------

pub trait ModelExt {
    fn org(&self, org: &str) -> &Tenant;
    fn delivery(&self, org: &str, id: &str) -> &Delivery;
    fn event(&self, org: &str, id: &str) -> &WebhookEvent;
}

impl ModelExt for MemoryRows {
    #[track_caller]
    fn org(&self, org: &str) -> &Tenant {
        self.tenant(org)
            .unwrap_or_else(|| panic!("no tenant {org}"))
    }

    #[track_caller]
    fn delivery(&self, org: &str, id: &str) -> &Delivery {
        self.org(org)
            .delivery(id)
            .unwrap_or_else(|| panic!("no delivery {id} in {org}"))
    }

    #[track_caller]
    fn event(&self, org: &str, id: &str) -> &WebhookEvent {
        self.org(org)
            .event(id)
            .unwrap_or_else(|| panic!("no event {id} in {org}"))
    }
}
