//! How a hookledger record is kept as a KurrentDB event, and back.
//!
//! The event's type is the record's type, its data the record's canonical
//! JSON data byte for byte (marked `application/json`, so KurrentDB's own
//! tools read it), its stream revision the record's version, and its custom
//! metadata a JSON envelope with the rest of what the hash covers:
//! `{"hash":…,"metadata":…,"prevHash":…,"recordedAt":…,"schemaVersion":…}`,
//! the record's metadata embedded as it is, and its content, if any, under
//! `content` as `{"body":…,"salt":hex}`, the body's canonical JSON embedded
//! as it is. KurrentDB events cannot be rewritten, so an erased body
//! stays in KurrentDB's files; the ledger hides it from every read (README,
//! "Retention and erasure"). The ledger position is not
//! stored: it is the event's place among the ledger's events in `$all`.
//!
//! Event ids are derived from the record's hash, which covers its stream,
//! version, time, content and predecessor: whoever writes a planned event
//! (its writer, or another node completing a claimed append) writes the same
//! id, and KurrentDB then takes the second write as a repeat of the first.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::chain::Hash;
use crate::store::{Error, NewEvent, RecordedEvent, Result};

/// The event id of the record whose hash is `hash`: 16 bytes of
/// SHA-256("hookledger event id" ‖ hash), marked as a version-8 UUID.
pub fn event_id(hash: &Hash) -> uuid::Uuid {
    derived_id(&[b"hookledger event id", hash])
}

/// A deterministic id from `parts`: 16 bytes of their SHA-256, version 8.
pub fn derived_id(parts: &[&[u8]]) -> uuid::Uuid {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The envelope in a ledger event's custom metadata.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(with = "hex_hash")]
    hash: Hash,
    #[serde(borrow)]
    metadata: &'a RawValue,
    #[serde(with = "hex_hash")]
    prev_hash: Hash,
    recorded_at: i64,
    schema_version: u32,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    content: Option<Content<'a>>,
}

/// An event's content in JSON: the salt in hex, the body as it is.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
    salt: String,
}

impl<'a> Content<'a> {
    /// `salt || body` as JSON; `None` for no content, and an error for
    /// content whose body is not JSON (never written by the ledger).
    pub fn of(content: &'a [u8]) -> Result<Option<Content<'a>>> {
        if content.is_empty() {
            return Ok(None);
        }
        let salt_len = projections::body::SALT_LEN.min(content.len());
        let (salt, body) = content.split_at(salt_len);
        Ok(Some(Content {
            body: raw_json(body, "content")?,
            salt: hex::encode(salt),
        }))
    }

    /// Back to `salt || body`.
    pub fn to_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        let mut bytes =
            hex::decode(&self.salt).map_err(|e| format!("the content's salt is not hex: {e}"))?;
        bytes.extend_from_slice(self.body.get().as_bytes());
        Ok(bytes)
    }
}

/// One planned event: what its append sends, with the hash it chains on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub data: Bytes,
    pub metadata: Bytes,
    pub recorded_at: i64,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub content: Bytes,
}

impl Planned {
    /// The custom metadata KurrentDB keeps for this event.
    pub fn envelope(&self) -> Result<Vec<u8>> {
        let metadata = raw_json(&self.metadata, "metadata")?;
        serde_json::to_vec(&Envelope {
            hash: self.hash,
            metadata,
            prev_hash: self.prev_hash,
            recorded_at: self.recorded_at,
            schema_version: self.schema_version,
            content: Content::of(&self.content)?,
        })
        .map_err(|e| Error::Invalid(format!("the event envelope does not serialise: {e}")))
    }

    /// The event as the client sends it.
    pub fn to_event_data(&self) -> Result<kurrentdb::EventData> {
        let envelope = self.envelope()?;
        let data = raw_json(&self.data, "data")?;
        let event = kurrentdb::EventData::json(&self.event_type, &data)
            .map_err(|e| Error::Invalid(format!("the event data does not serialise: {e}")))?;
        Ok(event.id(self.id).metadata(Bytes::from(envelope)))
    }
}

/// Bytes an envelope adds to the metadata it embeds, at most.
pub const ENVELOPE_BYTES: usize = 256;

/// `bytes` as JSON held as it is, or the append is malformed.
fn raw_json<'a>(bytes: &'a [u8], what: &str) -> Result<&'a RawValue> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("the event {what} is not JSON: {e}")))
}

/// Plans `event` as version `version` of `stream` at `recorded_at`, chained on `prev_hash`.
pub fn plan(
    stream: &str,
    version: u64,
    event: &NewEvent,
    recorded_at: i64,
    prev_hash: Hash,
) -> Planned {
    let hash = crate::chain::Hashed {
        stream,
        version,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        recorded_at,
        data: &event.data,
        metadata: &event.metadata,
    }
    .hash(&prev_hash);
    Planned {
        id: event_id(&hash),
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        data: Bytes::copy_from_slice(&event.data),
        metadata: Bytes::copy_from_slice(&event.metadata),
        recorded_at,
        prev_hash,
        hash,
        content: Bytes::copy_from_slice(&event.content),
    }
}

/// What the envelope of a ledger event says, for the stream's tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub hash: Hash,
    pub recorded_at: i64,
}

/// An event as read from KurrentDB: what hookledger needs of the client's
/// `RecordedEvent`.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The KurrentDB stream.
    pub stream: String,
    pub revision: u64,
    pub event_type: String,
    pub data: Bytes,
    pub custom_metadata: Bytes,
    /// Its place in `$all`: (commit, prepare). The prepare position is the
    /// event's own log position, unique to it.
    pub position: (u64, u64),
}

impl From<kurrentdb::RecordedEvent> for Fetched {
    fn from(e: kurrentdb::RecordedEvent) -> Self {
        Fetched {
            stream: e.stream_id().to_owned(),
            revision: e.revision,
            position: (e.position.commit, e.position.prepare),
            event_type: e.event_type,
            data: e.data,
            custom_metadata: e.custom_metadata,
        }
    }
}

/// The record a KurrentDB event of ledger stream `stream` holds, at ledger
/// position `position`. Anything else is corruption, named by the event's
/// KurrentDB stream and log position.
pub fn decode(event: &Fetched, stream: &str, position: u64) -> Result<RecordedEvent> {
    let envelope = envelope_of(event, position)?;
    let content = match &envelope.content {
        None => Vec::new(),
        Some(content) => content.to_bytes().map_err(|reason| Error::Corrupt {
            file: format!("kurrentdb:{}", event.stream).into(),
            offset: event.position.1,
            position,
            reason,
        })?,
    };
    Ok(RecordedEvent {
        position,
        stream: stream.to_owned(),
        version: event.revision,
        event_type: event.event_type.clone(),
        schema_version: envelope.schema_version,
        recorded_at: envelope.recorded_at,
        data: event.data.to_vec(),
        metadata: envelope.metadata.get().as_bytes().to_vec(),
        prev_hash: envelope.prev_hash,
        hash: envelope.hash,
        content,
    })
}

/// The hash and time a ledger event carries, without copying its data.
pub fn chain_of(event: &Fetched, position: u64) -> Result<Chain> {
    let envelope = envelope_of(event, position)?;
    Ok(Chain {
        hash: envelope.hash,
        recorded_at: envelope.recorded_at,
    })
}

fn envelope_of(event: &Fetched, position: u64) -> Result<Envelope<'_>> {
    serde_json::from_slice(&event.custom_metadata).map_err(|e| Error::Corrupt {
        file: format!("kurrentdb:{}", event.stream).into(),
        offset: event.position.1,
        position,
        reason: format!("the event's metadata is not a hookledger envelope: {e}"),
    })
}

/// A hash as 64 hex digits.
mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = <&str>::deserialize(d)?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(text, &mut hash).map_err(serde::de::Error::custom)?;
        Ok(hash)
    }
}

pub use hex_hash::{deserialize as hash_from_hex, serialize as hash_to_hex};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planned_event_decodes_to_the_record_it_was_planned_as() {
        let new = NewEvent {
            event_type: "AttemptRecorded".into(),
            schema_version: 2,
            data: br#"{"text":"h\u00e9 \"q\"","n":1e3}"#.to_vec(),
            metadata: br#"{"idempotencyKey":"k-\u0000"}"#.to_vec(),
            content: Vec::new(),
        };
        let planned = plan("delivery-dlv_1", 4, &new, 1_700_000_000_123_456, [7; 32]);
        assert_eq!(planned.id, event_id(&planned.hash));
        let envelope = planned.envelope().unwrap();
        assert!(envelope.len() <= new.metadata.len() + ENVELOPE_BYTES);
        let stored = kurrentdb_event("hl:delivery-dlv_1", 4, &planned, envelope);
        let record = decode(&stored, "delivery-dlv_1", 9).unwrap();
        assert_eq!(
            record,
            RecordedEvent {
                position: 9,
                stream: "delivery-dlv_1".into(),
                version: 4,
                event_type: new.event_type,
                schema_version: 2,
                recorded_at: 1_700_000_000_123_456,
                data: new.data,
                metadata: new.metadata,
                prev_hash: [7; 32],
                hash: planned.hash,
                content: Vec::new(),
            }
        );
        assert_eq!(
            record.hash,
            crate::chain::Hashed::from(&record).hash(&record.prev_hash)
        );
    }

    #[test]
    fn a_foreign_event_is_corruption_naming_where_it_is() {
        let planned = plan(
            "s",
            0,
            &NewEvent {
                event_type: "X".into(),
                schema_version: 1,
                data: b"{}".to_vec(),
                metadata: b"{}".to_vec(),
                content: Vec::new(),
            },
            0,
            [0; 32],
        );
        let stored = kurrentdb_event("hl:s", 0, &planned, b"{\"other\":1}".to_vec());
        let err = decode(&stored, "s", 3).unwrap_err().to_string();
        assert!(
            err.contains("kurrentdb:hl:s") && err.contains("position 3"),
            "{err}"
        );
    }

    /// The event a client would read back, written at log position 100.
    fn kurrentdb_event(
        stream: &str,
        revision: u64,
        planned: &Planned,
        custom_metadata: Vec<u8>,
    ) -> Fetched {
        Fetched {
            stream: stream.to_owned(),
            revision,
            event_type: planned.event_type.clone(),
            data: planned.data.clone(),
            custom_metadata: Bytes::from(custom_metadata),
            position: (100, 100),
        }
    }
}
