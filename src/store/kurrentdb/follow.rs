//! Following the ledger in `$all`: every event under the ledger's prefix, in
//! `$all` order, gets the next dense position ([`Positions`]), and the
//! store's head moves to it. One catch-up subscription with a server-side
//! prefix filter does this for a serving process; a read-only one catches up
//! with plain reads when asked ([`catch_up`]).
//!
//! `$all` is KurrentDB's one transaction log, written in order by the leader:
//! a reader never sees an event before one written earlier, so every node
//! numbers every event alike, and a number, once given, never changes.
//!
//! Besides the numbering, the follower keeps the latest events decoded (the
//! tail), so the local projector reads its own writes from memory, and a
//! bounded map from (stream, revision) to position for the events just
//! numbered, so a writer learns where its append landed without a read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::Shared;
use super::positions::{LogPosition, Positions};
use super::record::{self, Fetched};
use super::server::From;
use crate::store::{Error, RecordedEvent, Result};

/// Event bytes the tail keeps at most; the oldest go first.
const TAIL_BYTES: usize = 8 * 1024 * 1024;
/// (stream, revision) pairs remembered after numbering.
const RECENT: usize = 65_536;
/// Events read per call while catching up.
const PAGE: usize = 1024;
/// How long to wait before subscribing again after the subscription failed.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// How far the follower has come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last numbered position; 0 before the first event.
    pub head: u64,
    /// Where that event lies in `$all`.
    pub last: Option<LogPosition>,
    /// The latest `recordedAt` seen, microseconds.
    pub clock: i64,
}

/// Where an event of a given stream and revision was numbered.
#[derive(Debug)]
pub enum Located {
    Known(u64),
    /// Not numbered yet: the position arrives here when it is.
    Later(oneshot::Receiver<u64>),
}

#[derive(Debug)]
pub struct Follower {
    inner: Mutex<Inner>,
    progress: watch::Sender<Progress>,
}

#[derive(Debug)]
struct Inner {
    positions: Positions,
    tail: VecDeque<RecordedEvent>,
    tail_bytes: usize,
    recent: HashMap<(String, u64), u64>,
    recent_order: VecDeque<(String, u64)>,
    waiters: HashMap<(String, u64), Vec<oneshot::Sender<u64>>>,
    /// Why following stopped, if it did: an event under the prefix that is
    /// not a ledger record. Nothing after it is numbered.
    failed: Option<String>,
}

impl Follower {
    pub fn new(positions: Positions) -> Follower {
        let progress = Progress {
            head: positions.len(),
            last: positions.last(),
            clock: 0,
        };
        Follower {
            inner: Mutex::new(Inner {
                positions,
                tail: VecDeque::new(),
                tail_bytes: 0,
                recent: HashMap::new(),
                recent_order: VecDeque::new(),
                waiters: HashMap::new(),
                failed: None,
            }),
            progress: watch::Sender::new(progress),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The error that stopped the follower, if one did.
    pub fn failure(&self) -> Result<()> {
        match &self.inner().failed {
            Some(reason) => Err(Error::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// Numbers `event`, the next ledger event in `$all` (one already numbered
    /// is skipped); returns its record.
    pub fn take(&self, shared: &Shared, event: &Fetched) -> Result<Option<RecordedEvent>> {
        let mut inner = self.inner();
        if let Some(reason) = &inner.failed {
            return Err(Error::Unavailable(reason.clone()));
        }
        if inner
            .positions
            .last()
            .is_some_and(|last| event.position <= last)
        {
            return Ok(None);
        }
        let next = inner.positions.len() + 1;
        let record = shared
            .names
            .ledger_stream(&event.stream)
            .ok_or_else(|| Error::Corrupt {
                file: format!("kurrentdb:{}", event.stream).into(),
                offset: event.position.1,
                position: next,
                reason: "the $all filter let through a stream outside the ledger".into(),
            })
            .and_then(|stream| record::decode(event, stream, next));
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                self.stop(inner, format!("following the ledger stopped: {e}"));
                return Err(e);
            }
        };
        let position = match inner.positions.push(event.position) {
            Ok(position) => position,
            Err(e) => {
                let reason = format!("following the ledger stopped: numbering failed: {e}");
                self.stop(inner, reason);
                return Err(Error::io("numbering the ledger's positions", e));
            }
        };
        let key = (event.stream.clone(), event.revision);
        if let Some(waiters) = inner.waiters.remove(&key) {
            for waiter in waiters {
                let _ = waiter.send(position);
            }
        }
        inner.recent.insert(key.clone(), position);
        inner.recent_order.push_back(key);
        while inner.recent_order.len() > RECENT {
            if let Some(old) = inner.recent_order.pop_front() {
                inner.recent.remove(&old);
            }
        }
        inner.tail_bytes += size(&record);
        inner.tail.push_back(record.clone());
        while inner.tail_bytes > TAIL_BYTES && inner.tail.len() > 1 {
            if let Some(old) = inner.tail.pop_front() {
                inner.tail_bytes -= size(&old);
            }
        }
        drop(inner);
        self.progress.send_modify(|p| {
            p.head = position;
            p.last = Some(event.position);
            p.clock = p.clock.max(record.recorded_at);
        });
        Ok(Some(record))
    }

    /// Stops numbering for good, for `reason`, and wakes every waiter to find it.
    fn stop(&self, mut inner: MutexGuard<'_, Inner>, reason: String) {
        tracing::error!(%reason);
        inner.failed = Some(reason);
        inner.waiters.clear();
        drop(inner);
        self.progress.send_modify(|_| {});
    }

    /// Where the event at `revision` of KurrentDB stream `stream` was numbered,
    /// if it was among the latest; otherwise a receiver for when it is.
    pub fn locate(&self, stream: &str, revision: u64) -> Located {
        let mut inner = self.inner();
        let key = (stream.to_owned(), revision);
        if let Some(&position) = inner.recent.get(&key) {
            return Located::Known(position);
        }
        let (sender, receiver) = oneshot::channel();
        inner.waiters.entry(key).or_default().push(sender);
        Located::Later(receiver)
    }

    /// Forgets the waiters for `stream` at `revision`, whose append failed.
    pub fn forget(&self, stream: &str, revision: u64) {
        self.inner().waiters.remove(&(stream.to_owned(), revision));
    }

    /// Up to `max` events from position `from`, if the tail holds `from` and
    /// reaches the head: exactly what a read of `$all` would give.
    pub fn read_tail(&self, from: u64, max: usize) -> Option<Vec<RecordedEvent>> {
        let inner = self.inner();
        let first = inner.tail.front()?.position;
        if inner.tail.back()?.position < inner.positions.len() {
            return None;
        }
        let skip = usize::try_from(from.checked_sub(first)?).ok()?;
        if skip >= inner.tail.len() {
            return None;
        }
        Some(inner.tail.range(skip..).take(max).cloned().collect())
    }

    /// The `$all` position of ledger position `n`.
    pub fn log_position(&self, n: u64) -> Result<Option<LogPosition>> {
        self.inner()
            .positions
            .get(n)
            .map_err(|e| Error::io("reading the ledger's positions", e))
    }

    /// The ledger position of the event at prepare position `prepare`.
    pub fn position_of(&self, prepare: u64) -> Result<Option<u64>> {
        self.inner()
            .positions
            .find(prepare)
            .map_err(|e| Error::io("reading the ledger's positions", e))
    }

    /// Forgets every number, to count again from the ledger's first event.
    fn reset(&self) -> Result<()> {
        let mut inner = self.inner();
        inner
            .positions
            .reset()
            .map_err(|e| Error::io("resetting the ledger's positions", e))?;
        inner.tail.clear();
        inner.tail_bytes = 0;
        inner.recent.clear();
        inner.recent_order.clear();
        drop(inner);
        self.progress.send_modify(|p| {
            p.head = 0;
            p.last = None;
        });
        Ok(())
    }

    /// Wakes everyone waiting on the progress, to look again.
    pub fn wake(&self) {
        self.progress.send_modify(|_| {});
    }

    /// Writes the numbering to disk.
    pub fn flush(&self) {
        if let Err(e) = self.inner().positions.flush() {
            tracing::warn!(error = %e, "writing the ledger's positions failed");
        }
    }
}

fn size(e: &RecordedEvent) -> usize {
    e.stream.len() + e.event_type.len() + e.data.len() + e.metadata.len() + e.content.len() + 128
}

/// Checks the numbering kept on disk against the server: the first and the
/// last numbered events must be where it says. If not (another server, or a
/// ledger written afresh), numbering starts again from the first event.
pub async fn verify(shared: &Shared) -> Result<()> {
    let follower = &shared.follower;
    let Some(last) = follower.progress().last else {
        return Ok(());
    };
    let first = follower.log_position(1)?;
    let found_first = shared.server.read_all(From::Start, 1).await?;
    let found_last = shared.server.read_all(From::At(last), 1).await?;
    let agrees = found_first.first().map(|e| e.position) == first
        && found_last.first().map(|e| e.position) == Some(last);
    if !agrees {
        tracing::warn!(
            "the ledger positions kept in the data directory do not match the server; numbering again from the first event"
        );
        follower.reset()?;
    }
    Ok(())
}

/// Numbers every ledger event the server holds beyond the follower's, up to
/// the end of `$all` as it is now.
pub async fn catch_up(shared: &Shared) -> Result<()> {
    loop {
        let last = shared.follower.progress().last;
        let from = last.map_or(From::Start, From::At);
        let page = shared.server.read_all(from, PAGE).await?;
        let full = page.len() == PAGE;
        for event in &page {
            take(shared, event)?;
        }
        if !full {
            shared.follower.flush();
            return Ok(());
        }
    }
}

/// Numbers `event` and lets the writer's tip cache know of it.
fn take(shared: &Shared, event: &Fetched) -> Result<()> {
    if let Some(record) = shared.follower.take(shared, event)? {
        shared.tips.heard(&event.stream, &record);
    }
    Ok(())
}

/// Follows the ledger for as long as the task lives: a catch-up subscription
/// from the last numbered event, subscribed again after any failure.
pub async fn follow(shared: Arc<Shared>) {
    loop {
        let after = shared.follower.progress().last;
        let mut subscription = shared.server.subscribe(after).await;
        loop {
            match subscription.next().await {
                Ok(event) => {
                    if let Err(e) = take(&shared, &event) {
                        tracing::error!(error = %e, "the ledger cannot be followed further");
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the subscription to $all failed; subscribing again");
                    break;
                }
            }
        }
        shared.follower.flush();
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}
