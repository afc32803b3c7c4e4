//! [`Batch`]: a run of the log read for a replay, and [`EventRef`], one event
//! of it borrowed. A replay reads every event once and keeps none, so a backend
//! that stores the shared record format (the rkyv archive of a
//! [`RecordedEvent`]) hands the archives over as they are, instead of building
//! a `RecordedEvent`, four allocations, for each one.
//!
//! The archives are checked as they are handed out: an event is only ever seen
//! through an `EventRef`, which exists only for an archive that passed rkyv's
//! validation and holds the position its frame was read for. A batch does no
//! I/O; the backend fills it after its own checks (the embedded log's CRCs).

use std::path::{Path, PathBuf};

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::chain::Hash;
use crate::store::{ArchivedRecordedEvent, Error, RecordedEvent, Result};

/// A stored event borrowed from a [`Batch`] or a [`RecordedEvent`]: the fields
/// of the record, nothing copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at: i64,
    pub data: &'a [u8],
    pub metadata: &'a [u8],
    pub prev_hash: &'a Hash,
    pub hash: &'a Hash,
}

impl<'a> From<&'a RecordedEvent> for EventRef<'a> {
    fn from(e: &'a RecordedEvent) -> Self {
        EventRef {
            position: e.position,
            stream: &e.stream,
            version: e.version,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.recorded_at,
            data: &e.data,
            metadata: &e.metadata,
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        }
    }
}

impl EventRef<'_> {
    /// The record, without its content: a batch carries what the hash
    /// covers, which is all a replay reads.
    pub fn to_owned(&self) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            stream: self.stream.to_owned(),
            version: self.version,
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            recorded_at: self.recorded_at,
            data: self.data.to_vec(),
            metadata: self.metadata.to_vec(),
            prev_hash: *self.prev_hash,
            hash: *self.hash,
            content: Vec::new(),
        }
    }
}

/// Events in position order, as [`crate::store::EventStore::read_batch`] returns
/// them: records a backend had at hand, or archives it read, which are checked
/// one by one as [`Batch::iter`] reaches them.
#[derive(Debug, Default)]
pub struct Batch {
    /// Records, for a backend that holds them as such. A backend fills either
    /// these or `frames`, never both.
    records: Vec<RecordedEvent>,
    /// The archives, each at a 16-aligned offset as rkyv needs, up to `end`;
    /// beyond it, frames read and not yet taken in, or stale bytes: the
    /// buffer is kept, not cleared, from one read to the next.
    archives: AlignedVec<16>,
    end: usize,
    frames: Vec<Frame>,
    /// The files the archives came from, for the errors that name them.
    files: Vec<PathBuf>,
}

/// Where one archive lies in the batch, and where it came from.
#[derive(Debug, Clone, Copy)]
struct Frame {
    start: usize,
    len: usize,
    /// The position the backend read it for: the archive must hold it.
    position: u64,
    /// The byte offset of its frame in `files[file]`.
    offset: u64,
    file: usize,
}

impl From<Vec<RecordedEvent>> for Batch {
    fn from(records: Vec<RecordedEvent>) -> Self {
        Batch {
            records,
            ..Batch::default()
        }
    }
}

impl Batch {
    pub fn len(&self) -> usize {
        self.records.len() + self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the last event, as the backend read it.
    pub fn last_position(&self) -> Option<u64> {
        match self.frames.last() {
            Some(frame) => Some(frame.position),
            None => self.records.last().map(|r| r.position),
        }
    }

    /// The events in order; an archive that fails its check is an
    /// [`Error::Corrupt`] naming its file, offset and position.
    pub fn iter(&self) -> impl Iterator<Item = Result<EventRef<'_>>> {
        let records = self.records.iter().map(|r| Ok(EventRef::from(r)));
        records.chain(self.frames.iter().map(|frame| self.check(frame)))
    }

    /// Empties the batch, keeping its buffers for the next read.
    pub fn clear(&mut self) {
        self.records.clear();
        self.end = 0;
        self.frames.clear();
        self.files.clear();
    }

    /// Room for `len` bytes of `frames` whole frames, adjacent as on disk,
    /// to be read into the returned slice, which starts at the returned
    /// offset; [`Batch::raw`] gives them back and [`Batch::keep_archive`]
    /// takes their payloads in. The room starts far enough past the archives
    /// that moving each payload down to its aligned place never overwrites a
    /// frame not yet taken in: a payload moves down by its frame's 8 header
    /// bytes and up by at most 15 bytes of alignment, so 7 bytes of room per
    /// frame suffice.
    pub fn raw_space(&mut self, frames: usize, len: usize) -> (usize, &mut [u8]) {
        let at = (self.end + 7 * frames + 16).next_multiple_of(16);
        if self.archives.len() < at + len {
            self.archives.resize(at + len, 0);
        }
        (at, &mut self.archives[at..at + len])
    }

    /// `len` bytes of the buffer from `at`.
    pub fn raw(&self, at: usize, len: usize) -> &[u8] {
        &self.archives[at..at + len]
    }

    /// Takes in the archive at `payload` in the room [`Batch::raw_space`]
    /// gave, read for `position` from the frame at `offset` in the file last
    /// started, moving it to the next aligned place. The caller has checked
    /// the frame against its checksum; the archive itself is checked when
    /// [`Batch::iter`] reaches it.
    pub fn keep_archive(&mut self, payload: std::ops::Range<usize>, offset: u64, position: u64) {
        let start = self.end.next_multiple_of(16);
        let len = payload.len();
        debug_assert!(start <= payload.start, "an archive moves down, never up");
        self.archives.as_mut_slice().copy_within(payload, start);
        self.end = start + len;
        self.frames.push(Frame {
            start,
            len,
            position,
            offset,
            file: self.files.len().saturating_sub(1),
        });
    }

    /// Names the file the next archives come from.
    pub fn start_file(&mut self, path: &Path) {
        if self.files.last().is_none_or(|last| last != path) {
            self.files.push(path.to_owned());
        }
    }

    fn check(&self, frame: &Frame) -> Result<EventRef<'_>> {
        let corrupt = |reason: String| Error::Corrupt {
            file: self.files.get(frame.file).cloned().unwrap_or_default(),
            offset: frame.offset,
            position: frame.position,
            reason,
        };
        let bytes = &self.archives[frame.start..frame.start + frame.len];
        let e = rkyv::access::<ArchivedRecordedEvent, rancor::Error>(bytes)
            .map_err(|e| corrupt(format!("frame payload does not decode: {e}")))?;
        let position = e.position.to_native();
        if position != frame.position {
            return Err(corrupt(format!("frame holds position {position}")));
        }
        Ok(EventRef {
            position,
            stream: &e.stream,
            version: e.version.to_native(),
            event_type: &e.event_type,
            schema_version: e.schema_version.to_native(),
            recorded_at: e.recorded_at.to_native(),
            data: &e.data,
            metadata: &e.metadata,
            prev_hash: &e.prev_hash,
            hash: &e.hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(position: u64) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: format!("delivery-dlv_{position}"),
            version: position - 1,
            event_type: "AttemptRecorded".into(),
            schema_version: 1,
            recorded_at: 1_700_000_000_000_000 + position as i64,
            data: format!("{{\"n\":{position}}}").into_bytes(),
            metadata: b"{}".to_vec(),
            prev_hash: [position as u8; 32],
            hash: [position as u8 + 1; 32],
            content: Vec::new(),
        }
    }

    fn archive(record: &RecordedEvent) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(record).unwrap().to_vec()
    }

    /// Takes in `payload` as the one frame of a run, behind a header.
    fn push(batch: &mut Batch, payload: &[u8], offset: u64, position: u64) {
        let (at, raw) = batch.raw_space(1, 8 + payload.len());
        raw[8..].copy_from_slice(payload);
        batch.keep_archive(at + 8..at + 8 + payload.len(), offset, position);
    }

    #[test]
    fn archives_come_out_as_the_records_they_hold() {
        let records: Vec<_> = (1..=5).map(record).collect();
        let mut batch = Batch::default();
        batch.start_file(Path::new("seg-1"));
        for r in &records {
            // Odd lengths, so each archive needs realigning.
            push(&mut batch, &archive(r), r.position * 100, r.position);
        }
        let read: Vec<_> = batch.iter().map(|e| e.unwrap().to_owned()).collect();
        assert_eq!(read, records);
        assert_eq!(batch.last_position(), Some(5));
        let owned = Batch::from(records.clone());
        let read: Vec<_> = owned.iter().map(|e| e.unwrap().to_owned()).collect();
        assert_eq!(read, records);
    }

    #[test]
    fn frames_read_in_place_come_out_whole_however_they_are_sized() {
        let records: Vec<_> = (1..=40)
            .map(|p| {
                let mut r = record(p);
                // Sizes that put every payload at a different alignment.
                r.data = vec![b'x'; (p as usize * 7) % 23];
                r
            })
            .collect();
        let mut batch = Batch::default();
        for round in 0..2 {
            batch.clear();
            // Two runs, as from two segment files.
            for (file, run) in records.chunks(25).enumerate() {
                let mut raw = Vec::new();
                for r in run {
                    raw.extend_from_slice(&[0xEE; 8]);
                    raw.extend_from_slice(&archive(r));
                }
                batch.start_file(Path::new(&format!("seg-{file}")));
                let (mut at, buf) = batch.raw_space(run.len(), raw.len());
                buf.copy_from_slice(&raw);
                for r in run {
                    let len = archive(r).len();
                    batch.keep_archive(at + 8..at + 8 + len, round, r.position);
                    at += 8 + len;
                }
            }
            let read: Vec<_> = batch.iter().map(|e| e.unwrap().to_owned()).collect();
            assert_eq!(read, records);
        }
    }

    #[test]
    fn a_bad_archive_is_refused_naming_file_offset_and_position() {
        let mut batch = Batch::default();
        batch.start_file(Path::new("seg-1"));
        push(&mut batch, &archive(&record(1)), 16, 1);
        let mut damaged = archive(&record(2));
        // The high byte of the stream name's relative pointer, in the root
        // that ends the archive: it then points outside the archive.
        let root = damaged.len() - std::mem::size_of::<ArchivedRecordedEvent>();
        damaged[root + 15] ^= 0x40;
        batch.start_file(Path::new("seg-2"));
        push(&mut batch, &damaged, 32, 2);
        push(&mut batch, &archive(&record(4)), 700, 3);
        let mut events = batch.iter();
        assert_eq!(events.next().unwrap().unwrap().position, 1);
        let err = events.next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("seg-2 at offset 32 (position 2)") && err.contains("does not decode"),
            "{err}"
        );
        let err = events.next().unwrap().unwrap_err().to_string();
        assert!(
            err.contains("seg-2 at offset 700 (position 3)")
                && err.contains("frame holds position 4"),
            "{err}"
        );
    }

    #[test]
    fn a_cleared_batch_is_empty() {
        let mut batch = Batch::from(vec![record(1)]);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.last_position(), None);
        assert_eq!(batch.iter().count(), 0);
    }
}
