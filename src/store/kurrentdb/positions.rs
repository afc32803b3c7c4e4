//! The dense positions of the ledger, kept on disk: entry `n` is the `$all`
//! position (commit, prepare) of the ledger's `n`-th event, counted in `$all`
//! order among the events under the ledger's prefix.
//!
//! KurrentDB's own positions are log offsets, far from dense; hookledger's
//! positions are 1, 2, 3, … and its ledger digest hashes them. Every node
//! derives the same numbering from the same `$all` order, and keeps it here
//! so that a read from position `n` starts at the right place in `$all`, and
//! an event read from its stream finds its position, without holding the
//! whole numbering in memory: 16 bytes per event on disk, a binary search
//! per lookup.
//!
//! The file is a cache of what `$all` says. Its header names the ledger
//! prefix; the store checks its first and last entries against the server on
//! open and starts it afresh (a full scan of the ledger) when they disagree.
//! One process at a time keeps it (a file lock); another process on the same
//! data directory keeps a private copy, removed when it closes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"HLKDBPOS";
const FORMAT: u32 = 1;
/// Magic, format, reserved, SHA-256 of the prefix, reserved.
const HEADER: u64 = 64;
const ENTRY: u64 = 16;
/// Entries written together.
const FLUSH_AT: usize = 4096;

/// A `$all` position: (commit, prepare).
pub type LogPosition = (u64, u64);

#[derive(Debug)]
pub struct Positions {
    file: File,
    path: PathBuf,
    /// A private copy, removed on drop.
    private: bool,
    /// Entries on disk.
    written: u64,
    /// Entries after those, not yet written.
    pending: Vec<LogPosition>,
    last: Option<LogPosition>,
}

impl Positions {
    /// Opens the positions of the ledger under `prefix` in `dir`.
    pub fn open(dir: &Path, prefix: &str) -> io::Result<Positions> {
        std::fs::create_dir_all(dir)?;
        let tag = &hex::encode(Sha256::digest(prefix.as_bytes()))[..12];
        let shared = dir.join(format!("kurrentdb-{tag}.positions"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&shared)?;
        let (file, path, private) = match file.try_lock() {
            Ok(()) => (file, shared, false),
            Err(TryLockError::WouldBlock) => {
                let path = dir.join(format!("kurrentdb-{tag}.positions.{}", std::process::id()));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?;
                (file, path, true)
            }
            Err(TryLockError::Error(e)) => return Err(e),
        };
        let mut positions = Positions {
            file,
            path,
            private,
            written: 0,
            pending: Vec::new(),
            last: None,
        };
        let header = header(prefix);
        let mut found = [0u8; HEADER as usize];
        let size = positions.file.metadata()?.len();
        let usable = size >= HEADER
            && positions.file.read_exact_at(&mut found, 0).is_ok()
            && found == header;
        if !usable {
            positions.file.set_len(0)?;
            positions.file.write_all_at(&header, 0)?;
        } else {
            // A torn last entry (a crash mid-write) is dropped.
            positions.written = (size - HEADER) / ENTRY;
            positions.file.set_len(HEADER + positions.written * ENTRY)?;
            if positions.written > 0 {
                positions.last = positions.get(positions.written)?;
            }
        }
        Ok(positions)
    }

    /// How many ledger events are numbered.
    pub fn len(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// The `$all` position of the last numbered event.
    pub fn last(&self) -> Option<LogPosition> {
        self.last
    }

    /// Numbers the ledger event at `position`, which must come after the last
    /// one; returns its ledger position.
    pub fn push(&mut self, position: LogPosition) -> io::Result<u64> {
        if self.last.is_some_and(|last| position <= last) {
            return Err(io::Error::other(format!(
                "$all went backwards: {position:?} after {:?}",
                self.last
            )));
        }
        self.pending.push(position);
        self.last = Some(position);
        if self.pending.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(self.len())
    }

    /// The `$all` position of ledger position `n` (1-based), if numbered.
    pub fn get(&mut self, n: u64) -> io::Result<Option<LogPosition>> {
        if n == 0 || n > self.len() {
            return Ok(None);
        }
        if n > self.written {
            return Ok(Some(self.pending[(n - self.written - 1) as usize]));
        }
        let mut entry = [0u8; ENTRY as usize];
        self.file
            .read_exact_at(&mut entry, HEADER + (n - 1) * ENTRY)?;
        let (commit, prepare) = entry.split_at(8);
        let number = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Ok(Some((number(commit), number(prepare))))
    }

    /// The ledger position of the event whose prepare position is `prepare`,
    /// if it is numbered.
    pub fn find(&mut self, prepare: u64) -> io::Result<Option<u64>> {
        // Prepare positions grow with the ledger position: binary search.
        let (mut low, mut high) = (1, self.len());
        while low <= high {
            let middle = low + (high - low) / 2;
            let Some((_, at)) = self.get(middle)? else {
                return Ok(None);
            };
            match at.cmp(&prepare) {
                std::cmp::Ordering::Equal => return Ok(Some(middle)),
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle - 1,
            }
        }
        Ok(None)
    }

    /// Forgets every entry: the numbering starts again from the ledger's first event.
    pub fn reset(&mut self) -> io::Result<()> {
        self.pending.clear();
        self.written = 0;
        self.last = None;
        self.file.set_len(HEADER)
    }

    /// Writes the pending entries.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(self.pending.len() * ENTRY as usize);
        for (commit, prepare) in &self.pending {
            bytes.extend_from_slice(&commit.to_le_bytes());
            bytes.extend_from_slice(&prepare.to_le_bytes());
        }
        self.file
            .write_all_at(&bytes, HEADER + self.written * ENTRY)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Whether this is a private copy (another process keeps the shared one).
    pub fn is_private(&self) -> bool {
        self.private
    }
}

impl Drop for Positions {
    fn drop(&mut self) {
        if self.private {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = self.flush();
        }
    }
}

fn header(prefix: &str) -> [u8; HEADER as usize] {
    let mut header = [0u8; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    header[16..48].copy_from_slice(&Sha256::digest(prefix.as_bytes()));
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_persist_and_are_found_by_prepare_position() {
        let dir = tempfile::tempdir().unwrap();
        let mut positions = Positions::open(dir.path(), "hl").unwrap();
        // Sparse, with events of one append sharing a commit position.
        let all: Vec<LogPosition> = (0..10_000u64)
            .map(|i| (4096 + (i / 3) * 3 * 977, 4096 + i * 977))
            .collect();
        for (i, &p) in all.iter().enumerate() {
            assert_eq!(positions.push(p).unwrap(), i as u64 + 1);
        }
        assert!(positions.push(all[5]).is_err(), "$all cannot go backwards");
        assert_eq!(positions.find(all[7000].1).unwrap(), Some(7001));
        assert_eq!(positions.find(all[7000].1 + 1).unwrap(), None);
        drop(positions);

        let mut positions = Positions::open(dir.path(), "hl").unwrap();
        assert_eq!(positions.len(), 10_000);
        assert_eq!(positions.last(), Some(all[9999]));
        assert_eq!(positions.get(1).unwrap(), Some(all[0]));
        assert_eq!(positions.get(10_001).unwrap(), None);
        assert_eq!(positions.find(all[0].1).unwrap(), Some(1));
        assert_eq!(positions.find(all[9999].1).unwrap(), Some(10_000));

        // Another prefix in the same directory is another ledger.
        let other = Positions::open(dir.path(), "other").unwrap();
        assert_eq!(other.len(), 0);
    }

    #[test]
    fn a_torn_entry_is_dropped_and_a_second_process_keeps_a_private_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut positions = Positions::open(dir.path(), "hl").unwrap();
        positions.push((10, 10)).unwrap();
        positions.push((20, 20)).unwrap();
        positions.flush().unwrap();
        let path = positions.path.clone();
        // A lock is per open file description: a second open in this process
        // finds it taken, as another process would.
        let second = Positions::open(dir.path(), "hl").unwrap();
        assert!(second.is_private() && second.len() == 0);
        let private = second.path.clone();
        drop(second);
        assert!(!private.exists(), "the private copy is removed");
        drop(positions);

        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(HEADER + 2 * ENTRY - 5).unwrap();
        let positions = Positions::open(dir.path(), "hl").unwrap();
        assert_eq!(positions.len(), 1);
        assert_eq!(positions.last(), Some((10, 10)));
    }
}
