//! What every backend does inside its atomic append: check the expected version,
//! give out the next positions and versions, stamp the time and extend each
//! stream's hash chain. Backends differ only in how they make the result durable.
//!
//! Work happens in a [`Staging`] over the committed state, so a group commit can
//! stage many appends and then commit all of them, or none if the write fails.
//! The state also holds the claims appends took (see
//! [`EventStore::append_claimed`](crate::store::EventStore::append_claimed)).

use std::collections::HashMap;

use crate::chain::{Hash, Hashed, ZERO};
use crate::store::{
    Appended, Claim, ClaimsOf, Error, ExpectedVersion, Held, NewEvent, RecordedEvent, Result,
};

/// The tip of one stream: its last version and the hash that the next event chains to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTip {
    pub version: u64,
    pub hash: Hash,
}

/// The committed state every append is decided against.
#[derive(Debug, Default)]
pub struct Sequencer {
    tips: HashMap<String, StreamTip>,
    head: u64,
    clock: i64,
    /// Claim -> the append that took it.
    claims: HashMap<String, Held>,
    /// How [`Sequencer::observe`] learns the claims of recorded events.
    claims_of: Option<ClaimsOf>,
    /// Where tips and claims not held here are found (a persisted index).
    fallback: Option<Fallback>,
}

/// Looks up a stream's tip and a claim's hold that a [`Sequencer`] does not
/// hold itself.
pub trait Lookup: Send + Sync {
    fn tip(&self, stream: &str) -> Option<StreamTip>;
    fn claim(&self, claim: &str) -> Option<Held>;
}

/// A shared [`Lookup`].
#[derive(Clone)]
pub struct Fallback(pub std::sync::Arc<dyn Lookup>);

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fallback(..)")
    }
}

impl Sequencer {
    /// An empty state that rebuilds claims from the events it observes.
    pub fn with_claims_of(claims_of: Option<ClaimsOf>) -> Sequencer {
        Sequencer {
            claims_of,
            ..Sequencer::default()
        }
    }

    /// The state as a shared backend reads it under its write lock: the head, the
    /// time of the last event, and only the tips and claims the appends at hand
    /// touch (a stream absent from `tips` has no events; a claim absent from
    /// `claims` is free).
    pub fn resume(
        head: u64,
        clock: i64,
        tips: HashMap<String, StreamTip>,
        claims: HashMap<String, Held>,
    ) -> Sequencer {
        Sequencer {
            tips,
            head,
            clock,
            claims,
            claims_of: None,
            fallback: None,
        }
    }

    /// Looks up in `fallback` the tips and claims it does not hold itself.
    pub fn with_fallback(mut self, fallback: Fallback) -> Sequencer {
        self.fallback = Some(fallback);
        self
    }

    /// Drops the tips and claims it holds, keeping the head and clock: a
    /// caller that has written them to the fallback keeps memory bounded.
    pub fn forget(&mut self) {
        self.tips = HashMap::new();
        self.claims = HashMap::new();
    }

    /// Takes a committed event into the state, e.g. while scanning a log on open.
    pub fn observe(&mut self, event: &RecordedEvent) {
        self.tips.insert(
            event.stream.clone(),
            StreamTip {
                version: event.version,
                hash: event.hash,
            },
        );
        self.head = event.position;
        self.clock = self.clock.max(event.recorded_at);
        if let Some(claims_of) = &self.claims_of {
            for claim in (claims_of.0)(event) {
                // Each event of an append may report its claims; the last one
                // seen leaves the append's last position, as a live append does.
                let held = Held::taken(&claim, event.position, event.recorded_at);
                self.claims.insert(claim.name, held);
            }
        }
    }

    /// The state a persisted index recorded: each stream's tip, the head, the
    /// clock (the latest time stamped)
    /// and the claims taken; `claims_of` goes on recognising claims in events
    /// observed after it.
    pub fn restore(
        tips: HashMap<String, StreamTip>,
        head: u64,
        clock: i64,
        claims: HashMap<String, Held>,
        claims_of: Option<ClaimsOf>,
    ) -> Self {
        Sequencer {
            tips,
            head,
            clock,
            claims,
            claims_of,
            fallback: None,
        }
    }

    /// Every claim taken, with the append that took it.
    pub fn claims(&self) -> impl ExactSizeIterator<Item = (&str, Held)> {
        self.claims.iter().map(|(c, &h)| (c.as_str(), h))
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The latest time stamped on an event, microseconds since the Unix epoch.
    pub fn clock(&self) -> i64 {
        self.clock
    }

    pub fn tip(&self, stream: &str) -> Option<StreamTip> {
        self.tips
            .get(stream)
            .copied()
            .or_else(|| self.fallback.as_ref()?.0.tip(stream))
    }

    /// The tips observed since the last [`Sequencer::forget`].
    pub fn tips(&self) -> impl ExactSizeIterator<Item = (&str, StreamTip)> {
        self.tips.iter().map(|(s, &t)| (s.as_str(), t))
    }

    /// The append that took `claim`, if one did.
    pub fn claim(&self, claim: &str) -> Option<Held> {
        self.claims
            .get(claim)
            .copied()
            .or_else(|| self.fallback.as_ref()?.0.claim(claim))
    }

    /// Starts a batch of appends on top of the committed state.
    pub fn staging(&self) -> Staging<'_> {
        Staging {
            base: self,
            tips: HashMap::new(),
            head: self.head,
            clock: self.clock,
            records: Vec::new(),
            claims: HashMap::new(),
        }
    }

    /// Makes a batch's appends part of the committed state; call once they are durable.
    pub fn commit(&mut self, staged: Staged) {
        self.tips.extend(staged.tips);
        self.head = staged.head;
        self.clock = staged.clock;
        self.claims.extend(staged.claims);
    }
}

/// Appends staged on top of a [`Sequencer`], not yet committed.
#[derive(Debug)]
pub struct Staging<'a> {
    base: &'a Sequencer,
    tips: HashMap<String, StreamTip>,
    head: u64,
    clock: i64,
    records: Vec<RecordedEvent>,
    claims: HashMap<String, Held>,
}

/// The state changes of a finished batch, to hand to [`Sequencer::commit`].
#[derive(Debug)]
pub struct Staged {
    tips: HashMap<String, StreamTip>,
    head: u64,
    clock: i64,
    claims: HashMap<String, Held>,
}

impl Staged {
    /// The claims the batch took, each with the append that took it.
    pub fn claims(&self) -> impl Iterator<Item = (&str, Held)> {
        self.claims.iter().map(|(c, &h)| (c.as_str(), h))
    }

    /// The tip each stream the batch appended to reached.
    pub fn tips(&self) -> impl Iterator<Item = (&str, StreamTip)> {
        self.tips.iter().map(|(s, &t)| (s.as_str(), t))
    }

    /// The head after the batch.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The latest time stamped by the batch.
    pub fn clock(&self) -> i64 {
        self.clock
    }
}

impl Staging<'_> {
    /// Stages one append at server time `now` (microseconds). On a conflict nothing
    /// is staged and the batch stays usable for the other appends.
    pub fn stage(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Appended> {
        self.stage_claimed(stream, expected, events, &[], now)
    }

    /// Stages each waiting append in turn, taking the events of those it
    /// stages; the answer for each, in order. A refused one stages nothing,
    /// keeps its events and leaves the others be.
    pub fn stage_pending(&mut self, requests: &mut [Pending], now: i64) -> Vec<Result<Appended>> {
        requests
            .iter_mut()
            .map(|r| {
                let tip = self.admit(&r.stream, r.expected, &r.events, &r.claims, now)?;
                let events = std::mem::take(&mut r.events);
                Ok(self.stage_admitted(&r.stream, tip, events, &r.claims, now))
            })
            .collect()
    }

    /// [`Staging::stage`] for an append that takes `claims`: refused with
    /// [`Error::Duplicate`] if the committed state or an earlier append of this
    /// batch took one of them and it still holds.
    pub fn stage_claimed(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: &[Claim],
        now: i64,
    ) -> Result<Appended> {
        let tip = self.admit(stream, expected, &events, claims, now)?;
        Ok(self.stage_admitted(stream, tip, events, claims, now))
    }

    /// Whether an append may be staged at `now`: its shape, its claims and
    /// its expected version; the stream's tip if it may.
    fn admit(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        claims: &[Claim],
        now: i64,
    ) -> Result<Option<StreamTip>> {
        crate::store::check_append(stream, events)?;
        // The time this append would be stamped with: claims expire by it.
        let stamp = self.clock.max(now);
        for claim in claims {
            let taken = self
                .claims
                .get(&claim.name)
                .copied()
                .or_else(|| self.base.claim(&claim.name))
                .filter(|held| held.holds_at(stamp));
            if let Some(held) = taken {
                return Err(Error::Duplicate {
                    claim: claim.name.clone(),
                    position: held.position,
                });
            }
        }
        let tip = self
            .tips
            .get(stream)
            .copied()
            .or_else(|| self.base.tip(stream));
        let actual = tip.map(|t| t.version);
        if !expected.matches(actual) {
            return Err(Error::Conflict { expected, actual });
        }
        Ok(tip)
    }

    /// Stages an append [`Staging::admit`] let through, on the stream's `tip`.
    fn stage_admitted(
        &mut self,
        stream: &str,
        tip: Option<StreamTip>,
        events: Vec<NewEvent>,
        claims: &[Claim],
        now: i64,
    ) -> Appended {
        let actual = tip.map(|t| t.version);
        // Time never runs backwards in the log, even if the system clock does.
        self.clock = self.clock.max(now);
        let recorded_at = self.clock;
        let mut prev_hash = tip.map_or(ZERO, |t| t.hash);
        let mut version = actual.map_or(0, |v| v + 1);
        let first = self.head + 1;
        for event in events {
            let hash = Hashed {
                stream,
                version,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                recorded_at,
                data: &event.data,
                metadata: &event.metadata,
            }
            .hash(&prev_hash);
            self.head += 1;
            self.records.push(RecordedEvent {
                position: self.head,
                stream: stream.to_owned(),
                version,
                event_type: event.event_type,
                schema_version: event.schema_version,
                recorded_at,
                data: event.data,
                metadata: event.metadata,
                prev_hash,
                hash,
                content: event.content,
            });
            prev_hash = hash;
            version += 1;
        }
        let last_version = version - 1;
        self.tips.insert(
            stream.to_owned(),
            StreamTip {
                version: last_version,
                hash: prev_hash,
            },
        );
        for claim in claims {
            let held = Held::taken(claim, self.head, recorded_at);
            self.claims.insert(claim.name.clone(), held);
        }
        Appended {
            positions: first..=self.head,
            last_version,
            recorded_at,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The staged records in position order, and the state to commit once they
    /// are durable.
    pub fn finish(self) -> (Vec<RecordedEvent>, Staged) {
        (
            self.records,
            Staged {
                tips: self.tips,
                head: self.head,
                clock: self.clock,
                claims: self.claims,
            },
        )
    }
}

/// The current server time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// One append waiting for a backend's group-commit writer, with the channel its
/// answer goes back on. Every durable backend queues these the same way.
#[derive(Debug)]
pub struct Pending {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub claims: Vec<Claim>,
    pub reply: tokio::sync::oneshot::Sender<Result<Appended>>,
}

/// Hands the events of a batch that was staged but not written back to the
/// appends they came from, so that they can be staged again: `results` are
/// the answers [`Staging::stage_pending`] gave `requests`, `records` what it staged.
pub fn give_back(
    requests: &mut [Pending],
    results: &[Result<Appended>],
    records: Vec<RecordedEvent>,
) {
    let mut records = records.into_iter();
    for (request, result) in requests.iter_mut().zip(results) {
        if let Ok(appended) = result {
            let staged = appended.positions.clone().count();
            request.events = records
                .by_ref()
                .take(staged)
                .map(|r| NewEvent {
                    event_type: r.event_type,
                    schema_version: r.schema_version,
                    data: r.data,
                    metadata: r.metadata,
                    content: r.content,
                })
                .collect();
        }
    }
}

impl Pending {
    /// The bytes the append's events carry, to bound one batch.
    pub fn size(&self) -> usize {
        self.events
            .iter()
            .map(|e| self.stream.len() + e.event_type.len() + e.data.len() + e.metadata.len())
            .sum()
    }
}
