//! Unit tests of the embedded store's own decisions: which damage is a torn tail
//! and which is corruption, and how the writer survives failed writes and syncs
//! (injected through a faulty [`Fs`]). The behaviour every backend shares is in
//! the conformance suite, not here.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::*;
use crate::store::sequencer::Sequencer;

fn new_event(i: u64) -> NewEvent {
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        data: format!(r#"{{"attempt":{i}}}"#).into_bytes(),
        metadata: b"{}".to_vec(),
    }
}

/// `n` records over two streams, linked as the sequencer links them.
fn records(n: u64) -> Vec<RecordedEvent> {
    let seq = Sequencer::default();
    let mut batch = seq.batch();
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
    let scan = segment::scan(dir.path()).unwrap();
    assert_eq!(scan.sequencer.head(), 4);
    let torn = scan.torn_tail.unwrap();
    assert_eq!(torn.offset, offsets[4] as u64);
    assert_eq!(scan.streams["a"], vec![1, 3]);
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
        let scan = segment::scan(dir.path()).unwrap();
        assert_eq!(scan.sequencer.head(), 2, "cut at {cut}");
        assert_eq!(scan.torn_tail.unwrap().offset, offsets[2] as u64);
        assert_eq!(scan.segments[0].offsets.len(), 2);
    }
}

#[test]
fn damage_inside_a_batch_with_a_valid_frame_after_it_names_the_damaged_frame() {
    let dir = tempfile::tempdir().unwrap();
    let continues = [false, true, true, false];
    let offsets = write_batches(dir.path(), &records(4), &continues);
    edit(&seg(dir.path(), 1), |b| b[offsets[2] + 9] ^= 0x01);
    assert_corrupt(
        segment::scan(dir.path()),
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
        segment::scan(dir.path()),
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
        segment::scan(dir.path()),
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
        segment::scan(dir.path()),
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
        segment::scan(dir.path()),
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
        segment::scan(dir.path()),
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
    let scan = segment::scan(dir.path()).unwrap();
    assert_eq!(scan.torn_header, Some(seg(dir.path(), 3)));
    assert_eq!(scan.sequencer.head(), 2);
}

#[test]
fn a_bad_header_with_frames_after_it_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), &records(2));
    edit(&seg(dir.path(), 1), |b| b[9] ^= 1);
    assert_corrupt(segment::scan(dir.path()), &seg(dir.path(), 1), 0, 1);
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
        segment::scan(dir.path()),
        Err(Error::Corrupt {
            offset: 0,
            position: 1,
            ..
        })
    ));
}

/// A file system that fails on demand, and can hold a sync until released.
#[derive(Debug, Default)]
struct Faults {
    fail_write: AtomicBool,
    fail_sync: AtomicBool,
    fail_truncate: AtomicBool,
    fail_create: AtomicBool,
    hold: Mutex<Hold>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Hold {
    /// Syncs wait while this is set.
    on: bool,
    /// Syncs waiting now.
    waiting: usize,
}

impl Faults {
    fn hold_syncs(&self, on: bool) {
        self.hold.lock().unwrap().on = on;
        self.changed.notify_all();
    }

    /// Waits until a sync is held; false after ten seconds without one.
    fn sync_is_held(&self) -> bool {
        let hold = self.hold.lock().unwrap();
        let (hold, _) = self
            .changed
            .wait_timeout_while(hold, Duration::from_secs(10), |h| h.waiting == 0)
            .unwrap();
        hold.waiting > 0
    }

    fn check(&self, flag: &AtomicBool, kind: io::ErrorKind) -> io::Result<()> {
        if flag.load(Ordering::SeqCst) {
            return Err(io::Error::new(kind, "injected fault"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct FaultyFs(Arc<Faults>);

#[derive(Debug)]
struct FaultyFile(Box<dyn LogFile>, Arc<Faults>);

impl Fs for FaultyFs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FaultyFile(RealFs.open(path)?, self.0.clone())))
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        self.0
            .check(&self.0.fail_create, io::ErrorKind::StorageFull)?;
        Ok(Box::new(FaultyFile(RealFs.create(path)?, self.0.clone())))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealFs.sync_dir(dir)
    }
}

impl LogFile for FaultyFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.1.fail_write.load(Ordering::SeqCst) {
            // A full disk takes part of the write before it refuses the rest.
            self.0.write_at(offset, &buf[..buf.len() / 2])?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected ENOSPC",
            ));
        }
        self.0.write_at(offset, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        let mut hold = self.1.hold.lock().unwrap();
        hold.waiting += 1;
        self.1.changed.notify_all();
        while hold.on {
            hold = self.1.changed.wait(hold).unwrap();
        }
        hold.waiting -= 1;
        drop(hold);
        self.1.check(&self.1.fail_sync, io::ErrorKind::Other)?;
        self.0.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.1.check(&self.1.fail_truncate, io::ErrorKind::Other)?;
        self.0.truncate(len)
    }
}

fn open_faulty(dir: &Path, segment_size: u64) -> (EmbeddedStore, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let options = Options {
        fs: Arc::new(FaultyFs(faults.clone())),
        segment_size,
    };
    (EmbeddedStore::open_with(dir, options).unwrap(), faults)
}

async fn append(store: &EmbeddedStore, stream: &str, i: u64) -> Result<Appended> {
    store
        .append(stream, ExpectedVersion::Any, vec![new_event(i)])
        .await
}

#[track_caller]
fn assert_io(result: Result<Appended>) {
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
}

/// What a fresh reader finds on disk: the head, and no torn bytes.
fn on_disk(dir: &Path) -> u64 {
    let report = scan(dir).unwrap();
    assert_eq!(report.torn_tail, None, "the log holds a partial frame");
    report.head
}

#[tokio::test]
async fn a_failed_fsync_fails_the_append_and_leaves_no_partial_frame() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    append(&store, "s", 0).await.unwrap();

    faults.fail_sync.store(true, Ordering::SeqCst);
    assert_io(append(&store, "s", 1).await);
    assert_eq!(store.head(), 1);
    assert_eq!(store.read_stream("s", 0, 10).await.unwrap().len(), 1);
    assert_eq!(on_disk(dir.path()), 1);

    faults.fail_sync.store(false, Ordering::SeqCst);
    let appended = append(&store, "s", 2).await.unwrap();
    assert_eq!((appended.positions, appended.last_version), (2..=2, 1));
    store.close().await;

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    let events = reopened.read_all(1, 10).await.unwrap();
    let data: Vec<_> = events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(data, vec![new_event(0).data, new_event(2).data]);
}

#[tokio::test]
async fn a_full_disk_mid_write_is_cut_back_before_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    append(&store, "s", 0).await.unwrap();

    faults.fail_write.store(true, Ordering::SeqCst);
    assert_io(append(&store, "s", 1).await);
    assert_eq!(on_disk(dir.path()), 1);

    faults.fail_write.store(false, Ordering::SeqCst);
    assert_eq!(append(&store, "s", 2).await.unwrap().positions, 2..=2);
    assert_eq!(on_disk(dir.path()), 2);
}

#[tokio::test]
async fn appends_keep_failing_until_the_failed_write_can_be_cut_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    append(&store, "s", 0).await.unwrap();

    faults.fail_write.store(true, Ordering::SeqCst);
    faults.fail_truncate.store(true, Ordering::SeqCst);
    assert_io(append(&store, "s", 1).await);
    faults.fail_write.store(false, Ordering::SeqCst);
    // The write would work now, but the garbage before it cannot be cut yet.
    assert_io(append(&store, "s", 2).await);
    assert_eq!(store.head(), 1);

    faults.fail_truncate.store(false, Ordering::SeqCst);
    assert_eq!(append(&store, "s", 3).await.unwrap().positions, 2..=2);
    assert_eq!(on_disk(dir.path()), 2);
}

#[tokio::test]
async fn a_failed_segment_roll_writes_nothing_until_a_segment_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1);
    append(&store, "s", 0).await.unwrap();

    faults.fail_create.store(true, Ordering::SeqCst);
    assert_io(append(&store, "s", 1).await);
    assert_io(append(&store, "s", 2).await);

    faults.fail_create.store(false, Ordering::SeqCst);
    assert_eq!(append(&store, "s", 3).await.unwrap().positions, 2..=2);
    assert_eq!(segment::list(&dir.path().join("log")).unwrap().len(), 2);
    assert_eq!(on_disk(dir.path()), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn appends_that_queue_during_an_fsync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    let store = Arc::new(store);
    append(&store, "s", 0).await.unwrap();
    let before = store.stats();

    faults.hold_syncs(true);
    let first = tokio::spawn({
        let store = store.clone();
        async move { append(&store, "first", 1).await }
    });
    tokio::task::yield_now().await;
    let held = faults.sync_is_held();

    // On this single-threaded runtime one yield lets every spawned append send
    // its request; they queue behind the held fsync.
    let queued: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { append(&store, &format!("q{i}"), i).await })
        })
        .collect();
    tokio::task::yield_now().await;
    // Release before asserting: a failed test must not leave the writer stuck.
    faults.hold_syncs(false);
    assert!(held, "the first append never reached its fsync");

    first.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
    let after = store.stats();
    assert_eq!(after.appends - before.appends, 11);
    assert_eq!(after.batches - before.batches, 2);
    assert_eq!(after.fsyncs - before.fsyncs, 2);
}
