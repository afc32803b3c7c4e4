//! Unit tests of the writer under failing storage: a fault injected through a
//! [`Fs`] that fails writes (ENOSPC), syncs (EIO), truncations or segment
//! creation on demand, or holds a sync to show that appends queued behind it
//! share the next one.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::scan_tests::new_event;
use super::*;

/// A file system that fails on demand, and can hold a sync until released.
#[derive(Debug, Default)]
struct Faults {
    fail_write: AtomicBool,
    fail_sync: AtomicBool,
    fail_truncate: AtomicBool,
    fail_create: AtomicBool,
    fail_allocate: AtomicBool,
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
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.1
            .check(&self.1.fail_allocate, io::ErrorKind::StorageFull)?;
        self.0.allocate(len)
    }
}

fn open_faulty(dir: &Path, segment_size: u64) -> (EmbeddedStore, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let options = Options {
        fs: Arc::new(FaultyFs(faults.clone())),
        segment_size,
        // The faults are switched for every file at once: a spare being made
        // on its own thread would meet the ones meant for the writer.
        spare_segment: false,
        ..Options::default()
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

/// The size of segment `path` on disk and where its last frame ends.
fn size_and_end(path: &Path) -> (u64, u64) {
    let size = std::fs::metadata(path).unwrap().len();
    let scan = segment::scan_log(path.parent().unwrap()).unwrap();
    let scanned = scan.segments.iter().find(|s| s.path == path).unwrap();
    (size, scanned.end)
}

#[tokio::test]
async fn the_active_segment_is_allocated_ahead_and_a_sealed_one_ends_at_its_last_frame() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 4096;
    let (store, _faults) = open_faulty(dir.path(), segment_size);
    append(&store, "s", 0).await.unwrap();
    let log = dir.path().join("log");
    let (size, end) = size_and_end(&segment::list(&log).unwrap()[0].1);
    assert_eq!(size, segment_size, "allocated to the segment's size");
    assert!(end < size, "the frames end at {end}");

    let mut i = 1;
    while segment::list(&log).unwrap().len() < 3 {
        append(&store, "s", i).await.unwrap();
        i += 1;
    }
    let files = segment::list(&log).unwrap();
    for (_, sealed) in &files[..2] {
        let (size, end) = size_and_end(sealed);
        assert_eq!(size, end, "{} keeps allocated zeros", sealed.display());
    }
    let (size, end) = size_and_end(&files[2].1);
    assert!(end < size, "the active segment is allocated ahead");
    store.close().await;

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(reopened.head(), i);
    let appended = append(&reopened, "s", i).await.unwrap();
    assert_eq!(appended.positions, i + 1..=i + 1);
    reopened.close().await;
    let report = scan(dir.path()).unwrap();
    assert_eq!((report.head, report.torn_tail), (i + 1, None));
}

#[tokio::test]
async fn a_file_system_that_cannot_allocate_ahead_still_takes_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    faults.fail_allocate.store(true, Ordering::SeqCst);
    for i in 0..3 {
        append(&store, "s", i).await.unwrap();
    }
    let active = segment::list(&dir.path().join("log")).unwrap()[0].1.clone();
    let (size, end) = size_and_end(&active);
    assert_eq!(size, end, "the file grows with each write");

    faults.fail_allocate.store(false, Ordering::SeqCst);
    append(&store, "s", 3).await.unwrap();
    assert_eq!(size_and_end(&active).0, 1 << 20, "allocated once it can be");
    store.close().await;
    assert_eq!(on_disk(dir.path()), 4);
}

#[tokio::test]
async fn when_no_spare_segment_can_be_made_segments_are_made_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    // A disk too full to write zeros ahead: the spare is never made.
    faults.fail_allocate.store(true, Ordering::SeqCst);
    let options = Options {
        fs: Arc::new(FaultyFs(faults.clone())),
        segment_size: 1,
        spare_segment: true,
        ..Options::default()
    };
    let store = EmbeddedStore::open_with(dir.path(), options).unwrap();
    for i in 0..5 {
        assert_eq!(
            append(&store, "s", i).await.unwrap().positions,
            i + 1..=i + 1
        );
    }
    store.close().await;
    let log = dir.path().join("log");
    assert_eq!(segment::list(&log).unwrap().len(), 5);
    assert!(
        !log.join(spare::FILE_NAME).exists(),
        "a spare that failed keeps its space"
    );
    assert_eq!(on_disk(dir.path()), 5);
}

#[tokio::test]
async fn after_a_failed_segment_start_the_old_segment_takes_no_more_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = open_faulty(dir.path(), 1 << 20);
    append(&store, "s", 0).await.unwrap();

    // A start asked for before the segment is full (as a compaction asks).
    faults.fail_create.store(true, Ordering::SeqCst);
    assert!(store.seal().await.is_err());
    // The next segment may exist in part; the old one must not go on past it.
    assert_io(append(&store, "s", 1).await);

    faults.fail_create.store(false, Ordering::SeqCst);
    assert_eq!(append(&store, "s", 2).await.unwrap().positions, 2..=2);
    let segments = segment::list(&dir.path().join("log")).unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1].0, 2, "position 2 starts the new segment");
    assert_eq!(on_disk(dir.path()), 2);
}
