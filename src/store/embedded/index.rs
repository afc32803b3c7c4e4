//! The index of the durable log, on disk, and the read path over it.
//!
//! `DIR/log/index.redb` maps each stream to its id and tip (last version and
//! hash), each `(stream id, version)` to the position, segment offset and
//! length of its frame, every 64th position to its frame's offset, and each
//! claim to the append that took it. What the writer made durable since the
//! index was last written out waits in a memtable ([`Pending`]); the index is
//! written out every second or so without an fsync, and durably every 2 s and
//! on close (see [`crate::kv::layered`]). It is derived data: an open checks
//! it against the log, scans the log's tail from where it ends, and rebuilds
//! it from a whole scan when it is missing, damaged or from another log.
//!
//! It only ever holds frames whose fsync succeeded, so a read through it can
//! never see an unacknowledged append. Every read re-checks the frame's
//! checksum and position: bad bytes are refused, never served. Memory is the
//! store's page cache, the memtable and the last few thousand records.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::chain::Hash;
use crate::kv::layered::{Flushing, Layered, Layers, Memtable};
use crate::kv::{self, Flow, Kv, KvRead, RedbKv, Table, WriteBatch};
use crate::store::embedded::frame;
use crate::store::sequencer::{Lookup, StreamTip};
use crate::store::{Batch, Error, Held, RecordedEvent, Result};

#[cfg(test)]
mod guard_tests;
mod relocate;
pub use relocate::Moved;

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

    /// The open file, for positioned reads.
    pub fn reader(&self) -> &File {
        &self.file
    }
}

pub const STREAMS: Table = Table("streams");
pub const EVENTS: Table = Table("events");
pub const POSITIONS: Table = Table("positions");
pub const CLAIMS: Table = Table("claims");
pub const META: Table = Table("meta");
const TABLES: [Table; 5] = [META, STREAMS, EVENTS, POSITIONS, CLAIMS];

/// Every this many positions, the frame's offset is kept, so a read from any
/// position walks at most this many frames to find it.
pub const POSITION_EVERY: u64 = 64;

/// Bump on any change to a table's keys or values: an index of another format
/// is rebuilt from the log.
const FORMAT: u64 = 1;
const META_FORMAT: &[u8] = b"format";
/// The last position indexed, with its frame's place and hash.
const META_HEAD: &[u8] = b"head";
const META_NEXT_ID: &[u8] = b"next_stream_id";

/// The most recent durable records kept in memory, so the projector that
/// follows the head reads what was just committed without a trip to the disk.
const RECENT_EVENTS: usize = 4096;
/// ... and at most this many bytes of event data and metadata.
const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// Where a frame is: its position, and its place in the segment holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub position: u64,
    pub offset: u64,
    pub len: u64,
}

/// The last position indexed: where its frame is and the hash it holds, which
/// ties the index to one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub place: Place,
    pub hash: Hash,
}

/// A stream as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRow {
    pub id: u64,
    pub tip: StreamTip,
}

/// What was indexed since the index was last written out.
#[derive(Debug, Default)]
pub struct Pending {
    /// The streams appended to, with their tips now.
    streams: HashMap<String, StreamRow>,
    /// The frames appended, by stream id, in version order.
    events: HashMap<u64, Vec<(u64, Place)>>,
    positions: Vec<(u64, u64)>,
    claims: HashMap<String, Held>,
    /// Frames a compaction moved, by position: the stream id and version
    /// they are indexed under, and their new place. They override what the
    /// layers below (and `events` above) say of those positions.
    moved: HashMap<u64, (u64, u64, Place)>,
    head: Option<Head>,
    next_id: u64,
    bytes: usize,
}

impl Memtable for Pending {
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    fn successor(&self) -> Pending {
        Pending {
            head: self.head,
            next_id: self.next_id,
            ..Pending::default()
        }
    }

    fn write_out(&self, batch: &mut WriteBatch) {
        for (name, row) in &self.streams {
            batch.put(STREAMS, name.as_bytes().to_vec(), encode_stream(row));
        }
        for (id, events) in &self.events {
            for (version, place) in events {
                batch.put(EVENTS, event_key(*id, *version), encode_place(place));
            }
        }
        for (position, offset) in &self.positions {
            batch.put(
                POSITIONS,
                position.to_be_bytes().to_vec(),
                offset.to_be_bytes().to_vec(),
            );
        }
        for (name, held) in &self.claims {
            batch.put(CLAIMS, name.as_bytes().to_vec(), encode_held(held));
        }
        // After `events` and `positions`: a later write of a key wins.
        for (position, (id, version, place)) in &self.moved {
            batch.put(EVENTS, event_key(*id, *version), encode_place(place));
            if position.is_multiple_of(POSITION_EVERY) {
                batch.put(
                    POSITIONS,
                    position.to_be_bytes().to_vec(),
                    place.offset.to_be_bytes().to_vec(),
                );
            }
        }
        if let Some(head) = &self.head {
            batch.put(META, META_HEAD.to_vec(), encode_head(head));
        }
        batch.put(
            META,
            META_NEXT_ID.to_vec(),
            self.next_id.to_be_bytes().to_vec(),
        );
        batch.put(META, META_FORMAT.to_vec(), FORMAT.to_be_bytes().to_vec());
    }
}

impl Pending {
    /// Takes in one durable event, in position order.
    pub fn add(
        &mut self,
        event: &RecordedEvent,
        place: Place,
        lookup: &dyn Fn(&str) -> Option<StreamRow>,
    ) {
        let tip = StreamTip {
            version: event.version,
            hash: event.hash,
        };
        let id = match self.streams.get_mut(event.stream.as_str()) {
            Some(row) => {
                row.tip = tip;
                row.id
            }
            None => {
                let id = match lookup(&event.stream) {
                    Some(row) => row.id,
                    None => {
                        self.next_id += 1;
                        self.next_id
                    }
                };
                self.bytes += event.stream.len() + 64;
                self.streams
                    .insert(event.stream.clone(), StreamRow { id, tip });
                id
            }
        };
        self.events
            .entry(id)
            .or_default()
            .push((event.version, place));
        if event.position.is_multiple_of(POSITION_EVERY) {
            self.positions.push((event.position, place.offset));
        }
        self.bytes += 40;
        self.head = Some(Head {
            place,
            hash: event.hash,
        });
    }

    /// Goes on from an index that gave out ids up to `next_id` and ends at `head`.
    pub fn resume(&mut self, next_id: u64, head: Option<Head>) {
        self.next_id = next_id;
        self.head = head;
    }

    pub fn claim(&mut self, name: &str, held: Held) {
        self.bytes += name.len() + 32;
        self.claims.insert(name.to_owned(), held);
    }
}

fn event_key(id: u64, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn encode_stream(row: &StreamRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&row.id.to_be_bytes());
    out.extend_from_slice(&row.tip.version.to_be_bytes());
    out.extend_from_slice(&row.tip.hash);
    out
}

fn decode_stream(bytes: &[u8]) -> Option<StreamRow> {
    (bytes.len() == 48).then(|| StreamRow {
        id: be(&bytes[..8]),
        tip: StreamTip {
            version: be(&bytes[8..16]),
            hash: bytes[16..48].try_into().unwrap_or([0; 32]),
        },
    })
}

fn encode_place(place: &Place) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&place.position.to_be_bytes());
    out.extend_from_slice(&place.offset.to_be_bytes());
    out.extend_from_slice(&place.len.to_be_bytes());
    out
}

fn decode_place(bytes: &[u8]) -> Option<Place> {
    (bytes.len() == 24).then(|| Place {
        position: be(&bytes[..8]),
        offset: be(&bytes[8..16]),
        len: be(&bytes[16..24]),
    })
}

fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = encode_place(&head.place);
    out.extend_from_slice(&head.hash);
    out
}

fn decode_head(bytes: &[u8]) -> Option<Head> {
    (bytes.len() == 56).then(|| Head {
        place: decode_place(&bytes[..24]).unwrap_or(Place {
            position: 0,
            offset: 0,
            len: 0,
        }),
        hash: bytes[24..56].try_into().unwrap_or([0; 32]),
    })
}

/// `expires_at` as stored: 0 for good, else 1 + the time's bits.
fn encode_held(held: &Held) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&held.position.to_be_bytes());
    out.extend_from_slice(
        &held
            .expires_at
            .map_or(0, |at| (at as u64).wrapping_add(1))
            .to_be_bytes(),
    );
    out
}

fn decode_held(bytes: &[u8]) -> Option<Held> {
    (bytes.len() == 16).then(|| Held {
        position: be(&bytes[..8]),
        expires_at: be(&bytes[8..16]).checked_sub(1).map(|bits| bits as i64),
    })
}

fn be(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or_default())
}

/// What an opened index says it holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stored {
    pub format: Option<u64>,
    pub head: Option<Head>,
    pub next_id: u64,
}

/// Opens the index file, creating it if needed, and reads what it holds.
pub fn open_file(
    log_dir: &Path,
    cache: usize,
) -> std::result::Result<(Arc<dyn Kv>, Stored), kv::Error> {
    let kv: Arc<dyn Kv> = Arc::new(RedbKv::open(&log_dir.join("index.redb"), &TABLES, cache)?);
    let snapshot = kv.read()?;
    let number = |key: &[u8]| -> std::result::Result<Option<u64>, kv::Error> {
        Ok(snapshot.get(META, key)?.map(|b| be(&b)))
    };
    let stored = Stored {
        format: number(META_FORMAT)?,
        head: snapshot.get(META, META_HEAD)?.and_then(|b| decode_head(&b)),
        next_id: number(META_NEXT_ID)?.unwrap_or(0),
    };
    Ok((kv, stored))
}

/// The path of the index file of a log directory.
pub fn file_in(log_dir: &Path) -> PathBuf {
    log_dir.join("index.redb")
}

/// Whether `stored` is an index of this build's format.
pub fn current_format(stored: &Stored) -> bool {
    stored.format == Some(FORMAT)
}

/// A segment a read can find frames in.
#[derive(Debug, Clone)]
struct Segment {
    first_position: u64,
    file: Arc<SegmentFile>,
}

/// One frame to read.
#[derive(Debug, Clone)]
pub struct Loc {
    file: Arc<SegmentFile>,
    position: u64,
    offset: u64,
    len: u64,
}

/// The index: on disk, the memtable, the segments and the recent records.
#[derive(Debug)]
pub struct Index {
    /// Where a damage marker goes when a read of the index finds damage.
    log_dir: Option<PathBuf>,
    /// The index on disk; `None` beside a running writer, or once closed.
    layered: RwLock<Option<Arc<Layered<Pending>>>>,
    segments: RwLock<Vec<Segment>>,
    recent: RwLock<Recent>,
    /// Where the last walk by position ended, so a reader going through the
    /// log in order goes on from there.
    cursor: std::sync::Mutex<Option<(u64, u64)>>,
    /// Held by every read while it turns the index's places into frames
    /// to read, and by a compaction while it swaps a segment's file and the
    /// places of its frames: a read never pairs the places of one with the
    /// file of the other.
    relocating: RwLock<()>,
}

#[derive(Debug, Default)]
struct Recent {
    records: VecDeque<RecordedEvent>,
    bytes: usize,
    head: u64,
}

impl Index {
    /// An index on `kv` holding everything up to `pending`'s head, over the
    /// segment files `segments` (by first position). Without `kv` the index
    /// only knows the segments, as a reader beside a running writer does.
    pub fn new(
        kv: Option<Arc<dyn Kv>>,
        pending: Pending,
        segments: &[(u64, PathBuf)],
        head: u64,
    ) -> Result<Index> {
        let log_dir = segments
            .first()
            .and_then(|(_, p)| p.parent().map(Path::to_path_buf))
            .or_else(|| {
                kv.as_ref()
                    .and_then(|kv| kv.path().parent().map(Path::to_path_buf))
            });
        let layered = match kv {
            Some(kv) => Some(Arc::new(
                Layered::start(
                    kv,
                    pending,
                    Flushing {
                        bytes: 8 << 20,
                        // As often as the read model's: each write-out
                        // rewrites the pages of every stream it touches.
                        interval: std::time::Duration::from_secs(1),
                        durable_interval: std::time::Duration::from_secs(2),
                    },
                    "hookledger-log-index",
                )
                .map_err(store_error)?,
            )),
            None => None,
        };
        let segments = segments
            .iter()
            .map(|(first, path)| {
                Ok(Segment {
                    first_position: *first,
                    file: SegmentFile::open(path.clone())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Index {
            log_dir,
            layered: RwLock::new(layered),
            segments: RwLock::new(segments),
            recent: RwLock::new(Recent {
                head,
                ..Recent::default()
            }),
            cursor: std::sync::Mutex::new(None),
            relocating: RwLock::new(()),
        })
    }

    pub fn head(&self) -> u64 {
        self.recent.read().unwrap_or_else(|e| e.into_inner()).head
    }

    /// The index on disk, while there is one.
    fn layered(&self) -> Option<Arc<Layered<Pending>>> {
        self.layered
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a new, empty segment whose first frame will hold the next position.
    pub fn add_segment(&self, file: Arc<SegmentFile>) {
        let first_position = self.head() + 1;
        self.segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Segment {
                first_position,
                file,
            });
    }

    /// Takes in `records`, now durable in the last segment at `places`, and
    /// the claims their appends took.
    pub fn extend(
        &self,
        records: Vec<RecordedEvent>,
        places: &[Place],
        claims: &[(String, Held)],
    ) -> Result<()> {
        if let Some(layered) = self.layered() {
            layered
                .change(|pending, frozen, kv| {
                    let lookup = |stream: &str| stream_row(None, frozen, kv, stream).ok().flatten();
                    for (record, place) in records.iter().zip(places) {
                        pending.add(record, *place, &lookup);
                    }
                    for (name, held) in claims {
                        pending.claim(name, *held);
                    }
                })
                .map_err(store_error)?;
        }
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        for record in records {
            recent.head = record.position;
            recent.bytes += record.data.len() + record.metadata.len() + record.content.len();
            recent.records.push_back(record);
        }
        while recent.records.len() > RECENT_EVENTS || recent.bytes > RECENT_BYTES {
            let Some(old) = recent.records.pop_front() else {
                break;
            };
            recent.bytes -= old.data.len() + old.metadata.len() + old.content.len();
        }
        Ok(())
    }

    /// Calls `each` with the last `n` records taken in (fewer if the recent
    /// window is smaller), in order, as the slices they lie in.
    pub fn with_recent_tail(&self, n: usize, each: impl FnMut(&[RecordedEvent])) {
        let recent = self.recent.read().unwrap_or_else(|e| e.into_inner());
        let (front, back) = recent.records.as_slices();
        let parts: [&[RecordedEvent]; 2] = if back.len() >= n {
            [&[], &back[back.len() - n..]]
        } else {
            let rest = n - back.len();
            [&front[front.len().saturating_sub(rest)..], back]
        };
        parts.into_iter().filter(|p| !p.is_empty()).for_each(each);
    }

    /// Up to `max` events from position `from` if they are all among the recent
    /// records in memory: they were checked when they were written, moments ago.
    pub fn recent_from(&self, from: u64, max: usize) -> Option<Vec<RecordedEvent>> {
        let recent = self.recent.read().unwrap_or_else(|e| e.into_inner());
        let first = recent.records.front()?.position;
        if from < first || from > recent.head {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(
            recent
                .records
                .iter()
                .skip(skip)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// The tip of `stream` and the hold of `claim`s, for the writer.
    pub fn lookup(&self) -> IndexLookup<'_> {
        IndexLookup(self)
    }

    fn stream(&self, stream: &str) -> Result<Option<StreamRow>> {
        let Some(layered) = self.layered() else {
            return Ok(None);
        };
        let layers = layered.layers();
        // The memtables' guards are let go before the store below is read:
        // held across a read of the disk, they would keep the writer from
        // taking in its next batch, and every reader queued behind it.
        let in_memory = {
            let active = layers.active();
            let frozen = layers.frozen();
            stream_row_in_memory(Some(&active), frozen.as_deref(), stream)
        };
        match in_memory {
            Some(row) => Ok(Some(row)),
            None => stream_row(None, None, layers.kv.as_ref(), stream).map_err(|e| self.fail(e)),
        }
    }

    fn claim(&self, name: &str) -> Result<Option<Held>> {
        let Some(layered) = self.layered() else {
            return Ok(None);
        };
        let layers = layered.layers();
        for memtable in [Some(layers.active()), layers.frozen()]
            .into_iter()
            .flatten()
        {
            if let Some(held) = memtable.claims.get(name) {
                return Ok(Some(*held));
            }
        }
        Ok(layers
            .kv
            .get(CLAIMS, name.as_bytes())
            .map_err(|e| self.fail(e))?
            .and_then(|b| decode_held(&b)))
    }

    fn locate(&self, place: Place) -> Option<Loc> {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let i = segments
            .partition_point(|s| s.first_position <= place.position)
            .checked_sub(1)?;
        Some(Loc {
            file: segments[i].file.clone(),
            position: place.position,
            offset: place.offset,
            len: place.len,
        })
    }

    /// The frames of up to `max` events of `stream` from version `from`.
    pub fn locate_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<Loc>> {
        let _relocating = self.relocating.read().unwrap_or_else(|e| e.into_inner());
        let Some(layered) = self.layered() else {
            return Err(Error::Unavailable(
                "streams are read through the writer's index: this log is opened read-only, or closed"
                    .into(),
            ));
        };
        let Some(row) = self.stream(stream)? else {
            return Ok(Vec::new());
        };
        let layers = layered.layers();
        let mut places: Vec<(u64, Place)> = Vec::new();
        let mut failure = None;
        let start = event_key(row.id, from);
        let end = event_key(row.id + 1, 0);
        layers
            .kv
            .scan(
                EVENTS,
                Bound::Included(&start),
                Bound::Excluded(&end),
                false,
                &mut |k, v| {
                    match decode_place(v) {
                        Some(place) => places.push((be(&k[8..]), place)),
                        None => failure = Some(format!("a malformed entry of stream {stream}")),
                    }
                    Ok(if places.len() >= max {
                        Flow::Stop
                    } else {
                        Flow::Continue
                    })
                },
            )
            .map_err(|e| self.fail(e))?;
        if let Some(reason) = failure {
            return Err(Error::Unavailable(format!(
                "the log index is damaged: {reason}"
            )));
        }
        for memtable in [layers.frozen(), Some(layers.active())]
            .into_iter()
            .flatten()
        {
            let newer = memtable.events.get(&row.id).into_iter().flatten();
            for &(version, place) in newer {
                if version >= from && places.last().is_none_or(|(v, _)| *v < version) {
                    places.push((version, place));
                }
            }
        }
        places.truncate(max);
        Ok(places
            .into_iter()
            .filter_map(|(_, p)| self.locate(moved(&layers, p.position).unwrap_or(p)))
            .collect())
    }

    /// The frames of up to `max` events from position `from` (1-based), up
    /// to `head`: found from the nearest kept offset at or before `from`, by
    /// walking the frames' lengths.
    pub fn locate_all(&self, from: u64, max: usize, head: u64) -> Result<Vec<Loc>> {
        let from = from.max(1);
        if from > head || max == 0 {
            return Ok(Vec::new());
        }
        let _relocating = self.relocating.read().unwrap_or_else(|e| e.into_inner());
        let segments = self
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut i) = segments
            .partition_point(|s| s.first_position <= from)
            .checked_sub(1)
        else {
            return Ok(Vec::new());
        };
        let (mut position, mut offset) = match self.kept_offset(from)? {
            Some((p, o)) if p >= segments[i].first_position => (p, o),
            _ => (segments[i].first_position, super::SEGMENT_HEADER_LEN),
        };
        let cursor = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, o)) = cursor.filter(|&(p, _)| p > position && p <= from) {
            (position, offset) = (p, o);
        }
        let mut locs = Vec::with_capacity(max.min(4096));
        let mut window = Window::default();
        while locs.len() < max && position <= head {
            // The next segment starts where this one's frames end.
            if segments
                .get(i + 1)
                .is_some_and(|s| s.first_position <= position)
            {
                i += 1;
                offset = super::SEGMENT_HEADER_LEN;
                continue;
            }
            let segment = &segments[i];
            let Some(len) = window.frame_len(&segment.file, offset)? else {
                return Err(Error::Corrupt {
                    file: segment.file.path.clone(),
                    offset,
                    position,
                    reason: "no frame where the log holds one".into(),
                });
            };
            if position >= from {
                locs.push(Loc {
                    file: segment.file.clone(),
                    position,
                    offset,
                    len,
                });
            }
            position += 1;
            offset += len;
        }
        // Where the next read in order goes on, unless it crosses a segment.
        if segments
            .get(i + 1)
            .is_none_or(|s| s.first_position > position)
        {
            *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = Some((position, offset));
        }
        Ok(locs)
    }

    /// The nearest kept `(position, offset)` at or before `position`.
    fn kept_offset(&self, position: u64) -> Result<Option<(u64, u64)>> {
        let Some(layered) = self.layered() else {
            return Ok(None);
        };
        let layers = layered.layers();
        let mut best: Option<(u64, u64)> = None;
        for memtable in [Some(layers.active()), layers.frozen()]
            .into_iter()
            .flatten()
        {
            for &(p, o) in memtable.positions.iter().rev() {
                if p <= position {
                    if best.is_none_or(|(b, _)| p > b) {
                        best = Some((p, o));
                    }
                    break;
                }
            }
        }
        let key = position.to_be_bytes();
        layers
            .kv
            .scan(
                POSITIONS,
                Bound::Unbounded,
                Bound::Included(&key),
                true,
                &mut |k, v| {
                    let p = be(k);
                    if best.is_none_or(|(b, _)| p > b) {
                        best = Some((p, be(v)));
                    }
                    Ok(Flow::Stop)
                },
            )
            .map_err(|e| self.fail(e))?;
        // A kept offset in a compacted segment has moved with its frame.
        Ok(best.map(|(p, o)| (p, moved(&layers, p).map_or(o, |place| place.offset))))
    }

    /// Writes the index out durably, so the next open scans little, and
    /// lets its file go. Reads in position order go on working.
    pub fn close(&self) -> Result<()> {
        let taken = self
            .layered
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match taken {
            Some(layered) => layered.close().map_err(store_error),
            None => Ok(()),
        }
    }
}

/// A stream's row in the store alone.
pub fn stored_row(kv: &dyn KvRead, stream: &str) -> Option<StreamRow> {
    stream_row(None, None, kv, stream).ok().flatten()
}

/// A stream's row: in `active`, else `frozen`, else the store.
fn stream_row(
    active: Option<&Pending>,
    frozen: Option<&Pending>,
    kv: &dyn KvRead,
    stream: &str,
) -> std::result::Result<Option<StreamRow>, kv::Error> {
    if let Some(row) = stream_row_in_memory(active, frozen, stream) {
        return Ok(Some(row));
    }
    Ok(kv
        .get(STREAMS, stream.as_bytes())?
        .and_then(|b| decode_stream(&b)))
}

/// `stream`'s row in the memtables, the active one first.
fn stream_row_in_memory(
    active: Option<&Pending>,
    frozen: Option<&Pending>,
    stream: &str,
) -> Option<StreamRow> {
    [active, frozen]
        .into_iter()
        .flatten()
        .find_map(|memtable| memtable.streams.get(stream).copied())
}

/// Where a compaction moved the frame of `position`, if it did since the
/// store below last took it in: the active memtable first, then the frozen one.
fn moved(layers: &Layers<Pending>, position: u64) -> Option<Place> {
    [Some(layers.active()), layers.frozen()]
        .into_iter()
        .flatten()
        .find_map(|m| m.moved.get(&position).map(|&(_, _, place)| place))
}

fn store_error(e: kv::Error) -> Error {
    Error::Unavailable(format!("the log index: {e}"))
}

/// The file whose presence tells the next open that the index was found
/// damaged and must be rebuilt from the log.
pub fn damage_marker(log_dir: &Path) -> PathBuf {
    log_dir.join("index.damaged")
}

impl Index {
    /// Turns an error of the index into the store's, leaving a marker for the
    /// next open when it is damage: a damaged index is never trusted again.
    fn fail(&self, e: kv::Error) -> Error {
        if matches!(e, kv::Error::Corrupt { .. })
            && let Some(dir) = &self.log_dir
        {
            tracing::error!(error = %e, "the log's index is damaged; the next start rebuilds it from the log");
            if let Err(marking) = std::fs::write(damage_marker(dir), e.to_string()) {
                tracing::error!(error = %marking, "cannot mark the log's index damaged");
            }
        }
        store_error(e)
    }
}

/// The index as the sequencer looks tips and claims up in it. A lookup that
/// fails answers nothing: the append it was for then fails its checks, or
/// the open that asked refuses the log, rather than guess.
#[derive(Debug, Clone, Copy)]
pub struct IndexLookup<'a>(&'a Index);

impl IndexLookup<'_> {
    pub fn tip(&self, stream: &str) -> Result<Option<StreamTip>> {
        Ok(self.0.stream(stream)?.map(|row| row.tip))
    }

    pub fn claim(&self, name: &str) -> Result<Option<Held>> {
        self.0.claim(name)
    }
}

/// Looks tips and claims up in a store alone, for the scan at open.
pub struct StoredLookup(pub Arc<dyn KvRead>);

impl std::fmt::Debug for StoredLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredLookup(..)")
    }
}

impl Lookup for StoredLookup {
    fn tip(&self, stream: &str) -> Option<StreamTip> {
        stream_row(None, None, self.0.as_ref(), stream)
            .ok()
            .flatten()
            .map(|row| row.tip)
    }

    fn claim(&self, claim: &str) -> Option<Held> {
        self.0
            .get(CLAIMS, claim.as_bytes())
            .ok()
            .flatten()
            .and_then(|b| decode_held(&b))
    }
}

/// A stretch of a segment read ahead, so a walk along its frames' lengths
/// reads the file in large pieces, not a header at a time.
#[derive(Debug, Default)]
struct Window {
    file: Option<PathBuf>,
    start: u64,
    bytes: Vec<u8>,
    /// How much the next read takes: doubled at each read, from
    /// [`FIRST_WINDOW`] up to [`WINDOW`].
    size: usize,
}

/// How much a walk reads ahead at first: a walk to one event from the
/// nearest kept offset passes at most [`POSITION_EVERY`] frames, usually a
/// few KiB. Reading a whole [`WINDOW`] for it zeroed and copied 1 MiB per
/// event looked up, most of a page of attempts' time (BENCHMARKS.md,
/// "Queries across deliveries").
const FIRST_WINDOW: usize = 64 << 10;
/// How much a long walk reads ahead at a time.
const WINDOW: usize = 1 << 20;

impl Window {
    /// The whole length of the frame at `offset` of `file`, or `None` where
    /// none starts (the zeros allocated past the last frame, or the end).
    fn frame_len(&mut self, file: &SegmentFile, offset: u64) -> Result<Option<u64>> {
        let inside = self.file.as_deref() == Some(file.path.as_path())
            && offset >= self.start
            && offset + frame::HEADER_LEN as u64 <= self.start + self.bytes.len() as u64;
        if !inside {
            self.size = (self.size * 2).clamp(FIRST_WINDOW, WINDOW);
            self.bytes.resize(self.size, 0);
            let mut read = 0;
            while read < self.size {
                match file
                    .file
                    .read_at(&mut self.bytes[read..], offset + read as u64)
                {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(format!("reading {}", file.path.display()), e)),
                }
            }
            self.bytes.truncate(read);
            self.start = offset;
            self.file = Some(file.path.clone());
        }
        let at = (offset - self.start) as usize;
        Ok(frame::length(&self.bytes[at..]).map(|len| len as u64))
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
            let archive = at + frame::HEADER_LEN..at + frame::HEADER_LEN + frame.archive.len();
            batch.keep_archive(archive, loc.offset, loc.position);
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
    let event = frame::decode_in(&frame, aligned).map_err(&corrupt)?;
    if event.position != loc.position {
        return Err(corrupt(format!("frame holds position {}", event.position)));
    }
    Ok(event)
}
