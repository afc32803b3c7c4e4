//! [`Model`]: the read model of a running node, in layers. The folds write
//! into an overlay in memory; a flusher thread writes the overlay to the
//! on-disk store as one batch, with the position, ledger digest and hash it
//! reflects, every so often or once it is big; readers see the overlay, the
//! one being written, then the store, as one consistent whole.
//!
//! A batch is written without an fsync most of the time: the log is the
//! truth, and after a crash the model goes on from the last batch that did
//! reach the disk (at least every `durable_interval`) by replaying the log's
//! tail. Memory is the store's page cache plus at most a few overlays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use projections::Settings;

use super::overlay::{Folding, Overlay, Tip};
use super::view::View;
use super::{Decoded, Error, flush};
use crate::chain::Hash;
use crate::kv::{Kv, KvRead};

/// How a model keeps its memory and the disk in step.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub settings: Settings,
    /// Write the overlay out once it holds about this many bytes...
    pub flush_bytes: usize,
    /// ...or this long after the last write, whichever comes first.
    pub flush_interval: Duration,
    /// Make a write durable (fsync) at least this often.
    pub durable_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            flush_bytes: 16 << 20,
            flush_interval: Duration::from_millis(200),
            durable_interval: Duration::from_secs(2),
        }
    }
}

impl Options {
    /// For a replay from the start: big overlays, written as they fill up.
    pub fn bulk(settings: Settings) -> Options {
        Options {
            settings,
            flush_bytes: 96 << 20,
            flush_interval: Duration::from_secs(3600),
            durable_interval: Duration::from_secs(3600),
        }
    }
}

/// The layers a reader looks through, newest first.
#[derive(Clone)]
pub(super) struct Layers {
    pub active: Arc<RwLock<Overlay>>,
    pub frozen: Option<Arc<RwLock<Overlay>>>,
    pub kv: Arc<dyn KvRead>,
}

/// What only the folding side touches: the chain, and the log's identity.
#[derive(Debug)]
struct FoldState {
    tip: Tip,
    /// The hash of the event at position 1, once folded.
    log_id: Option<Hash>,
}

#[derive(Debug, Default)]
struct FlushState {
    /// An overlay is over its size: write it out now.
    wanted: bool,
    stop: bool,
    /// Writes completed, to wake folds waiting for room.
    done: u64,
    /// Why the last write failed; the model takes no more folds after it.
    failed: Option<String>,
}

pub(super) struct Inner {
    pub kv: Arc<dyn Kv>,
    options: Options,
    layers: RwLock<Layers>,
    folding: Mutex<FoldState>,
    applied: AtomicU64,
    flush: Mutex<FlushState>,
    wake: Condvar,
    /// Told when a write completes.
    written: Condvar,
    /// One write at a time: the flusher's, or one asked for by hand.
    writing: Mutex<()>,
}

/// The read model of a node. Cheap to share; the flusher stops when the last
/// handle is closed or dropped.
pub struct Model {
    inner: Arc<Inner>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("store", &self.inner.kv)
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Model {
    /// Starts a model on `kv`, which holds everything up to `tip`.
    pub fn start(kv: Arc<dyn Kv>, tip: Tip, log_id: Option<Hash>, options: Options) -> Result<Model, Error> {
        let snapshot = kv.read()?;
        let inner = Arc::new(Inner {
            kv,
            options,
            layers: RwLock::new(Layers {
                active: Arc::new(RwLock::new(Overlay::after(tip))),
                frozen: None,
                kv: snapshot,
            }),
            folding: Mutex::new(FoldState { tip, log_id }),
            applied: AtomicU64::new(tip.position()),
            flush: Mutex::new(FlushState::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
            writing: Mutex::new(()),
        });
        let flusher = inner.clone();
        let thread = std::thread::Builder::new()
            .name("hookledger-model-flush".into())
            .spawn(move || flusher.run())
            .map_err(|e| Error::Failed(format!("cannot start the model's flusher: {e}")))?;
        Ok(Model {
            inner,
            flusher: Mutex::new(Some(thread)),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.options.settings
    }

    /// The position of the last event folded.
    pub fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Acquire)
    }

    /// The chain after the last event folded.
    pub fn tip(&self) -> Tip {
        lock(&self.inner.folding).tip
    }

    /// Folds `events`, which must follow the last one folded without a gap,
    /// extending the ledger digest over them. On an error the model takes no
    /// more events: it may hold part of the batch.
    pub fn apply(&self, events: &[Decoded]) -> Result<(), Error> {
        self.fold(events, None)
    }

    /// [`Model::apply`] for events whose chain the caller folded already,
    /// on another thread: `tip` is the chain after the last of them.
    pub fn apply_chained(&self, events: &[Decoded], tip: Tip) -> Result<(), Error> {
        self.fold(events, Some(tip))
    }

    fn fold(&self, events: &[Decoded], chained: Option<Tip>) -> Result<(), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        self.wait_for_room()?;
        let inner = &self.inner;
        let mut state = lock(&inner.folding);
        if let Some(reason) = &lock(&inner.flush).failed {
            return Err(Error::Failed(reason.clone()));
        }
        let expected = state.tip.position() + 1;
        if first.recorded.position != expected {
            return Err(Error::Gap {
                position: first.recorded.position,
                expected,
            });
        }
        if chained.is_some_and(|tip| tip.position() != last.recorded.position) {
            return Err(Error::Gap {
                position: last.recorded.position,
                expected: chained.map_or(0, |t| t.position()),
            });
        }
        let layers = inner.layers();
        let mut active = layers.active.write().unwrap_or_else(|e| e.into_inner());
        let frozen = layers
            .frozen
            .as_ref()
            .map(|f| f.read().unwrap_or_else(|e| e.into_inner()));
        let mut rows = Folding {
            overlay: &mut active,
            frozen: frozen.as_deref(),
            kv: layers.kv.as_ref(),
        };
        if first.recorded.position == 1 {
            state.log_id = Some(first.hash);
        }
        let mut tip = state.tip;
        let result = events.iter().try_for_each(|event| {
            if chained.is_none() {
                tip.fold(event.recorded.position, &event.hash)?;
            }
            projections::apply(&mut rows, &event.recorded, &inner.options.settings)
        });
        state.tip = chained.unwrap_or(tip);
        active.tip = state.tip;
        let bytes = active.bytes;
        drop(frozen);
        drop(active);
        if let Err(e) = result {
            lock(&inner.flush).failed = Some(e.to_string());
            return Err(e);
        }
        inner.applied.store(state.tip.position(), Ordering::Release);
        drop(state);
        if bytes >= inner.options.flush_bytes {
            lock(&inner.flush).wanted = true;
            inner.wake.notify_one();
        }
        Ok(())
    }

    /// Waits while the overlay is far over its size because the flusher is
    /// behind: the folds must not outrun the disk without bound.
    fn wait_for_room(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let full = || {
            let layers = inner.layers();
            let bytes = layers.active.read().unwrap_or_else(|e| e.into_inner()).bytes;
            bytes >= 4 * inner.options.flush_bytes && layers.frozen.is_some()
        };
        let mut flush = lock(&inner.flush);
        while full() {
            if let Some(reason) = &flush.failed {
                return Err(Error::Failed(reason.clone()));
            }
            flush.wanted = true;
            inner.wake.notify_one();
            flush = inner
                .written
                .wait_timeout(flush, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// A consistent view for reading.
    pub fn view(&self) -> View {
        View::new(self.inner.layers(), self.applied())
    }

    /// Writes everything folded so far to the store and syncs it.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.write_out(true)
    }

    /// Stops the flusher after a last, durable write.
    pub fn close(&self) -> Result<(), Error> {
        let thread = lock(&self.flusher).take();
        if let Some(thread) = thread {
            lock(&self.inner.flush).stop = true;
            self.inner.wake.notify_one();
            let _ = thread.join();
        }
        let failed = lock(&self.inner.flush).failed.clone();
        match failed {
            Some(reason) => Err(Error::Failed(reason)),
            None => self.inner.write_out(true),
        }
    }

    /// Why the model takes no more events, if it does not.
    pub fn failed(&self) -> Option<String> {
        lock(&self.inner.flush).failed.clone()
    }

    /// A snapshot of the store alone: what was written out so far.
    pub fn snapshot(&self) -> Result<Arc<dyn KvRead>, Error> {
        Ok(self.inner.kv.read()?)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, "the read model's last write failed; the next start replays more of the log");
        }
    }
}

impl Inner {
    pub(super) fn layers(&self) -> Layers {
        self.layers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The flusher: writes the overlay out when asked, on its interval, and
    /// durably at least every `durable_interval`.
    fn run(self: Arc<Self>) {
        let mut last_durable = Instant::now();
        loop {
            let mut flush = lock(&self.flush);
            if !flush.wanted && !flush.stop {
                flush = self
                    .wake
                    .wait_timeout(flush, self.options.flush_interval)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if flush.stop || flush.failed.is_some() {
                return;
            }
            flush.wanted = false;
            drop(flush);
            let durable = last_durable.elapsed() >= self.options.durable_interval;
            match self.write_out(durable) {
                Ok(()) if durable => last_durable = Instant::now(),
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "writing the read model failed; it takes no more events");
                    lock(&self.flush).failed = Some(e.to_string());
                    self.written.notify_all();
                    return;
                }
            }
        }
    }

    /// Freezes the overlay and writes it to the store; with `durable`, syncs.
    fn write_out(&self, durable: bool) -> Result<(), Error> {
        let _one = lock(&self.writing);
        let (frozen, log_id) = {
            let state = lock(&self.folding);
            let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
            let empty = layers
                .active
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if empty && !durable {
                return Ok(());
            }
            let fresh = Arc::new(RwLock::new(Overlay::after(state.tip)));
            let frozen = std::mem::replace(&mut layers.active, fresh);
            frozen.write().unwrap_or_else(|e| e.into_inner()).tip = state.tip;
            layers.frozen = Some(frozen.clone());
            (frozen, state.log_id)
        };
        let overlay = frozen.read().unwrap_or_else(|e| e.into_inner());
        let batch = flush::batch(&overlay, log_id);
        drop(overlay);
        self.kv.write(&batch, durable)?;
        let snapshot = self.kv.read()?;
        {
            let mut layers = self.layers.write().unwrap_or_else(|e| e.into_inner());
            layers.frozen = None;
            layers.kv = snapshot;
        }
        lock(&self.flush).done += 1;
        self.written.notify_all();
        Ok(())
    }
}
