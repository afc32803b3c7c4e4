//! Removing content from the log's segments: the step of erasure that takes
//! the bodies off the disk (`EventStore::remove_contents`).
//!
//! A segment is rewritten whole and crash-safely: its frames are streamed
//! into a temporary file beside it (`{segment}.compacting`), those that lose
//! their content re-encoded without it and every other byte copied as it
//! was; the file is synced and renamed over the segment, and the directory
//! synced. A crash leaves the old segment or the new one, never a mix, and
//! each frame checksummed either way. Only sealed segments are rewritten:
//! the writer is asked to seal the active one first when it holds a content
//! to remove, so a removal reaches the disk before the call returns.
//!
//! Frames after a shortened one move, so the index learns their new places
//! (`index::Index::relocate`) and is written out durably. Until then a
//! marker file (`index.relocating`) stands in the log directory, made durable
//! before the first rename: an open that finds it rebuilds the index from
//! the log rather than trust places a crash may have left stale. An open
//! also removes temporary files a crash left.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rkyv::rancor;

use crate::store::embedded::fs::Fs;
use crate::store::embedded::index::{self, Index, Moved, SegmentFile};
use crate::store::embedded::{frame, segment};
use crate::store::{ArchivedRecordedEvent, Error, Result};

/// The extension of a segment's rewrite before it takes the segment's place.
pub const TEMP_EXTENSION: &str = "compacting";

/// Bytes of a rewrite gathered before each write to its file.
const WRITE_CHUNK: usize = 1 << 20;

/// How many positions are read at a time to see which still hold content.
const CHECK_CHUNK: usize = 256;

/// What compactions have done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Segments rewritten.
    pub segments: u64,
    /// Bytes of the segments as they were before their rewrites.
    pub bytes_read: u64,
    /// Bytes of the segments as rewritten.
    pub bytes_written: u64,
    /// Contents removed.
    pub removed: u64,
}

/// The file whose presence says that the index may hold places a
/// compaction changed: the next open rebuilds it from the log.
pub fn marker(log_dir: &Path) -> PathBuf {
    log_dir.join("index.relocating")
}

fn temp_path(log_dir: &Path, first: u64) -> PathBuf {
    log_dir.join(format!("{}.{TEMP_EXTENSION}", segment::file_name(first)))
}

/// Removes the rewrites a crash left unfinished in `log_dir`. Only a store
/// that holds the directory's lock may call it.
pub fn clean_up(log_dir: &Path, fs: &dyn Fs) -> Result<()> {
    let entries = std::fs::read_dir(log_dir)
        .map_err(|e| Error::io(format!("listing {}", log_dir.display()), e))?;
    let mut removed = false;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("listing {}", log_dir.display()), e))?
            .path();
        if path.extension().is_some_and(|e| e == TEMP_EXTENSION) {
            tracing::warn!(file = %path.display(), "removing a segment rewrite a crash left unfinished");
            fs.remove(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            removed = true;
        }
    }
    if removed {
        fs.sync_dir(log_dir)
            .map_err(|e| Error::io(format!("syncing {}", log_dir.display()), e))?;
    }
    Ok(())
}

/// Of `positions` (sorted, each at most `head`), those whose frames hold
/// content, as the index serves them now.
pub fn holding_content(index: &Index, positions: &[u64], head: u64) -> Result<Vec<u64>> {
    let mut holding = Vec::new();
    for chunk in positions.chunks(CHECK_CHUNK) {
        let mut locs = Vec::with_capacity(chunk.len());
        for &position in chunk {
            locs.extend(index.locate_all(position, 1, head)?);
        }
        for event in index::read(&locs)? {
            if !event.content.is_empty() {
                holding.push(event.position);
            }
        }
    }
    Ok(holding)
}

/// Removes the content of the frames at `positions` (sorted; each in a
/// sealed segment and holding content) from the segments in `log_dir`, and
/// takes the rewritten segments into `index`. Also finishes what an earlier
/// call left undone after its renames (its marker still stands).
pub fn remove(
    fs: &dyn Fs,
    log_dir: &Path,
    index: &Index,
    positions: &[u64],
    stats: &mut CompactionStats,
) -> Result<u64> {
    let marker = marker(log_dir);
    let io = |what: &str, path: &Path| {
        let what = format!("{what} {}", path.display());
        move |e| Error::io(what, e)
    };
    let mut by_segment: BTreeMap<u64, (Arc<SegmentFile>, Vec<u64>)> = BTreeMap::new();
    let segments = index.segment_files();
    for &position in positions {
        let i = segments.partition_point(|(first, _)| *first <= position);
        let Some((first, file)) = i.checked_sub(1).map(|i| &segments[i]) else {
            continue;
        };
        by_segment
            .entry(*first)
            .or_insert_with(|| (file.clone(), Vec::new()))
            .1
            .push(position);
    }
    if by_segment.is_empty() && !marker.exists() {
        return Ok(0);
    }
    if !by_segment.is_empty() {
        let mut file = fs.create(&marker).map_err(io("creating", &marker))?;
        file.write_at(0, b"a compaction is changing the log's segments\n")
            .and_then(|()| file.sync())
            .map_err(io("writing", &marker))?;
        fs.sync_dir(log_dir).map_err(io("syncing", log_dir))?;
    }
    let mut removed = 0;
    for (first, (file, targets)) in by_segment {
        let temp = temp_path(log_dir, first);
        let rewritten = match rewrite(fs, &file, first, &targets, &temp) {
            Ok(rewritten) => rewritten,
            Err(e) => {
                let _ = fs.remove(&temp);
                return Err(e);
            }
        };
        if let Err(e) = fs.rename(&temp, &file.path) {
            let _ = fs.remove(&temp);
            return Err(io("renaming a rewrite over", &file.path)(e));
        }
        // The path now names the new file: reads move to it with the new places.
        let new = SegmentFile::open(file.path.clone())?;
        index.relocate(first, new, &rewritten.moved, &rewritten.removed)?;
        removed += rewritten.removed.len() as u64;
        stats.segments += 1;
        stats.bytes_read += rewritten.bytes_read;
        stats.bytes_written += rewritten.bytes_written;
        stats.removed += rewritten.removed.len() as u64;
    }
    fs.sync_dir(log_dir).map_err(io("syncing", log_dir))?;
    index.flush()?;
    match fs.remove(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing", &marker)(e)),
    }
    Ok(removed)
}

/// What the rewrite of one segment did.
#[derive(Debug, Default)]
struct Rewritten {
    /// The positions whose content it removed, in order.
    removed: Vec<u64>,
    /// The frames whose place or length changed.
    moved: Vec<Moved>,
    bytes_read: u64,
    bytes_written: u64,
}

/// Writes the segment `file` (first position `first`) to `temp` without the
/// content of the frames at `targets`, and syncs it.
fn rewrite(
    fs: &dyn Fs,
    file: &SegmentFile,
    first: u64,
    targets: &[u64],
    temp: &Path,
) -> Result<Rewritten> {
    let corrupt = |offset: u64, position: u64, reason: String| Error::Corrupt {
        file: file.path.clone(),
        offset,
        position,
        reason,
    };
    let read_error = |e| Error::io(format!("reading {}", file.path.display()), e);
    let write_error = |e| Error::io(format!("writing {}", temp.display()), e);
    let mut reader = BufReader::with_capacity(
        WRITE_CHUNK,
        At {
            file: file.reader(),
            offset: 0,
        },
    );
    let mut out = fs.create(temp).map_err(write_error)?;
    let mut buf = Vec::with_capacity(WRITE_CHUNK + frame::HEADER_LEN);
    let mut header = [0; segment::HEADER_LEN];
    reader.read_exact(&mut header).map_err(read_error)?;
    match segment::parse_header(&header) {
        Ok(named) if named == first => {}
        Ok(named) => {
            return Err(corrupt(
                0,
                first,
                format!("segment starts at position {named}, expected {first}"),
            ));
        }
        Err(reason) => return Err(corrupt(0, first, reason)),
    }
    buf.extend_from_slice(&header);
    let mut done = Rewritten::default();
    let (mut old, mut new) = (header.len() as u64, header.len() as u64);
    let mut flushed = 0;
    let mut position = first;
    let mut targets = targets.iter().copied().peekable();
    let mut bytes = Vec::new();
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    loop {
        bytes.resize(frame::HEADER_LEN, 0);
        let got = read_full(&mut reader, &mut bytes).map_err(read_error)?;
        // The end, or zeros allocated past the last frame.
        if bytes[..got].iter().all(|&b| b == 0) {
            break;
        }
        let Some(len) = frame::length(&bytes).filter(|_| got == frame::HEADER_LEN) else {
            return Err(corrupt(
                old,
                position,
                "no whole frame header where a frame starts".into(),
            ));
        };
        bytes.resize(len, 0);
        reader
            .read_exact(&mut bytes[frame::HEADER_LEN..])
            .map_err(|e| corrupt(old, position, format!("frame cut short: {e}")))?;
        let parsed = frame::parse(&bytes).map_err(|reason| corrupt(old, position, reason))?;
        let strip = targets.next_if_eq(&position).is_some() && !parsed.content.is_empty();
        let new_len = if strip {
            frame::encode_without_content(&parsed, &mut buf) as u64
        } else {
            buf.extend_from_slice(&bytes);
            len as u64
        };
        if new != old || new_len != len as u64 {
            aligned.clear();
            aligned.extend_from_slice(parsed.archive);
            let event = rkyv::access::<ArchivedRecordedEvent, rancor::Error>(&aligned)
                .map_err(|e| corrupt(old, position, format!("frame does not decode: {e}")))?;
            if event.position.to_native() != position {
                return Err(corrupt(
                    old,
                    position,
                    format!("frame holds position {}", event.position.to_native()),
                ));
            }
            done.moved.push(Moved {
                position,
                stream: event.stream.as_str().to_owned(),
                version: event.version.to_native(),
                offset: new,
                len: new_len,
            });
        }
        if strip {
            done.removed.push(position);
        }
        old += len as u64;
        new += new_len;
        position += 1;
        if buf.len() >= WRITE_CHUNK {
            out.write_at(flushed, &buf).map_err(write_error)?;
            flushed += buf.len() as u64;
            buf.clear();
        }
    }
    if let Some(missing) = targets.next() {
        return Err(Error::Unavailable(format!(
            "segment {} ends at position {}, before position {missing}",
            file.path.display(),
            position - 1
        )));
    }
    out.write_at(flushed, &buf).map_err(write_error)?;
    out.sync()
        .map_err(|e| Error::io(format!("syncing {}", temp.display()), e))?;
    done.bytes_read = old;
    done.bytes_written = new;
    Ok(done)
}

/// Reads `buf.len()` bytes unless the end comes first; returns how many.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A file read in order by positioned reads, which leave the offset that
/// other readers of the same handle may use alone.
struct At<'a> {
    file: &'a File,
    offset: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}
