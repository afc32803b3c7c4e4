//! The event types of the ledger: what each stream records, with its schema version.
//!
//! Every event's `data` is written as canonical JSON (see [`crate::canonical`]) and is
//! described by `schemas/events/{Type}.v{N}.json`. Reading decodes by `(type,
//! schemaVersion)`; an older version is upcast here on read and never rewritten.
//! Bodies (a payload, a response body) are hashed by salted digest from
//! version 2 on and kept as the event's content ([`crate::body`],
//! [`sealed`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::{Body, SALT_LEN};
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};

mod sealed;
#[cfg(test)]
mod tests;

pub use sealed::Encoded;

/// One decoded event, as the folds see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    EndpointCreated(EndpointCreated),
    EndpointUpdated(EndpointUpdated),
    WebhookEventAccepted(WebhookEventAccepted),
    AttemptRecorded(AttemptRecorded),
    ApiKeyIssued(ApiKeyIssued),
    ApiKeyRevoked(ApiKeyRevoked),
    ContentErased(ContentErased),
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
    pub payload: Body,
    pub deliveries: Vec<PlannedDelivery>,
}

impl WebhookEventAccepted {
    /// The canonical bytes of `Event::WebhookEventAccepted(self)` at schema
    /// version 2, keys in their sorted order and the payload's salted digest
    /// in its place; a test holds them equal to the generic path.
    fn to_canonical_bytes(&self, payload_digest: &str) -> Vec<u8> {
        use crate::canonical::write_string;
        let mut out = Vec::with_capacity(256 + 160 * self.deliveries.len());
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
        out.extend_from_slice(b",\"payloadDigest\":");
        write_string(&mut out, payload_digest);
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
    pub response_body: Option<Body>,
    pub last_error: Option<NonEmptyString>,
    pub next_retry_at: Option<RetryAt>,
}

impl AttemptRecorded {
    /// The canonical bytes of `Event::AttemptRecorded(self)` at schema
    /// version 2, written field by field in sorted key order, the response
    /// body's salted digest in its place; a test holds them equal to the
    /// generic path.
    fn to_canonical_bytes(&self, response_body_digest: Option<&str>) -> Vec<u8> {
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
        out.extend_from_slice(b",\"responseBodyDigest\":");
        nullable(&mut out, response_body_digest);
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

/// `event-{id}` or `erasures-{org}`: bodies are erased. What it covers is
/// every body of the organization's events before it in the log that its
/// scope names: one event's payload and the response bodies of that event's
/// deliveries (`eventId`), the bodies recorded before a time
/// (`recordedBefore`, retention), or, with neither, all of the
/// organization's. Who asked is in the metadata (`keyId`), and when is the
/// event's `recordedAt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContentErased {
    pub organization_id: String,
    pub event_id: Option<String>,
    pub recorded_before: Option<Timestamp>,
    pub reason: ErasureReason,
}

/// Why bodies were erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureReason {
    /// `DELETE /v1/outbound-webhook-events/{id}/content`.
    Request,
    /// `hookledger erase --org`.
    Offboarding,
    /// `serve --retention`.
    Retention,
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
    #[error("{event_type} v{schema_version}: {source}")]
    Content {
        event_type: String,
        schema_version: u32,
        source: crate::body::ContentError,
    },
}

impl Event {
    /// The `(type, schemaVersion)` pairs this build writes.
    pub const CURRENT: [(&'static str, u32); 7] = [
        ("EndpointCreated", 1),
        ("EndpointUpdated", 1),
        ("WebhookEventAccepted", 2),
        ("AttemptRecorded", 2),
        ("ApiKeyIssued", 1),
        ("ApiKeyRevoked", 1),
        ("ContentErased", 1),
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            Event::EndpointCreated(_) => "EndpointCreated",
            Event::EndpointUpdated(_) => "EndpointUpdated",
            Event::WebhookEventAccepted(_) => "WebhookEventAccepted",
            Event::AttemptRecorded(_) => "AttemptRecorded",
            Event::ApiKeyIssued(_) => "ApiKeyIssued",
            Event::ApiKeyRevoked(_) => "ApiKeyRevoked",
            Event::ContentErased(_) => "ContentErased",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn schema_version(&self) -> u32 {
        match self {
            Event::WebhookEventAccepted(_) | Event::AttemptRecorded(_) => 2,
            _ => 1,
        }
    }

    /// The event as a JSON value, for tests and tools: its fields with any
    /// body in full (or `null` once erased), which is not what the log
    /// stores from schema version 2 on ([`Event::encode`] writes that). A
    /// body number beyond `f64` (`1e400`) has no such value: `serde_json`
    /// makes it an error or loses its precision; `encode` keeps it as sent.
    pub fn to_value(&self) -> serde_json::Result<Value> {
        match self {
            Event::EndpointCreated(e) => serde_json::to_value(e),
            Event::EndpointUpdated(e) => serde_json::to_value(e),
            Event::WebhookEventAccepted(e) => serde_json::to_value(e),
            Event::AttemptRecorded(e) => serde_json::to_value(e),
            Event::ApiKeyIssued(e) => serde_json::to_value(e),
            Event::ApiKeyRevoked(e) => serde_json::to_value(e),
            Event::ContentErased(e) => serde_json::to_value(e),
        }
    }

    /// The event as the log stores it at [`Event::schema_version`]: its data
    /// in canonical JSON bytes, which the chain hashes, and its content, the
    /// bodies sealed with salts drawn from `salt` and kept beside the data.
    ///
    /// # Panics
    /// On an erased body: only an event read back from the log holds one, and
    /// such an event is never written again.
    pub fn encode(&self, salt: &mut dyn FnMut() -> [u8; SALT_LEN]) -> Encoded {
        match self {
            // Every recorded attempt comes through here: write its keys in
            // their sorted order directly rather than build a JSON tree to sort.
            Event::AttemptRecorded(a) => sealed::attempt(a, salt),
            Event::WebhookEventAccepted(e) => sealed::accepted(e, salt),
            // Strings, booleans and lists of strings: their values are exact.
            other => match other.to_value() {
                Ok(value) => Encoded {
                    data: crate::canonical::to_vec(&value),
                    content: Vec::new(),
                },
                Err(_) => unreachable!("endpoint and key events hold no JSON a client sent"),
            },
        }
    }

    /// Decodes stored data and content, upcasting older schema versions to
    /// the current types. `content` is `None` where the event's bodies were
    /// erased or never kept (schema version 1, or no body); a body whose
    /// content is gone decodes as [`Body::Erased`], and content that does not
    /// match the digest the hash covers is an error.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        data: &[u8],
        content: Option<&[u8]>,
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
            ("WebhookEventAccepted", 2) => {
                Event::WebhookEventAccepted(sealed::decode_accepted(parse(t, v, data)?, content)?)
            }
            ("AttemptRecorded", 2) => {
                Event::AttemptRecorded(sealed::decode_attempt(parse(t, v, data)?, content)?)
            }
            ("ApiKeyIssued", 1) => Event::ApiKeyIssued(parse(t, v, data)?),
            ("ApiKeyRevoked", 1) => Event::ApiKeyRevoked(parse(t, v, data)?),
            ("ContentErased", 1) => Event::ContentErased(parse(t, v, data)?),
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
            Event::ContentErased(e) => &e.organization_id,
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
    /// An organization's erasures that are not about one event.
    pub fn erasures(org: &str) -> String {
        format!("erasures-{org}")
    }
}
