//! The embedded backend: hookledger's own append-only segment log in the data
//! directory, and the default store.
//!
//! [`EmbeddedStore`] ties the pieces together: `open` checks the persisted
//! index against the log and scans the tail after it, `segment` scans and
//! checks segment files, `writer` group-commits appends on its own thread,
//! `spare` makes the next segment's file ahead of need, `index` keeps the
//! index on disk and finds and re-checks frames for reads,
//! `compact` rewrites segments without the contents erasure removes,
//! `frame` is the record format and `fs` the file layer that tests use to
//! inject faults. One process at a time may open a data directory for writing
//! (a lock file guards it); any number may open it read-only.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::store::{
    Appended, Batch, ClaimsOf, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Result,
    check_append,
};

#[cfg(test)]
mod batch_tests;
mod compact;
#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod fault_tests;
mod frame;
pub mod fs;
mod index;
#[cfg(test)]
mod index_tests;
mod open;
#[cfg(test)]
mod scan_tests;
mod segment;
mod spare;
#[cfg(test)]
mod spare_tests;
mod writer;

pub use compact::CompactionStats;
pub use fs::{Fs, LogFile, RealFs};
pub use segment::{ScanReport, TornTail, scan};

use index::{Index, SegmentFile};
use spare::Spare;
use writer::{Active, Command, Request, Writer};

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
    /// Bytes of the persisted index's pages kept in memory.
    pub index_cache: usize,
    /// Make the next segment's file of zeros ahead of need, on a thread of its
    /// own, so appends never wait while zeros are written (see `spare`).
    pub spare_segment: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fs: Arc::new(RealFs),
            segment_size: 64 * 1024 * 1024,
            claims_of: None,
            index_cache: 64 << 20,
            spare_segment: true,
        }
    }
}

/// What the writer has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Appends acknowledged as durable.
    pub appends: u64,
    /// Group commits that made appends durable.
    pub batches: u64,
    /// File and directory syncs issued, including failed ones.
    pub fsyncs: u64,
}

/// The log as readers see it: what the writer has made durable.
struct Shared {
    index: Index,
    /// Told of each batch after it is readable, before it is acknowledged.
    hook: RwLock<Option<crate::store::CommitHook>>,
    head: watch::Sender<Head>,
    appends: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    /// How long each batch's write and sync took.
    commit_clock: crate::store::CommitClock,
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
            index,
            hook: RwLock::new(None),
            head: watch::Sender::new(Head { position, open }),
            appends: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            commit_clock: crate::store::CommitClock::default(),
        }
    }

    fn add_segment(&self, file: Arc<SegmentFile>) {
        self.index.add_segment(file);
    }

    /// Makes durable records visible, tells the hook, then wakes whoever
    /// waits for them. An index that cannot take them stops the store's
    /// appends (the records are durable all the same; the next open indexes
    /// them from the log).
    fn publish(
        &self,
        records: Vec<RecordedEvent>,
        places: &[index::Place],
        claims: &[(String, crate::store::Held)],
    ) -> Result<()> {
        let count = records.len();
        let position = records.last().map(|r| r.position);
        let indexed = self.index.extend(records, places, claims);
        let hook = self.hook.read().unwrap_or_else(|e| e.into_inner());
        if let Some(hook) = hook.as_ref() {
            self.index.with_recent_tail(count, |part| hook(part));
        }
        drop(hook);
        if let Some(position) = position {
            self.head.send_modify(|h| h.position = position);
        }
        indexed
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
            .field("index", &self.index.head())
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct WriterHandle {
    requests: mpsc::Sender<Command>,
    thread: JoinHandle<()>,
}

/// The embedded segment-log store.
#[derive(Debug)]
pub struct EmbeddedStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<WriterHandle>>,
    lock: Mutex<Option<File>>,
    /// The file layer compactions write through; `None` when read-only.
    fs: Option<Arc<dyn Fs>>,
    /// Held by a compaction for its whole run: one at a time.
    compacting: tokio::sync::Mutex<()>,
    compaction: Mutex<CompactionStats>,
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
        // Made (or narrowed to) 0700 on every open: it holds every tenant's data.
        crate::files::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        if !log_dir.exists() {
            crate::files::create_dir_all(&log_dir)
                .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
            // The new directories must survive a crash along with what goes in them.
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            for made in [Some(dir), parent].into_iter().flatten() {
                fs.sync_dir(made)
                    .map_err(|e| Error::io(format!("syncing {}", made.display()), e))?;
            }
        }
        let lock = lock(dir)?;
        compact::clean_up(&log_dir, fs.as_ref())?;
        spare::remove_leftover(&log_dir, fs.as_ref()).map_err(|e| {
            Error::io(
                format!("removing the spare segment in {}", log_dir.display()),
                e,
            )
        })?;
        let files = segment::list(&log_dir)?;
        let opened = open::for_writing(
            &log_dir,
            &files,
            options.claims_of.clone(),
            options.index_cache,
        )?;
        let scan = opened.scan;
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
                size: std::fs::metadata(&last.path)
                    .map_err(|e| Error::io(format!("opening {}", last.path.display()), e))?
                    .len(),
            }),
            None => None,
        };
        let files: Vec<(u64, PathBuf)> = files
            .into_iter()
            .filter(|(_, path)| Some(path) != scan.torn_header.as_ref())
            .collect();
        let head = scan.sequencer.head();
        let index = Index::new(Some(opened.kv), opened.pending, &files, head)?;
        let shared = Arc::new(Shared::new(index, true));
        let spare = options
            .spare_segment
            .then(|| Spare::start(fs.clone(), &log_dir, options.segment_size))
            .transpose()
            .map_err(|e| Error::io("starting the log's spare segment", e))?;
        let writer = Writer::new(
            fs.clone(),
            log_dir,
            options.segment_size,
            head,
            scan.sequencer.clock(),
            active,
            shared.clone(),
        )
        .with_spare(spare);
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
            fs: Some(fs),
            compacting: tokio::sync::Mutex::new(()),
            compaction: Mutex::new(CompactionStats::default()),
        })
    }

    /// Opens `dir` for reading alongside a running writer: takes no lock,
    /// never writes, and reads a torn tail as absent. Sees the log as it was
    /// at open. The persisted index is the writer's: this reads the log in
    /// position order only (`read_all`, `read_batch`), which is what the
    /// audit and rebuild commands do; `read_stream` is refused.
    pub fn open_read_only(dir: &Path) -> Result<EmbeddedStore> {
        let log_dir = dir.join("log");
        let (files, head) = if log_dir.exists() {
            let files = segment::list(&log_dir)?;
            let head = match files.last() {
                Some((first, path)) => segment::check_last(*first, path)?.head,
                None => 0,
            };
            (files, head)
        } else {
            std::fs::metadata(dir)
                .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
            (Vec::new(), 0)
        };
        let index = Index::new(None, index::Pending::default(), &files, head)?;
        Ok(EmbeddedStore {
            dir: dir.to_owned(),
            shared: Arc::new(Shared::new(index, false)),
            writer: Mutex::new(None),
            lock: Mutex::new(None),
            fs: None,
            compacting: tokio::sync::Mutex::new(()),
            compaction: Mutex::new(CompactionStats::default()),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            appends: self.shared.appends.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }

    /// What the compactions of [`EventStore::remove_contents`] have done
    /// since the store opened.
    pub fn compaction_stats(&self) -> CompactionStats {
        *self.compaction.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has the writer seal the active segment if it holds any frame, so
    /// that every durable frame lies in a sealed segment.
    async fn seal(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.ask_writer(Command::Seal(reply), answer)
            .await?
            .map_err(|e| Error::io("sealing the active segment", e))
    }

    /// Hands `command` to the writer thread and waits for its reply on
    /// `answer`.
    async fn ask_writer<T>(&self, command: Command, answer: oneshot::Receiver<T>) -> Result<T> {
        let sent = match self.writer_handle().as_ref() {
            Some(writer) => writer.requests.send(command).is_ok(),
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
            .map_err(|_| Error::Unavailable("the log writer stopped".into()))
    }

    /// Stops taking appends, lets the writer finish the batch in hand,
    /// writes the index out, and releases the directory. Reads keep working.
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
        if let Err(e) = self.shared.index.close() {
            tracing::warn!(error = %e, "writing the log's index out failed; the next open scans more of the log");
        }
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

/// Parts a page's scattered positions are read in at once
/// ([`EventStore::read_positions`]): this machine's disk answered random
/// reads 2.5 times faster four at a time than one at a time.
const POSITION_READS: usize = 4;

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Unavailable(format!("a blocking task failed: {e}")))
}

/// Takes the directory's lock file, or names the directory that is taken.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = crate::files::options()
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
        claims: Vec<crate::store::Claim>,
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
        self.ask_writer(Command::Append(request), answer).await?
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let locs = self.shared.index.locate_stream(stream, from, max)?;
        self.read(locs).await
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let index = &self.shared.index;
        // The projector asks for what was just committed: serve it from memory.
        if let Some(events) = index.recent_from(from.max(1), max) {
            return Ok(events);
        }
        let locs = index.locate_all(from, max, self.head())?;
        self.read(locs).await
    }

    async fn read_positions(&self, positions: &[u64]) -> Result<Vec<RecordedEvent>> {
        let head = self.head();
        // Positions scattered through the log are a read of the disk each
        // when the page cache does not hold them: a page's are found and
        // read in a few parts at once on the blocking pool, not in turn.
        let part = positions.len().div_ceil(POSITION_READS).max(1);
        let reads: Vec<_> = positions
            .chunks(part)
            .map(|part| {
                let (shared, part) = (self.shared.clone(), part.to_vec());
                tokio::task::spawn_blocking(move || {
                    let mut locs = Vec::with_capacity(part.len());
                    for position in part {
                        let found = shared.index.locate_all(position, 1, head)?;
                        if found.len() != 1 {
                            return Err(Error::Unavailable(format!(
                                "the log holds no event at position {position}"
                            )));
                        }
                        locs.extend(found);
                    }
                    index::read(&locs)
                })
            })
            .collect();
        let mut events = Vec::with_capacity(positions.len());
        for read in reads {
            events.extend(
                read.await
                    .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))??,
            );
        }
        Ok(events)
    }

    #[tracing::instrument(level = "debug", skip(self, spent))]
    async fn read_batch(&self, from: u64, max: usize, mut spent: Batch) -> Result<Batch> {
        let index = &self.shared.index;
        if let Some(events) = index.recent_from(from.max(1), max) {
            return Ok(Batch::from(events));
        }
        let locs = index.locate_all(from, max, self.head())?;
        spent.clear();
        if locs.is_empty() {
            return Ok(spent);
        }
        tokio::task::spawn_blocking(move || index::read_archives(&locs, spent))
            .await
            .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }

    fn removes_contents(&self) -> bool {
        // Not when opened read-only: `remove_contents` says so then.
        self.fs.is_some()
    }

    /// Rewrites each segment that holds a content to remove (see the
    /// `compact` module). A content in the active segment is removed too:
    /// the writer first seals that segment and starts a new one, so each
    /// call that reaches the active segment leaves one more segment file;
    /// callers should gather positions and remove them together. Calls run
    /// one at a time; appends and reads go on meanwhile.
    async fn remove_contents(&self, positions: &[u64]) -> Result<u64> {
        let Some(fs) = self.fs.clone() else {
            return Err(Error::Unavailable(format!(
                "{} is open read-only",
                self.dir.display()
            )));
        };
        if self.writer_handle().is_none() {
            return Err(Error::Unavailable(format!(
                "{} is closed",
                self.dir.display()
            )));
        }
        let _one = self.compacting.lock().await;
        let head = self.head();
        let mut wanted: Vec<u64> = positions
            .iter()
            .copied()
            .filter(|p| (1..=head).contains(p))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let shared = self.shared.clone();
        let holding =
            blocking(move || compact::holding_content(&shared.index, &wanted, head)).await??;
        let active_first = self
            .shared
            .index
            .segment_files()
            .last()
            .map_or(1, |(first, _)| *first);
        if holding.last().is_some_and(|&p| p >= active_first) {
            self.seal().await?;
        }
        let shared = self.shared.clone();
        let log_dir = self.dir.join("log");
        let mut stats = self.compaction_stats();
        let (removed, stats) = blocking(move || {
            let removed =
                compact::remove(fs.as_ref(), &log_dir, &shared.index, &holding, &mut stats);
            (removed, stats)
        })
        .await?;
        *self.compaction.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        removed
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
            times: self.shared.commit_clock.times(),
        })
    }

    fn on_commit(&self, hook: crate::store::CommitHook) -> bool {
        *self.shared.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
        true
    }
}
