//! The in-memory index of the durable log and the read path over it.
//!
//! The index maps each position to its segment and byte offset, and each stream
//! to its positions. It only ever holds frames whose fsync succeeded, so a read
//! through it can never see an unacknowledged append. Every read re-checks the
//! frame's checksum and position: bad bytes are refused, never served.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::embedded::segment::Scanned;
use crate::store::embedded::{checkpoint, frame};
use crate::store::sequencer::Sequencer;
use crate::store::{Batch, Error, RecordedEvent, Result};

/// A segment file open for positioned reads.
#[derive(Debug)]
pub struct SegmentFile {
    pub path: PathBuf,
    file: File,
}

impl SegmentFile {
    pub fn open(path: PathBuf) -> Result<Arc<SegmentFile>> {
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(Arc::new(SegmentFile { path, file }))
    }
}

#[derive(Debug)]
struct Segment {
    file: Arc<SegmentFile>,
    first_position: u64,
    /// Offset of each durable frame; entry `i` holds position `first_position + i`.
    offsets: Vec<u64>,
    /// Where the last durable frame ends.
    end: u64,
    /// CRC32C of the file up to `end`.
    crc: u32,
}

/// The most recent durable records kept in memory, so the projector that
/// follows the head reads what was just committed without a trip to the disk.
const RECENT_EVENTS: usize = 4096;
/// ... and at most this many bytes of event data and metadata.
const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// Where the durable events are.
#[derive(Debug, Default)]
pub struct Index {
    segments: Vec<Segment>,
    /// Stream name -> positions of its events, in version order.
    streams: HashMap<String, Vec<u64>>,
    head: u64,
    /// The last durable records, in position order, ending at `head`.
    recent: VecDeque<RecordedEvent>,
    recent_bytes: usize,
}

/// One frame to read.
#[derive(Debug, Clone)]
pub struct Loc {
    file: Arc<SegmentFile>,
    position: u64,
    offset: u64,
    len: u64,
}

impl Index {
    /// Builds the index of what a scan found, opening each segment for reads.
    pub fn new(segments: Vec<Scanned>, streams: HashMap<String, Vec<u64>>) -> Result<Index> {
        let mut index = Index {
            streams,
            ..Index::default()
        };
        for scanned in segments {
            index.head += scanned.offsets.len() as u64;
            index.segments.push(Segment {
                file: SegmentFile::open(scanned.path)?,
                first_position: scanned.first_position,
                offsets: scanned.offsets,
                end: scanned.end,
                crc: scanned.crc,
            });
        }
        Ok(index)
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The persisted form of the index, with the stream tips of `sequencer`,
    /// which must be at the same head.
    pub fn checkpoint(&self, sequencer: &Sequencer) -> Vec<u8> {
        let segments = self
            .segments
            .iter()
            .map(|s| (s.first_position, s.end, s.crc, s.offsets.as_slice()));
        checkpoint::encode(sequencer, segments, &self.streams)
    }

    /// Starts a new, empty segment whose first frame will hold the next position.
    pub fn add_segment(&mut self, file: Arc<SegmentFile>, end: u64, crc: u32) {
        self.segments.push(Segment {
            file,
            first_position: self.head + 1,
            offsets: Vec::new(),
            end,
            crc,
        });
    }

    /// Takes in `records`, now durable in the last segment at `offsets`, which
    /// ends at `end` with `crc` over its bytes.
    pub fn extend(&mut self, records: Vec<RecordedEvent>, offsets: &[u64], end: u64, crc: u32) {
        let Some(segment) = self.segments.last_mut() else {
            return;
        };
        segment.offsets.extend_from_slice(offsets);
        segment.end = end;
        segment.crc = crc;
        for record in records {
            self.head = record.position;
            match self.streams.get_mut(record.stream.as_str()) {
                Some(positions) => positions.push(record.position),
                None => {
                    self.streams
                        .insert(record.stream.clone(), vec![record.position]);
                }
            }
            self.recent_bytes += record.data.len() + record.metadata.len();
            self.recent.push_back(record);
        }
        while self.recent.len() > RECENT_EVENTS || self.recent_bytes > RECENT_BYTES {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.data.len() + old.metadata.len();
        }
    }

    /// The last `n` records taken in (fewer if the recent window is smaller),
    /// in order, as the two slices they lie in.
    pub fn recent_tail(&self, n: usize) -> [&[RecordedEvent]; 2] {
        let (front, back) = self.recent.as_slices();
        if back.len() >= n {
            [&[], &back[back.len() - n..]]
        } else {
            let rest = n - back.len();
            [&front[front.len().saturating_sub(rest)..], back]
        }
    }

    /// Up to `max` events from position `from` if they are all among the recent
    /// records in memory: they were checked when they were written, moments ago.
    pub fn recent_from(&self, from: u64, max: usize) -> Option<Vec<RecordedEvent>> {
        let first = self.recent.front()?.position;
        if from < first || from > self.head {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(self.recent.iter().skip(skip).take(max).cloned().collect())
    }

    fn locate(&self, position: u64) -> Option<Loc> {
        let i = self
            .segments
            .partition_point(|s| s.first_position <= position)
            .checked_sub(1)?;
        let segment = &self.segments[i];
        let k = usize::try_from(position - segment.first_position).ok()?;
        let offset = *segment.offsets.get(k)?;
        let end = segment.offsets.get(k + 1).copied().unwrap_or(segment.end);
        Some(Loc {
            file: segment.file.clone(),
            position,
            offset,
            len: end - offset,
        })
    }

    /// The frames of up to `max` events from position `from` (1-based).
    pub fn locate_all(&self, from: u64, max: usize) -> Vec<Loc> {
        let from = from.max(1);
        let count = self.head.saturating_sub(from - 1).min(max as u64);
        (from..from + count)
            .filter_map(|p| self.locate(p))
            .collect()
    }

    /// The frames of up to `max` events of `stream` from version `from`.
    pub fn locate_stream(&self, stream: &str, from: u64, max: usize) -> Vec<Loc> {
        let Some(positions) = self.streams.get(stream) else {
            return Vec::new();
        };
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        positions
            .iter()
            .skip(from)
            .take(max)
            .filter_map(|&p| self.locate(p))
            .collect()
    }
}

/// Reads and checks the frames at `locs`, one positioned read per run of
/// adjacent frames.
pub fn read(locs: &[Loc]) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::with_capacity(locs.len());
    let mut aligned = rkyv::util::AlignedVec::new();
    read_frames(locs, |loc, bytes| {
        events.push(check(loc, bytes, &mut aligned)?);
        Ok(())
    })?;
    Ok(events)
}

/// [`read`] into `batch` as archives, without decoding them: their frames'
/// checksums and lengths are checked here, the archives as the batch hands
/// them out.
///
/// Each run of frames is read straight into the batch's own buffer, which
/// the batch keeps from one read to the next, and each payload is then moved
/// down to its aligned place: no per-thread buffer to fault in and zero on
/// every thread the blocking pool happens to run a read on, and no copy
/// between buffers.
pub fn read_archives(locs: &[Loc], mut batch: Batch) -> Result<Batch> {
    batch.clear();
    for run in runs(locs) {
        let first = &run[0];
        batch.start_file(&first.file.path);
        let len = usize::try_from(run.iter().map(|l| l.len).sum::<u64>()).unwrap_or(usize::MAX);
        let (mut at, buf) = batch.raw_space(run.len(), len);
        first
            .file
            .file
            .read_exact_at(buf, first.offset)
            .map_err(|e| Error::io(format!("reading {}", first.file.path.display()), e))?;
        for loc in run {
            let frame = check_frame(loc, batch.raw(at, loc.len as usize))?;
            let payload = at + frame::HEADER_LEN..at + frame.len;
            batch.keep_archive(payload, loc.offset, loc.position);
            at += loc.len as usize;
        }
    }
    Ok(batch)
}

/// `locs` split into runs of frames adjacent in one file, each of which one
/// positioned read fetches.
fn runs(locs: &[Loc]) -> impl Iterator<Item = &[Loc]> {
    locs.chunk_by(|a, b| Arc::ptr_eq(&a.file, &b.file) && a.offset + a.len == b.offset)
}

/// Calls `each` with the bytes of the frame at each of `locs`, in order,
/// reading each run of adjacent frames with one positioned read.
fn read_frames(locs: &[Loc], mut each: impl FnMut(&Loc, &[u8]) -> Result<()>) -> Result<()> {
    for now in runs(locs) {
        let first = &now[0];
        let len: u64 = now.iter().map(|l| l.len).sum();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        READ_BUFFER.with_borrow_mut(|buf| -> Result<()> {
            // Reused: a replay reads megabytes per batch, and fresh pages
            // cost more to fault in and zero than the read itself.
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let buf = &mut buf[..len];
            first
                .file
                .file
                .read_exact_at(buf, first.offset)
                .map_err(|e| Error::io(format!("reading {}", first.file.path.display()), e))?;
            let mut at = 0;
            for loc in now {
                let bytes = &buf[at..at + loc.len as usize];
                at += loc.len as usize;
                each(loc, bytes)?;
            }
            Ok(())
        })?;
        READ_BUFFER.with_borrow_mut(|buf| {
            // Keep no more than a batch's worth between reads.
            if buf.len() > MAX_KEPT_BUFFER {
                *buf = Vec::new();
            }
        });
    }
    Ok(())
}

/// The largest read buffer a thread keeps between reads.
const MAX_KEPT_BUFFER: usize = 16 * 1024 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn corrupt(loc: &Loc) -> impl Fn(String) -> Error + '_ {
    |reason| Error::Corrupt {
        file: loc.file.path.clone(),
        offset: loc.offset,
        position: loc.position,
        reason,
    }
}

/// The frame at `loc`, if its checksum holds and its length is the index's.
fn check_frame<'a>(loc: &Loc, bytes: &'a [u8]) -> Result<frame::Frame<'a>> {
    let frame = frame::parse(bytes).map_err(corrupt(loc))?;
    if frame.len as u64 != loc.len {
        return Err(corrupt(loc)(format!(
            "frame is {} bytes, the index says {}",
            frame.len, loc.len
        )));
    }
    Ok(frame)
}

fn check(
    loc: &Loc,
    bytes: &[u8],
    aligned: &mut rkyv::util::AlignedVec<16>,
) -> Result<RecordedEvent> {
    let corrupt = corrupt(loc);
    let frame = check_frame(loc, bytes)?;
    let event = frame::decode_in(frame.payload, aligned).map_err(&corrupt)?;
    if event.position != loc.position {
        return Err(corrupt(format!("frame holds position {}", event.position)));
    }
    Ok(event)
}
