//! The group-commit writer: one thread that owns the active segment.
//!
//! Appends queue up on a channel while the previous fsync runs; the writer then
//! takes all of them, stages them in one [`Batch`](crate::store::sequencer::Batch),
//! writes their frames in one write (all but the last marked as continuing, so a
//! crash mid-write drops the whole batch), syncs once, and only after the sync succeeds
//! commits the sequencer, extends the index, publishes the head and replies. A
//! failed write or sync fails every append of the batch and cuts the file back to
//! its last durable length before anything else is written; nothing is ever
//! acknowledged that a sync did not cover.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use crate::store::embedded::fs::{Fs, LogFile};
use crate::store::embedded::index::SegmentFile;
use crate::store::embedded::{Shared, checkpoint, frame, segment};
use crate::store::sequencer::{Sequencer, now_micros};
use crate::store::{Appended, Error, Result};

/// Event bytes one batch takes at most; later appends wait for the next batch.
const BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How much the writer allocates past the last frame at a time. A write
/// inside written zeros changes neither the file's size nor its block map, so
/// the sync after it flushes data and no inode: one device round trip fewer
/// per batch. The zeros past the last frame read as the end of the log (see
/// [`segment::data_end`]); a segment is cut back to its last frame when the
/// next one starts. Small, because allocating pauses appends (zeros are
/// written and synced: about 2 ms for 2 MiB here).
const ALLOCATE_AHEAD: u64 = 2 * 1024 * 1024;

/// In a lull, the writer allocates again when less than this is left, so a
/// batch under steady load rarely waits for it.
const ALLOCATE_LOW: u64 = 1024 * 1024;

/// Events after which the writer persists the index again, at the first moment
/// no append is waiting; one is also written when the writer stops. Under
/// appends that never pause, a crash is recovered by scanning from the last one.
const CHECKPOINT_EVERY: u64 = 1_000_000;

/// One append waiting for the writer.
pub use crate::store::sequencer::Pending as Request;

/// The segment that takes new frames.
#[derive(Debug)]
pub struct Active {
    pub file: Box<dyn LogFile>,
    pub path: PathBuf,
    /// Where the last durable frame ends; the next write goes here.
    pub len: u64,
    /// CRC32C of the file's bytes up to `len`.
    pub crc: u32,
    /// The file's size as this writer last set it; zeros lie between `len` and it.
    pub size: u64,
}

impl Active {
    /// Makes sure the file holds written zeros up to `need` (where the batch
    /// in hand will end), and some way past it, but not past the segment's
    /// size unless the batch is. Best effort: when it fails (a full disk, say),
    /// the file just grows with each write, as the write itself will tell.
    fn allocate_ahead(&mut self, need: u64, segment_size: u64, failing: &mut bool) {
        if need <= self.size {
            return;
        }
        let target = (need + ALLOCATE_AHEAD).min(segment_size.max(need));
        if target <= need {
            return;
        }
        match self.file.allocate(target) {
            Ok(()) => {
                self.size = target;
                *failing = false;
            }
            Err(e) => {
                if !*failing {
                    tracing::warn!(file = %self.path.display(), error = %e,
                        "cannot allocate the log ahead of its writes; writing without");
                }
                *failing = true;
            }
        }
    }
}

#[derive(Debug)]
pub struct Writer {
    pub fs: Arc<dyn Fs>,
    pub log_dir: PathBuf,
    pub segment_size: u64,
    pub sequencer: Sequencer,
    pub active: Option<Active>,
    pub shared: Arc<Shared>,
    /// The active file may hold bytes past `active.len` from a failed write.
    damaged: bool,
    pending: VecDeque<Request>,
    /// The head the last persisted index covers.
    checkpointed: u64,
    /// A persisted index being written on its own thread, and the head it covers.
    saving: Option<std::thread::JoinHandle<(u64, io::Result<()>)>>,
    /// The last allocation failed; it is tried again all the same.
    allocate_failing: bool,
}

impl Writer {
    pub fn new(
        fs: Arc<dyn Fs>,
        log_dir: PathBuf,
        segment_size: u64,
        sequencer: Sequencer,
        active: Option<Active>,
        shared: Arc<Shared>,
        checkpointed: u64,
    ) -> Writer {
        Writer {
            fs,
            log_dir,
            segment_size,
            sequencer,
            active,
            shared,
            damaged: false,
            pending: VecDeque::new(),
            checkpointed,
            saving: None,
            allocate_failing: false,
        }
    }

    /// Serves appends until every sender is gone.
    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            if self.pending.is_empty() {
                match requests.recv() {
                    Ok(request) => self.pending.push_back(request),
                    Err(_) => {
                        self.finish_saving(true);
                        if self.sequencer.head() != self.checkpointed {
                            self.checkpoint(true);
                        }
                        return;
                    }
                }
            }
            self.pending.extend(requests.try_iter());
            let mut size = 0;
            let mut batch = Vec::new();
            while let Some(request) = self.pending.pop_front() {
                size += request.size();
                batch.push(request);
                if size >= BATCH_BYTES {
                    break;
                }
            }
            self.commit(batch);
            self.pending.extend(requests.try_iter());
            // Allocate in a lull too, so a batch under steady load rarely waits for it.
            if self.pending.is_empty()
                && !self.damaged
                && let Some(active) = self.active.as_mut()
            {
                let need = active.len + ALLOCATE_LOW;
                active.allocate_ahead(need, self.segment_size, &mut self.allocate_failing);
            }
            // Persist the index in a lull: encoding it pauses appends (about
            // 0.15 s per million streams), so never while appends are queued.
            self.pending.extend(requests.try_iter());
            if self.pending.is_empty()
                && self.finish_saving(false)
                && self.sequencer.head().saturating_sub(self.checkpointed) >= CHECKPOINT_EVERY
            {
                self.checkpoint(false);
            }
        }
    }

    /// Persists the index of everything durable so far, so the next open need
    /// not decode the whole log. A failure costs only that: the log is intact.
    /// The index is encoded here, where it cannot change underneath, and
    /// written and synced on a thread of its own unless `wait`: appends pause
    /// only for the encoding.
    fn checkpoint(&mut self, wait: bool) {
        let head = self.sequencer.head();
        let bytes = self.shared.index().checkpoint(&self.sequencer);
        let log_dir = self.log_dir.clone();
        if !wait {
            let spawned = std::thread::Builder::new()
                .name("index-save".into())
                .spawn(move || (head, checkpoint::write(&log_dir, &bytes)));
            match spawned {
                Ok(thread) => self.saving = Some(thread),
                Err(e) => {
                    tracing::warn!(error = %e, head, "cannot start saving the persisted index")
                }
            }
            return;
        }
        let written = checkpoint::write(&log_dir, &bytes);
        self.saved(head, written);
    }

    /// Takes in the result of a save in progress, waiting for it if `wait`;
    /// true when none is in progress any more.
    fn finish_saving(&mut self, wait: bool) -> bool {
        let Some(saving) = self.saving.take() else {
            return true;
        };
        if !wait && !saving.is_finished() {
            self.saving = Some(saving);
            return false;
        }
        match saving.join() {
            Ok((head, written)) => self.saved(head, written),
            Err(_) => tracing::warn!("saving the persisted index panicked"),
        }
        true
    }

    fn saved(&mut self, head: u64, written: io::Result<()>) {
        match written {
            Ok(()) => self.checkpointed = self.checkpointed.max(head),
            Err(e) => tracing::warn!(error = %e, head, "writing the persisted index failed"),
        }
    }

    fn commit(&mut self, mut requests: Vec<Request>) {
        if let Err(e) = self.recover().and_then(|()| self.roll_if_full()) {
            return fail(requests, "log not writable", &e);
        }
        let mut batch = self.sequencer.batch();
        let mut results = batch.stage_pending(&mut requests, now_micros());
        let (records, staged) = batch.finish();
        if records.is_empty() {
            return reply(requests, results);
        }
        let Some(active) = self.active.as_mut() else {
            return fail(
                requests,
                "log not writable",
                &io::Error::other("no active segment"),
            );
        };
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let at = active.len + buf.len() as u64;
            let continues = i + 1 < records.len();
            if let Err(reason) = frame::encode(record, continues, &mut buf) {
                let e = io::Error::new(io::ErrorKind::InvalidData, reason);
                return fail(requests, "encoding a frame", &e);
            }
            offsets.push(at);
        }
        let end = active.len + buf.len() as u64;
        active.allocate_ahead(end, self.segment_size, &mut self.allocate_failing);
        let written = active
            .file
            .write_at(active.len, &buf)
            .map_err(|e| ("writing", e))
            .and_then(|()| active.file.sync().map_err(|e| ("syncing", e)));
        self.shared.count_fsync();
        if let Err((what, e)) = written {
            self.damaged = true;
            // Cut the failed bytes off now; if that fails too, the next batch retries.
            let _ = self.recover();
            let context = format!("{what} {}", active_path(&self.active));
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(io_error(&context, &e));
            }
            return reply(requests, results);
        }
        active.len = end;
        active.size = active.size.max(end);
        active.crc = crc32c::crc32c_append(active.crc, &buf);
        self.sequencer.commit(staged);
        self.shared.publish(records, &offsets, end, active.crc);
        let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
        self.shared.count_batch(acknowledged);
        reply(requests, results);
    }

    /// Cuts the active file back to its durable length after a failed write.
    fn recover(&mut self) -> io::Result<()> {
        if !self.damaged {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            self.damaged = false;
            return Ok(());
        };
        tracing::warn!(file = %active.path.display(), len = active.len, "cutting back a failed write");
        active.file.truncate(active.len)?;
        active.size = active.len;
        self.shared.count_fsync();
        active.file.sync()?;
        self.damaged = false;
        Ok(())
    }

    /// Starts a new segment when the active one is full or there is none.
    fn roll_if_full(&mut self) -> io::Result<()> {
        let full = self
            .active
            .as_ref()
            .is_none_or(|a| a.len >= self.segment_size && a.len > segment::HEADER_LEN as u64);
        if !full {
            return Ok(());
        }
        // A sealed segment ends at its last frame: cut the allocated zeros off
        // before the next segment exists, so a crash cannot leave them inside the log.
        if let Some(active) = self.active.as_mut().filter(|a| a.size > a.len) {
            active.file.truncate(active.len)?;
            self.shared.count_fsync();
            active.file.sync()?;
            active.size = active.len;
        }
        let first = self.sequencer.head() + 1;
        let path = self.log_dir.join(segment::file_name(first));
        match self.create_segment(&path, first) {
            Ok(active) => {
                let reader = SegmentFile::open(path).map_err(io::Error::other)?;
                self.shared.add_segment(reader, active.len, active.crc);
                self.active = Some(active);
                Ok(())
            }
            Err(e) => {
                // Leave no half-made segment behind: writes keep failing until one
                // is made whole, so the old segment never grows past this point.
                let _ = self.fs.remove(&path);
                let _ = self.fs.sync_dir(&self.log_dir);
                Err(e)
            }
        }
    }

    fn create_segment(&self, path: &std::path::Path, first: u64) -> io::Result<Active> {
        let mut file = self.fs.create(path)?;
        let header = segment::header(first);
        file.write_at(0, &header)?;
        self.shared.count_fsync();
        file.sync()?;
        self.shared.count_fsync();
        self.fs.sync_dir(&self.log_dir)?;
        Ok(Active {
            file,
            path: path.to_owned(),
            len: header.len() as u64,
            crc: crc32c::crc32c(&header),
            size: header.len() as u64,
        })
    }
}

fn active_path(active: &Option<Active>) -> String {
    active
        .as_ref()
        .map_or_else(String::new, |a| a.path.display().to_string())
}

fn io_error(context: &str, e: &io::Error) -> Error {
    // io::Error is not Clone; every failed append gets its own copy.
    Error::io(context, io::Error::new(e.kind(), e.to_string()))
}

fn fail(requests: Vec<Request>, context: &str, e: &io::Error) {
    let results = requests.iter().map(|_| Err(io_error(context, e))).collect();
    reply(requests, results);
}

fn reply(requests: Vec<Request>, results: Vec<Result<Appended>>) {
    for (request, result) in requests.into_iter().zip(results) {
        // The caller may have gone away; its append stands all the same.
        let _ = request.reply.send(result);
    }
}
