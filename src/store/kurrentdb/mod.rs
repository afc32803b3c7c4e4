//! The KurrentDB backend: hookledger's streams kept in a KurrentDB server or
//! cluster, beside a team's other streams, through the official `kurrentdb`
//! client. Several server processes can share one ledger.
//!
//! Where KurrentDB and hookledger differ, and what this module does about it
//! (the README says the same for operators):
//!
//! - **Positions.** hookledger's are dense (1, 2, 3, …) and hashed into the
//!   ledger digest; KurrentDB's `$all` positions are log offsets. An event's
//!   position is its rank among the ledger's events in `$all` order: the
//!   events of streams under the ledger's prefix ([`names`]), which a
//!   server-side filter selects. Every node and every rebuild counts the same
//!   order alike. The numbering is kept on disk in the data directory
//!   ([`positions`]) and extended by a catch-up subscription ([`follow`]).
//! - **Hash chain and `recordedAt`** are computed before the append, on the
//!   stream's tip, and written with the exact revision they were computed on;
//!   a conflict means the stream moved, and the append is planned again
//!   ([`writer`]). `recordedAt` is the appending process's clock.
//! - **Claims** (`Idempotency-Key`, `sourceKey`) go through a claim stream per
//!   claim and deterministic event ids ([`claims`]), since the client has no
//!   multi-stream append; a claim whose time to live has passed is taken over
//!   there by the next append that names it.
//! - **Size.** KurrentDB refuses an append over its maximum append size (1 MiB
//!   by default); this store refuses one that would be over it, with the
//!   envelope it adds, before it is sent ([`Error::Invalid`], a 413 at the API).
//!
//! The rest: the calls to KurrentDB ([`server`]), the record format
//! ([`record`]), the streams' tips appends plan on ([`tips`]), where an event
//! is in the ledger ([`locate`]), answering the appends a write took
//! ([`answer`]), and the intended appends of the claims protocol
//! ([`intention`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::sequencer::Pending;
use crate::store::{
    Appended, Claim, CommitStats, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent,
    Result, check_append, check_append_within,
};

mod answer;
mod claims;
mod follow;
mod intention;
mod locate;
mod names;
mod positions;
mod record;
mod server;
mod tips;
mod writer;

pub use names::DEFAULT_PREFIX;

use follow::Follower;
use locate::{locate, number, reach};
use server::{From, Server};

/// KurrentDB's default maximum append size (`MaxAppendSize`), in bytes.
pub const DEFAULT_MAX_APPEND_BYTES: usize = 1024 * 1024;

/// What a single event may take below the maximum append size, at most: room
/// for the envelope this store adds and a claim event's bookkeeping.
const RESERVE: usize = 16 * 1024;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ledger's streams are `{prefix}:…`.
    pub prefix: String,
    /// Where this process keeps the ledger's positions (its data directory).
    pub data_dir: PathBuf,
    /// Take appends and follow the ledger as other processes append to it.
    /// Off for commands that only read: the head is then what the log held
    /// at open, moved on only by [`EventStore::sync_head`].
    pub follow: bool,
    /// The server's maximum append size.
    pub max_append_bytes: usize,
}

impl Options {
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options {
            prefix: DEFAULT_PREFIX.to_owned(),
            data_dir: data_dir.into(),
            follow: true,
            max_append_bytes: DEFAULT_MAX_APPEND_BYTES,
        }
    }
}

/// What the parts of the store share.
#[derive(Debug)]
struct Shared {
    server: Server,
    names: names::Names,
    follower: Follower,
    tips: tips::Tips,
    queues: writer::Queues,
    max_append_bytes: usize,
    following: AtomicBool,
}

/// A ledger in KurrentDB.
#[derive(Debug)]
pub struct KurrentDbStore {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl KurrentDbStore {
    /// Connects to `url`, checks and extends the positions kept in
    /// `options.data_dir` up to the end of the ledger and, with
    /// `options.follow`, starts following it.
    pub async fn open(url: &str, options: Options) -> Result<KurrentDbStore> {
        let names = names::Names::new(&options.prefix)?;
        let server = Server::connect(url, names.ledger_prefix())?;
        let positions =
            positions::Positions::open(&options.data_dir, &options.prefix).map_err(|e| {
                Error::io(
                    format!(
                        "opening the ledger's positions in {}",
                        options.data_dir.display()
                    ),
                    e,
                )
            })?;
        if positions.is_private() {
            tracing::info!(
                "another process keeps this data directory's ledger positions; this one numbers the ledger in a private copy"
            );
        }
        let shared = Arc::new(Shared {
            server,
            names,
            follower: Follower::new(positions),
            tips: tips::Tips::default(),
            queues: writer::Queues::default(),
            max_append_bytes: options.max_append_bytes,
            following: AtomicBool::new(false),
        });
        follow::verify(&shared).await?;
        follow::catch_up(&shared).await?;
        let store = KurrentDbStore {
            shared: shared.clone(),
            tasks: Mutex::new(Vec::new()),
        };
        if options.follow {
            shared.following.store(true, Ordering::SeqCst);
            store.tasks().push(tokio::spawn(follow::follow(shared)));
        }
        Ok(store)
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking appends and following; reads keep working. Waits for the
    /// follower to stop, so the positions file is free for a store opened next.
    pub async fn close(&self) {
        self.shared.following.store(false, Ordering::SeqCst);
        let tasks: Vec<_> = self.tasks().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        self.shared.follower.flush();
        // Wake waiters: nothing more will be heard.
        self.shared.follower.wake();
    }

    /// Group-commit counters: appends acknowledged and KurrentDB writes made.
    pub fn stats(&self) -> CommitStats {
        self.shared.queues.stats()
    }

    /// Refuses an append that KurrentDB would refuse for its size, or whose
    /// data or metadata is not JSON (the envelope and claim events embed them).
    fn check(&self, stream: &str, events: &[NewEvent], claims: &[Claim]) -> Result<()> {
        let max = self.shared.max_append_bytes;
        check_append(stream, events)?;
        // Its shape is right: only an event's size can fail this.
        check_append_within(stream, events, self.max_event_bytes()).map_err(|e| match e {
            Error::Invalid(reason) => Error::Invalid(format!(
                "{reason}, the most one event may take on a KurrentDB server whose maximum append size is {max} bytes"
            )),
            other => other,
        })?;
        let payload: usize = events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + e.content.len())
            .sum();
        let wire = payload + events.len() * record::ENVELOPE_BYTES;
        let intention = if claims.is_empty() {
            0
        } else {
            intention::intention_size(stream, events.len(), payload, claims.len())
        };
        let size = wire.max(intention);
        if size > max {
            return Err(Error::Invalid(format!(
                "an append of {size} bytes, with hookledger's envelope, is over the KurrentDB server's maximum append size of {max} bytes"
            )));
        }
        for event in events {
            for (what, bytes) in [("data", &event.data), ("metadata", &event.metadata)] {
                serde_json::from_slice::<&serde_json::value::RawValue>(bytes).map_err(|e| {
                    Error::Invalid(format!(
                        "a {} event's {what} is not JSON: {e}",
                        event.event_type
                    ))
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for KurrentDbStore {
    fn drop(&mut self) {
        self.shared.following.store(false, Ordering::SeqCst);
        for task in self.tasks().drain(..) {
            task.abort();
        }
        self.shared.follower.wake();
    }
}

#[async_trait::async_trait]
impl EventStore for KurrentDbStore {
    #[tracing::instrument(level = "debug", skip(self, events, claims), fields(events = events.len()))]
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<Claim>,
    ) -> Result<Appended> {
        self.check(stream, &events, &claims)?;
        if !self.shared.following.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "the KurrentDB store is closed or opened for reading only".into(),
            ));
        }
        self.shared.follower.failure()?;
        let (reply, answer) = oneshot::channel();
        writer::enqueue(
            &self.shared,
            Pending {
                stream: stream.to_owned(),
                expected,
                events,
                claims,
                reply,
            },
        );
        answer
            .await
            .map_err(|_| Error::Unavailable("the KurrentDB writer stopped".into()))?
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let fetched = self
            .shared
            .server
            .read_stream(&self.shared.names.stream(stream), Some(from), max)
            .await?;
        let mut events = Vec::with_capacity(fetched.len());
        for event in &fetched {
            // An event this store has not numbered yet is not in its log yet.
            let Some(position) = number(&self.shared, event).await? else {
                break;
            };
            events.push(record::decode(event, stream, position)?);
        }
        Ok(events)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        self.shared.follower.failure()?;
        let from = from.max(1);
        let head = self.head();
        if max == 0 || from > head {
            return Ok(Vec::new());
        }
        if let Some(events) = self.shared.follower.read_tail(from, max) {
            return Ok(events);
        }
        let Some(start) = self.shared.follower.log_position(from)? else {
            return Ok(Vec::new());
        };
        let wanted = usize::try_from(head - from + 1)
            .unwrap_or(usize::MAX)
            .min(max);
        let fetched = self.shared.server.read_all(From::At(start), wanted).await?;
        let mut events = Vec::with_capacity(fetched.len());
        for (k, event) in fetched.iter().enumerate() {
            let position = from + k as u64;
            let expected = self.shared.follower.log_position(position)?;
            if Some(event.position) != expected {
                return Err(Error::Corrupt {
                    file: format!("kurrentdb:{}", event.stream).into(),
                    offset: event.position.1,
                    position,
                    reason: format!(
                        "$all holds this event where the ledger's positions say {expected:?}: the ledger changed under its numbering"
                    ),
                });
            }
            let stream = self
                .shared
                .names
                .ledger_stream(&event.stream)
                .ok_or_else(|| {
                    Error::Unavailable("the $all filter let through another stream".into())
                })?;
            events.push(record::decode(event, stream, position)?);
        }
        Ok(events)
    }

    async fn wait_beyond(&self, after: u64) -> Result<u64> {
        let mut progress = self.shared.follower.watch();
        loop {
            let head = progress.borrow_and_update().head;
            if head > after {
                return Ok(head);
            }
            self.shared.follower.failure()?;
            if !self.shared.following.load(Ordering::SeqCst) {
                return Err(Error::Unavailable(
                    "the KurrentDB store follows no more appends (closed or read-only)".into(),
                ));
            }
            progress
                .changed()
                .await
                .map_err(|_| Error::Unavailable("store dropped".into()))?;
        }
    }

    fn head(&self) -> u64 {
        self.shared.follower.progress().head
    }

    async fn sync_head(&self) -> Result<u64> {
        if let Some(last) = self.shared.server.last_position().await? {
            reach(&self.shared, last.1).await?;
        }
        Ok(self.head())
    }

    fn commit_stats(&self) -> Option<CommitStats> {
        Some(self.stats())
    }

    fn max_event_bytes(&self) -> usize {
        self.shared.max_append_bytes.saturating_sub(RESERVE)
    }
}
