//! Which bodies in the log may be served. An erasure is an event
//! (`ContentErased`); the fold records what it covers, and from then on every
//! read of a body asks here first. Compaction removes the bytes from the
//! disk later, in the background; until it has, this check is what keeps an
//! erased body from being served, so every path that serves content goes
//! through [`View::servable_content`].

use std::borrow::Cow;

use projections::Timestamp;
use serde::Deserialize;

use super::{Error, View};
use crate::store::RecordedEvent;

/// The two fields every body-carrying event's data holds, and all this
/// check reads of it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Owner<'a> {
    #[serde(borrow)]
    organization_id: Cow<'a, str>,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

/// The organization and webhook event a record's body belongs to: an
/// accepted event's own, or the event an attempt's delivery belongs to.
/// `None` for a record without content.
pub fn body_owner(record: &RecordedEvent) -> Option<(String, String)> {
    if record.content.is_empty() {
        return None;
    }
    let owner: Owner<'_> = serde_json::from_slice(&record.data).ok()?;
    Some((
        owner.organization_id.into_owned(),
        owner.event_id.into_owned(),
    ))
}

/// The body digests a record's data holds, if any.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Digests<'a> {
    #[serde(default, borrow)]
    payload_digest: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    response_body_digest: Option<Cow<'a, str>>,
}

/// Whether `record`'s hashed data names a body by its digest, so that the
/// record without content is one whose body was erased.
pub fn names_a_body(record: &RecordedEvent) -> bool {
    record.schema_version >= 2
        && matches!(
            record.event_type.as_str(),
            "WebhookEventAccepted" | "AttemptRecorded"
        )
        && serde_json::from_slice::<Digests<'_>>(&record.data)
            .is_ok_and(|d| d.payload_digest.is_some() || d.response_body_digest.is_some())
}

/// A record's content as a view of the raw event shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown<'a> {
    /// The event keeps no body apart from its data.
    Nothing,
    /// `salt || canonical body`.
    Kept(&'a [u8]),
    /// Its body was erased: gone from the disk, or about to be.
    Erased,
}

impl View {
    /// What a view of `record` shows of its content.
    pub fn shown_content<'a>(&self, record: &'a RecordedEvent) -> Result<Shown<'a>, Error> {
        if let Some(content) = self.servable_content(record)? {
            return Ok(Shown::Kept(content));
        }
        Ok(if !record.content.is_empty() || names_a_body(record) {
            Shown::Erased
        } else {
            Shown::Nothing
        })
    }

    /// `record`'s content as it may be served: `None` when it has none, and
    /// once an erasure covers it, whether or not compaction has removed it
    /// from the disk yet.
    pub fn servable_content<'a>(
        &self,
        record: &'a RecordedEvent,
    ) -> Result<Option<&'a [u8]>, Error> {
        let Some((org, event_id)) = body_owner(record) else {
            return Ok(None);
        };
        let at = Timestamp::from_micros(record.recorded_at);
        if self.is_erased(&org, &event_id, record.position, at)? {
            return Ok(None);
        }
        Ok(Some(&record.content))
    }

    /// Whether the body of the event at `position`, recorded `at`, which
    /// belongs to webhook event `event_id`, is erased.
    pub fn is_erased(
        &self,
        org: &str,
        event_id: &str,
        position: u64,
        at: Timestamp,
    ) -> Result<bool, Error> {
        let erasures = self.erasures(org)?;
        if erasures.covers(position, at, 0) {
            return Ok(true);
        }
        // The event's row, a read of its own, only where one event's
        // erasure may reach: a page of attempts then reads no event rows.
        if !erasures.one_event_may_cover(position) {
            return Ok(false);
        }
        let own = self.event(org, event_id)?.map_or(0, |e| e.erased_before);
        Ok(erasures.covers(position, at, own))
    }

    /// `record` decoded with only the content it may serve: an erased body
    /// decodes as erased.
    pub fn decode_servable(&self, record: &RecordedEvent) -> Result<projections::Recorded, Error> {
        super::decode_with(record, self.servable_content(record)?)
    }
}
