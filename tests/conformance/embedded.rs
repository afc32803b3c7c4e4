//! Checks of the embedded log's files that no other backend has: a crash leaves
//! every acknowledged event readable, a torn tail at any byte is cut back to the
//! last whole frame, damage in the middle is refused with its file, offset and
//! position, and only one store at a time may write a data directory.
//!
//! These checks read the on-disk format directly (segment header, then frames of
//! `len u32 LE | crc u32 LE | payload`, the length's top bit marking a frame whose
//! group commit continues), so they also pin that format down.

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinSet;

use hookledger::store::embedded::{self, EmbeddedStore, SEGMENT_HEADER_LEN};
use hookledger::store::{Error, EventStore, ExpectedVersion, RecordedEvent};

use crate::Embedded;
use crate::suite::{event, everything};
use crate::support_frames::frames;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn first_position(segment: &Path) -> u64 {
    segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Where the last of `frames` ends.
fn frames_end(frames: &[(u64, u64)]) -> u64 {
    frames.last().map_or(SEGMENT_HEADER_LEN, |(o, l)| o + l)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("log")).unwrap();
    for segment in segments(from) {
        std::fs::copy(&segment, to.join("log").join(segment.file_name().unwrap())).unwrap();
    }
}

/// A closed store over several segments whose last three frames are single-event
/// appends, each its own batch.
async fn filled(dir: &Path) -> Vec<RecordedEvent> {
    let store = Embedded::open_dir(dir);
    let mut i = 0;
    // Ten events an append keeps the fsyncs, and so the time, down.
    while segments(dir).len() < 3 {
        let events = (i..i + 10).map(|i| event(&format!("e{i}"))).collect();
        let stream = format!("s-{}", i % 3);
        store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
        i += 10;
    }
    for i in i..i + 3 {
        let stream = format!("s-{}", i % 3);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&format!("e{i}"))])
            .await
            .unwrap();
    }
    let all = everything(&store).await;
    store.close().await;
    all
}

#[track_caller]
fn assert_corrupt(result: Result<EmbeddedStore, Error>, file: &Path, offset: u64, position: u64) {
    match result {
        Err(Error::Corrupt {
            file: f,
            offset: o,
            position: p,
            reason,
        }) => assert_eq!(
            (f.as_path(), o, p),
            (file, offset, position),
            "reported: {reason}"
        ),
        other => panic!("expected corruption at {offset} (position {position}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_copy_taken_while_the_store_runs_opens_with_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open_dir(dir.path());
    for i in 0..60 {
        store
            .append("s", ExpectedVersion::Any, vec![event(&i.to_string())])
            .await
            .unwrap();
    }
    let crash = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crash.path());
    let before = everything(&store).await;

    let copy = Embedded::open_dir(crash.path());
    assert_eq!(everything(&copy).await, before);
    let appended = copy
        .append("s", ExpectedVersion::Exact(59), vec![event("60")])
        .await
        .unwrap();
    assert_eq!(appended.positions, 61..=61);
    // The original never noticed.
    assert_eq!(
        store
            .append("s", ExpectedVersion::Exact(59), vec![event("60")])
            .await
            .unwrap()
            .positions,
        61..=61
    );
}

#[tokio::test]
async fn a_store_dropped_without_close_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open_dir(dir.path());
    store
        .append("s", ExpectedVersion::NoStream, vec![event("0")])
        .await
        .unwrap();
    drop(store);
    let store = Embedded::open_dir(dir.path());
    let appended = store
        .append("s", ExpectedVersion::Exact(0), vec![event("1")])
        .await
        .unwrap();
    assert_eq!(appended.positions, 2..=2);
}

/// How a crash leaves the end of a write: the file cut short, or its size
/// kept (the segment was allocated ahead) with zeros where the write did not land.
#[derive(Debug, Clone, Copy)]
enum Tear {
    Cut,
    Zeroed,
}

impl Tear {
    /// Both, in turn.
    fn of(cut: u64) -> Tear {
        if cut.is_multiple_of(2) {
            Tear::Cut
        } else {
            Tear::Zeroed
        }
    }
}

/// A copy of the log in `source` with segment `last` torn at `cut` bytes.
fn torn_copy(source: &Path, last: &Path, cut: u64, tear: Tear) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(source, dir.path());
    let torn = dir.path().join("log").join(last.file_name().unwrap());
    let mut bytes = std::fs::read(last).unwrap();
    match tear {
        Tear::Cut => bytes.truncate(cut as usize),
        Tear::Zeroed => bytes[cut as usize..].fill(0),
    }
    std::fs::write(&torn, &bytes).unwrap();
    (dir, torn)
}

/// After a writer's open: nothing but zeros past `good_end`, whether the torn
/// bytes were cut off or were zeros already.
fn nothing_after(torn: &Path, good_end: u64) -> bool {
    let bytes = std::fs::read(torn).unwrap();
    bytes.len() as u64 >= good_end && bytes[good_end as usize..].iter().all(|&b| b == 0)
}

/// Runs `check` on every cut, eight at a time: each mostly waits on an fsync.
async fn every_cut<F, Fut>(cuts: Range<u64>, check: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut cuts = cuts.peekable();
    while cuts.peek().is_some() || !running.is_empty() {
        while running.len() < 8
            && let Some(cut) = cuts.next()
        {
            running.spawn(check(cut));
        }
        if let Some(done) = running.join_next().await {
            done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_torn_tail_at_any_byte_is_cut_back_to_the_last_whole_frame() {
    let source = tempfile::tempdir().unwrap();
    let all = Arc::new(filled(source.path()).await);
    let last = segments(source.path()).pop().unwrap();
    let frames = Arc::new(frames(&last));
    let (cut_from, _) = frames[frames.len() - 3];
    let len = frames_end(&frames);
    let size = std::fs::metadata(&last).unwrap().len();
    let first = first_position(&last);

    every_cut(cut_from..len, |cut| {
        let tear = Tear::of(cut);
        let (dir, torn) = torn_copy(source.path(), &last, cut, tear);
        let (all, frames) = (all.clone(), frames.clone());
        async move {
            let whole = frames.iter().take_while(|(o, l)| o + l <= cut).count();
            let kept = &all[..first as usize - 1 + whole];
            let head = kept.len() as u64;
            let good_end = frames[..whole]
                .last()
                .map_or(SEGMENT_HEADER_LEN, |(o, l)| o + l);

            // A reader leaves the torn bytes alone and does not read them.
            let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
            assert_eq!(everything(&reader).await, kept, "{tear:?} at {cut}");
            let untouched = match tear {
                Tear::Cut => cut,
                Tear::Zeroed => size,
            };
            assert_eq!(std::fs::metadata(&torn).unwrap().len(), untouched);

            let store = Embedded::open_dir(dir.path());
            assert_eq!(store.head(), head, "{tear:?} at {cut}");
            assert_eq!(everything(&store).await, kept);
            assert!(nothing_after(&torn, good_end), "{tear:?} at {cut}");

            let tip = kept.iter().rev().find(|e| e.stream == "s-0").unwrap();
            let expected = ExpectedVersion::Exact(tip.version);
            let appended = store
                .append("s-0", expected, vec![event("new")])
                .await
                .unwrap();
            assert_eq!(appended.positions, head + 1..=head + 1);
            let new = &store.read_all(head + 1, 1).await.unwrap()[0];
            assert_eq!((new.version, new.prev_hash), (tip.version + 1, tip.hash));
            store.close().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_multi_event_append_cut_anywhere_comes_back_whole_or_not_at_all() {
    let source = tempfile::tempdir().unwrap();
    let before = Arc::new(filled(source.path()).await);
    let store = Embedded::open_dir(source.path());
    let three = vec![event("x1"), event("x2"), event("x3")];
    store
        .append("multi", ExpectedVersion::NoStream, three)
        .await
        .unwrap();
    store.close().await;
    let last = segments(source.path()).pop().unwrap();
    let frames = frames(&last);
    let (start, _) = frames[frames.len() - 3];
    let len = frames_end(&frames);

    every_cut(start..len, |cut| {
        let tear = Tear::of(cut);
        let (dir, torn) = torn_copy(source.path(), &last, cut, tear);
        let before = before.clone();
        async move {
            let store = Embedded::open_dir(dir.path());
            assert_eq!(everything(&store).await, *before, "{tear:?} at {cut}");
            assert!(nothing_after(&torn, start), "{tear:?} at {cut}");
            assert!(store.read_stream("multi", 0, 10).await.unwrap().is_empty());
            store.close().await;
        }
    })
    .await;
    let whole = Embedded::open_dir(source.path());
    assert_eq!(whole.read_stream("multi", 0, 10).await.unwrap().len(), 3);
}

/// Sets aside the log's persisted index, so the next open scans the whole log.
fn without_index(dir: &Path) {
    let index = dir.join("log").join("index.redb");
    std::fs::remove_file(&index).unwrap_or_else(|e| panic!("removing {}: {e}", index.display()));
}

/// Damage in the middle of the log is refused with its place: in the last
/// segment by every open (which checks it whole), in a sealed segment by every
/// read of the damaged frame, and by an open that scans the whole log.
#[tokio::test]
async fn a_damaged_frame_in_the_middle_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    let files = segments(dir.path());
    let index = std::fs::read(dir.path().join("log").join("index.redb")).unwrap();
    for (segment, last) in [(&files[0], false), (files.last().unwrap(), true)] {
        let frames = frames(segment);
        let k = frames.len() / 2;
        let (offset, len) = frames[k];
        let position = first_position(segment) + k as u64;
        // The low and high bytes of the length, the CRC, and the payload.
        for at in [
            offset,
            offset + 3,
            offset + 5,
            offset + len / 2,
            offset + len - 1,
        ] {
            let original = std::fs::read(segment).unwrap();
            let mut damaged = original.clone();
            damaged[at as usize] ^= 0x10;
            std::fs::write(segment, &damaged).unwrap();

            if last {
                assert_corrupt(EmbeddedStore::open(dir.path()), segment, offset, position);
                assert_corrupt(
                    EmbeddedStore::open_read_only(dir.path()),
                    segment,
                    offset,
                    position,
                );
            } else {
                // The index is trusted; the damaged frame is refused when read.
                let store =
                    EmbeddedStore::open(dir.path()).expect("a sealed segment is not read at open");
                match store.read_all(position, 1).await {
                    Err(Error::Corrupt {
                        file,
                        offset: o,
                        position: p,
                        ..
                    }) => assert_eq!(
                        (file.as_path(), o, p),
                        (segment.as_path(), offset, position)
                    ),
                    other => panic!("a damaged frame was read: {other:?}"),
                }
                store.close().await;
                drop(store);
                without_index(dir.path());
                assert_corrupt(EmbeddedStore::open(dir.path()), segment, offset, position);
                std::fs::write(dir.path().join("log").join("index.redb"), &index).unwrap();
            }
            match embedded::scan(dir.path()) {
                Err(Error::Corrupt {
                    offset: o,
                    position: p,
                    ..
                }) => assert_eq!((o, p), (offset, position)),
                other => panic!("scan missed the damage: {other:?}"),
            }
            assert_eq!(
                std::fs::read(segment).unwrap(),
                damaged,
                "a refused open changed the file"
            );
            std::fs::write(segment, &original).unwrap();
        }
    }
    EmbeddedStore::open(dir.path()).expect("the repaired log opens");
}

/// A sealed segment's header is read by a scan of the whole log, which
/// refuses it damaged; an open that trusts the index reads only frames.
#[tokio::test]
async fn a_damaged_segment_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path()).await;
    let second = &segments(dir.path())[1];
    let mut bytes = std::fs::read(second).unwrap();
    bytes[12] ^= 1;
    std::fs::write(second, &bytes).unwrap();
    without_index(dir.path());
    assert_corrupt(
        EmbeddedStore::open(dir.path()),
        second,
        0,
        first_position(second),
    );
}

#[tokio::test]
async fn only_one_store_writes_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open_dir(dir.path());
    store
        .append("s", ExpectedVersion::NoStream, vec![event("0")])
        .await
        .unwrap();

    match EmbeddedStore::open(dir.path()) {
        Err(Error::Unavailable(message)) => {
            assert!(
                message.contains(&dir.path().display().to_string()),
                "{message}"
            );
        }
        other => panic!("a second writer was let in: {other:?}"),
    }
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.head(), 1);
    assert!(matches!(
        reader
            .append("s", ExpectedVersion::Any, vec![event("x")])
            .await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        reader.wait_beyond(1).await,
        Err(Error::Unavailable(_))
    ));

    store.close().await;
    let next = EmbeddedStore::open(dir.path()).expect("the lock is released on close");
    assert_eq!(next.head(), 1);
    assert!(matches!(
        store
            .append("s", ExpectedVersion::Any, vec![event("x")])
            .await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test]
async fn damage_after_open_is_refused_on_read_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let all = filled(dir.path()).await;
    let store = Embedded::open_dir(dir.path());
    let segment = &segments(dir.path())[1];
    let (offset, len) = frames(segment)[1];
    let position = first_position(segment) + 1;
    let damaged = &all[position as usize - 1];
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[(offset + len - 2) as usize] ^= 0x01;
    std::fs::write(segment, &bytes).unwrap();

    let refused = |r: Result<Vec<RecordedEvent>, Error>| match r {
        Err(Error::Corrupt {
            file,
            offset: o,
            position: p,
            ..
        }) => {
            assert_eq!(
                (file.as_path(), o, p),
                (segment.as_path(), offset, position)
            );
        }
        other => panic!("served damaged bytes: {other:?}"),
    };
    refused(store.read_all(1, usize::MAX).await);
    refused(store.read_all(position, 1).await);
    refused(store.read_stream(&damaged.stream, damaged.version, 1).await);
    // Its neighbours are intact and still served.
    assert_eq!(
        store.read_all(position - 1, 1).await.unwrap(),
        all[position as usize - 2..][..1]
    );
    assert_eq!(
        store.read_all(position + 1, 1).await.unwrap(),
        all[position as usize..][..1]
    );
}
