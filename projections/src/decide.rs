//! Decisions: given the read model and a command, the events to append or the
//! reason not to. Pure: ids come from the caller's generator, time from the store.
//!
//! The ledger records facts and invents no rule beyond the contract, so most
//! commands only check that what they refer to exists in the caller's organization.

use crate::body::Body;
use crate::canonical::JsonObject;
use crate::event::{
    ApiKeyIssued, ApiKeyRevoked, AttemptRecorded, ContentErased, EndpointCreated, EndpointUpdated,
    ErasureReason, Event, PlannedDelivery, WebhookEventAccepted,
};
use crate::rows::MemoryRows;
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    CreateEndpoint {
        endpoint_id: String,
        organization_id: String,
        name: String,
        url: String,
        event_types: Vec<String>,
        enabled: bool,
    },
    UpdateEndpoint {
        endpoint_id: String,
        organization_id: String,
        name: Option<String>,
        url: Option<String>,
        event_types: Option<Vec<String>>,
        enabled: Option<bool>,
    },
    AcceptEvent {
        event_id: String,
        organization_id: String,
        event_type: String,
        source_key: Option<String>,
        payload: JsonObject,
    },
    RecordAttempt {
        delivery_id: String,
        organization_id: String,
        status: AttemptStatus,
        response_status_code: Option<HttpStatusCode>,
        response_body: Option<JsonObject>,
        last_error: Option<NonEmptyString>,
        next_retry_at: Option<RetryAt>,
    },
    IssueApiKey {
        key_id: String,
        organization_id: String,
        secret_sha256: String,
    },
    RevokeApiKey {
        key_id: String,
    },
    /// Erases bodies: one event's (`event_id`), those recorded before a
    /// time, or, with neither, all of the organization's.
    EraseContent {
        organization_id: String,
        event_id: Option<String>,
        recorded_before: Option<Timestamp>,
        reason: ErasureReason,
    },
}

/// Why a command appends nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no endpoint {0} in this organization")]
    EndpointNotFound(String),
    #[error("no delivery {0} in this organization")]
    DeliveryNotFound(String),
    #[error("no outbound webhook event {0} in this organization")]
    EventNotFound(String),
    #[error("no API key {0}")]
    ApiKeyNotFound(String),
    #[error("API key {0} is already revoked")]
    ApiKeyAlreadyRevoked(String),
    /// Not an error for the client: the event with this `sourceKey` was accepted
    /// before, and is the answer.
    #[error("an event with this sourceKey exists: {0}")]
    DuplicateSourceKey(String),
}

/// The rows a decision reads: what the caller loads into a [`MemoryRows`]
/// before calling [`decide`], so the decision itself does no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs<'a> {
    pub organization_id: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    /// Every endpoint of the organization: the fan-out of an accepted event.
    pub all_endpoints: bool,
    pub delivery: Option<&'a str>,
    pub event: Option<&'a str>,
    pub source_key: Option<&'a str>,
    pub api_key: Option<&'a str>,
}

impl Command {
    /// The rows [`decide`] reads for this command.
    pub fn needs(&self) -> Needs<'_> {
        match self {
            Command::IssueApiKey { .. } => Needs::default(),
            // Every endpoint: the organization's limits count them.
            Command::CreateEndpoint {
                organization_id, ..
            } => Needs {
                organization_id: Some(organization_id),
                all_endpoints: true,
                ..Needs::default()
            },
            Command::UpdateEndpoint {
                endpoint_id,
                organization_id,
                ..
            } => Needs {
                organization_id: Some(organization_id),
                endpoint: Some(endpoint_id),
                all_endpoints: true,
                ..Needs::default()
            },
            Command::AcceptEvent {
                organization_id,
                source_key,
                ..
            } => Needs {
                organization_id: Some(organization_id),
                all_endpoints: true,
                source_key: source_key.as_deref(),
                ..Needs::default()
            },
            Command::RecordAttempt {
                delivery_id,
                organization_id,
                ..
            } => Needs {
                organization_id: Some(organization_id),
                delivery: Some(delivery_id),
                ..Needs::default()
            },
            Command::RevokeApiKey { key_id } => Needs {
                api_key: Some(key_id),
                ..Needs::default()
            },
            Command::EraseContent {
                organization_id,
                event_id,
                ..
            } => Needs {
                organization_id: Some(organization_id),
                event: event_id.as_deref(),
                ..Needs::default()
            },
        }
    }

    /// The organization the command acts in; a revocation's is its key's.
    pub fn organization_id<'a>(&'a self, rows: &'a MemoryRows) -> &'a str {
        match self {
            Command::CreateEndpoint {
                organization_id, ..
            }
            | Command::UpdateEndpoint {
                organization_id, ..
            }
            | Command::AcceptEvent {
                organization_id, ..
            }
            | Command::RecordAttempt {
                organization_id, ..
            }
            | Command::IssueApiKey {
                organization_id, ..
            }
            | Command::EraseContent {
                organization_id, ..
            } => organization_id,
            Command::RevokeApiKey { key_id } => rows
                .api_key(key_id)
                .map_or("", |key| key.organization_id.as_str()),
        }
    }

    /// The one stream the command's events go to.
    pub fn stream(&self, model: &MemoryRows) -> String {
        use crate::event::stream;
        match self {
            Command::CreateEndpoint { endpoint_id, .. }
            | Command::UpdateEndpoint { endpoint_id, .. } => stream::endpoint(endpoint_id),
            Command::AcceptEvent { event_id, .. } => stream::event(event_id),
            Command::RecordAttempt { delivery_id, .. } => stream::delivery(delivery_id),
            Command::IssueApiKey {
                organization_id, ..
            } => stream::api_keys(organization_id),
            Command::RevokeApiKey { .. } => stream::api_keys(self.organization_id(model)),
            Command::EraseContent {
                organization_id,
                event_id,
                ..
            } => match event_id {
                Some(id) => stream::event(id),
                None => stream::erasures(organization_id),
            },
        }
    }
}

/// Decides what `command` appends against `model`. `new_id` gives a fresh delivery
/// id each call (the fan-out needs one per subscribed endpoint).
pub fn decide(
    model: &MemoryRows,
    command: Command,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::CreateEndpoint {
            endpoint_id,
            organization_id,
            name,
            url,
            event_types,
            enabled,
        } => Ok(vec![Event::EndpointCreated(EndpointCreated {
            endpoint_id,
            organization_id,
            name,
            url,
            event_types,
            enabled,
        })]),
        Command::UpdateEndpoint {
            endpoint_id,
            organization_id,
            name,
            url,
            event_types,
            enabled,
        } => {
            let Some(current) = model
                .tenant(&organization_id)
                .and_then(|t| t.endpoints.get(&endpoint_id))
            else {
                return Err(Rejection::EndpointNotFound(endpoint_id));
            };
            // Only what changes is recorded; a patch that changes nothing appends nothing.
            let update = EndpointUpdated {
                name: name.filter(|n| *n != current.name),
                url: url.filter(|u| *u != current.url),
                event_types: event_types.filter(|t| *t != current.event_types),
                enabled: enabled.filter(|e| *e != current.enabled),
                endpoint_id,
                organization_id,
            };
            let changes = update.name.is_some()
                || update.url.is_some()
                || update.event_types.is_some()
                || update.enabled.is_some();
            Ok(if changes {
                vec![Event::EndpointUpdated(update)]
            } else {
                Vec::new()
            })
        }
        Command::AcceptEvent {
            event_id,
            organization_id,
            event_type,
            source_key,
            payload,
        } => {
            let tenant = model.tenant(&organization_id);
            if let (Some(key), Some(tenant)) = (&source_key, tenant)
                && let Some(existing) = tenant.source_keys.get(key)
            {
                return Err(Rejection::DuplicateSourceKey(existing.clone()));
            }
            let deliveries = tenant
                .into_iter()
                .flat_map(|t| t.endpoints.values())
                .filter(|endpoint| endpoint.subscribes_to(&event_type))
                .map(|endpoint| PlannedDelivery {
                    delivery_id: new_id(),
                    endpoint_id: endpoint.id.clone(),
                    endpoint_name: endpoint.name.clone(),
                    endpoint_url: endpoint.url.clone(),
                })
                .collect();
            Ok(vec![Event::WebhookEventAccepted(WebhookEventAccepted {
                event_id,
                organization_id,
                event_type,
                source_key,
                payload: Body::Kept(payload),
                deliveries,
            })])
        }
        Command::RecordAttempt {
            delivery_id,
            organization_id,
            status,
            response_status_code,
            response_body,
            last_error,
            next_retry_at,
        } => {
            let Some(delivery) = model
                .tenant(&organization_id)
                .and_then(|t| t.delivery(&delivery_id))
            else {
                return Err(Rejection::DeliveryNotFound(delivery_id));
            };
            Ok(vec![Event::AttemptRecorded(AttemptRecorded {
                event_id: delivery.event_id.clone(),
                delivery_id,
                organization_id,
                status,
                response_status_code,
                response_body: response_body.map(Body::Kept),
                last_error,
                next_retry_at,
            })])
        }
        Command::IssueApiKey {
            key_id,
            organization_id,
            secret_sha256,
        } => Ok(vec![Event::ApiKeyIssued(ApiKeyIssued {
            key_id,
            organization_id,
            secret_sha256,
        })]),
        Command::RevokeApiKey { key_id } => match model.api_keys.get(&key_id) {
            None => Err(Rejection::ApiKeyNotFound(key_id)),
            Some(key) if key.revoked_at.is_some() => Err(Rejection::ApiKeyAlreadyRevoked(key_id)),
            Some(key) => Ok(vec![Event::ApiKeyRevoked(ApiKeyRevoked {
                organization_id: key.organization_id.clone(),
                key_id,
            })]),
        },
        Command::EraseContent {
            organization_id,
            event_id,
            recorded_before,
            reason,
        } => {
            if let Some(id) = &event_id
                && model
                    .tenant(&organization_id)
                    .and_then(|t| t.event(id))
                    .is_none()
            {
                return Err(Rejection::EventNotFound(id.clone()));
            }
            Ok(vec![Event::ContentErased(ContentErased {
                organization_id,
                event_id,
                recorded_before,
                reason,
            })])
        }
    }
}
