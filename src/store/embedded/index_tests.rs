//! Unit tests of the persisted index: a writer's reopen resumes from it and
//! serves the same log; one that is behind is caught up by scanning the tail;
//! and any doubt about it (damage, another log's index, a log cut back behind
//! it) makes the open set it aside and index the whole log again, never trust it.

use std::path::Path;

use super::scan_tests::new_event;
use super::*;
use crate::kv::layered::Memtable;
use crate::store::Claim;

fn options(segment_size: u64) -> Options {
    Options {
        segment_size,
        ..Options::default()
    }
}

/// Appends event `i` of `range` to stream `s-{i % 3}`, one append each.
pub(super) async fn append_each(store: &EmbeddedStore, range: std::ops::Range<u64>) {
    for i in range {
        let stream = format!("s-{}", i % 3);
        store
            .append(&stream, ExpectedVersion::Any, vec![new_event(i)])
            .await
            .unwrap();
    }
}

/// A closed store of `n` single-event appends over three streams, on segments
/// small enough that there are several; returns every event.
async fn filled(dir: &Path, n: u64) -> Vec<RecordedEvent> {
    let store = EmbeddedStore::open_with(dir, options(2048)).unwrap();
    append_each(&store, 0..n).await;
    let all = store.read_all(1, 10_000).await.unwrap();
    store.close().await;
    all
}

async fn everything(store: &EmbeddedStore) -> (Vec<RecordedEvent>, Vec<Vec<RecordedEvent>>) {
    let mut streams = Vec::new();
    for s in 0..3 {
        streams.push(
            store
                .read_stream(&format!("s-{s}"), 0, 10_000)
                .await
                .unwrap(),
        );
    }
    let mut all = Vec::new();
    // In small reads, each starting wherever the last ended or anywhere.
    for from in (1..=store.head()).step_by(7) {
        all.extend(store.read_all(from, 7).await.unwrap());
    }
    (all, streams)
}

fn index_file(dir: &Path) -> std::path::PathBuf {
    index::file_in(&dir.join("log"))
}

/// What an open for writing scanned past the index: nothing when it resumed
/// from an index that reached the end of the log.
fn scanned_past_index(dir: &Path) -> usize {
    let log = dir.join("log");
    let files = segment::list(&log).unwrap();
    let opened = open::for_writing(&log, &files, None, 1 << 20).unwrap();
    opened.pending.bytes()
}

#[tokio::test]
async fn a_reopen_resumes_from_the_index_and_serves_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let all = filled(dir.path(), 60).await;
    assert!(index_file(dir.path()).exists(), "the close wrote the index");
    assert_eq!(
        scanned_past_index(dir.path()),
        0,
        "nothing after the index was scanned"
    );

    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    let (read, streams) = everything(&store).await;
    assert_eq!(read, all);
    for (s, events) in streams.iter().enumerate() {
        let expected: Vec<_> = all
            .iter()
            .filter(|e| e.stream == format!("s-{s}"))
            .cloned()
            .collect();
        assert_eq!(*events, expected, "stream s-{s}");
    }
    // Appends go on from the index's tips: versions and hash chains continue.
    store
        .append("s-0", ExpectedVersion::Exact(19), vec![new_event(99)])
        .await
        .expect("s-0 is at version 19");
    store.close().await;
}

#[tokio::test]
async fn an_index_behind_the_log_is_caught_up_by_scanning_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 30).await;
    let behind = std::fs::read(index_file(dir.path())).unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    append_each(&store, 30..45).await;
    let expected = everything(&store).await;
    store.close().await;
    drop(store);
    // The index as it was before the last 15 appends, as a crash leaves it.
    std::fs::write(index_file(dir.path()), behind).unwrap();
    assert!(scanned_past_index(dir.path()) > 0, "the tail was scanned");

    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    assert_eq!(everything(&store).await, expected);
    store
        .append("s-2", ExpectedVersion::Exact(14), vec![new_event(99)])
        .await
        .expect("the tail's tips were indexed");
}

#[tokio::test]
async fn a_damaged_or_foreign_index_or_one_ahead_of_the_log_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let all = filled(dir.path(), 40).await;
    let good = std::fs::read(index_file(dir.path())).unwrap();
    let other = tempfile::tempdir().unwrap();
    filled(other.path(), 50).await;
    let foreign = std::fs::read(index_file(other.path())).unwrap();

    let mut damaged = good.clone();
    for b in &mut damaged[..512] {
        *b ^= 0x5a;
    }
    let log = dir.path().join("log");
    let last = segment::list(&log).unwrap().pop().unwrap().1;
    let whole_last = std::fs::read(&last).unwrap();
    for (what, index, cut_log) in [
        ("a damaged index", damaged, false),
        ("another log's index", foreign, false),
        ("an index ahead of a log cut back", good.clone(), true),
    ] {
        std::fs::write(index_file(dir.path()), &index).unwrap();
        if cut_log {
            // The last segment loses its last frames, as if they were never
            // written: the index names a frame that is not there.
            std::fs::write(&last, &whole_last[..whole_last.len() / 2]).unwrap();
        }
        let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
        let (read, _) = everything(&store).await;
        let head = store.head();
        assert_eq!(read, all[..head as usize], "{what}");
        if !cut_log {
            assert_eq!(head, 40, "{what}");
        }
        store.close().await;
        drop(store);
        assert!(
            log.join("index.redb.set-aside").exists(),
            "{what}: the doubtful index is kept aside"
        );
        std::fs::write(&last, &whole_last).unwrap();
    }
}

#[tokio::test]
async fn claims_come_back_from_the_index_without_recognising_them_in_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    for i in 0..5u64 {
        store
            .append_claimed(
                "s-0",
                ExpectedVersion::Any,
                vec![new_event(i)],
                vec![Claim::forever(format!("claim-{i}"))],
            )
            .await
            .unwrap();
    }
    store.close().await;
    drop(store);

    // A reopened store without `claims_of` still refuses a taken claim.
    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    let again = store
        .append_claimed(
            "s-1",
            ExpectedVersion::Any,
            vec![new_event(7)],
            vec![Claim::forever("claim-3")],
        )
        .await;
    assert!(
        matches!(again, Err(Error::Duplicate { ref claim, position: 4 }) if claim == "claim-3"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_reader_beside_the_writer_reads_the_log_in_order_without_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    append_each(&store, 0..50).await;
    let all = store.read_all(1, 10_000).await.unwrap();
    let reader = EmbeddedStore::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.head(), 50);
    let mut read = Vec::new();
    let mut from = 1;
    loop {
        let batch = reader.read_all(from, 6).await.unwrap();
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        read.extend(batch);
    }
    assert_eq!(read, all);
    assert!(
        reader.read_stream("s-0", 0, 10).await.is_err(),
        "streams need the writer's index"
    );
    store.close().await;
}
