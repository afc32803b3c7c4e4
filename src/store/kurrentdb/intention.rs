//! An intention: an append planned whole (its events with their ids, hashes
//! and times, the revision it expects, and its claims with their times to
//! live), as the claims protocol writes it to each claim stream it takes, and
//! the other event of a claim stream, the release of an intention that died.
//! See [`super::claims`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::names::claim_key;
use super::record::{self, Fetched, Planned, derived_id};
use crate::chain::Hash;
use crate::store::{Claim, Error, Result};

const INTENDED: &str = "ClaimIntended";
const RELEASED: &str = "ClaimReleased";

/// An append planned whole, before any claim is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intention {
    /// The ledger stream.
    pub stream: String,
    /// The revision the stream must be at; `None`: no stream.
    pub expected: Option<u64>,
    /// Its claims, sorted by digest: the order they are taken in.
    pub claims: Vec<HeldClaim>,
    pub events: Vec<Planned>,
}

/// A claim as an intention holds it: its digest, and how long it holds after
/// the intention's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldClaim {
    /// The claim's digest ([`claim_key`]), which names its claim stream.
    pub key: String,
    /// Microseconds of log time; `None`: for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
}

impl Intention {
    pub fn new(
        stream: &str,
        expected: Option<u64>,
        claims: &[Claim],
        events: Vec<Planned>,
    ) -> Intention {
        let mut claims: Vec<HeldClaim> = claims
            .iter()
            .map(|c| HeldClaim {
                key: claim_key(&c.name),
                ttl: c.ttl,
            })
            .collect();
        claims.sort_by(|a, b| a.key.cmp(&b.key));
        claims.dedup_by(|a, b| a.key == b.key);
        Intention {
            stream: stream.to_owned(),
            expected,
            claims,
            events,
        }
    }

    pub fn id(&self) -> uuid::Uuid {
        self.events.first().map_or(uuid::Uuid::nil(), |e| e.id)
    }

    /// The time its events are stamped with: its claims hold from it.
    pub fn recorded_at(&self) -> i64 {
        self.events.first().map_or(i64::MIN, |e| e.recorded_at)
    }

    /// Whether its claim `key` still holds at `at`, by the rule of
    /// [`Held::holds_at`](crate::store::Held::holds_at): a claim with a time
    /// to live holds until the intention's time plus that, one for good always.
    pub fn holds_at(&self, key: &str, at: i64) -> bool {
        self.claims.iter().any(|c| {
            c.key == key
                && c.ttl
                    .is_none_or(|ttl| at <= self.recorded_at().saturating_add(ttl))
        })
    }

    /// The revision its last event takes.
    pub fn last_revision(&self) -> u64 {
        self.expected.map_or(0, |r| r + 1) + self.events.len() as u64 - 1
    }

    /// The intention as its claim events hold it.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let events = self
            .events
            .iter()
            .map(|e| {
                Ok(IntendedEvent {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    recorded_at: e.recorded_at,
                    prev_hash: e.prev_hash,
                    hash: e.hash,
                    data: raw(&e.data)?,
                    metadata: raw(&e.metadata)?,
                    content: record::Content::of(&e.content)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        serde_json::to_vec(&Document {
            stream: self.stream.clone(),
            expected: self.expected,
            claims: self.claims.clone(),
            events,
        })
        .map_err(|e| Error::Invalid(format!("the intention does not serialise: {e}")))
    }

    fn from_event(event: &Fetched) -> Result<Intention> {
        let document: Document<'_> =
            serde_json::from_slice(&event.data).map_err(|e| Error::Corrupt {
                file: format!("kurrentdb:{}", event.stream).into(),
                offset: event.position.1,
                position: 0,
                reason: format!("a claim event that is not an intention: {e}"),
            })?;
        let events = document
            .events
            .into_iter()
            .map(|e| {
                let content = match &e.content {
                    None => Vec::new(),
                    Some(content) => content.to_bytes().map_err(|reason| Error::Corrupt {
                        file: format!("kurrentdb:{}", event.stream).into(),
                        offset: event.position.1,
                        position: 0,
                        reason,
                    })?,
                };
                Ok(Planned {
                    id: e.id,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    data: bytes::Bytes::copy_from_slice(e.data.get().as_bytes()),
                    metadata: bytes::Bytes::copy_from_slice(e.metadata.get().as_bytes()),
                    recorded_at: e.recorded_at,
                    prev_hash: e.prev_hash,
                    hash: e.hash,
                    content: content.into(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if events.is_empty() {
            return Err(Error::Corrupt {
                file: format!("kurrentdb:{}", event.stream).into(),
                offset: event.position.1,
                position: 0,
                reason: "an intention without events".into(),
            });
        }
        Ok(Intention {
            stream: document.stream,
            expected: document.expected,
            claims: document.claims,
            events,
        })
    }

    pub fn intended(&self, key: &str, json: &[u8]) -> Result<kurrentdb::EventData> {
        let data: &RawValue = serde_json::from_slice(json)
            .map_err(|e| Error::Invalid(format!("the intention is not JSON: {e}")))?;
        let id = derived_id(&[b"claim intended", self.id().as_bytes(), key.as_bytes()]);
        Ok(kurrentdb::EventData::json(INTENDED, &data)
            .map_err(|e| Error::Invalid(format!("the intention does not serialise: {e}")))?
            .id(id))
    }

    pub fn released(&self, key: &str) -> Result<kurrentdb::EventData> {
        let id = derived_id(&[b"claim released", self.id().as_bytes(), key.as_bytes()]);
        let data = Released {
            intention: self.id(),
        };
        Ok(kurrentdb::EventData::json(RELEASED, &data)
            .map_err(|e| Error::Invalid(format!("a release does not serialise: {e}")))?
            .id(id))
    }
}

/// The bytes a claim event holding `events` (data and metadata of that many
/// bytes) with `claims` claims takes, at most: what KurrentDB counts against
/// its maximum append size.
pub fn intention_size(stream: &str, events: usize, payload: usize, claims: usize) -> usize {
    256 + stream.len() + claims * 110 + events * 420 + payload
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<'a> {
    stream: String,
    expected: Option<u64>,
    claims: Vec<HeldClaim>,
    #[serde(borrow)]
    events: Vec<IntendedEvent<'a>>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IntendedEvent<'a> {
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: u32,
    recorded_at: i64,
    #[serde(
        serialize_with = "record::hash_to_hex",
        deserialize_with = "record::hash_from_hex"
    )]
    prev_hash: Hash,
    #[serde(
        serialize_with = "record::hash_to_hex",
        deserialize_with = "record::hash_from_hex"
    )]
    hash: Hash,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow)]
    metadata: &'a RawValue,
    /// As in a ledger event's envelope.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    content: Option<record::Content<'a>>,
}

#[derive(Serialize, Deserialize)]
struct Released {
    intention: uuid::Uuid,
}

fn raw(bytes: &[u8]) -> Result<&RawValue> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("claimed event data must be JSON: {e}")))
}

/// An event of a claim stream.
#[derive(Debug)]
pub enum ClaimEvent {
    Intended(Box<Intention>),
    Released(uuid::Uuid),
}

impl ClaimEvent {
    pub fn decode(event: &Fetched) -> Result<ClaimEvent> {
        let corrupt = |reason: String| Error::Corrupt {
            file: format!("kurrentdb:{}", event.stream).into(),
            offset: event.position.1,
            position: 0,
            reason,
        };
        match event.event_type.as_str() {
            INTENDED => Ok(ClaimEvent::Intended(Box::new(Intention::from_event(
                event,
            )?))),
            RELEASED => {
                let released: Released = serde_json::from_slice(&event.data)
                    .map_err(|e| corrupt(format!("a release that does not decode: {e}")))?;
                Ok(ClaimEvent::Released(released.intention))
            }
            other => Err(corrupt(format!(
                "an event of type {other:?} in a claim stream"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewEvent;

    #[test]
    fn an_intention_reads_back_as_it_was_planned() {
        let events: Vec<Planned> = (0..2)
            .map(|i| {
                record::plan(
                    "event-evt_1",
                    i,
                    &NewEvent {
                        event_type: "WebhookEventAccepted".into(),
                        schema_version: 1,
                        data: format!(r#"{{"n":{i},"s":"\u00e9\"x\""}}"#).into_bytes(),
                        metadata: br#"{"requestId":"r"}"#.to_vec(),
                        content: Vec::new(),
                    },
                    17,
                    [i as u8; 32],
                )
            })
            .collect();
        let intention = Intention::new(
            "event-evt_1",
            None,
            &[
                "sourceKey\norg\nk".into(),
                Claim {
                    name: "idempotency\norg\nr\nk".into(),
                    ttl: Some(1_000),
                },
            ],
            events,
        );
        assert!(intention.claims.windows(2).all(|w| w[0].key < w[1].key));
        let [a, b] = [0, 1].map(|i| intention.claims[i].key.clone());
        let (expiring, kept) = if intention.claims[0].ttl.is_some() {
            (a, b)
        } else {
            (b, a)
        };
        assert!(intention.holds_at(&expiring, 17 + 1_000));
        assert!(!intention.holds_at(&expiring, 17 + 1_001));
        assert!(intention.holds_at(&kept, i64::MAX));
        assert_eq!(intention.last_revision(), 1);
        let json = intention.to_json().unwrap();
        let payload: usize = intention
            .events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.content.len())
            .sum();
        assert!(json.len() <= intention_size("event-evt_1", 2, payload, 2));
        let fetched = Fetched {
            stream: "hl-claim-x".into(),
            revision: 0,
            event_type: INTENDED.into(),
            data: json.into(),
            custom_metadata: Default::default(),
            position: (1, 1),
        };
        assert_eq!(Intention::from_event(&fetched).unwrap(), intention);
    }
}
