//! Every limit on what clients send and what one organization may keep, in one
//! place: the sizes a request's fields may have, and the counts an organization
//! may reach (endpoints, event types per endpoint, deliveries per event). Each
//! is a `serve` flag; a request past one is refused with a problem naming the
//! limit and the field, and appends nothing.
//!
//! The counts are decided here, against the organization as the read model
//! holds it, by a pure function the ledger calls while endpoint changes of that
//! organization are serialised. Fan-out is capped where it is made, when an
//! endpoint subscribes, never when an event is accepted: an accepted event
//! always fits in one stored event. [`Limits::check_fits`] proves that for a
//! configuration by building the largest event it allows.

use std::collections::HashMap;

use projections::body::SALT_LEN;
use projections::event::{Metadata, PlannedDelivery, WebhookEventAccepted};
use projections::view::{DeliverySnapshot, EventSnapshot};
use projections::{
    AttemptStatus, Body, Command, Endpoint, EventStatus, JsonObject, Tenant, Timestamp,
};

/// The largest request body: 1 MiB. It bounds every field a client sends in one
/// request together, payload included.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest organization id `keys create` issues a key for.
pub const MAX_ORGANIZATION_ID: usize = 128;

/// The limits a server enforces; `serve` flags set them (see `serve --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Endpoints one organization may register (disabled ones count).
    pub endpoints_per_organization: usize,
    /// Items in one endpoint's `eventTypes`.
    pub event_types_per_endpoint: usize,
    /// Deliveries one event may fan out to: enabled endpoints subscribed to
    /// one event type.
    pub fan_out: usize,
    /// Characters in an endpoint's `name`.
    pub name_length: usize,
    /// Characters in an endpoint's `url`.
    pub url_length: usize,
    /// Characters in an event type, in an event or an endpoint's `eventTypes`.
    pub event_type_length: usize,
    /// Characters in an event's `sourceKey`.
    pub source_key_length: usize,
    /// Characters in an attempt's `lastError`.
    pub last_error_length: usize,
    /// Characters in an `Idempotency-Key` header.
    pub idempotency_key_length: usize,
    /// Bytes after which a list page takes no more items.
    pub page_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            endpoints_per_organization: 1000,
            event_types_per_endpoint: 100,
            fan_out: 256,
            name_length: 256,
            url_length: 2048,
            event_type_length: 256,
            source_key_length: 256,
            last_error_length: 2048,
            idempotency_key_length: 256,
            page_bytes: 1024 * 1024,
        }
    }
}

/// The flag (without `--`) that sets each limit: what messages name.
pub mod name {
    pub const ENDPOINTS_PER_ORGANIZATION: &str = "max-endpoints-per-org";
    pub const EVENT_TYPES_PER_ENDPOINT: &str = "max-event-types-per-endpoint";
    pub const FAN_OUT: &str = "max-fan-out";
    pub const NAME_LENGTH: &str = "max-name-length";
    pub const URL_LENGTH: &str = "max-url-length";
    pub const EVENT_TYPE_LENGTH: &str = "max-event-type-length";
    pub const SOURCE_KEY_LENGTH: &str = "max-source-key-length";
    pub const LAST_ERROR_LENGTH: &str = "max-last-error-length";
    pub const IDEMPOTENCY_KEY_LENGTH: &str = "max-idempotency-key-length";
    pub const PAGE_BYTES: &str = "max-page-bytes";
}

/// A limit a command would go past, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Exceeded {
    /// The limit's flag, e.g. `max-fan-out`.
    pub limit: &'static str,
    pub field: &'static str,
    pub message: String,
}

/// Which event types an endpoint receives.
#[derive(Debug, Clone, Copy)]
enum Receives<'a> {
    Nothing,
    Every,
    Only(&'a [String]),
}

impl<'a> Receives<'a> {
    fn of(enabled: bool, event_types: &'a [String]) -> Self {
        match (enabled, event_types) {
            (false, _) => Receives::Nothing,
            (true, []) => Receives::Every,
            (true, types) => Receives::Only(types),
        }
    }

    fn includes(self, event_type: &str) -> bool {
        match self {
            Receives::Nothing => false,
            Receives::Every => true,
            Receives::Only(types) => types.iter().any(|t| t == event_type),
        }
    }
}

impl Limits {
    /// Whether `command` keeps `tenant` (the organization as the model holds
    /// it, `None` before its first write) within the counts. Only endpoint
    /// commands can go past one; an event or an attempt never does.
    pub fn check(&self, tenant: Option<&Tenant>, command: &Command) -> Result<(), Exceeded> {
        let endpoints = tenant.map(|t| &t.endpoints);
        let (id, before, after) = match command {
            Command::CreateEndpoint {
                endpoint_id,
                event_types,
                enabled,
                ..
            } => {
                let count = endpoints.map_or(0, |e| e.len());
                if count >= self.endpoints_per_organization {
                    return Err(Exceeded {
                        limit: name::ENDPOINTS_PER_ORGANIZATION,
                        field: "body",
                        message: format!(
                            "this organization has {count} endpoints, the most it may register \
                             (limit {}: {})",
                            name::ENDPOINTS_PER_ORGANIZATION,
                            self.endpoints_per_organization
                        ),
                    });
                }
                (
                    endpoint_id,
                    Receives::Nothing,
                    Receives::of(*enabled, event_types),
                )
            }
            Command::UpdateEndpoint {
                endpoint_id,
                event_types,
                enabled,
                ..
            } => {
                let Some(current) = endpoints.and_then(|e| e.get(endpoint_id)) else {
                    // Not found is the decision's to answer.
                    return Ok(());
                };
                let after_types = event_types.as_deref().unwrap_or(&current.event_types);
                (
                    endpoint_id,
                    Receives::of(current.enabled, &current.event_types),
                    Receives::of(enabled.unwrap_or(current.enabled), after_types),
                )
            }
            _ => return Ok(()),
        };
        let others = endpoints
            .into_iter()
            .flat_map(|e| e.values())
            .filter(|e| e.id != *id);
        match self.widest_new_fan_out(others, before, after) {
            Some((event_type, deliveries)) if deliveries > self.fan_out => Err(Exceeded {
                limit: name::FAN_OUT,
                field: match command {
                    Command::UpdateEndpoint {
                        enabled: Some(true),
                        event_types: None,
                        ..
                    } => "enabled",
                    _ => "eventTypes",
                },
                message: format!(
                    "{} would fan out to {deliveries} endpoints, more than an event may \
                     (limit {}: {}); narrow its eventTypes or disable another endpoint",
                    match event_type {
                        Some(t) => format!("events of type {t:?}"),
                        None => "events of a type no endpoint lists".to_owned(),
                    },
                    name::FAN_OUT,
                    self.fan_out
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Of the event types the endpoint starts to receive (in `after`, not in
    /// `before`), the one that would then fan out widest, and to how many
    /// endpoints. `None` for the type: one no endpoint lists by name.
    fn widest_new_fan_out<'a>(
        &self,
        others: impl Iterator<Item = &'a Endpoint>,
        before: Receives<'_>,
        after: Receives<'_>,
    ) -> Option<(Option<String>, usize)> {
        let mut every = 0usize;
        let mut named: HashMap<&str, usize> = HashMap::new();
        for other in others {
            match Receives::of(other.enabled, &other.event_types) {
                Receives::Nothing => {}
                Receives::Every => every += 1,
                Receives::Only(types) => {
                    for t in types {
                        *named.entry(t.as_str()).or_default() += 1;
                    }
                }
            }
        }
        let with_this = |event_type: &str| every + named.get(event_type).copied().unwrap_or(0) + 1;
        match after {
            Receives::Nothing => None,
            Receives::Only(types) => types
                .iter()
                .filter(|t| !before.includes(t))
                .map(|t| (Some(t.clone()), with_this(t)))
                .max_by_key(|(_, n)| *n),
            Receives::Every => {
                let listed = named
                    .iter()
                    .filter(|(t, _)| !before.includes(t))
                    .max_by_key(|(_, n)| **n)
                    .map(|(t, n)| (Some((*t).to_owned()), every + n + 1));
                // A type nobody lists reaches the endpoints that take every type.
                let unlisted = (!matches!(before, Receives::Every)).then_some((None, every + 1));
                listed.into_iter().chain(unlisted).max_by_key(|(_, n)| *n)
            }
        }
    }

    /// The largest event these limits let a client make, built and measured:
    /// an accepted event whose body filled [`MAX_BODY_BYTES`], fanned out to
    /// [`Limits::fan_out`] endpoints with the longest names and URLs, each
    /// character of them as long as it can be once written as JSON. Data,
    /// metadata, content and type, as the store counts them.
    pub fn largest_event_bytes(&self) -> usize {
        let event = self.largest_event();
        let encoded = projections::Event::WebhookEventAccepted(event).encode(&mut || [0; SALT_LEN]);
        let metadata = Metadata {
            // 128 visible characters, each escaped to two bytes at worst.
            request_id: Some("\"".repeat(128)),
            key_id: Some(format!("key_{}", "0".repeat(26))),
            idempotency: Some(projections::event::Idempotency {
                key: "\"".repeat(self.idempotency_key_length),
                route: "POST /v1/outbound-webhook-events".to_owned(),
                request_sha256: "0".repeat(64),
            }),
        }
        .to_canonical_bytes();
        encoded.data.len() + encoded.content.len() + metadata.len() + "WebhookEventAccepted".len()
    }

    /// The largest answer to a recorded attempt (the parent event with every
    /// delivery) these limits allow, built and measured: the largest event,
    /// each delivery carrying the longest `lastError`.
    pub fn largest_answer_bytes(&self) -> usize {
        let event = self.largest_event();
        let at = Timestamp::from_micros(0);
        let deliveries = event
            .deliveries
            .iter()
            .map(|d| DeliverySnapshot {
                id: d.delivery_id.clone(),
                organization_id: event.organization_id.clone(),
                endpoint_id: d.endpoint_id.clone(),
                endpoint_name: d.endpoint_name.clone(),
                endpoint_url: d.endpoint_url.clone(),
                attempt_count: u64::MAX,
                response_status_code: Some(599),
                // A control character is written as six bytes.
                last_error: Some("\u{1}".repeat(self.last_error_length)),
                next_retry_at: Some(at),
                attempted_at: Some(at),
                delivered_at: Some(at),
                created_at: at,
                updated_at: at,
                status: AttemptStatus::RetryScheduled,
            })
            .collect();
        EventSnapshot {
            id: event.event_id,
            organization_id: event.organization_id,
            event_type: event.event_type,
            source_key: event.source_key,
            status: EventStatus::Pending,
            endpoint_count: u64::MAX,
            payload: event.payload,
            payload_erased: false,
            deliveries,
            created_at: at,
            updated_at: at,
        }
        .to_json()
        .len()
    }

    fn largest_event(&self) -> WebhookEventAccepted {
        // The body's own fields (event type, source key, payload) are written
        // at most as long as the body sent them: canonical JSON drops
        // whitespace and never lengthens an escape or a number.
        let body_fields = MAX_BODY_BYTES - r#"{"payload":{"":""},"eventType":""}"#.len();
        let payload = format!(r#"{{"":"{}"}}"#, "x".repeat(body_fields));
        WebhookEventAccepted {
            event_id: format!("evt_{}", "0".repeat(26)),
            organization_id: "\"".repeat(MAX_ORGANIZATION_ID),
            event_type: String::new(),
            source_key: None,
            payload: Body::Kept(
                JsonObject::parse(&payload).unwrap_or_else(|_| JsonObject::empty()),
            ),
            deliveries: (0..self.fan_out)
                .map(|_| PlannedDelivery {
                    delivery_id: format!("dlv_{}", "0".repeat(26)),
                    endpoint_id: format!("ep_{}", "0".repeat(26)),
                    // Names take no control characters: four bytes a character
                    // at most. URLs take only the characters of RFC 3986.
                    endpoint_name: "\u{10FFFF}".repeat(self.name_length),
                    endpoint_url: "x".repeat(self.url_length),
                })
                .collect(),
        }
    }

    /// Refuses a configuration whose largest event would not fit in one
    /// stored event of `max_event_bytes`.
    pub fn check_fits(&self, max_event_bytes: usize) -> Result<(), String> {
        let largest = self.largest_event_bytes();
        if largest > max_event_bytes {
            return Err(format!(
                "these limits allow an event of {largest} bytes (a 1 MiB body fanned out to \
                 --{} {} endpoints with --{} {} and --{} {}), over the store's \
                 {max_event_bytes}-byte limit on one event; lower one of them",
                name::FAN_OUT,
                self.fan_out,
                name::NAME_LENGTH,
                self.name_length,
                name::URL_LENGTH,
                self.url_length,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
