//! Unit tests of `read_batch` on the embedded log: the archives it hands out
//! are the events `read_all` returns, from memory or from disk, across
//! segments; and damage that reaches a read after the open (a flipped byte, a
//! checksummed frame that holds the wrong event) is refused naming the file,
//! the frame's offset and the position, never served.

use std::path::{Path, PathBuf};

use super::index_tests::append_each;
use super::*;
use crate::store::Batch;

/// A store of `n` single-event appends on segments small enough that there
/// are several.
async fn filled(dir: &Path, n: u64) -> EmbeddedStore {
    let options = Options {
        segment_size: 2048,
        ..Options::default()
    };
    let store = EmbeddedStore::open_with(dir, options).unwrap();
    append_each(&store, 0..n).await;
    store
}

/// Every event from `from`, in batches of `max`, each batch's buffers reused
/// for the next.
async fn batched(store: &EmbeddedStore, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
    let (mut events, mut from, mut spent) = (Vec::new(), from, Batch::default());
    loop {
        let batch = store.read_batch(from, max, spent).await?;
        let Some(last) = batch.last_position() else {
            return Ok(events);
        };
        for event in batch.iter() {
            events.push(event?.to_owned());
        }
        from = last + 1;
        spent = batch;
    }
}

/// The segment files of `dir` and the offset of each frame in them, with its
/// position, in log order.
fn frames(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    let mut position = 1;
    for (_, path) in segment::list(&dir.join("log")).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = segment::HEADER_LEN;
        while let Ok(frame) = frame::parse(&bytes[at..]) {
            out.push((path.clone(), at as u64, position));
            at += frame.len;
            position += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_batch_holds_what_read_all_returns_from_memory_and_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), 60).await;
    let all = store.read_all(1, 10_000).await.unwrap();
    assert_eq!(all.len(), 60);
    // Just written: from the records in memory.
    assert_eq!(batched(&store, 1, 7).await.unwrap(), all);
    store.close().await;
    assert!(segment::list(&dir.path().join("log")).unwrap().len() > 2);
    // Reopened: from the segment files, as archives.
    let store = EmbeddedStore::open_read_only(dir.path()).unwrap();
    for (from, max) in [(1, 7), (1, 10_000), (13, 5), (60, 3), (61, 3)] {
        let expected = &all[all.len().min(from as usize - 1)..];
        assert_eq!(batched(&store, from, max).await.unwrap(), expected);
    }
}

#[tokio::test]
async fn a_flipped_byte_under_an_open_store_is_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 30).await.close().await;
    let store = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let (file, offset, position) = frames(dir.path())[17].clone();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset as usize + 20] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let err = batched(&store, 1, 8).await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file: f, offset: o, position: p, .. }
            if *f == file && *o == offset && *p == position),
        "{err}"
    );
}

#[tokio::test]
async fn a_checksummed_frame_holding_another_event_is_refused_as_the_batch_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), 30).await.close().await;
    let store = EmbeddedStore::open_read_only(dir.path()).unwrap();
    let all = store.read_all(1, 100).await.unwrap();
    let (file, offset, position) = frames(dir.path())[9].clone();
    // A whole, valid frame of the same length, but for the next position.
    let mut moved = all[9].clone();
    moved.position += 1;
    let mut frame_bytes = Vec::new();
    frame::encode(&moved, false, &mut frame_bytes).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[offset as usize..offset as usize + frame_bytes.len()].copy_from_slice(&frame_bytes);
    std::fs::write(&file, bytes).unwrap();
    let batch = store.read_batch(1, 100, Batch::default()).await.unwrap();
    let mut events = batch.iter();
    for expected in &all[..9] {
        assert_eq!(&events.next().unwrap().unwrap().to_owned(), expected);
    }
    let err = events.next().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { file: f, offset: o, position: p, reason }
            if *f == file && *o == offset && *p == position
                && reason.contains(&format!("holds position {}", position + 1))),
        "{err}"
    );
}
