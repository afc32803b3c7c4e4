//! Unit tests of how the open-time scan reads damage: which is a torn tail to
//! cut back, and which is corruption to refuse with its file, offset and
//! position. Segments are built by hand here, frame by frame.

use std::path::Path;

use super::*;
use crate::store::sequencer::Sequencer;

pub(super) fn new_event(i: u64) -> NewEvent {
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        data: format!(r#"{{"attempt":{i}}}"#).into_bytes(),
        metadata: b"{}".to_vec(),
        content: Vec::new(),
    }
}

/// `n` records over two streams, linked as the sequencer links them.
fn records(n: u64) -> Vec<RecordedEvent> {
    let seq = Sequencer::default();
    let mut batch = seq.staging();
    for i in 0..n {
        let stream = if i % 2 == 0 { "a" } else { "b" };
        batch
            .stage(
                stream,
                ExpectedVersion::Any,
                vec![new_event(i)],
                1_000 + i as i64,
            )
            .unwrap();
    }
    batch.finish().0
}

/// Writes `records` as one segment file, each its own batch; returns each
/// frame's offset.
fn write_segment(log: &Path, records: &[RecordedEvent]) -> Vec<usize> {
    write_batches(log, records, &vec![false; records.len()])
}

/// Writes `records` as one segment file, frame `i` marked as continuing its
/// batch when `continues[i]`; returns each frame's offset.
fn write_batches(log: &Path, records: &[RecordedEvent], continues: &[bool]) -> Vec<usize> {
    let first = records[0].position;
    let mut bytes = segment::header(first).to_vec();
    let mut offsets = Vec::new();
    for (record, &continues) in records.iter().zip(continues) {
        offsets.push(bytes.len());
        frame::encode(record, continues, &mut bytes).unwrap();
    }
    std::fs::write(log.join(segment::file_name(first)), bytes).unwrap();
    offsets
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn seg(log: &Path, first: u64) -> std::path::PathBuf {
    log.join(segment::file_name(first))
}

#[track_caller]
fn assert_corrupt(result: Result<segment::Scan>, file: &Path, offset: usize, position: u64) {
    match result {
        Err(Error::Corrupt {
            file: f,
            offset: o,
            position: p,
            ..
        }) => assert_eq!((f.as_path(), o, p), (file, offset as u64, position)),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_cut_last_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(5);
    let offsets = write_segment(dir.path(), &all);
    edit(&seg(dir.path(), 1), |b| b.truncate(offsets[4] + 10));
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.sequencer.head(), 4);
    let torn = scan.torn_tail.unwrap();
    assert_eq!(torn.offset, offsets[4] as u64);
    assert_eq!(
        scan.sequencer.tip("a").map(|t| t.version),
        Some(1),
        "stream a holds positions 1 and 3"
    );
}

#[test]
fn a_batch_cut_short_is_dropped_whole_even_its_complete_frames() {
    let dir = tempfile::tempdir().unwrap();
    // Positions 1 and 2 are batches of their own; 3, 4 and 5 are one batch.
    let continues = [false, false, true, true, false];
    let offsets = write_batches(dir.path(), &records(5), &continues);
    let original = std::fs::read(seg(dir.path(), 1)).unwrap();
    // Cut inside frame 5, and exactly after frame 4: either way 3 and 4 are whole
    // but their batch is not.
    for cut in [offsets[4] + 3, offsets[4]] {
        std::fs::write(seg(dir.path(), 1), &original[..cut]).unwrap();
        let scan = segment::scan_log(dir.path()).unwrap();
        assert_eq!(scan.sequencer.head(), 2, "cut at {cut}");
        assert_eq!(scan.torn_tail.unwrap().offset, offsets[2] as u64);
        assert_eq!(scan.segments[0].end, offsets[2] as u64);
    }
}

#[test]
fn damage_inside_a_batch_with_a_valid_frame_after_it_names_the_damaged_frame() {
    let dir = tempfile::tempdir().unwrap();
    let continues = [false, true, true, false];
    let offsets = write_batches(dir.path(), &records(4), &continues);
    edit(&seg(dir.path(), 1), |b| b[offsets[2] + 9] ^= 0x01);
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn a_segment_that_is_not_the_last_may_not_end_inside_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(4);
    let offsets = write_batches(dir.path(), &all[..2], &[false, true]);
    write_segment(dir.path(), &all[2..]);
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[1],
        2,
    );
}

#[test]
fn damage_with_a_valid_frame_after_it_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = write_segment(dir.path(), &records(5));
    edit(&seg(dir.path(), 1), |b| b[offsets[2] + 12] ^= 0x40);
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn damage_at_the_end_of_a_segment_that_is_not_the_last_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(6);
    let offsets = write_segment(dir.path(), &all[..3]);
    write_segment(dir.path(), &all[3..]);
    edit(&seg(dir.path(), 1), |b| b.truncate(offsets[2] + 3));
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn a_checksummed_frame_out_of_place_is_corruption_even_at_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(4);
    // Position 3 is missing: the frame of 4 follows 2.
    let offsets = write_segment(
        dir.path(),
        &[all[0].clone(), all[1].clone(), all[3].clone()],
    );
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn a_broken_stream_link_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = records(3);
    all[2].prev_hash = [7; 32];
    let offsets = write_segment(dir.path(), &all);
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn a_cut_header_on_the_last_segment_is_a_crash_during_creation() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(4);
    write_segment(dir.path(), &all[..2]);
    std::fs::write(seg(dir.path(), 3), &segment::header(3)[..10]).unwrap();
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.torn_header, Some(seg(dir.path(), 3)));
    assert_eq!(scan.sequencer.head(), 2);
}

#[test]
fn a_bad_header_with_frames_after_it_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), &records(2));
    edit(&seg(dir.path(), 1), |b| b[9] ^= 1);
    assert_corrupt(segment::scan_log(dir.path()), &seg(dir.path(), 1), 0, 1);
}

#[test]
fn a_segment_that_starts_at_the_wrong_position_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(4);
    write_segment(dir.path(), &all[..2]);
    write_segment(dir.path(), &all[..2]);
    std::fs::rename(seg(dir.path(), 1), seg(dir.path(), 0)).unwrap();
    write_segment(dir.path(), &all[2..]);
    assert!(matches!(
        segment::scan_log(dir.path()),
        Err(Error::Corrupt {
            offset: 0,
            position: 1,
            ..
        })
    ));
}

/// Appends `n` zero bytes to `path`: space the writer allocated ahead.
fn allocate(path: &Path, n: usize) {
    edit(path, |b| b.resize(b.len() + n, 0));
}

#[test]
fn zeros_after_the_last_frame_end_the_log_without_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = write_segment(dir.path(), &records(5));
    let end = std::fs::metadata(seg(dir.path(), 1)).unwrap().len();
    allocate(&seg(dir.path(), 1), 64 * 1024);
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.sequencer.head(), 5);
    assert_eq!(scan.torn_tail, None);
    assert_eq!(scan.segments[0].end, end);
    assert_eq!(offsets.len(), 5);
}

#[test]
fn a_frame_torn_before_the_allocated_zeros_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = write_segment(dir.path(), &records(5));
    // The crash kept the file's size: the torn frame's missing bytes read as zeros.
    edit(&seg(dir.path(), 1), |b| b[offsets[4] + 10..].fill(0));
    allocate(&seg(dir.path(), 1), 4096);
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.sequencer.head(), 4);
    assert_eq!(scan.torn_tail.unwrap().offset, offsets[4] as u64);
}

#[test]
fn a_batch_torn_before_the_allocated_zeros_is_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let continues = [false, false, true, true, false];
    let offsets = write_batches(dir.path(), &records(5), &continues);
    // Frames 3 and 4 landed, the batch's last did not.
    edit(&seg(dir.path(), 1), |b| b[offsets[4]..].fill(0));
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.sequencer.head(), 2);
    assert_eq!(scan.torn_tail.unwrap().offset, offsets[2] as u64);
}

#[test]
fn damage_with_valid_frames_before_the_allocated_zeros_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let offsets = write_segment(dir.path(), &records(5));
    allocate(&seg(dir.path(), 1), 4096);
    edit(&seg(dir.path(), 1), |b| b[offsets[2] + 9] ^= 0x01);
    assert_corrupt(
        segment::scan_log(dir.path()),
        &seg(dir.path(), 1),
        offsets[2],
        3,
    );
}

#[test]
fn a_header_followed_only_by_zeros_is_a_crash_during_creation() {
    let dir = tempfile::tempdir().unwrap();
    let all = records(4);
    write_segment(dir.path(), &all[..2]);
    let mut torn = segment::header(3)[..10].to_vec();
    torn.resize(8192, 0);
    std::fs::write(seg(dir.path(), 3), torn).unwrap();
    let scan = segment::scan_log(dir.path()).unwrap();
    assert_eq!(scan.torn_header, Some(seg(dir.path(), 3)));
    assert_eq!(scan.sequencer.head(), 2);
}

#[test]
fn data_end_is_where_the_last_byte_that_is_not_zero_ends() {
    assert_eq!(segment::data_end(&[]), 0);
    assert_eq!(segment::data_end(&[0; 10_000]), 0);
    for at in [0, 1, 4095, 4096, 4097, 9_999] {
        let mut bytes = vec![0; 10_000];
        bytes[at] = 7;
        assert_eq!(segment::data_end(&bytes), at + 1, "non-zero byte at {at}");
    }
}
