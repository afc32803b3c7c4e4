//! The file layer under the log's write path: every byte the embedded store
//! writes, every sync, rename and truncation goes through [`Fs`] and [`LogFile`],
//! so a test can make a write fail with ENOSPC or a sync with EIO and watch the
//! store recover. Reads do not go through it: they cannot harm the log.
//!
//! [`RealFs`] is the only production implementation; it adds no buffering, so a
//! successful [`LogFile::sync`] means the bytes written before it are on disk.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Opens, creates and removes log files, and makes directory entries durable.
pub trait Fs: Send + Sync + fmt::Debug {
    /// Opens an existing file for writing at explicit offsets.
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Creates a file for writing, emptying any file already at `path`.
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Puts the file at `from` in the place of the one at `to`, in one atomic
    /// step; not durable until [`Fs::sync_dir`]. By default the operating
    /// system's rename, which is what every implementation but a fault
    /// injector wants.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Makes the entries of directory `dir` (created or removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One file of the log, open for writing.
pub trait LogFile: Send + fmt::Debug {
    /// Writes all of `buf` at `offset`; on error an unknown prefix may be written.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; not durable until [`LogFile::sync`].
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Grows the file to `len` bytes of zeros, written and synced, so that
    /// writes below `len` change neither the file's size nor its block map
    /// and a sync after them flushes data alone.
    fn allocate(&mut self, len: u64) -> io::Result<()>;
}

/// The operating system's file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

impl Fs for RealFs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        // Not `append(true)`: positioned writes must land where they are aimed.
        let file = OpenOptions::new().write(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = crate::files::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl LogFile for RealFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn allocate(&mut self, len: u64) -> io::Result<()> {
        let from = self.0.metadata()?.len();
        if len <= from {
            return Ok(());
        }
        reserve(&self.0, len)?;
        // Zeros written for real: blocks fallocate reserves stay marked
        // unwritten, and the sync after the first write into them would have
        // to record the change; on ext4 a small write + fdatasync runs faster
        // into written zeros than into fallocated space (BENCHMARKS.md, "What
        // the profiles showed", HTTP record-attempt).
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0; usize::try_from(CHUNK.min(len - from)).map_err(io::Error::other)?];
        let mut at = from;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            self.0.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.0.sync_data()
    }
}

/// Reserves the blocks up to `len` in one go, so a full disk is found before
/// any zeros are written; best effort where the file system cannot.
#[cfg(target_os = "linux")]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let len = i64::try_from(len).map_err(io::Error::other)?;
    match fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, 0, len) {
        Ok(()) | Err(nix::errno::Errno::EOPNOTSUPP) => Ok(()),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}
