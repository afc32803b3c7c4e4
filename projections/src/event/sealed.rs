//! The two events that carry bodies, at schema version 2: each body's salted
//! digest in the hashed data, and the salt and body as the event's content
//! ([`crate::body`]). Writing seals the bodies; reading opens them against
//! the digests, or finds them erased.

use serde::{Deserialize, Serialize};

use super::{AttemptRecorded, DecodeError, PlannedDelivery, WebhookEventAccepted};
use crate::body::{self, Body, ContentError, SALT_LEN};
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};

/// An event as the log stores it: the data the chain hashes, and the content
/// kept beside it (empty when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub data: Vec<u8>,
    pub content: Vec<u8>,
}

/// `WebhookEventAccepted` v2 as its data holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AcceptedV2 {
    pub event_id: String,
    pub organization_id: String,
    pub event_type: String,
    pub source_key: Option<String>,
    /// `SHA-256(salt || canonical payload)`, lowercase hex.
    pub payload_digest: String,
    pub deliveries: Vec<PlannedDelivery>,
}

/// `AttemptRecorded` v2 as its data holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AttemptV2 {
    pub delivery_id: String,
    pub event_id: String,
    pub organization_id: String,
    pub status: AttemptStatus,
    pub response_status_code: Option<HttpStatusCode>,
    /// `SHA-256(salt || canonical response body)`, lowercase hex; null
    /// when the attempt reported no body.
    pub response_body_digest: Option<String>,
    pub last_error: Option<NonEmptyString>,
    pub next_retry_at: Option<RetryAt>,
}

fn kept<'a>(body: &'a Body, what: &str) -> &'a crate::JsonObject {
    match body {
        Body::Kept(body) => body,
        Body::Erased => panic!("an event with an erased {what} is never written"),
    }
}

pub(super) fn accepted(
    e: &WebhookEventAccepted,
    salt: &mut dyn FnMut() -> [u8; SALT_LEN],
) -> Encoded {
    let sealed = body::seal(kept(&e.payload, "payload"), salt());
    Encoded {
        data: e.to_canonical_bytes(&sealed.digest),
        content: sealed.content,
    }
}

pub(super) fn attempt(a: &AttemptRecorded, salt: &mut dyn FnMut() -> [u8; SALT_LEN]) -> Encoded {
    match &a.response_body {
        None => Encoded {
            data: a.to_canonical_bytes(None),
            content: Vec::new(),
        },
        Some(response) => {
            let sealed = body::seal(kept(response, "response body"), salt());
            Encoded {
                data: a.to_canonical_bytes(Some(&sealed.digest)),
                content: sealed.content,
            }
        }
    }
}

fn content_error(event_type: &str) -> impl Fn(ContentError) -> DecodeError + '_ {
    move |source| DecodeError::Content {
        event_type: event_type.to_owned(),
        schema_version: 2,
        source,
    }
}

pub(super) fn decode_accepted(
    e: AcceptedV2,
    content: Option<&[u8]>,
) -> Result<WebhookEventAccepted, DecodeError> {
    let payload =
        body::open(content, &e.payload_digest).map_err(content_error("WebhookEventAccepted"))?;
    Ok(WebhookEventAccepted {
        event_id: e.event_id,
        organization_id: e.organization_id,
        event_type: e.event_type,
        source_key: e.source_key,
        payload,
        deliveries: e.deliveries,
    })
}

pub(super) fn decode_attempt(
    a: AttemptV2,
    content: Option<&[u8]>,
) -> Result<AttemptRecorded, DecodeError> {
    let response_body = match &a.response_body_digest {
        Some(digest) => {
            Some(body::open(content, digest).map_err(content_error("AttemptRecorded"))?)
        }
        None if content.is_some() => {
            return Err(content_error("AttemptRecorded")(ContentError::Unexpected));
        }
        None => None,
    };
    Ok(AttemptRecorded {
        delivery_id: a.delivery_id,
        event_id: a.event_id,
        organization_id: a.organization_id,
        status: a.status,
        response_status_code: a.response_status_code,
        response_body,
        last_error: a.last_error,
        next_retry_at: a.next_retry_at,
    })
}

/// The generic path the fast writers are held to: the wire type through
/// `serde_json` and [`crate::canonical::to_vec`].
#[cfg(test)]
pub(super) fn generic(event: &super::Event, digest: Option<&str>) -> Vec<u8> {
    let value = match event {
        super::Event::WebhookEventAccepted(e) => serde_json::to_value(AcceptedV2 {
            event_id: e.event_id.clone(),
            organization_id: e.organization_id.clone(),
            event_type: e.event_type.clone(),
            source_key: e.source_key.clone(),
            payload_digest: digest.unwrap_or_default().to_owned(),
            deliveries: e.deliveries.clone(),
        }),
        super::Event::AttemptRecorded(a) => serde_json::to_value(AttemptV2 {
            delivery_id: a.delivery_id.clone(),
            event_id: a.event_id.clone(),
            organization_id: a.organization_id.clone(),
            status: a.status,
            response_status_code: a.response_status_code,
            response_body_digest: digest.map(str::to_owned),
            last_error: a.last_error.clone(),
            next_retry_at: a.next_retry_at.clone(),
        }),
        other => other.to_value(),
    };
    crate::canonical::to_vec(&value.expect("event data serialises"))
}
