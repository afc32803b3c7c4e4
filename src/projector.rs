//! The read model inside the server process: fed from the store in global position
//! order, with the ledger digest folded alongside, and saved as snapshots.
//!
//! Writers wait on [`Projector::wait_for`] after an append so their response reads
//! their own write. The projector never skips an event: if one cannot be decoded
//! it stops and reports why, and the API answers 503 rather than serve a model
//! that silently lacks it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::chain::{Hash, LedgerDigest};
use crate::snapshot::Snapshot;
use crate::store::{EventRef, EventStore, RecordedEvent};

pub use crate::replay::replay;

/// How many events one read from the store may return.
const BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("event at position {position} cannot be folded: {reason}")]
    Fold { position: u64, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("the projector stopped: {0}")]
    Stopped(Arc<str>),
}

/// Decodes a stored event into what the folds take.
pub fn decode(event: &RecordedEvent) -> Result<projections::Recorded, Error> {
    let fold_error = |reason: String| Error::Fold {
        position: event.position,
        reason,
    };
    let data = projections::Event::decode(&event.event_type, event.schema_version, &event.data)
        .map_err(|e| fold_error(e.to_string()))?;
    let metadata =
        projections::Metadata::decode(&event.metadata).map_err(|e| fold_error(e.to_string()))?;
    Ok(projections::Recorded {
        position: event.position,
        version: event.version,
        recorded_at: projections::Timestamp::from_micros(event.recorded_at),
        metadata,
        event: data,
    })
}

/// An event decoded for the folds, with what the digest needs: decoding is the
/// part of a replay that can run ahead of the folding, on the other core.
#[derive(Debug)]
pub struct Decoded {
    pub recorded: projections::Recorded,
    pub hash: Hash,
}

impl Decoded {
    /// Decodes `event` as the folds need it: what they do not read (an attempt's
    /// response body, the request and key ids) is checked and dropped.
    pub fn new(event: &EventRef<'_>) -> Result<Decoded, Error> {
        let fold_error = |reason: String| Error::Fold {
            position: event.position,
            reason,
        };
        let data =
            projections::Event::decode_for_fold(event.event_type, event.schema_version, event.data)
                .map_err(|e| fold_error(e.to_string()))?;
        let metadata = projections::Metadata::decode_for_fold(event.metadata)
            .map_err(|e| fold_error(e.to_string()))?;
        Ok(Decoded {
            recorded: projections::Recorded {
                position: event.position,
                version: event.version,
                recorded_at: projections::Timestamp::from_micros(event.recorded_at),
                metadata,
                event: data,
            },
            hash: *event.hash,
        })
    }

    /// [`Decoded::new`] into `self`, reusing the memory of what it holds.
    /// On an error `self` is unspecified.
    pub fn refill(&mut self, event: &EventRef<'_>) -> Result<(), Error> {
        let fold_error = |reason: String| Error::Fold {
            position: event.position,
            reason,
        };
        let recorded = &mut self.recorded;
        projections::Event::decode_for_fold_into(
            event.event_type,
            event.schema_version,
            event.data,
            &mut recorded.event,
        )
        .map_err(|e| fold_error(e.to_string()))?;
        recorded.metadata = projections::Metadata::decode_for_fold(event.metadata)
            .map_err(|e| fold_error(e.to_string()))?;
        recorded.position = event.position;
        recorded.version = event.version;
        recorded.recorded_at = projections::Timestamp::from_micros(event.recorded_at);
        self.hash = *event.hash;
        Ok(())
    }
}

impl Snapshot {
    /// Folds the next event into the model and the digest. Events must come in
    /// position order with no gap.
    pub fn apply(&mut self, event: &RecordedEvent) -> Result<(), Error> {
        self.check_next(event.position)?;
        self.apply_decoded(&Decoded::new(&EventRef::from(event))?)
    }

    /// [`Snapshot::apply`] for an event decoded already.
    pub fn apply_decoded(&mut self, event: &Decoded) -> Result<(), Error> {
        let mut tip = Tip::of(self);
        tip.fold(event.recorded.position, &event.hash)?;
        self.model.apply(&event.recorded);
        tip.set(self);
        Ok(())
    }

    fn check_next(&self, position: u64) -> Result<(), Error> {
        Tip::of(self).check_next(position)
    }
}

/// Where a snapshot's chain stands: the ledger digest and the last hash,
/// folded apart from the model so that a replay can do it on another thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tip {
    digest: LedgerDigest,
    last_hash: Hash,
}

impl Tip {
    pub(crate) fn of(state: &Snapshot) -> Tip {
        Tip {
            digest: state.digest,
            last_hash: state.last_hash,
        }
    }

    pub(crate) fn set(self, state: &mut Snapshot) {
        state.digest = self.digest;
        state.last_hash = self.last_hash;
    }

    fn check_next(&self, position: u64) -> Result<(), Error> {
        let expected = self.digest.position + 1;
        if position != expected {
            return Err(Error::Fold {
                position,
                reason: format!("expected position {expected}: the log has a gap or a repeat"),
            });
        }
        Ok(())
    }

    /// Folds the event at `position` into the digest; events must come in
    /// position order with no gap.
    pub(crate) fn fold(&mut self, position: u64, hash: &Hash) -> Result<(), Error> {
        self.check_next(position)?;
        self.digest.fold(position, hash);
        self.last_hash = *hash;
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Progress {
    applied: u64,
    stopped: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct Projector {
    store: Arc<dyn EventStore>,
    state: RwLock<Snapshot>,
    progress: watch::Sender<Progress>,
}

/// How the projector began: from a trusted snapshot, or from scratch and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Snapshot { position: u64 },
    Empty { reason: String },
}

impl Projector {
    /// Starts from the snapshot in `file` if it matches the log, else from nothing.
    /// Catching up happens in [`Projector::run`].
    pub async fn open(store: Arc<dyn EventStore>, file: Option<&Path>) -> (Arc<Projector>, Start) {
        Self::open_loaded(store, file.map(Snapshot::load)).await
    }

    /// [`Projector::open`] with the snapshot file already read (or the reason it
    /// could not be), so a restart can load it while the store opens.
    pub async fn open_loaded(
        store: Arc<dyn EventStore>,
        loaded: Option<Result<Snapshot, crate::snapshot::Error>>,
    ) -> (Arc<Projector>, Start) {
        let (snapshot, start) = match loaded {
            None => (
                Snapshot::default(),
                Start::Empty {
                    reason: "no snapshot file configured".into(),
                },
            ),
            Some(loaded) => match trusted_snapshot(store.as_ref(), loaded).await {
                Ok(snapshot) => {
                    let position = snapshot.position();
                    (snapshot, Start::Snapshot { position })
                }
                Err(reason) => (Snapshot::default(), Start::Empty { reason }),
            },
        };
        let progress = watch::Sender::new(Progress {
            applied: snapshot.position(),
            stopped: None,
        });
        let projector = Arc::new(Projector {
            store,
            state: RwLock::new(snapshot),
            progress,
        });
        // Fold each batch as the store commits it, before its writers hear back:
        // a writer then finds its event in the model at once, instead of waking
        // the projector task to read it back and waking again when it is folded.
        // Weak: the store must not keep the projector alive.
        let hooked = Arc::downgrade(&projector);
        projector.store.on_commit(Box::new(move |events| {
            if let Some(projector) = hooked.upgrade() {
                projector.take_committed(events);
            }
        }));
        (projector, start)
    }

    /// Feeds the model from the store forever: catches up, then follows the head.
    /// Transient read errors are retried; an event that cannot be folded stops it.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.step().await {
                Ok(0) => {
                    if let Err(e) = self.store.wait_beyond(self.position()).await {
                        tracing::warn!(error = %e, "waiting for new events failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                Ok(_) => {}
                Err(Error::Store(e)) => {
                    tracing::error!(error = %e, "reading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the projector stopped");
                    let reason: Arc<str> = e.to_string().into();
                    self.progress.send_modify(|p| p.stopped = Some(reason));
                    return;
                }
            }
        }
    }

    /// Applies the next batch of events; returns how many.
    pub async fn step(&self) -> Result<usize, Error> {
        let from = self.position() + 1;
        let events = self.store.read_all(from, BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        // Another caller of `step` may have applied part of this batch meanwhile.
        let position = state.position();
        for event in events.iter().filter(|e| e.position > position) {
            state.apply(event)?;
        }
        let applied = state.position();
        drop(state);
        self.progress
            .send_modify(|p| p.applied = p.applied.max(applied));
        Ok(events.len())
    }

    /// Folds events the store has just committed if they follow the model
    /// directly. Anything else (a gap while catching up, an event that does not
    /// decode) is left to [`Projector::run`], which reads it from the log and
    /// stops with the reason if it cannot be folded.
    fn take_committed(&self, events: &[RecordedEvent]) {
        if self.stopped().is_some() {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let before = state.position();
        for event in events {
            if event.position <= state.position() {
                continue;
            }
            let Ok(decoded) = Decoded::new(&EventRef::from(event)) else {
                break;
            };
            if state.apply_decoded(&decoded).is_err() {
                break;
            }
        }
        let applied = state.position();
        drop(state);
        if applied > before {
            self.progress
                .send_modify(|p| p.applied = p.applied.max(applied));
        }
    }

    /// Applies events until the model reaches the store's head as it is now.
    pub async fn catch_up(&self) -> Result<u64, Error> {
        let head = self.store.head();
        while self.position() < head {
            if self.step().await? == 0 {
                break;
            }
        }
        Ok(self.position())
    }

    /// The position the model reflects.
    pub fn position(&self) -> u64 {
        self.progress.borrow().applied
    }

    /// Why the projector stopped, if it did.
    pub fn stopped(&self) -> Option<Arc<str>> {
        self.progress.borrow().stopped.clone()
    }

    /// Whether the model has caught up with the log's head.
    pub fn caught_up(&self) -> bool {
        self.stopped().is_none() && self.position() >= self.store.head()
    }

    /// Resolves once the model reflects `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), Error> {
        let mut progress = self.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.applied >= position || p.stopped.is_some())
            .await
            .map_err(|_| Error::Stopped("projector dropped".into()))?;
        match &reached.stopped {
            Some(reason) if reached.applied < position => Err(Error::Stopped(reason.clone())),
            _ => Ok(()),
        }
    }

    /// A read view of the model; hold it briefly, never across an await.
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves the current state as the snapshot in `file`.
    pub fn save(&self, file: &Path) -> Result<u64, crate::snapshot::Error> {
        let bytes_and_position = {
            let state = self.read();
            (state.encode(), state.position())
        };
        let (bytes, position) = bytes_and_position;
        crate::snapshot::write_atomically(file, &bytes)?;
        Ok(position)
    }

    /// Saves a snapshot every `every` while the model keeps moving.
    pub async fn save_periodically(self: Arc<Self>, file: PathBuf, every: Duration) {
        let mut saved = self.position();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if self.position() == saved {
                continue;
            }
            let projector = self.clone();
            let target = file.clone();
            match tokio::task::spawn_blocking(move || projector.save(&target)).await {
                Ok(Ok(position)) => saved = position,
                Ok(Err(e)) => tracing::warn!(error = %e, "saving the snapshot failed"),
                Err(e) => tracing::warn!(error = %e, "the snapshot task failed"),
            }
        }
    }
}

/// Loads the snapshot and checks it against the log; any doubt means rebuild.
async fn trusted_snapshot(
    store: &dyn EventStore,
    loaded: Result<Snapshot, crate::snapshot::Error>,
) -> Result<Snapshot, String> {
    let snapshot = loaded.map_err(|e| e.to_string())?;
    let position = snapshot.position();
    if position == 0 {
        return Ok(snapshot);
    }
    if position > store.head() {
        return Err(format!(
            "snapshot is at position {position} but the log ends at {}",
            store.head()
        ));
    }
    let event = store
        .read_all(position, 1)
        .await
        .map_err(|e| format!("cannot read position {position} to check the snapshot: {e}"))?;
    match event.first() {
        Some(event) if event.position == position && event.hash == snapshot.last_hash => {
            Ok(snapshot)
        }
        _ => Err(format!(
            "snapshot does not match the log at position {position}"
        )),
    }
}

#[cfg(test)]
mod tests;
