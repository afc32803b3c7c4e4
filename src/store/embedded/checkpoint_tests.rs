//! Unit tests of the persisted index: a writer's reopen uses it and serves the
//! same log; a stale one is caught up by scanning the tail; and any damage to it
//! (a flipped byte, a cut, another log's index) makes the open ignore it and scan
//! the whole log instead, never trust it.

use std::path::Path;

use super::scan_tests::new_event;
use super::*;
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
    (store.read_all(1, 10_000).await.unwrap(), streams)
}

fn index_file(dir: &Path) -> std::path::PathBuf {
    dir.join("log").join(checkpoint::FILE)
}

fn load(dir: &Path) -> Result<checkpoint::Loaded, String> {
    let log = dir.join("log");
    checkpoint::load(&log, &segment::list(&log).unwrap(), None)
}

/// Reopens `dir`, checks it serves `expected`, and that the next append lands
/// where it must.
async fn reopens_as(dir: &Path, expected: &[RecordedEvent]) {
    let store = EmbeddedStore::open_with(dir, options(2048)).unwrap();
    let (all, streams) = everything(&store).await;
    assert_eq!(all, expected);
    assert_eq!(streams.iter().map(Vec::len).sum::<usize>(), expected.len());
    let tail = streams[0].last().unwrap();
    let appended = store
        .append(
            "s-0",
            ExpectedVersion::Exact(tail.version),
            vec![new_event(9999)],
        )
        .await
        .unwrap();
    assert_eq!(*appended.positions.start(), expected.len() as u64 + 1);
    let event = store
        .read_all(*appended.positions.start(), 1)
        .await
        .unwrap();
    assert_eq!(
        event[0].prev_hash, tail.hash,
        "the chain goes on from the tip"
    );
    assert!(event[0].recorded_at >= expected.last().unwrap().recorded_at);
    store.close().await;
}

#[tokio::test]
async fn a_closed_store_leaves_an_index_that_the_next_open_uses() {
    let dir = tempfile::tempdir().unwrap();
    let events = filled(dir.path(), 60).await;
    let loaded = load(dir.path()).expect("the index checks out");
    assert_eq!(loaded.sequencer.head(), 60);
    assert!(loaded.segments.len() > 2, "the test wants several segments");
    let scanned = segment::scan_log(&dir.path().join("log")).unwrap();
    assert_eq!(loaded.streams, scanned.streams);
    for s in 0..3 {
        let name = format!("s-{s}");
        assert_eq!(loaded.sequencer.tip(&name), scanned.sequencer.tip(&name));
    }
    reopens_as(dir.path(), &events).await;
}

#[tokio::test]
async fn a_stale_index_is_caught_up_by_scanning_what_came_after_it() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 30).await;
    let stale = std::fs::read(index_file(dir.path())).unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(2048)).unwrap();
    append_each(&store, 30..70).await;
    let events = store.read_all(1, 10_000).await.unwrap();
    store.close().await;
    // As after a crash: the index is older than the log.
    std::fs::write(index_file(dir.path()), &stale).unwrap();
    assert_eq!(load(dir.path()).unwrap().sequencer.head(), 30);
    reopens_as(dir.path(), &events).await;
}

#[tokio::test]
async fn a_damaged_index_is_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let events = filled(dir.path(), 40).await;
    let good = std::fs::read(index_file(dir.path())).unwrap();
    for at in 0..good.len() {
        for bit in [0x01, 0x80] {
            let mut bad = good.clone();
            bad[at] ^= bit;
            std::fs::write(index_file(dir.path()), &bad).unwrap();
            assert!(
                load(dir.path()).is_err(),
                "a flip of {bit:#x} at byte {at} was trusted"
            );
        }
    }
    for len in [0, 7, 23, 24, good.len() / 2, good.len() - 1] {
        std::fs::write(index_file(dir.path()), &good[..len]).unwrap();
        assert!(
            load(dir.path()).is_err(),
            "a cut to {len} bytes was trusted"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(index_file(dir.path()), &longer).unwrap();
    assert!(load(dir.path()).is_err());
    // Whatever is there, the open scans the log and serves it whole.
    std::fs::write(index_file(dir.path()), &good[..good.len() / 2]).unwrap();
    reopens_as(dir.path(), &events).await;
    assert!(
        load(dir.path()).is_ok(),
        "the close wrote a good index again"
    );
}

#[tokio::test]
async fn another_logs_index_is_refused() {
    let one = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    filled(one.path(), 40).await;
    // Same shape, other times: other hashes.
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let events = filled(other.path(), 40).await;
    std::fs::copy(index_file(one.path()), index_file(other.path())).unwrap();
    assert!(load(other.path()).is_err());
    reopens_as(other.path(), &events).await;
}

#[tokio::test]
async fn a_segment_cut_below_the_index_is_scanned_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 60).await;
    let segments = segment::list(&dir.path().join("log")).unwrap();
    let (_, last) = segments.last().unwrap();
    // Inside the last frame: the file goes on in zeros allocated ahead.
    let len = segment::data_end(&std::fs::read(last).unwrap()) as u64;
    let file = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    file.set_len(len - 3).unwrap();
    assert!(load(dir.path()).is_err());
    // The full scan treats the cut as a torn tail and drops that batch.
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.head(), 59);
    store.close().await;
}

#[tokio::test]
async fn a_damaged_frame_under_the_index_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 60).await;
    let segments = segment::list(&dir.path().join("log")).unwrap();
    let (_, first) = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let at = segment::HEADER_LEN + 20;
    bytes[at] ^= 0x04;
    std::fs::write(first, &bytes).unwrap();
    assert!(load(dir.path()).is_err());
    match EmbeddedStore::open(dir.path()) {
        Err(Error::Corrupt { file, position, .. }) => {
            assert_eq!((file.as_path(), position), (first.as_path(), 1));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn claims_come_back_from_the_persisted_index_without_a_scan() {
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

    // The index holds the claims: nothing needs to recognise them in the events.
    let loaded = load(dir.path()).expect("the index loads");
    let mut claims: Vec<(String, u64)> = loaded
        .sequencer
        .claims()
        .map(|(c, held)| (c.to_owned(), held.position))
        .collect();
    claims.sort();
    let expected: Vec<(String, u64)> = (0..5).map(|i| (format!("claim-{i}"), i + 1)).collect();
    assert_eq!(claims, expected);

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
