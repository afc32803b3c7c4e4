//! [`Layered`]: a store kept in step with a stream of changes through a
//! memtable in memory. Writers change the active memtable; a flusher thread
//! freezes it, writes it to the store as one batch, and drops it once the
//! store shows it. Readers look through the active memtable, the frozen one,
//! then a snapshot of the store, taken together, so they see one consistent
//! whole, and never wait for the disk while a writer waits for them.
//!
//! Batches are written without an fsync, but at least every
//! `durable_interval` and on close: a crash may lose the latest batches whole,
//! never part of one, and the owner makes good what was lost from its own log.
//! A store with nothing written since its last sync is not written at all: an
//! idle server writes nothing, where an empty durable commit every interval
//! rewrote the file's allocator state, a megabyte and more on a large model.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Error, Kv, KvRead, WriteBatch};

/// What a layered store keeps in memory between writes.
pub trait Memtable: Send + Sync + 'static {
    /// Roughly what it holds in memory, to decide when to write it out.
    fn bytes(&self) -> usize;

    /// Whether it holds no change.
    fn is_empty(&self) -> bool;

    /// An empty memtable that goes on where this one ends (the position it
    /// reached, the next id to give out).
    fn successor(&self) -> Self;

    /// The writes that put it into the store.
    fn write_out(&self, batch: &mut WriteBatch);
}

/// When a layered store writes out.
#[derive(Debug, Clone, Copy)]
pub struct Flushing {
    /// Write the memtable out once it holds about this many bytes...
    pub bytes: usize,
    /// ...or this long after the last write, whichever comes first.
    pub interval: Duration,
    /// Make a write durable (fsync) at least this often.
    pub durable_interval: Duration,
}

/// The layers a reader looks through, newest first.
pub struct Layers<M> {
    pub active: Arc<RwLock<M>>,
    pub frozen: Option<Arc<RwLock<M>>>,
    pub kv: Arc<dyn KvRead>,
}

impl<M> std::fmt::Debug for Layers<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("frozen", &self.frozen.is_some())
            .finish_non_exhaustive()
    }
}

impl<M> Clone for Layers<M> {
    fn clone(&self) -> Self {
        Layers {
            active: self.active.clone(),
            frozen: self.frozen.clone(),
            kv: self.kv.clone(),
        }
    }
}

impl<M> Layers<M> {
    /// The active memtable, for reading.
    pub fn active(&self) -> RwLockReadGuard<'_, M> {
        read(&self.active)
    }

    /// The frozen memtable, if one is being written out.
    pub fn frozen(&self) -> Option<RwLockReadGuard<'_, M>> {
        self.frozen.as_deref().map(read)
    }
}

pub fn read<M>(lock: &RwLock<M>) -> RwLockReadGuard<'_, M> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<M>(lock: &RwLock<M>) -> RwLockWriteGuard<'_, M> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct Control {
    /// The memtable is over its size: write it out now.
    wanted: bool,
    stop: bool,
    /// Why the last write failed; no change is taken after it.
    failed: Option<String>,
}

struct Inner<M> {
    kv: Arc<dyn Kv>,
    flushing: Flushing,
    layers: RwLock<Layers<M>>,
    /// Held by a writer for its whole change, and by a freeze: a memtable is
    /// frozen between changes, never inside one.
    changing: Mutex<()>,
    /// One write-out at a time: the flusher's, or one asked for by hand.
    /// Holds whether a batch was written without a sync since the last sync.
    writing: Mutex<bool>,
    control: Mutex<Control>,
    wake: Condvar,
    written: Condvar,
}

/// A store kept through a memtable. The flusher stops when it is closed or
/// dropped.
pub struct Layered<M: Memtable> {
    inner: Arc<Inner<M>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

impl<M: Memtable> std::fmt::Debug for Layered<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered")
            .field("store", &self.inner.kv)
            .finish_non_exhaustive()
    }
}

impl<M: Memtable> Layered<M> {
    /// Starts on `kv` with `first` as the active memtable; `name` names the
    /// flusher thread.
    pub fn start(
        kv: Arc<dyn Kv>,
        first: M,
        flushing: Flushing,
        name: &str,
    ) -> Result<Layered<M>, Error> {
        let snapshot = kv.read()?;
        let inner = Arc::new(Inner {
            kv,
            flushing,
            layers: RwLock::new(Layers {
                active: Arc::new(RwLock::new(first)),
                frozen: None,
                kv: snapshot,
            }),
            changing: Mutex::new(()),
            writing: Mutex::new(false),
            control: Mutex::new(Control::default()),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let flusher = inner.clone();
        let path = inner.kv.path().to_owned();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || flusher.run())
            .map_err(|e| Error::Storage {
                file: path,
                reason: format!("cannot start its flusher: {e}"),
            })?;
        Ok(Layered {
            inner,
            flusher: Mutex::new(Some(thread)),
        })
    }

    /// The layers, for reading.
    pub fn layers(&self) -> Layers<M> {
        read(&self.inner.layers).clone()
    }

    /// Changes the active memtable with `f`, which also sees the frozen one
    /// and the store (to copy up what it changes). Waits first while the
    /// flusher is far behind. Nothing is frozen while `f` runs.
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut M, Option<&M>, &dyn KvRead) -> T,
    ) -> Result<T, Error> {
        self.wait_for_room()?;
        let inner = &self.inner;
        let _changing = lock(&inner.changing);
        if let Some(reason) = &lock(&inner.control).failed {
            return Err(failed(inner.kv.path(), reason));
        }
        let layers = self.layers();
        let mut active = write(&layers.active);
        let frozen = layers.frozen();
        let out = f(&mut active, frozen.as_deref(), layers.kv.as_ref());
        let bytes = active.bytes();
        drop(frozen);
        drop(active);
        if bytes >= inner.flushing.bytes {
            lock(&inner.control).wanted = true;
            inner.wake.notify_one();
        }
        Ok(out)
    }

    /// Stops taking changes, with `reason` (a change failed half-way).
    pub fn fail(&self, reason: String) {
        lock(&self.inner.control).failed = Some(reason);
        self.inner.written.notify_all();
    }

    /// Why it takes no more changes, if it does not.
    pub fn failed(&self) -> Option<String> {
        lock(&self.inner.control).failed.clone()
    }

    fn wait_for_room(&self) -> Result<(), Error> {
        let inner = &self.inner;
        let full = || {
            let layers = read(&inner.layers);
            let bytes = read(&layers.active).bytes();
            bytes >= 2 * inner.flushing.bytes && layers.frozen.is_some()
        };
        let mut control = lock(&inner.control);
        while full() {
            if let Some(reason) = &control.failed {
                return Err(failed(inner.kv.path(), reason));
            }
            control.wanted = true;
            inner.wake.notify_one();
            control = inner
                .written
                .wait_timeout(control, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Writes everything changed so far to the store, durably.
    pub fn flush(&self) -> Result<(), Error> {
        self.inner.write_out(true)
    }

    /// Stops the flusher after a last, durable write.
    pub fn close(&self) -> Result<(), Error> {
        let thread = lock(&self.flusher).take();
        if let Some(thread) = thread {
            lock(&self.inner.control).stop = true;
            self.inner.wake.notify_one();
            let _ = thread.join();
        }
        let failed_already = lock(&self.inner.control).failed.clone();
        match failed_already {
            Some(reason) => Err(failed(self.inner.kv.path(), &reason)),
            None => self.inner.write_out(true),
        }
    }

    /// A snapshot of the store alone: what was written out so far.
    pub fn stored(&self) -> Result<Arc<dyn KvRead>, Error> {
        self.inner.kv.read()
    }
}

impl<M: Memtable> Drop for Layered<M> {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(error = %e, file = %self.inner.kv.path().display(),
                "the last write failed; the next start replays more of the log");
        }
    }
}

fn failed(file: &std::path::Path, reason: &str) -> Error {
    Error::Storage {
        file: file.to_owned(),
        reason: format!("it takes no more changes: {reason}"),
    }
}

impl<M: Memtable> Inner<M> {
    fn run(self: Arc<Self>) {
        let mut last_durable = Instant::now();
        loop {
            let mut control = lock(&self.control);
            if !control.wanted && !control.stop {
                control = self
                    .wake
                    .wait_timeout(control, self.flushing.interval)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            if control.stop || control.failed.is_some() {
                return;
            }
            control.wanted = false;
            drop(control);
            let durable = last_durable.elapsed() >= self.flushing.durable_interval;
            match self.write_out(durable) {
                Ok(()) if durable => last_durable = Instant::now(),
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(error = %e, "writing out failed; no more changes are taken");
                    lock(&self.control).failed = Some(e.to_string());
                    self.written.notify_all();
                    return;
                }
            }
        }
    }

    /// Freezes the active memtable and writes it to the store; with
    /// `durable`, syncs.
    fn write_out(&self, durable: bool) -> Result<(), Error> {
        let mut unsynced = lock(&self.writing);
        let frozen = {
            let _changing = lock(&self.changing);
            let mut layers = write(&self.layers);
            let active = read(&layers.active);
            if active.is_empty() && !(durable && *unsynced) {
                return Ok(());
            }
            let next = Arc::new(RwLock::new(active.successor()));
            drop(active);
            let frozen = std::mem::replace(&mut layers.active, next);
            layers.frozen = Some(frozen.clone());
            frozen
        };
        let mut batch = WriteBatch::default();
        read(&frozen).write_out(&mut batch);
        self.kv.write(&batch, durable)?;
        *unsynced = !durable;
        let snapshot = self.kv.read()?;
        {
            let mut layers = write(&self.layers);
            layers.frozen = None;
            layers.kv = snapshot;
        }
        self.written.notify_all();
        Ok(())
    }
}

#[cfg(test)]
#[path = "layered_tests.rs"]
mod tests;
