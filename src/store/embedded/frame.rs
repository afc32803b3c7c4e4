//! One record on disk: `len: u32 LE | crc32c: u32 LE | payload`, where the payload
//! is the rkyv encoding of a [`RecordedEvent`] and the CRC covers the four length
//! bytes and the payload, so a damaged length is caught like damaged data. The
//! length's top bit says that the frame's group commit continues in the next
//! frame: a crash that leaves a batch unfinished must drop all of it, or a
//! multi-event append could come back with only some of its events.
//!
//! An event that keeps a body outside its hash (`RecordedEvent::content`)
//! sets the length's next bit, and its payload is then `archive | content |
//! archive length: u32 LE`. A frame without the bit is the archive alone, as
//! every frame was before bodies could be erased, so older segments read as
//! they are; erasing a body rewrites its frame without the bit.
//!
//! This module only turns records into bytes and back; it knows nothing of files
//! or positions. Decoding is rkyv's validated path: bytes from disk are never
//! trusted, and nothing here may use `unsafe`.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::store::{MAX_EVENT_BYTES, NewEvent, RecordedEvent};

/// Bytes before the payload: the length and the checksum.
pub const HEADER_LEN: usize = 8;

/// The largest payload a frame may hold. Far above the largest valid event, so
/// that a length beyond it marks a damaged frame rather than a big one.
pub const MAX_PAYLOAD: usize = 4 * MAX_EVENT_BYTES;

/// Set in the length field of every frame of a batch but its last.
const CONTINUES: u32 = 1 << 31;
/// Set in the length field of a frame whose payload carries content.
const HAS_CONTENT: u32 = 1 << 30;
/// The bits of the length field that are flags, not length.
const FLAGS: u32 = CONTINUES | HAS_CONTENT;

/// What the rkyv encoding adds to an event's variable fields, with room to spare.
const ENVELOPE: usize = 1024;

/// Whether `event` appended to `stream` encodes within [`MAX_PAYLOAD`].
pub fn fits(stream: &str, event: &NewEvent) -> bool {
    stream.len()
        + event.event_type.len()
        + event.data.len()
        + event.metadata.len()
        + event.content.len()
        + ENVELOPE
        <= MAX_PAYLOAD
}

/// Appends the frame of `event` to `out`; returns the frame's length. `continues`
/// marks every frame of a batch but the last.
pub fn encode(event: &RecordedEvent, continues: bool, out: &mut Vec<u8>) -> Result<usize, String> {
    let archive = rkyv::to_bytes::<rancor::Error>(event).map_err(|e| e.to_string())?;
    let trailer = if event.content.is_empty() {
        0
    } else {
        event.content.len() + 4
    };
    let len = archive.len() + trailer;
    if len > MAX_PAYLOAD {
        return Err(format!(
            "event at position {} encodes to {len} bytes, over the {MAX_PAYLOAD}-byte frame limit",
            event.position,
        ));
    }
    let mut flags = if continues { CONTINUES } else { 0 };
    if trailer > 0 {
        flags |= HAS_CONTENT;
    }
    let len_bytes = (len as u32 | flags).to_le_bytes();
    let start = out.len();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&archive);
    if trailer > 0 {
        out.extend_from_slice(&event.content);
        out.extend_from_slice(&(archive.len() as u32).to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &out[start + HEADER_LEN..]);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(HEADER_LEN + len)
}

/// A frame whose length and checksum hold; its archive is not decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The rkyv archive of the record; it starts right after the header.
    pub archive: &'a [u8],
    /// The record's content; empty when it has none.
    pub content: &'a [u8],
    /// The whole frame's length, header included.
    pub len: usize,
    /// The batch this frame belongs to goes on in the next frame.
    pub continues: bool,
}

/// The whole length of the frame whose header starts `bytes`, header
/// included, without checking it: `None` where no frame can start (a length
/// of zero, as in the zeros allocated past the last frame, or beyond the limit).
pub fn length(bytes: &[u8]) -> Option<usize> {
    let header = bytes.first_chunk::<4>()?;
    let len = (u32::from_le_bytes(*header) & !FLAGS) as usize;
    (len > 0 && len <= MAX_PAYLOAD).then_some(HEADER_LEN + len)
}

/// Checks the frame at the start of `bytes`, which may run on past its end.
pub fn parse(bytes: &[u8]) -> Result<Frame<'_>, String> {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!(
            "frame header cut short: {} of {HEADER_LEN} bytes",
            bytes.len()
        ));
    };
    let (len_bytes, crc_bytes) = header.split_at(4);
    let raw = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default());
    let len = (raw & !FLAGS) as usize;
    let stored_crc = u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
    if len > MAX_PAYLOAD {
        return Err(format!(
            "frame length {len} exceeds the {MAX_PAYLOAD}-byte limit"
        ));
    }
    let Some(payload) = rest.get(..len) else {
        return Err(format!(
            "frame of {len} bytes cut short at {} bytes",
            rest.len()
        ));
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(len_bytes), payload);
    if crc != stored_crc {
        return Err(format!(
            "frame checksum mismatch: stored {stored_crc:08x}, computed {crc:08x}"
        ));
    }
    let (archive, content) = if raw & HAS_CONTENT == 0 {
        (payload, &payload[..0])
    } else {
        split_content(payload)?
    };
    Ok(Frame {
        archive,
        content,
        len: HEADER_LEN + len,
        continues: raw & CONTINUES != 0,
    })
}

/// `archive | content | archive length` into its archive and its content.
fn split_content(payload: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let Some((rest, archive_len)) = payload.split_last_chunk::<4>() else {
        return Err("frame with content has no archive length".into());
    };
    let archive_len = u32::from_le_bytes(*archive_len) as usize;
    if archive_len >= rest.len() {
        return Err(format!(
            "frame's archive length {archive_len} leaves no content in {} bytes",
            rest.len()
        ));
    }
    Ok(rest.split_at(archive_len))
}

/// Appends to `out` the checked `frame` without its content: the archive
/// alone, its continuation bit kept and its checksum computed anew, as
/// [`encode`] writes a record that has no content. Returns the new frame's
/// length.
pub fn encode_without_content(frame: &Frame<'_>, out: &mut Vec<u8>) -> usize {
    let flags = if frame.continues { CONTINUES } else { 0 };
    let len_bytes = (frame.archive.len() as u32 | flags).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), frame.archive);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(frame.archive);
    HEADER_LEN + frame.archive.len()
}

/// Decodes a checked frame into the record it holds.
pub fn decode(frame: &Frame<'_>) -> Result<RecordedEvent, String> {
    decode_in(frame, &mut AlignedVec::new())
}

/// [`decode`] with a scratch buffer that a caller decoding many frames reuses.
pub fn decode_in(frame: &Frame<'_>, aligned: &mut AlignedVec<16>) -> Result<RecordedEvent, String> {
    // rkyv needs its archive aligned; a frame sits at any offset in a file.
    aligned.clear();
    aligned.extend_from_slice(frame.archive);
    let mut event = rkyv::from_bytes::<RecordedEvent, rancor::Error>(aligned)
        .map_err(|e| format!("frame payload does not decode: {e}"))?;
    event.content = frame.content.to_vec();
    Ok(event)
}

/// Checks and decodes the frame at the start of `bytes`.
pub fn read(bytes: &[u8]) -> Result<(RecordedEvent, usize), String> {
    let frame = parse(bytes)?;
    Ok((decode(&frame)?, frame.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, data: &[u8]) -> RecordedEvent {
        RecordedEvent {
            position,
            stream: "delivery-dlv_1".into(),
            version: position - 1,
            event_type: "AttemptRecorded".into(),
            schema_version: 1,
            recorded_at: 1_700_000_000_000_000 + position as i64,
            data: data.to_vec(),
            metadata: br#"{"requestId":"r"}"#.to_vec(),
            prev_hash: [position as u8; 32],
            hash: [position as u8 + 1; 32],
            content: Vec::new(),
        }
    }

    #[test]
    fn a_frame_round_trips_at_any_alignment() {
        let original = event(7, br#"{"status":"delivered"}"#);
        for shift in 0..8 {
            let mut bytes = vec![0xAA; shift];
            let continues = shift % 2 == 0;
            let len = encode(&original, continues, &mut bytes).unwrap();
            bytes.extend_from_slice(b"trailing bytes belong to the next frame");
            let frame = parse(&bytes[shift..]).unwrap();
            assert_eq!((frame.len, frame.continues), (len, continues));
            assert_eq!(decode(&frame).unwrap(), original);
        }
    }

    #[test]
    fn content_round_trips_beside_the_archive() {
        let mut original = event(7, br#"{"status":"delivered"}"#);
        original.content = b"0123456789abcdef{\"ok\":true}".to_vec();
        for continues in [false, true] {
            let mut bytes = Vec::new();
            let len = encode(&original, continues, &mut bytes).unwrap();
            assert_eq!(len, bytes.len());
            let frame = parse(&bytes).unwrap();
            assert_eq!(frame.content, original.content.as_slice());
            assert_eq!(frame.continues, continues);
            assert_eq!(decode(&frame).unwrap(), original);
        }
        // Without its content the frame is the archive alone, as before.
        let mut bare = Vec::new();
        let mut without = original.clone();
        without.content.clear();
        encode(&without, false, &mut bare).unwrap();
        let frame = parse(&bare).unwrap();
        assert!(frame.content.is_empty());
        assert_eq!(frame.archive.len() + HEADER_LEN, bare.len());
    }

    #[test]
    fn a_frame_stripped_of_its_content_is_the_frame_of_the_record_without_it() {
        let mut record = event(3, br#"{"digest":"00"}"#);
        record.content = b"salt-salt-salt-s{\"secret\":1}".to_vec();
        for continues in [false, true] {
            let mut with = Vec::new();
            encode(&record, continues, &mut with).unwrap();
            let mut stripped = Vec::new();
            let len = encode_without_content(&parse(&with).unwrap(), &mut stripped);
            let mut bare = record.clone();
            bare.content.clear();
            let mut expected = Vec::new();
            encode(&bare, continues, &mut expected).unwrap();
            assert_eq!((len, &stripped), (expected.len(), &expected));
        }
    }

    #[test]
    fn every_flipped_bit_of_a_frame_with_content_is_caught() {
        let mut record = event(1, b"{}");
        record.content = b"salt-salt-salt-s{}".to_vec();
        let mut bytes = Vec::new();
        encode(&record, false, &mut bytes).unwrap();
        assert_every_flip_caught(&bytes);
    }

    /// Every single-bit change anywhere in `bytes` makes the frame unreadable.
    fn assert_every_flip_caught(bytes: &[u8]) {
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.to_vec();
                damaged[i] ^= 1 << bit;
                assert!(
                    read(&damaged).is_err(),
                    "flip of bit {bit} in byte {i} passed"
                );
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut bytes = Vec::new();
        encode(&event(1, b"{}"), true, &mut bytes).unwrap();
        assert_every_flip_caught(&bytes);
    }

    #[test]
    fn a_cut_frame_is_reported_short() {
        let mut bytes = Vec::new();
        let len = encode(&event(1, b"{}"), false, &mut bytes).unwrap();
        for cut in 0..len {
            let err = parse(&bytes[..cut]).unwrap_err();
            assert!(err.contains("cut short"), "{cut}: {err}");
        }
    }

    #[test]
    fn an_absurd_length_is_refused_before_reading() {
        let mut bytes = (MAX_PAYLOAD as u32 + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        assert!(parse(&bytes).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn a_checksummed_payload_that_is_not_an_event_does_not_decode() {
        let payload = b"not an rkyv archive at all".to_vec();
        let len = (payload.len() as u32).to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &payload);
        let mut bytes = len.to_vec();
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&payload);
        assert!(parse(&bytes).is_ok());
        assert!(read(&bytes).unwrap_err().contains("does not decode"));
    }

    #[test]
    fn the_largest_valid_event_fits_a_frame() {
        let big = NewEvent {
            event_type: "AttemptRecorded".into(),
            schema_version: 1,
            data: vec![b'x'; MAX_EVENT_BYTES - 100],
            metadata: vec![b'y'; 100 - "AttemptRecorded".len()],
            content: Vec::new(),
        };
        assert!(fits("delivery-dlv_1", &big));
        let mut bytes = Vec::new();
        let mut record = event(1, &big.data);
        record.metadata = big.metadata;
        encode(&record, false, &mut bytes).unwrap();
        assert_eq!(read(&bytes).unwrap().0, record);
    }

    /// The archived form of `RecordedEvent` is the disk format: a changed field,
    /// or an rkyv feature (endianness, pointer width) switched on anywhere in the
    /// build, changes it. When this fails, bump `segment::FORMAT_VERSION`.
    #[test]
    fn the_frame_format_is_pinned() {
        let mut bytes = Vec::new();
        encode(&event(7, br#"{"a":1}"#), false, &mut bytes).unwrap();
        let pinned = concat!(
            "b8000000be5fe9d964656c69766572792d646c765f31417474656d7074526563",
            "6f726465647b2261223a317d7b22726571756573744964223a2272227d000000",
            "07000000000000008e000000c0ffffff06000000000000008f000000beffffff",
            "010000000000000007401e18240a0600b5ffffff07000000b4ffffff11000000",
            "0707070707070707070707070707070707070707070707070707070707070707",
            "0808080808080808080808080808080808080808080808080808080808080808",
        );
        assert_eq!(hex::encode(&bytes), pinned);
    }
}
