//! Unit tests of the spare segment: a segment starts from the spare made
//! ahead (the same file, renamed), the log reads back whole across such
//! starts and reopens, a spare left behind is never taken for log, the state
//! a crash can leave mid-promotion opens as an empty segment, and a spare
//! that cannot be made leaves segments made as before.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::index_tests::append_each;
use super::scan_tests::new_event;
use super::*;

const SEGMENT: u64 = 64 << 10;

fn options() -> Options {
    Options {
        segment_size: SEGMENT,
        ..Options::default()
    }
}

fn spare_path(dir: &Path) -> PathBuf {
    dir.join("log").join(spare::FILE_NAME)
}

/// The spare's inode once it is whole (zeros to the segment's size), with
/// events appended meanwhile as the log needs to grow before one is asked
/// for; panics after ten seconds without one.
async fn ready_spare(store: &EmbeddedStore, dir: &Path, appended: &mut u64) -> u64 {
    let started = Instant::now();
    loop {
        if let Ok(meta) = std::fs::metadata(spare_path(dir))
            && meta.len() == SEGMENT
        {
            return meta.ino();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no spare segment was made"
        );
        append_each(store, *appended..*appended + 1).await;
        *appended += 1;
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    segment::list(&dir.join("log")).unwrap().pop().unwrap().1
}

#[tokio::test]
async fn a_new_segment_is_the_spare_made_ahead_and_the_log_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    append_each(&store, 0..1).await;
    let first_segment = last_segment(dir.path());
    // A log this small asks for no spare yet.
    assert!(!spare_path(dir.path()).exists(), "a spare for one event");

    let mut appended = 1;
    for _ in 0..3 {
        let spare = ready_spare(&store, dir.path(), &mut appended).await;
        // Append until the writer starts the next segment.
        while last_segment(dir.path()) == first_segment
            || std::fs::metadata(last_segment(dir.path())).unwrap().ino() != spare
        {
            append_each(&store, appended..appended + 1).await;
            appended += 1;
            assert!(appended < 10_000, "no segment was started from the spare");
        }
        let started = last_segment(dir.path());
        assert_eq!(
            std::fs::metadata(&started).unwrap().len(),
            SEGMENT,
            "the segment goes on in the spare's zeros"
        );
    }
    let before = store.read_all(1, 100_000).await.unwrap();
    assert_eq!(before.len() as u64, appended);
    store.close().await;

    // A reopen finds every event, in order, and goes on appending.
    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.head(), appended);
    assert_eq!(store.read_all(1, 100_000).await.unwrap(), before);
    append_each(&store, appended..appended + 5).await;
    assert_eq!(store.head(), appended + 5);
    store.close().await;
    assert_eq!(scan(dir.path()).unwrap().head, appended + 5);
}

#[tokio::test]
async fn a_spare_left_behind_is_removed_and_never_read_as_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    append_each(&store, 0..20).await;
    let events = store.read_all(1, 1_000).await.unwrap();
    store.close().await;

    // What a crash can leave: a spare half made, or one given the header of
    // the segment it was about to become, with a frame-like tail.
    let header = segment::header(21);
    let mut left = header.to_vec();
    left.extend_from_slice(&[0xa5; 300]);
    std::fs::write(spare_path(dir.path()), &left).unwrap();

    // Opened without spares, so that no new one takes the old one's place.
    let without = Options {
        spare_segment: false,
        ..options()
    };
    let store = EmbeddedStore::open_with(dir.path(), without).unwrap();
    assert_eq!(store.head(), 20);
    assert_eq!(store.read_all(1, 1_000).await.unwrap(), events);
    assert!(!spare_path(dir.path()).exists(), "the spare was kept");
    store.close().await;

    std::fs::write(spare_path(dir.path()), &left).unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.read_all(1, 1_000).await.unwrap(), events);
    let mut appended = 20;
    ready_spare(&store, dir.path(), &mut appended).await;
    let spare = std::fs::read(spare_path(dir.path())).unwrap();
    assert!(
        spare.iter().all(|&b| b == 0),
        "the old spare's bytes survived"
    );
    let all = store.read_all(1, 100_000).await.unwrap();
    assert_eq!(&all[..20], &events[..]);
    assert_eq!(all.len() as u64, appended);
    store.close().await;
}

#[tokio::test]
async fn a_crash_after_the_spare_took_a_segments_name_opens_as_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    append_each(&store, 0..10).await;
    store.close().await;

    // The promoted spare, renamed and its header synced, before any frame.
    let mut promoted = segment::header(11).to_vec();
    promoted.resize(SEGMENT as usize, 0);
    let path = dir.path().join("log").join(segment::file_name(11));
    std::fs::write(&path, &promoted).unwrap();

    let store = EmbeddedStore::open_with(dir.path(), options()).unwrap();
    assert_eq!(store.head(), 10);
    let appended = store
        .append("s-0", ExpectedVersion::Any, vec![new_event(10)])
        .await
        .unwrap();
    assert_eq!(appended.positions, 11..=11);
    assert_eq!(last_segment(dir.path()), path);
    store.close().await;
    assert_eq!(scan(dir.path()).unwrap().head, 11);
}
