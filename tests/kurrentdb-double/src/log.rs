//! The double's log: what KurrentDB keeps and the rules it applies, with no
//! gRPC in sight, so they can be read (and tested) on their own.
//!
//! The rules are KurrentDB's documented ones, as far as hookledger uses them:
//!
//! - **`$all` is one ordered log.** Every event gets a log position when it is
//!   written, in write order; the positions grow with the bytes written, so
//!   they are far from dense, and the events of one append share its commit
//!   position while each has its own prepare position. A reader of `$all`
//!   never sees an event before the ones written earlier.
//! - **Expected revision.** An append states what it expects the stream to
//!   hold: any, no stream, an existing stream, or exactly revision `r`. If the
//!   stream is not so, nothing is written and the answer names its current
//!   revision.
//! - **Idempotent event ids.** An append whose events were written before,
//!   with the same ids right after the revision it expects, succeeds again
//!   without writing anything; if only some of them match it is refused. With
//!   "any", the same holds wherever in the stream the first id was written.
//! - **Size.** An append whose events' data and metadata add up to more than
//!   the maximum append size (1 MiB by default) is refused whole.
//!
//! Filters are stream-name prefixes, the only kind hookledger uses.

use std::collections::HashMap;
use std::sync::Arc;

/// KurrentDB's default maximum append size, in bytes of data and metadata.
pub const DEFAULT_MAX_APPEND_SIZE: usize = 1024 * 1024;

/// Where the first event is written: KurrentDB's log does not start at zero
/// (its chunk header and the node's own system events come first).
const FIRST_POSITION: u64 = 4096;

/// Bytes a record takes in the log besides its stream name, data and metadata.
const RECORD_OVERHEAD: u64 = 143;

/// One event the client proposes.
#[derive(Debug, Clone)]
pub struct Proposed {
    pub id: uuid::Uuid,
    pub event_type: String,
    pub content_type: String,
    pub custom_metadata: Vec<u8>,
    pub data: Vec<u8>,
}

/// One event as written.
#[derive(Debug)]
pub struct Stored {
    pub id: uuid::Uuid,
    pub stream: Vec<u8>,
    pub revision: u64,
    pub commit: u64,
    pub prepare: u64,
    pub event_type: String,
    pub content_type: String,
    /// When it was written, in .NET ticks (100 ns) since the Unix epoch.
    pub created_ticks: u64,
    pub custom_metadata: Vec<u8>,
    pub data: Vec<u8>,
}

impl Stored {
    pub fn position(&self) -> (u64, u64) {
        (self.commit, self.prepare)
    }
}

/// What an append expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Any,
    NoStream,
    StreamExists,
    Revision(u64),
}

/// How an append went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written; the stream's revision now, and where the append's last event lies.
    Written { revision: u64, position: (u64, u64) },
    /// Written before with the same ids: nothing new.
    Idempotent { revision: u64 },
    /// Empty append to a stream that is as expected: nothing to write.
    Nothing { revision: Option<u64> },
    /// The stream is not as expected; `current` is its last revision.
    WrongExpectedVersion { current: Option<u64> },
    /// Data and metadata add up to `size` bytes, over the limit.
    TooLarge { size: usize },
}

/// Where a read of `$all` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllFrom {
    Start,
    End,
    /// Forwards: this position and after. Backwards: strictly before it.
    Position(u64, u64),
}

/// Where a read of one stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrom {
    Start,
    End,
    Revision(u64),
}

/// Which events of `$all` a reader wants: those of streams starting with one
/// of the prefixes, or all of them.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub prefixes: Option<Vec<Vec<u8>>>,
}

impl Filter {
    pub fn matches(&self, event: &Stored) -> bool {
        match &self.prefixes {
            None => true,
            Some(prefixes) => prefixes.iter().any(|p| event.stream.starts_with(p)),
        }
    }
}

/// Everything written, in `$all` order.
#[derive(Debug)]
pub struct Log {
    events: Vec<Arc<Stored>>,
    /// Stream name -> indices into `events`, in revision order.
    streams: HashMap<Vec<u8>, Vec<usize>>,
    next_position: u64,
    max_append_size: usize,
}

impl Log {
    pub fn new(max_append_size: usize) -> Log {
        Log {
            events: Vec::new(),
            streams: HashMap::new(),
            next_position: FIRST_POSITION,
            max_append_size,
        }
    }

    /// How many events `$all` holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn last_revision(&self, stream: &[u8]) -> Option<u64> {
        self.streams
            .get(stream)
            .and_then(|s| s.last())
            .map(|&i| self.events[i].revision)
    }

    /// Whether `ids` were written to `stream` as the revisions from `first` on.
    /// `Some(true)`: all of them; `Some(false)`: the first but not all, which
    /// KurrentDB refuses; `None`: not the first.
    fn written_at(&self, stream: &[u8], first: u64, ids: &[uuid::Uuid]) -> Option<bool> {
        let indices = self.streams.get(stream)?;
        let at = |revision: u64| {
            usize::try_from(revision)
                .ok()
                .and_then(|r| indices.get(r))
                .map(|&i| self.events[i].id)
        };
        if at(first) != Some(ids[0]) {
            return None;
        }
        let all = ids
            .iter()
            .enumerate()
            .all(|(k, id)| at(first + k as u64) == Some(*id));
        Some(all)
    }

    /// Appends `events` to `stream` if it is as `expected`, at time `now_ticks`.
    pub fn append(
        &mut self,
        stream: &[u8],
        expected: Expected,
        events: Vec<Proposed>,
        now_ticks: u64,
    ) -> Outcome {
        let size: usize = events
            .iter()
            .map(|e| e.data.len() + e.custom_metadata.len())
            .sum();
        if size > self.max_append_size {
            return Outcome::TooLarge { size };
        }
        let current = self.last_revision(stream);
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let next = current.map_or(0, |r| r + 1);
        // Where the events would go if the expectation holds, and where an
        // earlier write of them would be.
        let first = match expected {
            Expected::Revision(r) => r + 1,
            Expected::NoStream => 0,
            Expected::Any | Expected::StreamExists => next,
        };
        if let Some(&id) = ids.first() {
            let earlier = match expected {
                Expected::Any | Expected::StreamExists => self.streams.get(stream).and_then(|s| {
                    s.iter()
                        .map(|&i| &self.events[i])
                        .find(|e| e.id == id)
                        .map(|e| e.revision)
                }),
                _ if first < next => Some(first),
                _ => None,
            };
            if let Some(start) = earlier {
                return match self.written_at(stream, start, &ids) {
                    Some(true) => Outcome::Idempotent {
                        revision: start + ids.len() as u64 - 1,
                    },
                    _ => Outcome::WrongExpectedVersion { current },
                };
            }
        }
        let as_expected = match expected {
            Expected::Any => true,
            Expected::NoStream => current.is_none(),
            Expected::StreamExists => current.is_some(),
            Expected::Revision(r) => current == Some(r),
        };
        if !as_expected {
            return Outcome::WrongExpectedVersion { current };
        }
        if events.is_empty() {
            return Outcome::Nothing { revision: current };
        }
        let commit = self.next_position;
        let mut revision = next;
        let mut prepare = commit;
        let indices = self.streams.entry(stream.to_vec()).or_default();
        for event in events {
            prepare = self.next_position;
            self.next_position += RECORD_OVERHEAD
                + stream.len() as u64
                + event.event_type.len() as u64
                + event.data.len() as u64
                + event.custom_metadata.len() as u64;
            indices.push(self.events.len());
            self.events.push(Arc::new(Stored {
                id: event.id,
                stream: stream.to_vec(),
                revision,
                commit,
                prepare,
                event_type: event.event_type,
                content_type: event.content_type,
                created_ticks: now_ticks,
                custom_metadata: event.custom_metadata,
                data: event.data,
            }));
            revision += 1;
        }
        Outcome::Written {
            revision: revision - 1,
            position: (commit, prepare),
        }
    }

    /// Up to `count` events of `stream` from `from`; `None` if it has none.
    pub fn read_stream(
        &self,
        stream: &[u8],
        from: StreamFrom,
        backwards: bool,
        count: usize,
    ) -> Option<Vec<Arc<Stored>>> {
        let indices = self.streams.get(stream)?;
        let events = indices.iter().map(|&i| self.events[i].clone());
        Some(match (from, backwards) {
            (StreamFrom::Start, false) => events.take(count).collect(),
            (StreamFrom::Revision(r), false) => events
                .skip(usize::try_from(r).unwrap_or(usize::MAX))
                .take(count)
                .collect(),
            (StreamFrom::End, false) => Vec::new(),
            (StreamFrom::End, true) => events.rev().take(count).collect(),
            (StreamFrom::Revision(r), true) => events
                .rev()
                .skip_while(|e| e.revision > r)
                .take(count)
                .collect(),
            (StreamFrom::Start, true) => events.take(1.min(count)).collect(),
        })
    }

    /// Up to `count` events of `$all` that pass `filter`, from `from`.
    pub fn read_all(
        &self,
        from: AllFrom,
        backwards: bool,
        count: usize,
        filter: &Filter,
    ) -> Vec<Arc<Stored>> {
        let start = match from {
            AllFrom::Start => 0,
            AllFrom::End => self.events.len(),
            AllFrom::Position(commit, prepare) => self
                .events
                .partition_point(|e| e.position() < (commit, prepare)),
        };
        let passes = |e: &&Arc<Stored>| filter.matches(e);
        if backwards {
            self.events[..start]
                .iter()
                .rev()
                .filter(passes)
                .take(count)
                .cloned()
                .collect()
        } else {
            self.events[start..]
                .iter()
                .filter(passes)
                .take(count)
                .cloned()
                .collect()
        }
    }

    /// Up to `count` events of `$all` that pass `filter`, strictly after
    /// `after` (from the start if `None`), as a subscription receives them;
    /// also the position the scan reached, for the next call.
    pub fn after(
        &self,
        after: Option<(u64, u64)>,
        count: usize,
        filter: &Filter,
    ) -> (Vec<Arc<Stored>>, Option<(u64, u64)>) {
        let start = match after {
            None => 0,
            Some(position) => self.events.partition_point(|e| e.position() <= position),
        };
        let mut found = Vec::new();
        let mut reached = after;
        for event in &self.events[start..] {
            if found.len() == count {
                break;
            }
            reached = Some(event.position());
            if filter.matches(event) {
                found.push(event.clone());
            }
        }
        (found, reached)
    }

    /// The position of the last event, where a subscription from the end starts.
    pub fn end(&self) -> Option<(u64, u64)> {
        self.events.last().map(|e| e.position())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposed(n: u8) -> Proposed {
        Proposed {
            id: uuid::Uuid::from_bytes([n; 16]),
            event_type: "E".into(),
            content_type: "application/json".into(),
            custom_metadata: Vec::new(),
            data: b"{}".to_vec(),
        }
    }

    #[test]
    fn expected_revisions_and_idempotent_ids() {
        let mut log = Log::new(DEFAULT_MAX_APPEND_SIZE);
        let s = b"s".as_slice();
        assert!(matches!(
            log.append(s, Expected::NoStream, vec![proposed(1), proposed(2)], 0),
            Outcome::Written { revision: 1, .. }
        ));
        // The same append again: idempotent, nothing written.
        assert_eq!(
            log.append(s, Expected::NoStream, vec![proposed(1), proposed(2)], 0),
            Outcome::Idempotent { revision: 1 }
        );
        assert_eq!(
            log.append(s, Expected::Any, vec![proposed(2)], 0),
            Outcome::Idempotent { revision: 1 }
        );
        // Only the first matches: refused.
        assert_eq!(
            log.append(s, Expected::NoStream, vec![proposed(1), proposed(9)], 0),
            Outcome::WrongExpectedVersion { current: Some(1) }
        );
        // Other ids at a taken revision: refused, naming the current one.
        assert_eq!(
            log.append(s, Expected::Revision(0), vec![proposed(3)], 0),
            Outcome::WrongExpectedVersion { current: Some(1) }
        );
        assert!(matches!(
            log.append(s, Expected::Revision(1), vec![proposed(3)], 0),
            Outcome::Written { revision: 2, .. }
        ));
        assert_eq!(
            log.append(b"t", Expected::StreamExists, vec![proposed(4)], 0),
            Outcome::WrongExpectedVersion { current: None }
        );
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn positions_are_ordered_not_dense_and_filters_select_streams() {
        let mut log = Log::new(DEFAULT_MAX_APPEND_SIZE);
        log.append(b"app-a", Expected::Any, vec![proposed(1), proposed(2)], 0);
        log.append(b"other", Expected::Any, vec![proposed(3)], 0);
        log.append(b"app-b", Expected::Any, vec![proposed(4)], 0);
        let all = log.read_all(AllFrom::Start, false, 10, &Filter::default());
        let positions: Vec<_> = all.iter().map(|e| e.position()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            positions[0].0, positions[1].0,
            "one append, one commit position"
        );
        assert!(
            positions[2].1 - positions[1].1 > 1,
            "positions are not dense"
        );
        let app = Filter {
            prefixes: Some(vec![b"app-".to_vec()]),
        };
        let ids: Vec<_> = log
            .read_all(AllFrom::Start, false, 10, &app)
            .iter()
            .map(|e| e.id.as_bytes()[0])
            .collect();
        assert_eq!(ids, [1, 2, 4]);
        let (after, _) = log.after(Some(positions[0]), 10, &app);
        assert_eq!(after.len(), 2, "a subscription starts after its position");
        let last = log.read_all(AllFrom::End, true, 1, &app);
        assert_eq!(last[0].id.as_bytes()[0], 4);
    }

    #[test]
    fn an_append_over_the_size_limit_writes_nothing() {
        let mut log = Log::new(100);
        let mut big = proposed(1);
        big.data = vec![b'x'; 101];
        assert_eq!(
            log.append(b"s", Expected::Any, vec![big], 0),
            Outcome::TooLarge { size: 101 }
        );
        assert!(log.is_empty());
    }
}
