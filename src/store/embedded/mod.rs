//! The embedded backend: hookledger's own append-only segment log in the data
//! directory, and the default store.
//!
//! [`EmbeddedStore`] ties the pieces together: `segment` scans and checks the log
//! on open, `writer` group-commits appends on its own thread, `index` finds and
//! re-checks frames for reads, `frame` is the record format and `fs` the file
//! layer that tests use to inject faults. One process at a time may open a data
//! directory for writing (a lock file guards it); any number may open it read-only.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::store::sequencer::Sequencer;
use crate::store::{
    Appended, Batch, ClaimsOf, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Result,
    check_append,
};

#[cfg(test)]
mod batch_tests;
mod checkpoint;
#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod fault_tests;
mod frame;
pub mod fs;
mod index;
#[cfg(test)]
mod scan_tests;
mod segment;
mod writer;

pub use fs::{Fs, LogFile, RealFs};
pub use segment::{ScanReport, TornTail, scan};

use index::{Index, SegmentFile};
use writer::{Active, Request, Writer};

/// Bytes of a segment file before its first frame.
pub const SEGMENT_HEADER_LEN: u64 = segment::HEADER_LEN as u64;
/// Bytes of a frame before its payload: length, then CRC32C.
pub const FRAME_HEADER_LEN: u64 = frame::HEADER_LEN as u64;

/// How to open a store for writing.
#[derive(Debug, Clone)]
pub struct Options {
    /// The file layer every write goes through.
    pub fs: Arc<dyn Fs>,
    /// A segment takes new frames until it reaches this size; a batch may overrun it.
    pub segment_size: u64,
    /// How to recognise the claims of recorded events. Frames do not keep the
    /// claims an append took, so the open rebuilds them with this; without it,
    /// claims are enforced among the appends made since the open only.
    pub claims_of: Option<ClaimsOf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fs: Arc::new(RealFs),
            segment_size: 64 * 1024 * 1024,
            claims_of: None,
        }
    }
}

/// What the writer has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Appends acknowledged as durable.
    pub appends: u64,
    /// Group commits that made appends durable.
    pub batches: u64,
    /// File and directory syncs issued, including failed ones.
    pub fsyncs: u64,
}

/// The log as readers see it: what the writer has made durable.
struct Shared {
    index: RwLock<Index>,
    /// Told of each batch after it is readable, before it is acknowledged.
    hook: RwLock<Option<crate::store::CommitHook>>,
    head: watch::Sender<Head>,
    appends: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    position: u64,
    /// False once no append can come: closed, or opened read-only.
    open: bool,
}

impl Shared {
    fn new(index: Index, open: bool) -> Shared {
        let position = index.head();
        Shared {
            index: RwLock::new(index),
            hook: RwLock::new(None),
            head: watch::Sender::new(Head { position, open }),
            appends: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
        }
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Every index change is made whole under the lock, so a panic elsewhere
        // cannot leave it half-changed.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn add_segment(&self, file: Arc<SegmentFile>, end: u64, crc: u32) {
        self.index_mut().add_segment(file, end, crc);
    }

    /// Makes durable records visible, tells the hook, then wakes whoever
    /// waits for them.
    fn publish(&self, records: Vec<RecordedEvent>, offsets: &[u64], end: u64, crc: u32) {
        let count = records.len();
        let position = records.last().map(|r| r.position);
        self.index_mut().extend(records, offsets, end, crc);
        let hook = self.hook.read().unwrap_or_else(|e| e.into_inner());
        if let Some(hook) = hook.as_ref() {
            let index = self.index();
            for part in index.recent_tail(count) {
                if !part.is_empty() {
                    hook(part);
                }
            }
        }
        drop(hook);
        if let Some(position) = position {
            self.head.send_modify(|h| h.position = position);
        }
    }

    fn count_fsync(&self) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    fn count_batch(&self, appends: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.appends.fetch_add(appends, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("index", &self.index)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct WriterHandle {
    requests: mpsc::Sender<Request>,
    thread: JoinHandle<()>,
}

/// The embedded segment-log store.
#[derive(Debug)]
pub struct EmbeddedStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<WriterHandle>>,
    lock: Mutex<Option<File>>,
}

impl EmbeddedStore {
    /// Opens `dir` for reading and writing, creating it if needed; cuts off a torn
    /// tail, refuses corruption, and fails with `Error::Unavailable` while another
    /// store holds the directory.
    pub fn open(dir: &Path) -> Result<EmbeddedStore> {
        Self::open_with(dir, Options::default())
    }

    /// [`EmbeddedStore::open`] with a chosen file layer and segment size.
    pub fn open_with(dir: &Path, options: Options) -> Result<EmbeddedStore> {
        let fs = options.fs;
        let log_dir = dir.join("log");
        if !log_dir.exists() {
            std::fs::create_dir_all(&log_dir)
                .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
            // The new directories must survive a crash along with what goes in them.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            for made in [Some(dir), parent].into_iter().flatten() {
                fs.sync_dir(made)
                    .map_err(|e| Error::io(format!("syncing {}", made.display()), e))?;
            }
        }
        let lock = lock(dir)?;
        let (scan, checkpointed) = scan_for_writing(&log_dir, options.claims_of.clone())?;
        let sync = |what: &str, path: &Path, r: std::io::Result<()>| {
            r.map_err(|e| Error::io(format!("{what} {}", path.display()), e))
        };
        if let Some(path) = &scan.torn_header {
            tracing::warn!(file = %path.display(), "removing a segment whose creation a crash cut short");
            sync("removing", path, fs.remove(path))?;
            sync("syncing", &log_dir, fs.sync_dir(&log_dir))?;
        }
        if let Some(torn) = &scan.torn_tail {
            tracing::warn!(file = %torn.file.display(), offset = torn.offset, reason = %torn.reason,
                "cutting off a torn tail left by a crash");
            let cut = fs.open(&torn.file).and_then(|mut f| {
                f.truncate(torn.offset)?;
                f.sync()
            });
            sync("cutting the torn tail of", &torn.file, cut)?;
        }
        let active = match scan.segments.last() {
            Some(last) => Some(Active {
                file: fs
                    .open(&last.path)
                    .map_err(|e| Error::io(format!("opening {}", last.path.display()), e))?,
                path: last.path.clone(),
                len: last.end,
                crc: last.crc,
                size: std::fs::metadata(&last.path)
                    .map_err(|e| Error::io(format!("opening {}", last.path.display()), e))?
                    .len(),
            }),
            None => None,
        };
        let shared = Arc::new(Shared::new(Index::new(scan.segments, scan.streams)?, true));
        let writer = Writer::new(
            fs,
            log_dir,
            options.segment_size,
            scan.sequencer,
            active,
            shared.clone(),
            checkpointed,
        );
        let (requests, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::io("starting the log writer", e))?;
        Ok(EmbeddedStore {
            dir: dir.to_owned(),
            shared,
            writer: Mutex::new(Some(WriterHandle { requests, thread })),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Opens `dir` for reading alongside a running writer: takes no lock, never
    /// writes, and reads a torn tail as absent. Sees the log as it was at open.
    /// Like a writer's open it starts from the persisted index when that checks
    /// out; `audit verify` still reads and checks every frame after opening.
    pub fn open_read_only(dir: &Path) -> Result<EmbeddedStore> {
        let log_dir = dir.join("log");
        let scan = if log_dir.exists() {
            // A reader takes no appends, so it needs no claims.
            scan_for_writing(&log_dir, None)?.0
        } else {
            std::fs::metadata(dir)
                .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
            segment::Scan::default()
        };
        let index = Index::new(scan.segments, scan.streams)?;
        Ok(EmbeddedStore {
            dir: dir.to_owned(),
            shared: Arc::new(Shared::new(index, false)),
            writer: Mutex::new(None),
            lock: Mutex::new(None),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> Stats {
        Stats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// Stops taking appends, lets the writer finish the batch in hand, and
    /// releases the directory. Reads keep working.
    pub async fn close(&self) {
        let handle = self.writer_handle().take();
        if let Some(WriterHandle { requests, thread }) = handle {
            drop(requests);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.release();
    }

    fn release(&self) {
        self.shared.head.send_modify(|h| h.open = false);
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn writer_handle(&self) -> std::sync::MutexGuard<'_, Option<WriterHandle>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read(&self, locs: Vec<index::Loc>) -> Result<Vec<RecordedEvent>> {
        if locs.is_empty() {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || index::read(&locs))
            .await
            .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    /// Like [`EmbeddedStore::close`], but blocks the thread for the batch in hand.
    fn drop(&mut self) {
        if let Some(WriterHandle { requests, thread }) = self.writer_handle().take() {
            drop(requests);
            let _ = thread.join();
        }
        self.release();
    }
}

/// The log as an open finds it: from the persisted index when it checks out,
/// with only what came after it walked and decoded; otherwise (no index, or any
/// doubt about it) the whole log, scanned and decoded. Changes nothing on disk,
/// so a read-only open beside a running writer uses it too. Also returns the
/// head the index covered, 0 without one.
fn scan_for_writing(log_dir: &Path, claims_of: Option<ClaimsOf>) -> Result<(segment::Scan, u64)> {
    let files = segment::list(log_dir)?;
    match checkpoint::load(log_dir, &files, claims_of.clone()) {
        Ok(loaded) => {
            let head = loaded.sequencer.head();
            let resumed = segment::Scan {
                sequencer: loaded.sequencer,
                segments: loaded.segments,
                streams: loaded.streams,
                ..segment::Scan::default()
            };
            match segment::scan_files(&files, resumed) {
                Ok(scan) => return Ok((scan, head)),
                // The whole scan names the damage the same way, or finds none.
                Err(e) => {
                    tracing::warn!(error = %e, "the log after the persisted index does not scan; scanning it whole")
                }
            }
        }
        Err(reason) if files.is_empty() => tracing::debug!(%reason, "no persisted index"),
        Err(reason) => {
            tracing::warn!(%reason, "not using the persisted index; scanning the whole log")
        }
    }
    let scan = segment::Scan {
        sequencer: Sequencer::with_claims_of(claims_of),
        ..segment::Scan::default()
    };
    Ok((segment::scan_files(&files, scan)?, 0))
}

/// Takes the directory's lock file, or names the directory that is taken.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // A lock released a moment ago can linger: a child process forked by this
    // process (before its exec closes the descriptor) shares the lock with us.
    // Wait a little before calling the directory taken.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Unavailable(format!(
                    "{} is open for writing by another store",
                    dir.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
        }
    }
}

#[async_trait::async_trait]
impl EventStore for EmbeddedStore {
    #[tracing::instrument(level = "debug", skip(self, events, claims), fields(events = events.len()))]
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<String>,
    ) -> Result<Appended> {
        check_append(stream, &events)?;
        if let Some(e) = events.iter().find(|e| !frame::fits(stream, e)) {
            return Err(Error::Invalid(format!(
                "a {} event on a stream name of {} bytes does not fit a log frame",
                e.event_type,
                stream.len()
            )));
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            stream: stream.to_owned(),
            expected,
            events,
            claims,
            reply,
        };
        let sent = match self.writer_handle().as_ref() {
            Some(writer) => writer.requests.send(request).is_ok(),
            None => false,
        };
        if !sent {
            return Err(Error::Unavailable(format!(
                "{} is closed or read-only",
                self.dir.display()
            )));
        }
        answer
            .await
            .map_err(|_| Error::Unavailable("the log writer stopped".into()))?
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let locs = self.shared.index().locate_stream(stream, from, max);
        self.read(locs).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let locs = {
            let index = self.shared.index();
            // The projector asks for what was just committed: serve it from memory.
            if let Some(events) = index.recent_from(from.max(1), max) {
                return Ok(events);
            }
            index.locate_all(from, max)
        };
        self.read(locs).await
    }

    #[tracing::instrument(level = "debug", skip(self, spent))]
    async fn read_batch(&self, from: u64, max: usize, mut spent: Batch) -> Result<Batch> {
        let locs = {
            let index = self.shared.index();
            if let Some(events) = index.recent_from(from.max(1), max) {
                return Ok(Batch::from(events));
            }
            index.locate_all(from, max)
        };
        spent.clear();
        if locs.is_empty() {
            return Ok(spent);
        }
        tokio::task::spawn_blocking(move || index::read_archives(&locs, spent))
            .await
            .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }

    async fn wait_beyond(&self, after: u64) -> Result<u64> {
        let mut head = self.shared.head.subscribe();
        let reached = head
            .wait_for(|h| h.position > after || !h.open)
            .await
            .map_err(|_| Error::Unavailable("store dropped".into()))?;
        if reached.position > after {
            Ok(reached.position)
        } else {
            Err(Error::Unavailable(format!(
                "{} takes no more appends (closed or read-only)",
                self.dir.display()
            )))
        }
    }

    fn head(&self) -> u64 {
        self.shared.head.borrow().position
    }

    fn commit_stats(&self) -> Option<crate::store::CommitStats> {
        let stats = self.stats();
        Some(crate::store::CommitStats {
            appends: stats.appends,
            commits: stats.batches,
        })
    }

    fn on_commit(&self, hook: crate::store::CommitHook) -> bool {
        *self.shared.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
        true
    }
}
