//! What every backend does inside its atomic append: check the expected version,
//! give out the next positions and versions, stamp the time and extend each
//! stream's hash chain. Backends differ only in how they make the result durable.
//!
//! Work happens in a [`Batch`] over the committed state, so a group commit can
//! stage many appends and then commit all of them, or none if the write fails.

use std::collections::HashMap;

use crate::chain::{Hash, Hashed, ZERO};
use crate::store::{Appended, Error, ExpectedVersion, NewEvent, RecordedEvent, Result};

/// The tip of one stream: its last version and the hash that the next event chains to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub version: u64,
    pub hash: Hash,
}

/// The committed state every append is decided against.
#[derive(Debug, Default)]
pub struct Sequencer {
    tips: HashMap<String, Tip>,
    head: u64,
    clock: i64,
}

impl Sequencer {
    /// Takes a committed event into the state, e.g. while scanning a log on open.
    pub fn observe(&mut self, event: &RecordedEvent) {
        self.tips.insert(
            event.stream.clone(),
            Tip {
                version: event.version,
                hash: event.hash,
            },
        );
        self.head = event.position;
        self.clock = self.clock.max(event.recorded_at);
    }

    /// The state a persisted index recorded: each stream's tip, the head and
    /// the clock (the latest time stamped).
    pub fn restore(tips: HashMap<String, Tip>, head: u64, clock: i64) -> Self {
        Sequencer { tips, head, clock }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The latest time stamped on an event, microseconds since the Unix epoch.
    pub fn clock(&self) -> i64 {
        self.clock
    }

    pub fn tip(&self, stream: &str) -> Option<Tip> {
        self.tips.get(stream).copied()
    }

    /// Starts a batch of appends on top of the committed state.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            base: self,
            tips: HashMap::new(),
            head: self.head,
            clock: self.clock,
            records: Vec::new(),
        }
    }

    /// Makes a batch's appends part of the committed state; call once they are durable.
    pub fn commit(&mut self, staged: Staged) {
        self.tips.extend(staged.tips);
        self.head = staged.head;
        self.clock = staged.clock;
    }
}

/// Appends staged on top of a [`Sequencer`], not yet committed.
#[derive(Debug)]
pub struct Batch<'a> {
    base: &'a Sequencer,
    tips: HashMap<String, Tip>,
    head: u64,
    clock: i64,
    records: Vec<RecordedEvent>,
}

/// The state changes of a finished batch, to hand to [`Sequencer::commit`].
#[derive(Debug)]
pub struct Staged {
    tips: HashMap<String, Tip>,
    head: u64,
    clock: i64,
}

impl Batch<'_> {
    /// Stages one append at server time `now` (microseconds). On a conflict nothing
    /// is staged and the batch stays usable for the other appends.
    pub fn stage(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        now: i64,
    ) -> Result<Appended> {
        crate::store::check_append(stream, &events)?;
        let tip = self
            .tips
            .get(stream)
            .copied()
            .or_else(|| self.base.tip(stream));
        let actual = tip.map(|t| t.version);
        if !expected.matches(actual) {
            return Err(Error::Conflict { expected, actual });
        }
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
            });
            prev_hash = hash;
            version += 1;
        }
        let last_version = version - 1;
        self.tips.insert(
            stream.to_owned(),
            Tip {
                version: last_version,
                hash: prev_hash,
            },
        );
        Ok(Appended {
            positions: first..=self.head,
            last_version,
            recorded_at,
        })
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
            },
        )
    }
}

/// The current server time in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
