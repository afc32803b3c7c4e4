//! Decoding stored events for the folds alone: checked exactly as
//! [`Event::decode`] and [`Metadata::decode`] check them, but what no fold
//! reads (an attempt's `responseBody` or its digest, every event's content,
//! the request and key ids) is checked and dropped, and the canonical form this build writes takes the fast paths of
//! [`crate::fast`]. A replay decodes millions of events this way.

use serde::Deserialize;

use crate::event::{AttemptRecorded, DecodeError, Event, Idempotency, Metadata};
use crate::values::{AttemptStatus, HttpStatusCode, NonEmptyString, RetryAt};

/// Decodes stored data for the folds: as [`Event::decode`] checks it, but an
/// attempt's `responseBody` is checked as JSON and not kept, since no fold
/// reads it and building it is most of an attempt's decoding.
pub fn event(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Event, DecodeError> {
    if event_type != "AttemptRecorded" {
        // No fold reads a body: one whose content is not read decodes as erased.
        return Event::decode(event_type, schema_version, data, None);
    }
    if let Some(attempt) = crate::fast::attempt_for_fold(data, schema_version) {
        return Ok(Event::AttemptRecorded(attempt));
    }
    if schema_version != 1 {
        let Event::AttemptRecorded(mut a) = Event::decode(event_type, schema_version, data, None)?
        else {
            unreachable!("an AttemptRecorded decodes to an attempt");
        };
        a.response_body = None;
        return Ok(Event::AttemptRecorded(a));
    }
    let a: AttemptForFold<'_> =
        serde_json::from_slice(data).map_err(|source| DecodeError::Invalid {
            event_type: event_type.to_owned(),
            schema_version,
            source,
        })?;
    let _checked = a.response_body;
    Ok(Event::AttemptRecorded(AttemptRecorded {
        delivery_id: a.delivery_id,
        event_id: a.event_id,
        organization_id: a.organization_id,
        status: a.status,
        response_status_code: a.response_status_code,
        response_body: None,
        last_error: a.last_error,
        next_retry_at: a.next_retry_at,
    }))
}

/// [`event`] into `out`, reusing the memory of what it holds where it can: a
/// replay decodes millions of attempts into the same few thousand slots. On an
/// error `out` is unspecified.
pub fn event_into(
    event_type: &str,
    schema_version: u32,
    data: &[u8],
    out: &mut Event,
) -> Result<(), DecodeError> {
    if let Event::AttemptRecorded(slot) = out
        && event_type.as_bytes() == b"AttemptRecorded"
        && crate::fast::attempt_for_fold_into(data, schema_version, slot).is_some()
    {
        return Ok(());
    }
    *out = event(event_type, schema_version, data)?;
    Ok(())
}

/// Decodes metadata for the folds, which read only the idempotency record:
/// checked as [`Metadata::decode`] checks it, the rest not kept.
pub fn metadata(data: &[u8]) -> Result<Metadata, DecodeError> {
    if crate::fast::metadata_without_idempotency(data).is_some() {
        return Ok(Metadata::default());
    }
    let m: MetadataForFold<'_> = serde_json::from_slice(data).map_err(DecodeError::Metadata)?;
    Ok(Metadata {
        request_id: None,
        key_id: None,
        idempotency: m.idempotency,
    })
}

/// [`AttemptRecorded`] as the folds decode it: the response body borrowed and
/// dropped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttemptForFold<'a> {
    delivery_id: String,
    event_id: String,
    organization_id: String,
    status: AttemptStatus,
    response_status_code: Option<HttpStatusCode>,
    #[serde(borrow)]
    response_body: Option<&'a serde_json::value::RawValue>,
    last_error: Option<NonEmptyString>,
    next_retry_at: Option<RetryAt>,
}

/// [`Metadata`] as the folds decode it: only the idempotency record is kept.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataForFold<'a> {
    #[serde(default, borrow)]
    #[allow(dead_code)]
    request_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    key_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    idempotency: Option<Idempotency>,
}
