//! The read model inside a node: opened from the data directory and checked
//! against the log, then fed from the store in global position order, with
//! the ledger digest folded alongside.
//!
//! A store that is damaged, belongs to another log, is ahead of the log or
//! is of another format is set aside and rebuilt from the log, with a log line
//! saying why; so is one found damaged while serving. Writers wait on
//! [`Projector::wait_for`] after an append so their answer reads their own
//! write. The projector never skips an event: if one cannot be folded it
//! stops and says why, and the API answers 503 rather than serve a model that
//! silently lacks it.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use crate::model::{self, Decoded, Model, View};
use crate::store::{EventRef, EventStore, RecordedEvent};

mod open;
mod replay;

pub(crate) use open::trusted;
use open::{fresh_model, open_model};

pub use replay::replay;

/// How many events one read from the store may return.
const BATCH: usize = 4096;
/// A tail longer than this is replayed with the pipelined replay.
const LONG_TAIL: u64 = 50_000;
/// How long the follower leaves new commits to the fold thread before it
/// reads them from the log itself.
const FOLD_THREAD_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("the projector stopped: {0}")]
    Stopped(Arc<str>),
    #[error("the read model is being rebuilt from the log ({0}); try again shortly")]
    Rebuilding(Arc<str>),
    #[error("the read model {} is open in another process", .0.display())]
    Locked(PathBuf),
}

/// Where a node keeps its read model, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store's file; `None` keeps it in memory (tests, tools).
    pub file: Option<PathBuf>,
    /// Bytes of the store's pages kept in memory.
    pub cache_bytes: usize,
    /// Bytes of payloads read lately, kept in memory for the answers that
    /// carry them.
    pub payload_cache_bytes: usize,
    pub options: model::Options,
}

impl Config {
    /// The read model of the data directory `data_dir`, with a small cache.
    pub fn in_dir(data_dir: &std::path::Path) -> Config {
        Config {
            file: Some(model::file_in(data_dir)),
            cache_bytes: 16 << 20,
            payload_cache_bytes: 4 << 20,
            options: model::Options::default(),
        }
    }

    pub fn in_memory() -> Config {
        Config {
            file: None,
            cache_bytes: 16 << 20,
            payload_cache_bytes: 4 << 20,
            options: model::Options::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Progress {
    applied: u64,
    stopped: Option<Arc<str>>,
    /// Why the model is being rebuilt, while it is.
    rebuilding: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct Projector {
    store: Arc<dyn EventStore>,
    config: Config,
    model: RwLock<Arc<Model>>,
    /// One folder at a time: the fold thread, or the follower.
    fold: Mutex<()>,
    progress: watch::Sender<Progress>,
    /// Whether the store hands its commits to the fold thread.
    hooked: std::sync::atomic::AtomicBool,
}

/// How the projector began: from a store that matched the log, or afresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Resumed { position: u64 },
    Fresh { reason: Option<String> },
}

impl Projector {
    /// Opens the read model `config` names, checks it against the log, and
    /// sets it aside for a fresh one if it does not match. Catching up happens
    /// in [`Projector::run`].
    pub async fn open(
        store: Arc<dyn EventStore>,
        config: Config,
    ) -> Result<(Arc<Projector>, Start), Error> {
        let (model, start) = open_model(store.as_ref(), &config).await?;
        let progress = watch::Sender::new(Progress {
            applied: model.applied(),
            ..Progress::default()
        });
        let projector = Arc::new(Projector {
            store,
            config,
            model: RwLock::new(Arc::new(model)),
            fold: Mutex::new(()),
            progress,
            hooked: std::sync::atomic::AtomicBool::new(false),
        });
        // Fold each batch as the store commits it: a writer then finds its
        // event in the model as soon as it can, without the follower reading
        // it back from the log. The fold runs on a thread of its own, never
        // on the store's writer, which would otherwise wait on the model's
        // reads and its room for changes before committing the next batch.
        // A batch the fold thread has no room for is left to the follower.
        // Weak: neither the store nor the thread keeps the projector alive.
        let (committed, batches) = std::sync::mpsc::sync_channel::<Vec<RecordedEvent>>(64);
        let folding = Arc::downgrade(&projector);
        std::thread::Builder::new()
            .name("model-fold".into())
            .spawn(move || {
                while let Ok(events) = batches.recv() {
                    match folding.upgrade() {
                        Some(projector) => projector.take_committed(&events),
                        None => return,
                    }
                }
            })
            .map_err(|e| Error::Stopped(format!("cannot start the fold thread: {e}").into()))?;
        let hooked = projector.store.on_commit(Box::new(move |events| {
            let _ = committed.try_send(events.to_vec());
        }));
        projector
            .hooked
            .store(hooked, std::sync::atomic::Ordering::Relaxed);
        Ok((projector, start))
    }

    /// The model as it stands; hold it briefly.
    pub fn model(&self) -> Arc<Model> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A view to read from, or why there is none to trust.
    pub fn view(&self) -> Result<View, Error> {
        let progress = self.progress.borrow().clone();
        if let Some(reason) = progress.rebuilding {
            return Err(Error::Rebuilding(reason));
        }
        if let Some(reason) = progress.stopped {
            return Err(Error::Stopped(reason));
        }
        Ok(self.model().view())
    }

    /// Feeds the model from the store forever: catches up, then follows the head.
    /// Transient read errors are retried; an event that cannot be folded stops it.
    pub async fn run(self: Arc<Self>) {
        if let Err(e) = self.catch_up_long_tail().await {
            self.fail(e);
        }
        let mut progress = self.progress.subscribe();
        loop {
            if self.stopped().is_some() {
                return;
            }
            if self.rebuilding().is_some() {
                self.rebuild_after_damage().await;
                continue;
            }
            let hooked = self.hooked.load(std::sync::atomic::Ordering::Relaxed);
            if hooked && self.position() >= self.store.head() {
                // Caught up: the fold thread takes the next commits; the
                // follower reads from the log only what it does not take.
                self.wait_for_commits(&mut progress, true).await;
                continue;
            }
            match self.step().await {
                Ok(0) => self.wait_for_commits(&mut progress, false).await,
                Ok(_) => {}
                Err(Error::Store(e)) => {
                    tracing::error!(error = %e, "reading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => self.fail(e),
            }
        }
    }

    /// Waits until the log grows beyond the model or the model is found
    /// damaged. With `to_fold_thread`, then gives the fold thread a moment to
    /// fold what was committed, so the follower reads from the log only what
    /// the thread could not take (a batch it had no room for, or appends of
    /// another process).
    async fn wait_for_commits(
        &self,
        progress: &mut watch::Receiver<Progress>,
        to_fold_thread: bool,
    ) {
        let mut damaged = progress.clone();
        let damaged = async move {
            let _ = damaged
                .wait_for(|p| p.rebuilding.is_some() || p.stopped.is_some())
                .await
                .map(drop);
        };
        tokio::select! {
            waited = self.store.wait_beyond(self.position()) => match waited {
                Ok(head) if to_fold_thread => {
                    let _ = tokio::time::timeout(
                        FOLD_THREAD_GRACE,
                        progress.wait_for(|p| p.applied >= head || p.stopped.is_some()),
                    )
                    .await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for new events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            () = damaged => {}
        }
    }

    /// A long tail (a fresh model, or one far behind) is replayed with the
    /// pipelined replay, saying how far it got as it goes.
    async fn catch_up_long_tail(&self) -> Result<(), Error> {
        let head = self.store.sync_head().await?;
        let from = self.position();
        if head.saturating_sub(from) < LONG_TAIL {
            return Ok(());
        }
        tracing::info!(from, head, "catching the read model up with the log");
        let started = Instant::now();
        let model = self.model();
        let mut last_line = Instant::now();
        let progress = self.progress.clone();
        let _fold = self.fold.lock().await;
        replay(self.store.as_ref(), model.clone(), BATCH, move |position| {
            progress.send_modify(|p| p.applied = p.applied.max(position));
            if last_line.elapsed() >= Duration::from_secs(5) {
                last_line = Instant::now();
                let rate = (position - from) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                tracing::info!(
                    position,
                    head,
                    events_per_second = rate as u64,
                    "catching up"
                );
            }
        })
        .await?;
        tracing::info!(
            position = model.applied(),
            seconds = started.elapsed().as_secs_f64(),
            "the read model caught up with the log"
        );
        Ok(())
    }

    /// Applies the next batch of events; returns how many.
    pub async fn step(&self) -> Result<usize, Error> {
        let from = self.position() + 1;
        let events = self.store.read_all(from, BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let _fold = self.fold.lock().await;
        let model = self.model();
        // The commit hook may have folded part of this batch meanwhile.
        let applied = model.applied();
        let fresh: Vec<&RecordedEvent> = events.iter().filter(|e| e.position > applied).collect();
        let decoded = fresh
            .iter()
            .map(|e| Decoded::new(&EventRef::from(*e)))
            .collect::<Result<Vec<_>, _>>()?;
        model.apply(&decoded)?;
        self.progress
            .send_modify(|p| p.applied = p.applied.max(model.applied()));
        Ok(events.len())
    }

    /// Folds events the store has just committed if they follow the model
    /// directly. Anything else (a gap while catching up, an event that does not
    /// decode) is left to [`Projector::run`], which reads it from the log and
    /// stops with the reason if it cannot be folded.
    fn take_committed(&self, events: &[RecordedEvent]) {
        if self.stopped().is_some() || self.progress.borrow().rebuilding.is_some() {
            return;
        }
        // A catch-up may hold the model; it reads from the log what it folds,
        // and this batch is skipped below if it got there first.
        let _fold = self.fold.blocking_lock();
        let model = self.model();
        let applied = model.applied();
        let fresh = events.iter().skip_while(|e| e.position <= applied);
        let mut decoded = Vec::with_capacity(events.len());
        for (event, next) in fresh.zip(applied + 1..) {
            if event.position != next {
                break;
            }
            match Decoded::new(&EventRef::from(event)) {
                Ok(d) => decoded.push(d),
                Err(_) => break,
            }
        }
        if decoded.is_empty() {
            return;
        }
        match model.apply(&decoded) {
            Ok(()) => self
                .progress
                .send_modify(|p| p.applied = p.applied.max(model.applied())),
            Err(e) => self.fail(e.into()),
        }
    }

    /// Stops the projector, or starts a rebuild if the model's store is damaged.
    fn fail(&self, e: Error) {
        let reason: Arc<str> = e.to_string().into();
        match e {
            Error::Model(m) if m.is_damage() => {
                tracing::error!(error = %reason, "the read model is damaged; rebuilding it from the log");
                self.progress.send_modify(|p| p.rebuilding = Some(reason));
            }
            _ => {
                tracing::error!(error = %reason, "the projector stopped");
                self.progress.send_modify(|p| p.stopped = Some(reason));
            }
        }
    }

    /// Reports an error a reader met; damage starts a rebuild.
    pub fn report(&self, e: &model::Error) {
        if e.is_damage() && self.progress.borrow().rebuilding.is_none() {
            tracing::error!(error = %e, "the read model is damaged; rebuilding it from the log");
            let reason: Arc<str> = e.to_string().into();
            self.progress.send_modify(|p| p.rebuilding = Some(reason));
        }
    }

    /// Replaces a damaged model with a fresh one built from the whole log.
    async fn rebuild_after_damage(&self) {
        let result = async {
            let _fold = self.fold.lock().await;
            let old = self.model();
            let _ = old.close();
            drop(old);
            let fresh = match &self.config.file {
                Some(file) => {
                    // Every handle to the damaged store must be gone before it moves.
                    let aside = model::set_aside(file).map_err(|e| {
                        Error::Stopped(
                            format!("cannot set the damaged read model aside: {e}").into(),
                        )
                    })?;
                    tracing::warn!(file = %aside.display(), "set the damaged read model aside");
                    fresh_model(&self.config)?
                }
                None => fresh_model(&self.config)?,
            };
            *self.model.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
            self.progress.send_modify(|p| p.applied = 0);
            Ok::<_, Error>(())
        }
        .await;
        match result {
            Ok(()) => {
                let started = Instant::now();
                let caught_up = async {
                    self.catch_up_long_tail().await?;
                    self.catch_up().await
                };
                match caught_up.await {
                    Ok(_) => {
                        tracing::info!(
                            seconds = started.elapsed().as_secs_f64(),
                            "rebuilt the read model"
                        );
                        self.progress.send_modify(|p| p.rebuilding = None);
                    }
                    Err(e) => self.progress.send_modify(|p| {
                        p.rebuilding = None;
                        p.stopped = Some(e.to_string().into());
                    }),
                }
            }
            Err(e) => self.progress.send_modify(|p| {
                p.rebuilding = None;
                p.stopped = Some(e.to_string().into());
            }),
        }
    }

    /// Applies events until the model reaches the store's head as it is now.
    pub async fn catch_up(&self) -> Result<u64, Error> {
        let head = self.store.sync_head().await?;
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

    /// Why the model is being rebuilt, while it is.
    pub fn rebuilding(&self) -> Option<Arc<str>> {
        self.progress.borrow().rebuilding.clone()
    }

    /// Whether the model has caught up with the log's head.
    pub fn caught_up(&self) -> bool {
        let progress = self.progress.borrow();
        progress.stopped.is_none()
            && progress.rebuilding.is_none()
            && progress.applied >= self.store.head()
    }

    /// Resolves once the model reflects `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), Error> {
        let mut progress = self.progress.subscribe();
        let reached = progress
            .wait_for(|p| (p.applied >= position && p.rebuilding.is_none()) || p.stopped.is_some())
            .await
            .map_err(|_| Error::Stopped("projector dropped".into()))?;
        match &reached.stopped {
            Some(reason) if reached.applied < position => Err(Error::Stopped(reason.clone())),
            _ => Ok(()),
        }
    }

    /// Writes everything folded so far to disk, durably.
    pub fn close(&self) -> Result<(), Error> {
        Ok(self.model().close()?)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tree_tests;
