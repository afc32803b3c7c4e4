//! Segment files and the scan that opens the log.
//!
//! The log is `DIR/log/{first_position:020}.seg`; each file starts with a
//! versioned header (`HKLGSEG\0`, format version, first position, header CRC)
//! followed by frames. The scan checks every frame and link (position, stream
//! version, previous hash) in order and tells a torn tail from corruption: damage
//! in the last segment with no valid frame after it is a write that a crash cut
//! short, never acknowledged, and is cut off back to the end of the last whole
//! batch; anything else is refused with the position it holds. Zeros after
//! the last frame are space the writer allocated ahead, and end the log as the
//! end of the file does. This module decides; it never writes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::chain::ZERO;
use crate::store::embedded::frame;
use crate::store::sequencer::{Sequencer, StreamTip};
use crate::store::{Error, RecordedEvent, Result};

const MAGIC: &[u8; 8] = b"HKLGSEG\0";
/// Bump on any change to the header, the frame or `RecordedEvent`'s archived form.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, format version, first position, CRC of the bytes before it.
pub const HEADER_LEN: usize = 24;

pub fn file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

pub fn header(first_position: u64) -> [u8; HEADER_LEN] {
    let mut bytes = [0; HEADER_LEN];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..20]);
    bytes[20..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The first position a segment header names.
pub fn parse_header(bytes: &[u8]) -> Result<u64, String> {
    let Some(bytes) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "segment header cut short: {} of {HEADER_LEN} bytes",
            bytes.len()
        ));
    };
    let (head, crc) = bytes.split_at(20);
    let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if crc32c::crc32c(head) != stored {
        return Err("segment header checksum mismatch".into());
    }
    if &head[..8] != MAGIC {
        return Err("not a hookledger segment (bad magic)".into());
    }
    let version = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(format!(
            "segment format version {version}; this build reads {FORMAT_VERSION}"
        ));
    }
    Ok(u64::from_le_bytes(
        head[12..20].try_into().unwrap_or_default(),
    ))
}

/// The segment files in `log_dir`, by first position; other files are ignored.
pub fn list(log_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = std::fs::read_dir(log_dir)
        .map_err(|e| Error::io(format!("listing {}", log_dir.display()), e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("listing {}", log_dir.display()), e))?
            .path();
        if path.extension().is_some_and(|e| e == "seg") {
            let first = path
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| s.len() == 20)
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    position: 0,
                    reason: "segment file name is not a 20-digit position".into(),
                })?;
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Where a segment's bytes that are not zero end. The writer allocates the
/// active segment ahead of its writes, so the file goes on in zeros past its
/// last frame; no frame starts there, since a frame's length is never zero.
/// (The last frame itself may end in zeros, past this point.)
pub fn data_end(bytes: &[u8]) -> usize {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    // Whole blocks first, with a fold the compiler can vectorise.
    while end >= BLOCK && bytes[end - BLOCK..end].iter().fold(0, |acc, &b| acc | b) == 0 {
        end -= BLOCK;
    }
    bytes[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// How far a walk through one segment got, and the first frame that did not
/// check out.
#[derive(Debug, Default)]
pub struct Walk {
    /// Where the last whole batch ends: the cut for a torn tail.
    pub end: u64,
    pub bad: Option<Bad>,
}

#[derive(Debug)]
pub struct Bad {
    /// The bad frame, or the first frame of a batch the file ends inside.
    pub offset: u64,
    /// The position that frame holds or would hold.
    pub position: u64,
    pub reason: String,
    /// The frame's checksum held: a crash cannot have produced it.
    pub checksummed: bool,
    /// Where a valid frame would prove the damage is not a torn tail.
    pub search_from: usize,
}

/// Walks the frames after a segment's header, taking each whole batch into
/// `seq` and handing its events to `accept` with their frames' offsets and
/// lengths. The walk starts at offset `from`: the end of the header, or of a batch.
pub fn walk_from(
    bytes: &[u8],
    from: usize,
    seq: &mut Sequencer,
    accept: &mut dyn FnMut(u64, u64, RecordedEvent),
) -> Walk {
    let mut walk = Walk {
        end: from as u64,
        ..Walk::default()
    };
    // The frames of a batch whose last frame has not been seen yet.
    let mut batch = Pending::default();
    let mut at = from.min(bytes.len());
    // Zeros from here on are space allocated ahead, not frames.
    let data_end = data_end(bytes).max(at);
    walk.bad = loop {
        let position = seq.head() + 1 + batch.events.len() as u64;
        if at >= data_end {
            let Some(&(offset, _, _)) = batch.events.first() else {
                break None;
            };
            break Some(Bad {
                offset,
                position: seq.head() + 1,
                reason: format!(
                    "the file ends inside a batch, after {} of its frames",
                    batch.events.len()
                ),
                checksummed: false,
                search_from: data_end,
            });
        }
        let bad = |reason, checksummed| Bad {
            offset: at as u64,
            position,
            reason,
            checksummed,
            search_from: at + 1,
        };
        let frame = match frame::parse(&bytes[at..]) {
            Ok(frame) => frame,
            Err(reason) => break Some(bad(reason, false)),
        };
        let event = frame::decode(&frame);
        let event = match event.and_then(|e| batch.check(seq, position, e)) {
            Ok(event) => event,
            Err(reason) => break Some(bad(reason, true)),
        };
        batch.events.push((at as u64, frame.len as u64, event));
        at += frame.len;
        if !frame.continues {
            batch.tips.clear();
            for (offset, len, event) in batch.events.drain(..) {
                seq.observe(&event);
                accept(offset, len, event);
            }
            walk.end = at as u64;
        }
    };
    walk
}

/// The checked frames of an unfinished batch, and the stream tips they set.
#[derive(Debug, Default)]
struct Pending {
    /// Offset, frame length and event.
    events: Vec<(u64, u64, RecordedEvent)>,
    tips: HashMap<String, StreamTip>,
}

impl Pending {
    /// Checks that `event` is the next one in the log and in its stream.
    fn check(
        &mut self,
        seq: &Sequencer,
        position: u64,
        event: RecordedEvent,
    ) -> Result<RecordedEvent, String> {
        if event.position != position {
            return Err(format!(
                "frame holds position {}, expected {position}",
                event.position
            ));
        }
        let tip = self
            .tips
            .get(&event.stream)
            .copied()
            .or_else(|| seq.tip(&event.stream));
        let version = tip.map_or(0, |t| t.version + 1);
        if event.version != version {
            return Err(format!(
                "frame holds version {} of stream {:?}, expected {version}",
                event.version, event.stream
            ));
        }
        if event.prev_hash != tip.map_or(ZERO, |t| t.hash) {
            return Err(format!(
                "frame's previous hash does not match version {} of stream {:?}",
                version.wrapping_sub(1),
                event.stream
            ));
        }
        let tip = StreamTip {
            version,
            hash: event.hash,
        };
        self.tips.insert(event.stream.clone(), tip);
        Ok(event)
    }
}

/// The first frame at or after `from` whose checksum holds and which decodes to a
/// position beyond `after`: proof that damage before it is not a torn tail.
pub fn later_frame(bytes: &[u8], from: usize, after: u64) -> Option<(u64, u64)> {
    (from..data_end(bytes)).find_map(|at| {
        let frame = frame::parse(&bytes[at..]).ok()?;
        let event = frame::decode(&frame).ok()?;
        (event.position > after).then_some((at as u64, event.position))
    })
}

/// One segment as the scan found it.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub path: PathBuf,
    pub first_position: u64,
    /// Where its last whole batch ends.
    pub end: u64,
    /// CRC32C of the file's bytes up to `end`.
    pub crc: u32,
}

/// Everything an open learns from the segment files.
#[derive(Debug, Default)]
pub struct Scan {
    pub sequencer: Sequencer,
    pub segments: Vec<Scanned>,
    /// Bytes at the end of the last segment that a crash cut short.
    pub torn_tail: Option<TornTail>,
    /// A last segment whose header a crash cut short: it holds no events.
    pub torn_header: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the good frames end and the file should be cut.
    pub offset: u64,
    pub reason: String,
}

/// What a scan does with what it finds, as it goes.
pub trait Found {
    /// A durable event, with its frame's segment, offset and length.
    fn event(&mut self, segment: &Scanned, offset: u64, len: u64, event: RecordedEvent);

    /// A segment has been walked to its end (or to its torn tail); `seq`
    /// holds what the walk observed so far, and may be trimmed.
    fn segment_done(&mut self, segment: &Scanned, seq: &mut Sequencer) -> Result<()>;
}

/// Finds nothing worth keeping: a scan that only checks.
#[derive(Debug)]
pub struct Check;

impl Found for Check {
    fn event(&mut self, _: &Scanned, _: u64, _: u64, _: RecordedEvent) {}

    fn segment_done(&mut self, _: &Scanned, _: &mut Sequencer) -> Result<()> {
        Ok(())
    }
}

/// Reads and checks every segment in `log_dir`; changes nothing on disk.
pub fn scan_log(log_dir: &Path) -> Result<Scan> {
    scan_files(&list(log_dir)?, Scan::default(), &mut Check)
}

/// Goes on with a scan of `files` (the segment files, by first position) after
/// what `scan` already holds: its last segment is walked on from where it ends,
/// and the files after it whole. Tells `found` of each event and segment.
/// Changes nothing on disk.
pub fn scan_files(files: &[(u64, PathBuf)], mut scan: Scan, found: &mut dyn Found) -> Result<Scan> {
    let resume = scan.segments.pop();
    let skip = scan.segments.len();
    for (i, (named_first, path)) in files.iter().enumerate().skip(skip) {
        let last = i + 1 == files.len();
        // The segment the scan stopped in, with the frames it holds so far.
        let resumed = resume.as_ref().filter(|_| i == skip);
        let bytes =
            std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let position = scan.sequencer.head() + 1;
        let corrupt = |offset: u64, position: u64, reason: String| Error::Corrupt {
            file: path.clone(),
            offset,
            position,
            reason,
        };
        let first = match parse_header(&bytes) {
            Ok(first) => first,
            // A crash while a segment was being created: nothing was written after.
            Err(_) if last && data_end(&bytes) <= HEADER_LEN => {
                scan.torn_header = Some(path.clone());
                break;
            }
            Err(reason) => return Err(corrupt(0, position, reason)),
        };
        let expected = resumed.map_or(position, |r| r.first_position);
        if first != *named_first || first != expected {
            return Err(corrupt(
                0,
                position,
                format!(
                    "segment {} starts at position {first}, expected {expected}",
                    file_name(*named_first)
                ),
            ));
        }
        let from = resumed.map_or(HEADER_LEN as u64, |r| r.end);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        let mut here = Scanned {
            path: path.clone(),
            first_position: first,
            end: from as u64,
            crc: 0,
        };
        let walk = walk_from(
            &bytes,
            from,
            &mut scan.sequencer,
            &mut |offset, len, event| found.event(&here, offset, len, event),
        );
        if let Some(bad) = walk.bad {
            let after = scan.sequencer.head();
            if !last {
                return Err(corrupt(bad.offset, bad.position, bad.reason));
            }
            if bad.checksummed {
                return Err(corrupt(
                    bad.offset,
                    bad.position,
                    format!("{} (its checksum holds, so no crash wrote it)", bad.reason),
                ));
            }
            if let Some((at, found)) = later_frame(&bytes, bad.search_from, after) {
                return Err(corrupt(
                    bad.offset,
                    bad.position,
                    format!(
                        "{}; a valid frame for position {found} follows at offset {at}",
                        bad.reason
                    ),
                ));
            }
            scan.torn_tail = Some(TornTail {
                file: path.clone(),
                offset: walk.end,
                reason: bad.reason,
            });
        }
        let covered = usize::try_from(walk.end).map_or(&bytes[..], |end| &bytes[..end]);
        here.end = walk.end;
        here.crc = crc32c::crc32c(covered);
        found.segment_done(&here, &mut scan.sequencer)?;
        scan.segments.push(here);
    }
    Ok(scan)
}

/// The last segment as a check of its frames alone finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The last position of its last whole batch.
    pub head: u64,
    /// Where that batch ends.
    pub end: u64,
    /// Bytes after it that a crash cut short.
    pub torn_tail: Option<TornTail>,
}

/// Checks every frame of the segment at `path` (the log's last, starting at
/// position `first`) without the stream links, which need the tips of the
/// segments before it: each checksum, each decoding and positions in order.
/// Damage is refused with its place, as the scan refuses it; a tail a crash
/// cut short is reported, not refused. Reads one segment, whatever the log's size.
pub fn check_last(first: u64, path: &Path) -> Result<Checked> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let end = data_end(&bytes);
    let corrupt = |offset: u64, position: u64, reason: String| Error::Corrupt {
        file: path.to_owned(),
        offset,
        position,
        reason,
    };
    if let Err(reason) = parse_header(&bytes) {
        if end <= HEADER_LEN {
            // A segment whose creation a crash cut short holds nothing.
            return Ok(Checked {
                head: first.saturating_sub(1),
                end: 0,
                torn_tail: None,
            });
        }
        return Err(corrupt(0, first, reason));
    }
    let mut at = HEADER_LEN;
    let mut position = first.saturating_sub(1);
    let mut whole = (position, at as u64);
    let mut batch_start = at;
    let mut aligned = rkyv::util::AlignedVec::new();
    while at < end {
        let next = position + 1;
        let bad = match frame::parse(&bytes[at..]) {
            Err(reason) => Some((reason, false)),
            Ok(frame) => match frame::decode_in(&frame, &mut aligned) {
                Err(reason) => Some((reason, true)),
                Ok(event) if event.position != next => Some((
                    format!("frame holds position {}, expected {next}", event.position),
                    true,
                )),
                Ok(_) => {
                    position = next;
                    at += frame.len;
                    if !frame.continues {
                        whole = (position, at as u64);
                        batch_start = at;
                    }
                    None
                }
            },
        };
        if let Some((reason, checksummed)) = bad {
            if checksummed {
                return Err(corrupt(
                    at as u64,
                    next,
                    format!("{reason} (its checksum holds, so no crash wrote it)"),
                ));
            }
            if let Some((found_at, found)) = later_frame(&bytes, at + 1, whole.0) {
                return Err(corrupt(
                    at as u64,
                    next,
                    format!(
                        "{reason}; a valid frame for position {found} follows at offset {found_at}"
                    ),
                ));
            }
            return Ok(Checked {
                head: whole.0,
                end: whole.1,
                torn_tail: Some(TornTail {
                    file: path.to_owned(),
                    offset: batch_start as u64,
                    reason,
                }),
            });
        }
    }
    if batch_start != at {
        // The file ends inside a batch: a write a crash cut short.
        return Ok(Checked {
            head: whole.0,
            end: whole.1,
            torn_tail: Some(TornTail {
                file: path.to_owned(),
                offset: batch_start as u64,
                reason: "the file ends inside a batch".into(),
            }),
        });
    }
    Ok(Checked {
        head: whole.0,
        end: whole.1,
        torn_tail: None,
    })
}

/// What a read-only scan of a data directory found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The last position whose frame and all before it check out.
    pub head: u64,
    pub segments: usize,
    /// Bytes after the last good frame that a crash cut short; left in place.
    pub torn_tail: Option<TornTail>,
}

/// Walks and checks every frame in `dir` without changing anything: the report
/// on success, `Error::Corrupt` naming the file, offset and position of the first
/// bad frame otherwise.
pub fn scan(dir: &Path) -> Result<ScanReport> {
    let scan = scan_log(&dir.join("log"))?;
    Ok(ScanReport {
        head: scan.sequencer.head(),
        segments: scan.segments.len(),
        torn_tail: scan.torn_tail,
    })
}
