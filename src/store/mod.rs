//! The event store: one trait every backend implements, its one error type, and the
//! record format all backends share.
//!
//! A backend stores streams of events with a global, gapless position in commit
//! order. It stamps each event's time and extends the stream's hash chain inside the
//! same atomic append, so every backend produces byte-identical records for the
//! same history. It knows nothing about webhooks.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

use crate::chain::{Hash, Hashed};

pub use batch::{Batch, EventRef};
pub use commit_times::{CommitClock, CommitTimes};

mod batch;
pub mod commit_times;
pub mod embedded;
#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod memory;
pub mod postgres;
pub mod sequencer;

/// What the writer expects the stream to hold before its append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this 0-based version.
    Exact(u64),
    /// No check: the events go after whatever is there.
    Any,
}

impl ExpectedVersion {
    /// The expectation that a stream holds exactly `count` events.
    pub fn count(count: u64) -> Self {
        match count {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n - 1),
        }
    }

    /// Whether a stream whose last version is `actual` (None: no stream) matches.
    pub fn matches(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::Any => f.write_str("any version"),
        }
    }
}

/// An event to append: its data and metadata already in canonical JSON, and
/// its content, the body kept beside them (see [`RecordedEvent::content`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u32,
    pub data: Vec<u8>,
    pub metadata: Vec<u8>,
    pub content: Vec<u8>,
}

/// A name an append takes, unique across the store while it holds: see
/// [`EventStore::append_claimed`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Claim {
    pub name: String,
    /// How long the claim holds after the append that took it, in
    /// microseconds of log time; `None`: for good.
    pub ttl: Option<i64>,
}

impl Claim {
    pub fn forever(name: impl Into<String>) -> Claim {
        Claim {
            name: name.into(),
            ttl: None,
        }
    }
}

/// A name alone is a claim for good.
impl From<&str> for Claim {
    fn from(name: &str) -> Claim {
        Claim::forever(name)
    }
}

/// A claim as the store holds it: the append that took it, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The last position of the append that took it.
    pub position: u64,
    /// The last log time (microseconds) at which it holds; `None`: for good.
    pub expires_at: Option<i64>,
}

impl Held {
    /// The hold of `claim` by an append ending at `position`, stamped `at`.
    pub fn taken(claim: &Claim, position: u64, at: i64) -> Held {
        Held {
            position,
            expires_at: claim.ttl.map(|ttl| at.saturating_add(ttl)),
        }
    }

    /// Whether it still holds for an append stamped `at`.
    pub fn holds_at(&self, at: i64) -> bool {
        self.expires_at.is_none_or(|end| at <= end)
    }
}

/// An event as stored. Everything but `position` and `content` is covered by
/// `hash`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct RecordedEvent {
    /// Global position: 1-based, gapless, in commit order.
    pub position: u64,
    pub stream: String,
    /// Version in the stream: 0-based, gapless.
    pub version: u64,
    pub event_type: String,
    pub schema_version: u32,
    /// Server time of the append, microseconds since the Unix epoch, UTC.
    pub recorded_at: i64,
    /// Canonical JSON.
    pub data: Vec<u8>,
    /// Canonical JSON.
    pub metadata: Vec<u8>,
    pub prev_hash: Hash,
    pub hash: Hash,
    /// The body the event keeps outside its hash, so that it can be erased:
    /// a 16-byte salt followed by the body's canonical JSON, whose SHA-256
    /// the hashed `data` holds (`crate::content`); empty for an event with
    /// no such body, and once the body is erased. Not in the rkyv archive:
    /// each backend keeps it beside the record, where it can be removed.
    #[rkyv(with = rkyv::with::Skip)]
    pub content: Vec<u8>,
}

/// The fields of a stored event that its hash covers.
impl<'a> From<&'a RecordedEvent> for Hashed<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        Hashed {
            stream: &e.stream,
            version: e.version,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            data: &e.data,
            metadata: &e.metadata,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The global positions of the appended events, contiguous.
    pub positions: RangeInclusive<u64>,
    /// The version of the last appended event.
    pub last_version: u64,
    /// The server time stamped on the events.
    pub recorded_at: i64,
}

/// The store's one error type. No backend's driver error escapes through it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream is not at the expected version; nothing was appended.
    #[error("expected {expected} but the stream is at {}", actual.map_or("no stream".to_owned(), |v| format!("version {v}")))]
    Conflict {
        expected: ExpectedVersion,
        /// The stream's last version; `None` when it does not exist.
        actual: Option<u64>,
    },
    /// Stored bytes fail their checksum or do not decode: refuse, never guess.
    #[error("corrupt log: {} at offset {offset} (position {position}): {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        /// The position the bad record holds or would hold.
        position: u64,
        reason: String,
    },
    /// The append was malformed (empty, oversized): a caller's bug, nothing written.
    #[error("invalid append: {0}")]
    Invalid(String),
    /// A read or write failed. For an append nothing was acknowledged; whether its
    /// events survive depends on what reached the disk before the failure (a
    /// durable backend cuts a failed batch back when it can), so the caller must
    /// treat the outcome as unknown, never as success.
    #[error("storage I/O failed: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The store cannot take requests (closed, or another process holds it).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An earlier append took this claim; nothing was appended. `position` is the
    /// last position of that earlier append: a reader that has reached it sees it.
    #[error("the claim {claim:?} was taken by the append ending at position {position}")]
    Duplicate { claim: String, position: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Called with each batch of events as it becomes durable; see [`EventStore::on_commit`].
pub type CommitHook = Box<dyn Fn(&[RecordedEvent]) + Send + Sync>;

/// An append-only store of event streams.
///
/// Appends to one stream are atomic and checked against an expected version;
/// every acknowledged append is durable. Reads never return an event whose append
/// has not been acknowledged as durable.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Appends `events` to `stream` if it is at `expected`; returns their positions.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended> {
        self.append_claimed(stream, expected, events, Vec::new())
            .await
    }

    /// [`EventStore::append`] that also takes `claims`: names unique across the
    /// whole store, each for its time to live (or for good). If an earlier
    /// append took any of them and it still holds at this append's time, nothing
    /// is appended and the answer is [`Error::Duplicate`]; the check and the
    /// append are one atomic step, so of racing appends with one claim exactly
    /// one wins, in whichever process it runs. Claims are how a request that
    /// must not run twice (an `Idempotency-Key`, a `sourceKey`) stays single
    /// across processes. Every backend enforces claims and keeps them as long
    /// as they hold.
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<Claim>,
    ) -> Result<Appended>;

    /// Up to `max` events of `stream` from version `from`, in version order.
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;

    /// Up to `max` events from global position `from` (1-based), in position
    /// order. Fewer than `max` only at the end of the log as this store knows it
    /// ([`EventStore::head`]); for a store shared by several processes, call
    /// [`EventStore::sync_head`] first to be sure of every append acknowledged
    /// elsewhere.
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>>;

    /// [`EventStore::read_all`] for a reader that goes through the log once,
    /// such as a replay: the same events as a [`Batch`], which a backend may
    /// fill with the stored archives rather than records. `spent` is a batch
    /// the caller is done with, whose buffers the backend may reuse.
    async fn read_batch(&self, from: u64, max: usize, spent: Batch) -> Result<Batch> {
        drop(spent);
        Ok(Batch::from(self.read_all(from, max).await?))
    }

    /// The events at `positions`, in that order, each of which the log
    /// holds: what a page of a query across streams shows. A backend may read
    /// them in one go; by default, one [`EventStore::read_all`] each.
    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>> {
        let mut events = Vec::with_capacity(positions.len());
        for &position in positions {
            let event = self.read_all(position, 1).await?.into_iter().next();
            match event {
                Some(e) if e.position == position => events.push(e),
                _ => {
                    return Err(Error::Unavailable(format!(
                        "the log holds no event at position {position}"
                    )));
                }
            }
        }
        Ok(events)
    }

    /// Resolves once the log holds a position beyond `after`; returns the head.
    /// Removes from the disk the content (`RecordedEvent::content`) of the
    /// events at `positions` that still hold any, leaving what their hashes
    /// cover untouched; returns how many contents it removed. Idempotent,
    /// and crash-safe: after a crash each content is either whole or gone,
    /// never half there. A backend that cannot rewrite what it stores says
    /// so with [`Error::Unavailable`] (the ledger still never serves an
    /// erased body; see `model::View::servable_content`).
    async fn remove_contents(&self, positions: &[u64]) -> Result<u64> {
        let _ = positions;
        Err(Error::Unavailable(
            "this store cannot remove content from what it has written".into(),
        ))
    }

    /// Whether [`EventStore::remove_contents`] can remove anything here.
    fn removes_contents(&self) -> bool {
        false
    }

    async fn wait_beyond(&self, after: u64) -> Result<u64>;

    /// The last durable position; 0 when the log is empty.
    fn head(&self) -> u64;

    /// The head as the store knows it at the call, for stores that other
    /// processes append to too (where [`EventStore::head`] is what this process
    /// has heard of so far): asks the shared storage and returns its head, so a
    /// caller that waits for its read model to reach it sees every append
    /// acknowledged anywhere before the call. Single-process stores answer `head()`.
    async fn sync_head(&self) -> Result<u64> {
        Ok(self.head())
    }

    /// The largest event (data, metadata and type together) this store takes
    /// in an append of its own; a larger one is [`Error::Invalid`].
    fn max_event_bytes(&self) -> usize {
        MAX_EVENT_BYTES
    }

    /// Group-commit counters, for stores that batch appends into shared syncs.
    fn commit_stats(&self) -> Option<CommitStats> {
        None
    }

    /// Asks the store to call `hook` with every batch of events, in position
    /// order, once it is durable and readable and before its appends are
    /// acknowledged, so a reader of the log (the projector) can keep up without
    /// a round trip through `read_all`. `hook` must be quick and must not call
    /// the store. Returns false if the backend has no such moment (the default);
    /// callers then follow the log with `wait_beyond` alone.
    fn on_commit(&self, hook: CommitHook) -> bool {
        drop(hook);
        false
    }
}

/// How well appends share their durability work: `appends / commits` is the
/// mean batch size of the group commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Appends acknowledged as durable.
    pub appends: u64,
    /// Group commits (one fsync or one transaction each) that made them durable.
    pub commits: u64,
    /// How long those commits took.
    pub times: CommitTimes,
}

/// Recognises the claims a recorded event was appended with, so that a store
/// whose records do not keep claims (the embedded log) can rebuild them on open.
/// The store knows nothing about what claims mean; whoever chooses them supplies this.
#[derive(Clone)]
pub struct ClaimsOf(pub Arc<ClaimsFn>);

/// See [`ClaimsOf`].
pub type ClaimsFn = dyn Fn(&RecordedEvent) -> Vec<Claim> + Send + Sync;

impl std::fmt::Debug for ClaimsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimsOf(..)")
    }
}

/// Every event of one stream, in version order.
pub async fn read_whole_stream(store: &dyn EventStore, stream: &str) -> Result<Vec<RecordedEvent>> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    loop {
        let batch = store.read_stream(stream, events.len() as u64, 1024).await?;
        if batch.is_empty() {
            return Ok(events);
        }
        events.extend(batch);
    }
}

/// The largest event a backend must accept: a whole record-attempt body is at most
/// 1 MiB, and its envelope adds far less than another MiB.
pub const MAX_EVENT_BYTES: usize = 2 * 1024 * 1024;

/// Checks an append's shape; every backend calls this before touching storage.
pub fn check_append(stream: &str, events: &[NewEvent]) -> Result<()> {
    check_append_within(stream, events, MAX_EVENT_BYTES)
}

/// [`check_append`] for a store whose events may take at most `limit` bytes
/// (data, metadata, content and type), below [`MAX_EVENT_BYTES`].
pub fn check_append_within(stream: &str, events: &[NewEvent], limit: usize) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::Invalid("stream name is empty".into()));
    }
    // Stream names are made by the ledger, never taken from a client; a NUL
    // is a bug, and one no PostgreSQL text column could hold.
    if stream.contains('\0') {
        return Err(Error::Invalid("stream name holds a NUL character".into()));
    }
    if events.is_empty() {
        return Err(Error::Invalid("no events to append".into()));
    }
    let limit = limit.min(MAX_EVENT_BYTES);
    let size = |e: &NewEvent| e.data.len() + e.metadata.len() + e.content.len();
    if let Some(e) = events.iter().find(|e| size(e) + e.event_type.len() > limit) {
        return Err(Error::Invalid(format!(
            "a {} event of {} bytes exceeds the {limit}-byte limit",
            e.event_type,
            size(e)
        )));
    }
    Ok(())
}
