//! The event types of the ledger: what each stream records, with its schema version.
//!
//! Every event's `data` is written as canonical JSON (see [`crate::canonical`]) and is
//! described by `schemas/events/{Type}.v{N}.json`. Reading decodes by `(type,
//! schemaVersion)`; an older version is upcast here on read and never rewritten.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::JsonObject;
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};

/// One decoded event, as the folds see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    EndpointCreated(EndpointCreated),
    EndpointUpdated(EndpointUpdated),
    WebhookEventAccepted(WebhookEventAccepted),
    AttemptRecorded(AttemptRecorded),
    ApiKeyIssued(ApiKeyIssued),
    ApiKeyRevoked(ApiKeyRevoked),
}

/// `endpoint-{id}`, version 0: an endpoint is registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointCreated {
    pub endpoint_id: String,
    pub organization_id: String,
    pub name: String,
    pub url: String,
    /// Empty means every event type.
    pub event_types: Vec<String>,
    pub enabled: bool,
}

/// `endpoint-{id}`: some fields of an endpoint change; an absent field is unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointUpdated {
    pub endpoint_id: String,
    pub organization_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `event-{id}`, version 0: a webhook event is accepted and fanned out, one
/// delivery per subscribed enabled endpoint, each with the endpoint as it stood.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookEventAccepted {
    pub event_id: String,
    pub organization_id: String,
    pub event_type: String,
    pub source_key: Option<String>,
    /// Numbers exactly as the sender wrote them.
    pub payload: JsonObject,
    pub deliveries: Vec<PlannedDelivery>,
}

impl WebhookEventAccepted {
    /// The canonical bytes of `Event::WebhookEventAccepted(self)`, keys in
    /// their sorted order and the payload spliced in as the text it is; a
    /// test holds them equal to the generic path.
    fn to_canonical_bytes(&self) -> Vec<u8> {
        use crate::canonical::write_string;
        let mut out =
            Vec::with_capacity(128 + self.payload.get().len() + 160 * self.deliveries.len());
        out.extend_from_slice(b"{\"deliveries\":[");
        for (i, d) in self.deliveries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"deliveryId\":");
            write_string(&mut out, &d.delivery_id);
            out.extend_from_slice(b",\"endpointId\":");
            write_string(&mut out, &d.endpoint_id);
            out.extend_from_slice(b",\"endpointName\":");
            write_string(&mut out, &d.endpoint_name);
            out.extend_from_slice(b",\"endpointUrl\":");
            write_string(&mut out, &d.endpoint_url);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"eventId\":");
        write_string(&mut out, &self.event_id);
        out.extend_from_slice(b",\"eventType\":");
        write_string(&mut out, &self.event_type);
        out.extend_from_slice(b",\"organizationId\":");
        write_string(&mut out, &self.organization_id);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload.get().as_bytes());
        out.extend_from_slice(b",\"sourceKey\":");
        match &self.source_key {
            Some(key) => write_string(&mut out, key),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlannedDelivery {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub endpoint_url: String,
}

/// `delivery-{id}`: one attempt as the sender reported it. Absent optional fields
/// of the request are recorded as null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttemptRecorded {
    pub delivery_id: String,
    pub event_id: String,
    pub organization_id: String,
    pub status: AttemptStatus,
    pub response_status_code: Option<HttpStatusCode>,
    /// Numbers exactly as the sender wrote them.
    pub response_body: Option<JsonObject>,
    pub last_error: Option<NonEmptyString>,
    pub next_retry_at: Option<RetryAt>,
}

impl AttemptRecorded {
    /// The canonical bytes of `Event::AttemptRecorded(self)`, written field by
    /// field in sorted key order; a test holds them equal to the generic path.
    fn to_canonical_bytes(&self) -> Vec<u8> {
        use crate::canonical::write_string;
        let mut out = Vec::with_capacity(256);
        let nullable = |out: &mut Vec<u8>, text: Option<&str>| match text {
            Some(text) => write_string(out, text),
            None => out.extend_from_slice(b"null"),
        };
        out.extend_from_slice(b"{\"deliveryId\":");
        write_string(&mut out, &self.delivery_id);
        out.extend_from_slice(b",\"eventId\":");
        write_string(&mut out, &self.event_id);
        out.extend_from_slice(b",\"lastError\":");
        nullable(
            &mut out,
            self.last_error.as_ref().map(NonEmptyString::as_str),
        );
        out.extend_from_slice(b",\"nextRetryAt\":");
        nullable(&mut out, self.next_retry_at.as_ref().map(RetryAt::as_str));
        out.extend_from_slice(b",\"organizationId\":");
        write_string(&mut out, &self.organization_id);
        out.extend_from_slice(b",\"responseBody\":");
        match &self.response_body {
            Some(body) => out.extend_from_slice(body.get().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"responseStatusCode\":");
        match self.response_status_code {
            Some(code) => out.extend_from_slice(code.get().to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"status\":");
        write_string(&mut out, self.status.as_str());
        out.push(b'}');
        out
    }
}

/// `apikeys-{org}`: a key is issued. Only the SHA-256 of its secret is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyIssued {
    pub key_id: String,
    pub organization_id: String,
    /// Lowercase hex SHA-256 of the key's secret part.
    pub secret_sha256: String,
}

/// `apikeys-{org}`: a key stops working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyRevoked {
    pub key_id: String,
    pub organization_id: String,
}

/// Why stored event data could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {event_type:?} at schema version {schema_version}")]
    Unknown {
        event_type: String,
        schema_version: u32,
    },
    #[error("{event_type} v{schema_version} does not match its schema: {source}")]
    Invalid {
        event_type: String,
        schema_version: u32,
        source: serde_json::Error,
    },
    #[error("metadata does not match its schema: {0}")]
    Metadata(serde_json::Error),
}

impl Event {
    /// The `(type, schemaVersion)` pairs this build writes.
    pub const CURRENT: [(&'static str, u32); 6] = [
        ("EndpointCreated", 1),
        ("EndpointUpdated", 1),
        ("WebhookEventAccepted", 1),
        ("AttemptRecorded", 1),
        ("ApiKeyIssued", 1),
        ("ApiKeyRevoked", 1),
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            Event::EndpointCreated(_) => "EndpointCreated",
            Event::EndpointUpdated(_) => "EndpointUpdated",
            Event::WebhookEventAccepted(_) => "WebhookEventAccepted",
            Event::AttemptRecorded(_) => "AttemptRecorded",
            Event::ApiKeyIssued(_) => "ApiKeyIssued",
            Event::ApiKeyRevoked(_) => "ApiKeyRevoked",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn schema_version(&self) -> u32 {
        1
    }

    /// The event's data as a JSON value, for tests and tools. A payload or
    /// response body number beyond `f64` (`1e400`) has no such value, and is
    /// an error here; [`Event::to_canonical_bytes`] keeps it as sent.
    pub fn to_value(&self) -> serde_json::Result<Value> {
        match self {
            Event::EndpointCreated(e) => serde_json::to_value(e),
            Event::EndpointUpdated(e) => serde_json::to_value(e),
            Event::WebhookEventAccepted(e) => serde_json::to_value(e),
            Event::AttemptRecorded(e) => serde_json::to_value(e),
            Event::ApiKeyIssued(e) => serde_json::to_value(e),
            Event::ApiKeyRevoked(e) => serde_json::to_value(e),
        }
    }

    /// The event's data in canonical JSON bytes: what the log stores and hashes.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        match self {
            // Every recorded attempt comes through here: write its keys in
            // their sorted order directly rather than build a JSON tree to sort.
            Event::AttemptRecorded(a) => a.to_canonical_bytes(),
            // Its payload is canonical text already, kept as it is.
            Event::WebhookEventAccepted(e) => e.to_canonical_bytes(),
            // Strings, booleans and lists of strings: their values are exact.
            other => match other.to_value() {
                Ok(value) => crate::canonical::to_vec(&value),
                Err(_) => unreachable!("endpoint and key events hold no JSON a client sent"),
            },
        }
    }

    /// Decodes stored data, upcasting older schema versions to the current types.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        data: &[u8],
    ) -> Result<Event, DecodeError> {
        fn parse<T: serde::de::DeserializeOwned>(
            event_type: &str,
            schema_version: u32,
            data: &[u8],
        ) -> Result<T, DecodeError> {
            serde_json::from_slice(data).map_err(|source| DecodeError::Invalid {
                event_type: event_type.to_owned(),
                schema_version,
                source,
            })
        }
        let t = event_type;
        let v = schema_version;
        Ok(match (t, v) {
            ("EndpointCreated", 1) => Event::EndpointCreated(parse(t, v, data)?),
            ("EndpointUpdated", 1) => Event::EndpointUpdated(parse(t, v, data)?),
            ("WebhookEventAccepted", 1) => Event::WebhookEventAccepted(parse(t, v, data)?),
            ("AttemptRecorded", 1) => Event::AttemptRecorded(parse(t, v, data)?),
            ("ApiKeyIssued", 1) => Event::ApiKeyIssued(parse(t, v, data)?),
            ("ApiKeyRevoked", 1) => Event::ApiKeyRevoked(parse(t, v, data)?),
            _ => {
                return Err(DecodeError::Unknown {
                    event_type: t.to_owned(),
                    schema_version: v,
                });
            }
        })
    }

    /// The organization the event belongs to.
    pub fn organization_id(&self) -> &str {
        match self {
            Event::EndpointCreated(e) => &e.organization_id,
            Event::EndpointUpdated(e) => &e.organization_id,
            Event::WebhookEventAccepted(e) => &e.organization_id,
            Event::AttemptRecorded(e) => &e.organization_id,
            Event::ApiKeyIssued(e) => &e.organization_id,
            Event::ApiKeyRevoked(e) => &e.organization_id,
        }
    }
}

/// Who and what caused an event; stored beside the data and covered by the hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The API key that authorized the request; absent for the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

/// An `Idempotency-Key` and what it was sent with, so a repeat can be recognised
/// from the log alone, on any node and after any restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Idempotency {
    pub key: String,
    /// The method and path the key was sent to, e.g. `POST /v1/outbound-webhook-events`.
    pub route: String,
    /// Lowercase hex SHA-256 of the request body.
    pub request_sha256: String,
}

impl Metadata {
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("metadata serialises to JSON");
        crate::canonical::to_vec(&value)
    }

    pub fn decode(data: &[u8]) -> Result<Metadata, DecodeError> {
        serde_json::from_slice(data).map_err(DecodeError::Metadata)
    }
}

/// An event as the folds receive it: the decoded data with its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Global position, 1-based, gapless, in commit order.
    pub position: u64,
    /// Version within its stream, 0-based.
    pub version: u64,
    pub recorded_at: Timestamp,
    pub metadata: Metadata,
    pub event: Event,
}

/// Stream names (`docs/DESIGN.md` §4). Every command appends to exactly one stream.
pub mod stream {
    pub fn endpoint(id: &str) -> String {
        format!("endpoint-{id}")
    }
    pub fn event(id: &str) -> String {
        format!("event-{id}")
    }
    pub fn delivery(id: &str) -> String {
        format!("delivery-{id}")
    }
    pub fn api_keys(org: &str) -> String {
        format!("apikeys-{org}")
    }
}
