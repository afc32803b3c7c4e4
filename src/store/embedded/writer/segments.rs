//! Starting segments: the active segment and the zeros written ahead of its
//! frames, and the start of the next segment when the active one is full or
//! a start is asked for: from the spare made ahead when one is ready, from a
//! new file when not.

use std::io;
use std::path::{Path, PathBuf};

use super::Writer;
use crate::store::embedded::fs::LogFile;
use crate::store::embedded::index::SegmentFile;
use crate::store::embedded::segment;
use crate::store::embedded::spare::{self, Spare};

/// How much the writer allocates past the last frame at a time. A write
/// inside written zeros changes neither the file's size nor its block map, so
/// the sync after it flushes data and no inode: one device round trip fewer
/// per batch. The zeros past the last frame read as the end of the log (see
/// [`segment::data_end`]); a segment is cut back to its last frame when the
/// next one starts. Small, because allocating pauses appends while the zeros
/// are written and synced (what that costs: BENCHMARKS.md, "Figures behind
/// the code's constants").
pub(super) const ALLOCATE_AHEAD: u64 = 2 * 1024 * 1024;

/// In a lull, the writer allocates again when less than this is left, so a
/// batch under steady load rarely waits for it (unless a spare is ready).
pub(super) const ALLOCATE_LOW: u64 = 1024 * 1024;

/// The segment that takes new frames.
#[derive(Debug)]
pub struct Active {
    pub file: Box<dyn LogFile>,
    pub path: PathBuf,
    /// Where the last durable frame ends; the next write goes here.
    pub len: u64,
    /// The file's size as this writer last set it; zeros lie between `len` and it.
    pub size: u64,
}

impl Active {
    /// Makes sure the file holds written zeros up to `need` (where the batch
    /// in hand will end), and some way past it, but not past the segment's
    /// size unless the batch is. Best effort: when it fails (a full disk, say),
    /// the file just grows with each write, as the write itself will tell.
    pub(super) fn allocate_ahead(&mut self, need: u64, segment_size: u64, failing: &mut bool) {
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

impl Writer {
    /// Starts a new segment when the active one is full, when there is none,
    /// or when the last start failed: after a failed start the active segment
    /// takes no more frames, since the next one may already exist.
    pub(super) fn roll_if_full(&mut self) -> io::Result<()> {
        let full = self.roll_failed
            || self
                .active
                .as_ref()
                .is_none_or(|a| a.len >= self.segment_size && a.len > segment::HEADER_LEN as u64);
        if !full {
            return Ok(());
        }
        self.roll()
    }

    /// Whether `bytes` more would go past the active segment's zeros, in a
    /// segment that holds frames already.
    pub(super) fn needs_zeros(&self, bytes: usize) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.len > segment::HEADER_LEN as u64 && a.len + bytes as u64 > a.size)
    }

    /// Asks for the first spare once the active segment holds the less of
    /// [`ALLOCATE_LOW`] and half a segment; later ones are asked for as each
    /// is taken.
    pub(super) fn ask_for_a_spare(&mut self) {
        let Some(spare) = self.spare.as_ref().filter(|_| !self.spare_asked) else {
            return;
        };
        let enough = ALLOCATE_LOW.min(self.segment_size / 2);
        if self.active.as_ref().is_some_and(|a| a.len >= enough) {
            spare.renew();
            self.spare_asked = true;
        }
    }

    pub(super) fn spare_ready(&self) -> bool {
        self.spare.as_ref().is_some_and(Spare::is_ready)
    }

    /// Seals the active segment, if any, and starts the next.
    pub(super) fn roll(&mut self) -> io::Result<()> {
        // A sealed segment ends at its last frame: cut the allocated zeros off
        // before the next segment exists, so a crash cannot leave them inside the log.
        if let Some(active) = self.active.as_mut().filter(|a| a.size > a.len) {
            active.file.truncate(active.len)?;
            self.shared.count_fsync();
            active.file.sync()?;
            active.size = active.len;
        }
        let first = self.head + 1;
        let path = self.log_dir.join(segment::file_name(first));
        let ready = self.spare.as_ref().and_then(Spare::take);
        let took_spare = ready.is_some();
        let made = match ready {
            Some(ready) => self.promote(ready, &path, first),
            None => self.create_segment(&path, first),
        };
        let made = made.and_then(|active| {
            let reader = SegmentFile::open(path.clone()).map_err(io::Error::other)?;
            Ok((active, reader))
        });
        if made.is_err() {
            // Leave no half-made segment behind: writes keep failing until one
            // is made whole, so the old segment never grows past this point.
            let _ = self.fs.remove(&path);
            if took_spare {
                let _ = self.fs.remove(&self.log_dir.join(spare::FILE_NAME));
            }
            let _ = self.fs.sync_dir(&self.log_dir);
        }
        // Only now: the spare taken has left its name, or was removed. A log
        // that has not asked for its first spare yet does not ask here.
        if let Some(spare) = self.spare.as_ref().filter(|_| self.spare_asked) {
            spare.renew();
        }
        self.roll_failed = made.is_err();
        let (active, reader) = made?;
        self.shared.add_segment(reader);
        self.active = Some(active);
        Ok(())
    }

    /// Makes the spare the segment that starts at `first`.
    fn promote(&self, ready: spare::Ready, path: &Path, first: u64) -> io::Result<Active> {
        let from = ready.path;
        self.begin(ready.file, path, first, ready.size, Some(&from))
    }

    fn create_segment(&self, path: &Path, first: u64) -> io::Result<Active> {
        let file = self.fs.create(path)?;
        self.begin(file, path, first, 0, None)
    }

    /// Writes and syncs the header of the segment that starts at `first` in
    /// `file` (zeros up to `size`), then gives it its name: moved there
    /// `from` where it was made ahead, so a segment never lacks its header,
    /// and the directory synced.
    fn begin(
        &self,
        mut file: Box<dyn LogFile>,
        path: &Path,
        first: u64,
        size: u64,
        from: Option<&Path>,
    ) -> io::Result<Active> {
        let header = segment::header(first);
        file.write_at(0, &header)?;
        self.shared.count_fsync();
        file.sync()?;
        if let Some(from) = from {
            self.fs.rename(from, path)?;
        }
        self.shared.count_fsync();
        self.fs.sync_dir(&self.log_dir)?;
        Ok(Active {
            file,
            path: path.to_owned(),
            len: header.len() as u64,
            size: size.max(header.len() as u64),
        })
    }
}
