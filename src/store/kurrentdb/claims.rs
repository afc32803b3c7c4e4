//! Claims on KurrentDB: a name an append takes for good (an
//! `Idempotency-Key`, a `sourceKey`), unique across every node.
//!
//! The official Rust client has no multi-stream append, so a claim cannot be
//! written in the same atomic step as the append that takes it. Instead:
//!
//! 1. The append is planned whole (its events, their ids, hashes and times,
//!    and the exact revision it expects): an **intention**, identified by its
//!    first event's id.
//! 2. Each of its claims is taken, in a fixed order, by writing the intention
//!    to the claim's own stream with an expected revision: `NoStream` for a
//!    claim never taken, or the revision of the last event when that event
//!    released it. Of racing intentions, exactly one gets each claim.
//! 3. With every claim held, the events are appended at the planned revision
//!    with their planned ids.
//!
//! Anyone who finds a claim held by an intention **settles** it by running
//! the same steps for it: writing the same events with the same ids at the
//! same revisions, which KurrentDB treats as repeats of writes already made.
//! So a writer that crashed after step 2 has its append completed by the
//! next node that wants the claim: the write is not lost and not made twice.
//! An intention that cannot complete (a claim is held by a completed one, or
//! its stream has moved past the planned revision: both facts are for good)
//! is dead: its claims are released by appending a release to each claim
//! stream it holds, and its writer plans again or reports the duplicate.
//!
//! An intention is complete exactly when its events are in its stream; its
//! claims are then never released. Claim streams are outside the ledger's
//! `$all` filter and take no ledger position.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Shared;
use super::names::claim_key;
use super::positions::LogPosition;
use super::record::{self, Fetched, Planned, derived_id};
use super::server::Appended;
use crate::chain::Hash;
use crate::store::{Error, Result};

const INTENDED: &str = "ClaimIntended";
const RELEASED: &str = "ClaimReleased";
/// Intentions settled within one another, at most: each holds claims before
/// the one it waits for, in claim order, so a chain cannot loop.
const MAX_DEPTH: usize = 16;
/// Events a claim stream may hold before it is suspicious.
const MAX_HISTORY: usize = 4096;

/// An append planned whole, before any claim is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intention {
    /// The ledger stream.
    pub stream: String,
    /// The revision the stream must be at; `None`: no stream.
    pub expected: Option<u64>,
    /// The digests of its claims, sorted: the order they are taken in.
    pub claims: Vec<String>,
    pub events: Vec<Planned>,
}

impl Intention {
    pub fn new(
        stream: &str,
        expected: Option<u64>,
        claims: &[String],
        events: Vec<Planned>,
    ) -> Intention {
        let mut claims: Vec<String> = claims.iter().map(|c| claim_key(c)).collect();
        claims.sort_unstable();
        claims.dedup();
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
            .map(|e| Planned {
                id: e.id,
                event_type: e.event_type,
                schema_version: e.schema_version,
                data: bytes::Bytes::copy_from_slice(e.data.get().as_bytes()),
                metadata: bytes::Bytes::copy_from_slice(e.metadata.get().as_bytes()),
                recorded_at: e.recorded_at,
                prev_hash: e.prev_hash,
                hash: e.hash,
            })
            .collect::<Vec<_>>();
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

    fn intended(&self, key: &str, json: &[u8]) -> Result<kurrentdb::EventData> {
        let data: &RawValue = serde_json::from_slice(json)
            .map_err(|e| Error::Invalid(format!("the intention is not JSON: {e}")))?;
        let id = derived_id(&[b"claim intended", self.id().as_bytes(), key.as_bytes()]);
        Ok(kurrentdb::EventData::json(INTENDED, &data)
            .map_err(|e| Error::Invalid(format!("the intention does not serialise: {e}")))?
            .id(id))
    }

    fn released(&self, key: &str) -> Result<kurrentdb::EventData> {
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
    256 + stream.len() + claims * 70 + events * 420 + payload
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document<'a> {
    stream: String,
    expected: Option<u64>,
    claims: Vec<String>,
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
}

#[derive(Serialize, Deserialize)]
struct Released {
    intention: uuid::Uuid,
}

fn raw(bytes: &[u8]) -> Result<&RawValue> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Invalid(format!("claimed event data must be JSON: {e}")))
}

/// How settling an intention ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Its events are in its stream. `position` is where the server says the
    /// write lies in `$all`, if this settlement wrote it.
    Completed { position: Option<LogPosition> },
    /// Its claim `claim` (a digest) was taken by the complete intention whose
    /// last event is `revision` of KurrentDB stream `stream`.
    Duplicate {
        claim: String,
        stream: String,
        revision: u64,
    },
    /// It cannot complete and its claims are released: plan again.
    Retry,
}

/// One claim stream: every intention that took the claim, in order, and the
/// releases of those that died.
#[derive(Debug)]
struct History {
    last_revision: Option<u64>,
    events: Vec<ClaimEvent>,
}

#[derive(Debug)]
enum ClaimEvent {
    Intended(Box<Intention>),
    Released(uuid::Uuid),
}

impl History {
    /// The intention holding the claim now, if any.
    fn holder(&self) -> Option<&Intention> {
        match self.events.last() {
            Some(ClaimEvent::Intended(i)) => Some(i),
            _ => None,
        }
    }

    /// Whether `id` was released from this claim: it died.
    fn released(&self, id: uuid::Uuid) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, ClaimEvent::Released(r) if *r == id))
    }
}

async fn history(shared: &Shared, stream: &str) -> Result<History> {
    let fetched = shared
        .server
        .read_stream(stream, Some(0), MAX_HISTORY)
        .await?;
    if fetched.len() == MAX_HISTORY {
        return Err(Error::Unavailable(format!(
            "the claim stream {stream} holds {MAX_HISTORY} events or more"
        )));
    }
    let mut events = Vec::with_capacity(fetched.len());
    for event in &fetched {
        let claim_event = match event.event_type.as_str() {
            INTENDED => ClaimEvent::Intended(Box::new(Intention::from_event(event)?)),
            RELEASED => {
                let released: Released =
                    serde_json::from_slice(&event.data).map_err(|e| Error::Corrupt {
                        file: format!("kurrentdb:{stream}").into(),
                        offset: event.position.1,
                        position: 0,
                        reason: format!("a release that does not decode: {e}"),
                    })?;
                ClaimEvent::Released(released.intention)
            }
            other => {
                return Err(Error::Corrupt {
                    file: format!("kurrentdb:{stream}").into(),
                    offset: event.position.1,
                    position: 0,
                    reason: format!("an event of type {other:?} in a claim stream"),
                });
            }
        };
        events.push(claim_event);
    }
    Ok(History {
        last_revision: fetched.last().map(|e| e.revision),
        events,
    })
}

/// Takes every claim of `intention` and appends its events, or finds why it
/// cannot (see the module documentation). Safe to run for any intention, by
/// any node, any number of times, concurrently.
pub async fn settle(shared: &Shared, intention: &Intention) -> Result<Settled> {
    settle_within(shared, intention, 0).await
}

async fn settle_within(shared: &Shared, intention: &Intention, depth: usize) -> Result<Settled> {
    if depth > MAX_DEPTH {
        return Err(Error::Unavailable(
            "claims wait on each other too deeply; try again".into(),
        ));
    }
    let json = intention.to_json()?;
    for key in &intention.claims {
        let stream = shared.names.claim_stream(key);
        loop {
            let history = history(shared, &stream).await?;
            if history.released(intention.id()) {
                // Someone found it dead (a fact for good) and released it.
                release(shared, intention).await?;
                return Ok(Settled::Retry);
            }
            match history.holder() {
                Some(holder) if holder.id() == intention.id() => break,
                Some(holder) => {
                    let holder = holder.clone();
                    match Box::pin(settle_within(shared, &holder, depth + 1)).await? {
                        Settled::Completed { .. } => {
                            release(shared, intention).await?;
                            return Ok(Settled::Duplicate {
                                claim: key.clone(),
                                stream: shared.names.stream(&holder.stream),
                                revision: holder.last_revision(),
                            });
                        }
                        // The holder is dead and has let go: look again.
                        Settled::Duplicate { .. } | Settled::Retry => continue,
                    }
                }
                None => {
                    let taken = shared
                        .server
                        .append(
                            &stream,
                            history.last_revision,
                            vec![intention.intended(key, &json)?],
                        )
                        .await?;
                    match taken {
                        Appended::Written { .. } => break,
                        Appended::WrongRevision { .. } => continue,
                    }
                }
            }
        }
    }
    let events = intention
        .events
        .iter()
        .map(Planned::to_event_data)
        .collect::<Result<Vec<_>>>()?;
    let name = shared.names.stream(&intention.stream);
    match shared
        .server
        .append(&name, intention.expected, events)
        .await?
    {
        Appended::Written { position } => Ok(Settled::Completed { position }),
        Appended::WrongRevision { .. } => {
            release(shared, intention).await?;
            Ok(Settled::Retry)
        }
    }
}

/// Releases every claim `intention` holds.
async fn release(shared: &Shared, intention: &Intention) -> Result<()> {
    for key in &intention.claims {
        let stream = shared.names.claim_stream(key);
        loop {
            let history = history(shared, &stream).await?;
            match history.holder() {
                Some(holder) if holder.id() == intention.id() => {
                    let released = shared
                        .server
                        .append(
                            &stream,
                            history.last_revision,
                            vec![intention.released(key)?],
                        )
                        .await?;
                    match released {
                        Appended::Written { .. } => break,
                        Appended::WrongRevision { .. } => continue,
                    }
                }
                _ => break,
            }
        }
    }
    Ok(())
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
                    },
                    17,
                    [i as u8; 32],
                )
            })
            .collect();
        let intention = Intention::new(
            "event-evt_1",
            None,
            &["sourceKey\norg\nk".into(), "idempotency\norg\nr\nk".into()],
            events,
        );
        assert!(intention.claims.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(intention.last_revision(), 1);
        let json = intention.to_json().unwrap();
        let payload: usize = intention
            .events
            .iter()
            .map(|e| e.data.len() + e.metadata.len())
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
