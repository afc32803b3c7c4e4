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

use crate::kv::{self, RedbKv};
use crate::model::{self, Chain, Decoded, Model, View};
use crate::store::{EventRef, EventStore, RecordedEvent};

mod replay;

pub use replay::replay;

/// How many events one read from the store may return.
const BATCH: usize = 4096;
/// A tail longer than this is replayed with the pipelined replay.
const LONG_TAIL: u64 = 50_000;

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
    pub options: model::Options,
}

impl Config {
    /// The read model of the data directory `data_dir`, with a small cache.
    pub fn in_dir(data_dir: &std::path::Path) -> Config {
        Config {
            file: Some(model::file_in(data_dir)),
            cache_bytes: 16 << 20,
            options: model::Options::default(),
        }
    }

    pub fn in_memory() -> Config {
        Config {
            file: None,
            cache_bytes: 16 << 20,
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
    /// One folder at a time: the store's commit hook, or the follower.
    fold: Mutex<()>,
    progress: watch::Sender<Progress>,
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
        });
        // Fold each batch as the store commits it, before its writers hear back:
        // a writer then finds its event in the model at once, instead of waking
        // the follower to read it back. Weak: the store must not keep the
        // projector alive.
        let hooked = Arc::downgrade(&projector);
        projector.store.on_commit(Box::new(move |events| {
            if let Some(projector) = hooked.upgrade() {
                projector.take_committed(events);
            }
        }));
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
            match self.step().await {
                Ok(0) => {
                    let damaged = async {
                        let _ = progress
                            .wait_for(|p| p.rebuilding.is_some() || p.stopped.is_some())
                            .await
                            .map(drop);
                    };
                    tokio::select! {
                        waited = self.store.wait_beyond(self.position()) => if let Err(e) = waited {
                            tracing::warn!(error = %e, "waiting for new events failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        },
                        () = damaged => {}
                    }
                }
                Ok(_) => {}
                Err(Error::Store(e)) => {
                    tracing::error!(error = %e, "reading the log failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => self.fail(e),
            }
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
        let Ok(_fold) = self.fold.try_lock() else {
            // A catch-up holds the model; it will read these from the log.
            return;
        };
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

/// Opens the model `config` names if it matches the log; else a fresh one.
async fn open_model(store: &dyn EventStore, config: &Config) -> Result<(Model, Start), Error> {
    let Some(file) = &config.file else {
        return Ok((fresh_model(config)?, Start::Fresh { reason: None }));
    };
    let reason = match model::open(file, config.cache_bytes) {
        Ok(stored) => match trusted(store, &stored).await {
            Ok(()) => {
                let position = stored.tip.position();
                let model = Model::start(stored.kv, stored.tip, stored.log_id, config.options)?;
                return Ok((model, Start::Resumed { position }));
            }
            Err(reason) => reason,
        },
        Err(model::Error::Kv(kv::Error::Locked(path))) => return Err(Error::Locked(path)),
        Err(e) => e.to_string(),
    };
    if store.head() > 0 || file.exists() {
        tracing::warn!(%reason, file = %file.display(), "setting the read model aside; it is rebuilt from the log");
    }
    model::set_aside(file)
        .map_err(|e| Error::Stopped(format!("cannot set {} aside: {e}", file.display()).into()))?;
    Ok((
        fresh_model(config)?,
        Start::Fresh {
            reason: Some(reason),
        },
    ))
}

fn fresh_model(config: &Config) -> Result<Model, Error> {
    let kv: Arc<dyn kv::Kv> = match &config.file {
        Some(file) => model::open(file, config.cache_bytes)?.kv,
        None => Arc::new(RedbKv::in_memory(&model::tables::ALL).map_err(model::Error::from)?),
    };
    Ok(Model::start(kv, Chain::default(), None, config.options)?)
}

/// Whether a store's contents can be trusted to be this log's up to its
/// position; the reason it cannot be, if not.
pub(crate) async fn trusted(store: &dyn EventStore, stored: &model::Stored) -> Result<(), String> {
    let position = stored.tip.position();
    match stored.format {
        None if position == 0 => return Ok(()),
        Some(model::tables::FORMAT) => {}
        Some(other) => {
            return Err(format!(
                "it is of format {other}; this build reads format {}",
                model::tables::FORMAT
            ));
        }
        None => return Err("it has no format record".into()),
    }
    if position == 0 {
        return Ok(());
    }
    let head = store.sync_head().await.map_err(|e| e.to_string())?;
    if position > head {
        return Err(format!(
            "it is at position {position} but the log ends at {head}"
        ));
    }
    let hash_at = |position: u64| async move {
        let events = store
            .read_all(position, 1)
            .await
            .map_err(|e| format!("cannot read position {position} to check it: {e}"))?;
        events
            .first()
            .filter(|e| e.position == position)
            .map(|e| e.hash)
            .ok_or_else(|| format!("the log has no position {position}"))
    };
    if stored.log_id != Some(hash_at(1).await?) {
        return Err("it was built from another log".into());
    }
    if hash_at(position).await? != stored.tip.last_hash {
        return Err(format!("it does not match the log at position {position}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
