//! The persisted index: where every durable frame is and which positions each
//! stream holds, with each stream's tip, as of one position. A writer's open
//! loads it, checks it against the segment files and scans only what came after
//! it, instead of decoding every frame of the log.
//!
//! The file is `DIR/log/index.ckpt`: magic, format version, body length and the
//! body's CRC32C, then the body in LEB128 varints (offsets and positions as
//! deltas). It is derived data and never trusted: a missing, damaged, stale or
//! inconsistent file is ignored and the log scanned whole. Even a good one only
//! skips the decoding: it keeps each segment's CRC32C up to where it covers it,
//! and an open reads every covered byte and checks those checksums (in large
//! chunks, two threads, while the streams decode on a third), so damage
//! anywhere in the log still sends the open to the whole scan, which refuses it
//! with its place as before. Written atomically (temp file, fsync, rename,
//! directory fsync).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chain::Hash;
use crate::store::ClaimsOf;
use crate::store::embedded::frame;
use crate::store::embedded::segment::{self, Scanned};
use crate::store::sequencer::{Sequencer, Tip};

pub const FILE: &str = "index.ckpt";
const MAGIC: &[u8; 8] = b"HKLGIDX\0";
/// Bump on any change to the body's layout. 2: a CRC per segment. 3: the
/// claims appends took.
const FORMAT: u32 = 3;
/// Magic, format, body length, body CRC32C.
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

/// What a checkpoint restores: the index and the sequencer at `head`.
#[derive(Debug)]
pub struct Loaded {
    pub sequencer: Sequencer,
    pub segments: Vec<Scanned>,
    pub streams: HashMap<String, Vec<u64>>,
}

/// Encodes the index of `segments` and `streams` with the tips in `sequencer`.
pub fn encode<'a>(
    sequencer: &Sequencer,
    segments: impl ExactSizeIterator<Item = (u64, u64, u32, &'a [u64])>,
    streams: &HashMap<String, Vec<u64>>,
) -> Vec<u8> {
    // Sized up front: the body of a large log is tens of megabytes, and growing
    // it by doubling copies and faults in most of that again.
    let frames: usize = segments.len() * 16 + streams.values().map(Vec::len).sum::<usize>() * 3;
    let mut body = Vec::with_capacity(64 + frames * 2 + streams.len() * 56);
    put(&mut body, sequencer.head());
    body.extend_from_slice(&sequencer.clock().to_le_bytes());
    put(&mut body, segments.len() as u64);
    for (first, end, crc, offsets) in segments {
        put(&mut body, first);
        put(&mut body, end);
        body.extend_from_slice(&crc.to_le_bytes());
        put(&mut body, offsets.len() as u64);
        let mut last = 0;
        for &offset in offsets {
            put(&mut body, offset - last);
            last = offset;
        }
    }
    put(&mut body, streams.len() as u64);
    for (name, positions) in streams {
        let tip = sequencer.tip(name).unwrap_or(Tip {
            version: 0,
            hash: [0; 32],
        });
        put(&mut body, name.len() as u64);
        body.extend_from_slice(name.as_bytes());
        put(&mut body, tip.version);
        body.extend_from_slice(&tip.hash);
        put(&mut body, positions.len() as u64);
        let mut last = 0;
        for &position in positions {
            put(&mut body, position - last);
            last = position;
        }
    }
    // Sorted, so the same state always encodes to the same bytes.
    let mut claims: Vec<(&str, u64)> = sequencer.claims().collect();
    claims.sort_unstable();
    put(&mut body, claims.len() as u64);
    for (claim, position) in claims {
        put(&mut body, claim.len() as u64);
        body.extend_from_slice(claim.as_bytes());
        put(&mut body, position);
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Writes `bytes` as the checkpoint of `log_dir`, atomically.
pub fn write(log_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let path = log_dir.join(FILE);
    let tmp = log_dir.join(format!("{FILE}.tmp"));
    let mut out = crate::files::create(&tmp)?;
    out.write_all(bytes)?;
    out.sync_data()?;
    drop(out);
    fs::rename(&tmp, &path)?;
    File::open(log_dir)?.sync_all()
}

/// Loads the checkpoint of `log_dir` and checks it against `files` (the segment
/// files, by first position). `Err` says why it cannot be used.
pub fn load(
    log_dir: &Path,
    files: &[(u64, PathBuf)],
    claims_of: Option<ClaimsOf>,
) -> Result<Loaded, String> {
    let path = log_dir.join(FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("no checkpoint".into()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut r = body(&bytes)?;
    let head = r.varint()?;
    let clock = i64::from_le_bytes(r.take(8)?.try_into().unwrap_or_default());
    let segments = decode_segments(&mut r, head, files)?;
    // Checking the log's bytes and decoding the streams are independent, and
    // each about as long as the other: do them at once.
    let (checked, streams) = std::thread::scope(|s| {
        let checking = s.spawn(|| verify_segments(&segments));
        let streams = decode_streams(&mut r, head);
        let checked = checking
            .join()
            .unwrap_or_else(|_| Err("checker panicked".into()));
        (checked, streams)
    });
    checked?;
    let (streams, tips) = streams?;
    let claims = decode_claims(&mut r, head)?;
    let loaded = Loaded {
        sequencer: Sequencer::restore(tips, head, clock, claims, claims_of),
        segments,
        streams,
    };
    check_head(&loaded)?;
    Ok(loaded)
}

/// The checked body of a checkpoint file.
fn body(bytes: &[u8]) -> Result<Reader<'_>, String> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err("not a checkpoint (bad magic or too short)".into());
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if format != FORMAT {
        return Err(format!(
            "checkpoint format {format}; this build reads {FORMAT}"
        ));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap_or_default());
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(format!("body is {} bytes, header says {len}", body.len()));
    }
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(Reader { bytes: body, at: 0 })
}

fn decode_segments(
    r: &mut Reader<'_>,
    head: u64,
    files: &[(u64, PathBuf)],
) -> Result<Vec<Scanned>, String> {
    let segment_count = r.count(7)?;
    if segment_count > files.len() {
        return Err(format!(
            "checkpoint names {segment_count} segments, the log has {}",
            files.len()
        ));
    }
    let mut segments = Vec::with_capacity(segment_count);
    let mut position = 1;
    for (first_named, path) in files.iter().take(segment_count) {
        let first = r.varint()?;
        let end = r.varint()?;
        let crc = u32::from_le_bytes(r.take(4)?.try_into().unwrap_or_default());
        let n = r.count(1)?;
        if first != *first_named || first != position {
            return Err(format!(
                "checkpoint segment starts at {first}, the log's at {first_named}"
            ));
        }
        let mut offsets = Vec::with_capacity(n);
        let mut last = 0u64;
        for _ in 0..n {
            let delta = r.varint()?;
            if delta == 0 {
                return Err("frame offsets do not increase".into());
            }
            last = last.checked_add(delta).ok_or("offset overflows")?;
            offsets.push(last);
        }
        if offsets
            .first()
            .is_some_and(|&o| o != segment::HEADER_LEN as u64)
            || offsets.last().is_some_and(|&o| o >= end)
            || end < segment::HEADER_LEN as u64
        {
            return Err("frame offsets fall outside their segment".into());
        }
        position += n as u64;
        segments.push(Scanned {
            path: path.clone(),
            first_position: first,
            offsets,
            end,
            crc,
        });
    }
    if position != head + 1 {
        return Err(format!(
            "checkpoint holds {} frames but names head {head}",
            position - 1
        ));
    }
    Ok(segments)
}

type Streams = (HashMap<String, Vec<u64>>, HashMap<String, Tip>);

fn decode_streams(r: &mut Reader<'_>, head: u64) -> Result<Streams, String> {
    let stream_count = r.count(35)?;
    let mut streams = HashMap::with_capacity(stream_count);
    let mut tips = HashMap::with_capacity(stream_count);
    let mut total = 0u64;
    for _ in 0..stream_count {
        let name_len = r.count(1)?;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| "stream name is not UTF-8")?
            .to_owned();
        let version = r.varint()?;
        let hash: Hash = r.take(32)?.try_into().unwrap_or_default();
        let n = r.count(1)?;
        if n as u64 != version.wrapping_add(1) || n == 0 {
            return Err(format!(
                "stream {name:?} holds {n} positions but tip version {version}"
            ));
        }
        let mut positions = Vec::with_capacity(n);
        let mut last = 0u64;
        for _ in 0..n {
            let delta = r.varint()?;
            if delta == 0 {
                return Err(format!("stream {name:?} positions do not increase"));
            }
            last = last.checked_add(delta).ok_or("position overflows")?;
            positions.push(last);
        }
        if last > head {
            return Err(format!(
                "stream {name:?} holds position {last} beyond head {head}"
            ));
        }
        total += n as u64;
        tips.insert(name.clone(), Tip { version, hash });
        if streams.insert(name, positions).is_some() {
            return Err("a stream is named twice".into());
        }
    }
    if total != head {
        return Err(format!("streams hold {total} positions, head is {head}"));
    }
    Ok((streams, tips))
}

/// The claims section, the body's last.
fn decode_claims(r: &mut Reader<'_>, head: u64) -> Result<HashMap<String, u64>, String> {
    let count = r.count(3)?;
    let mut claims = HashMap::with_capacity(count);
    for _ in 0..count {
        let len = r.count(1)?;
        let claim = std::str::from_utf8(r.take(len)?)
            .map_err(|_| "a claim is not UTF-8")?
            .to_owned();
        let position = r.varint()?;
        if position == 0 || position > head {
            return Err(format!(
                "claim {claim:?} at position {position}, head is {head}"
            ));
        }
        if claims.insert(claim, position).is_some() {
            return Err("a claim is named twice".into());
        }
    }
    if r.at != r.bytes.len() {
        return Err("trailing bytes after the body".into());
    }
    Ok(claims)
}

/// Reads every byte the checkpoint covers, in 1 MiB chunks on two threads, and
/// checks each segment's header and CRC32C. A sealed segment (all but the last
/// covered) must end where the checkpoint says; the last may have grown since.
fn verify_segments(segments: &[Scanned]) -> Result<(), String> {
    let count = segments.len();
    let check = |range: std::ops::Range<usize>| -> Result<(), String> {
        let mut buf = vec![0u8; CHUNK];
        for i in range {
            check_segment(&segments[i], i + 1 < count, &mut buf)?;
        }
        Ok(())
    };
    let split = split_by_size(segments);
    std::thread::scope(|s| {
        let other = s.spawn(|| check(split..count));
        let mine = check(0..split);
        let theirs = other
            .join()
            .unwrap_or_else(|_| Err("checker panicked".into()));
        mine.and(theirs)
    })
}

/// Small enough to stay in cache between the read and the checksum.
const CHUNK: usize = 1 << 20;

/// Decodes the frame at the head and checks it against its stream's tip: the
/// checkpoint belongs to this log, not to another with the same shape.
fn check_head(loaded: &Loaded) -> Result<(), String> {
    let head = loaded.sequencer.head();
    if head == 0 {
        return Ok(());
    }
    let Some(segment) = loaded.segments.iter().rev().find(|s| !s.offsets.is_empty()) else {
        return Err("no frame holds the head".into());
    };
    let offset = *segment.offsets.last().unwrap_or(&0);
    let file = File::open(&segment.path).map_err(|e| e.to_string())?;
    let mut bytes = vec![0; usize::try_from(segment.end - offset).map_err(|e| e.to_string())?];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|e| e.to_string())?;
    let (event, len) = frame::read(&bytes)?;
    let tip = loaded.sequencer.tip(&event.stream);
    if event.position != head
        || len as u64 != segment.end - offset
        || tip
            != Some(Tip {
                version: event.version,
                hash: event.hash,
            })
    {
        return Err("the frame at the head does not match the checkpoint".into());
    }
    Ok(())
}

/// The segment index that splits the covered bytes about in half.
fn split_by_size(segments: &[Scanned]) -> usize {
    let total: u64 = segments.iter().map(|s| s.end).sum();
    let mut acc = 0;
    for (i, s) in segments.iter().enumerate() {
        acc += s.end;
        if acc * 2 >= total {
            return i + 1;
        }
    }
    segments.len()
}

fn check_segment(s: &Scanned, sealed: bool, buf: &mut [u8]) -> Result<(), String> {
    let file = File::open(&s.path).map_err(|e| format!("{}: {e}", s.path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < s.end || (sealed && len != s.end) {
        return Err(format!(
            "{} is {len} bytes, the checkpoint says {}",
            s.path.display(),
            s.end
        ));
    }
    let mut crc = 0;
    let mut at = 0u64;
    while at < s.end {
        let n = usize::try_from(s.end - at).map_or(buf.len(), |left| left.min(buf.len()));
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, at).map_err(|e| e.to_string())?;
        if at == 0 && segment::parse_header(chunk)? != s.first_position {
            return Err("segment header does not match".into());
        }
        crc = crc32c::crc32c_append(crc, chunk);
        at += n as u64;
    }
    if crc != s.crc {
        return Err(format!("{} does not match its checksum", s.path.display()));
    }
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("checkpoint body cut short")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("checkpoint body cut short")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    /// A count of items each at least `min_bytes` long: never more than the
    /// bytes left could hold, so a damaged count cannot make us allocate wildly.
    fn count(&mut self, min_bytes: usize) -> Result<usize, String> {
        let n = self.varint()?;
        let left = (self.bytes.len() - self.at) / min_bytes.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("count {n} exceeds what the body holds"))
    }
}

fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
