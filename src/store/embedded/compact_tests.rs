//! Unit tests of content removal from the embedded log: what it changes and
//! what it must not, what an attacker reading the files finds afterwards,
//! and what a failure (or a crash) at each step of a rewrite leaves.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::*;
use crate::store::read_whole_stream;

/// The body of event `i`: a marker found nowhere else in the log.
fn body(i: u64) -> String {
    format!(r#"{{"email":"SECRET-{i:05}-x@example.com"}}"#)
}

fn event(i: u64) -> NewEvent {
    // Every fourth event has no content, as most events do not.
    let content = if i % 4 == 3 {
        Vec::new()
    } else {
        let mut c = format!("salt{i:012}").into_bytes();
        c.extend_from_slice(body(i).as_bytes());
        c
    };
    NewEvent {
        event_type: "AttemptRecorded".into(),
        schema_version: 2,
        data: format!(r#"{{"attempt":{i}}}"#).into_bytes(),
        metadata: b"{}".to_vec(),
        content,
    }
}

fn stream(i: u64) -> String {
    format!("delivery-{}", i % 3)
}

fn options(fs: Arc<dyn Fs>) -> Options {
    Options {
        fs,
        // Small segments: a few dozen events each, so a removal meets several.
        segment_size: 4 << 10,
        ..Options::default()
    }
}

async fn fill(store: &EmbeddedStore, from: u64, to: u64) {
    for i in from..to {
        store
            .append(&stream(i), ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
}

/// Every event in the log, read by position and by stream (which go through
/// different parts of the index), checked against each other.
async fn everything(store: &EmbeddedStore) -> Vec<RecordedEvent> {
    let all = store.read_all(1, usize::MAX).await.unwrap();
    assert_eq!(all.len() as u64, store.head());
    let mut by_stream = Vec::new();
    for s in 0..3 {
        by_stream.extend(
            read_whole_stream(store, &format!("delivery-{s}"))
                .await
                .unwrap(),
        );
    }
    by_stream.sort_by_key(|e| e.position);
    assert_eq!(by_stream, all, "reads by stream and by position differ");
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(store.read_positions(&positions).await.unwrap(), all);
    all
}

/// `before` with the content of `removed` gone.
fn without(before: &[RecordedEvent], removed: &[u64]) -> Vec<RecordedEvent> {
    let mut expected = before.to_vec();
    for e in &mut expected {
        if removed.contains(&e.position) {
            e.content.clear();
        }
    }
    expected
}

/// Every file under `dir`, read whole.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn removal_takes_the_contents_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap();
    fill(&store, 0, 120).await;
    let before = everything(&store).await;
    assert!(scan(dir.path()).unwrap().segments > 4);

    // Positions in sealed segments, in the active one, without content,
    // repeated, and beyond the head.
    // (Positions 4, 52 and 120 hold no content.)
    let asked = [3, 5, 9, 9, 50, 51, 52, 4, 118, 119, 120, 500];
    let removed: Vec<u64> = [3, 5, 9, 50, 51, 118, 119].into();
    assert_eq!(
        store.remove_contents(&asked).await.unwrap(),
        removed.len() as u64
    );
    let after = everything(&store).await;
    assert_eq!(after, without(&before, &removed));
    assert_eq!(store.compaction_stats().removed, removed.len() as u64);

    // Idempotent, and appends go on as before, in the streams they extend.
    assert_eq!(store.remove_contents(&asked).await.unwrap(), 0);
    fill(&store, 120, 130).await;
    let grown = everything(&store).await;
    assert_eq!(&grown[..120], &after[..]);
    assert_eq!(
        grown[120].version,
        before.iter().filter(|e| e.stream == stream(120)).count() as u64
    );
    store.close().await;

    // The log scans whole, and an open that trusts the index reads the same.
    assert_eq!(scan(dir.path()).unwrap().head, 130);
    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(everything(&reopened).await, grown);
    let chain_ok = grown
        .iter()
        .all(|e| crate::chain::Hashed::from(e).hash(&e.prev_hash) == e.hash);
    assert!(chain_ok, "a hash no longer matches its event");
}

#[tokio::test]
async fn no_file_in_the_data_directory_holds_a_removed_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap();
    fill(&store, 0, 80).await;
    // Read them, so the recent records and the caches have them too.
    everything(&store).await;
    let removed = [1, 2, 41, 78];
    assert_eq!(store.remove_contents(&removed).await.unwrap(), 4);
    for p in removed {
        let e = &store.read_all(p, 1).await.unwrap()[0];
        assert!(
            e.content.is_empty(),
            "position {p} still serves its content"
        );
    }
    store.close().await;
    let files = files(dir.path());
    for p in removed {
        let marker = format!("SECRET-{:05}", p - 1);
        let found: Vec<_> = files.iter().filter(|(_, b)| holds(b, &marker)).collect();
        assert!(found.is_empty(), "{marker} is still in {:?}", found[0].0);
    }
    // The scan finds what it looks for: a body that was kept.
    assert!(files.iter().any(|(_, b)| holds(b, "SECRET-00010")));
}

#[tokio::test]
async fn reads_and_appends_go_on_while_segments_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap());
    fill(&store, 0, 200).await;
    let before = everything(&store).await;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            for round in 0..200u64 {
                let from = 1 + (round * 7) % 190;
                let events = store.read_all(from, 10).await.unwrap();
                assert_eq!(events[0].position, from);
                let s = format!("delivery-{}", round % 3);
                let events = store.read_stream(&s, round % 50, 5).await.unwrap();
                assert_eq!(events[0].version, round % 50);
                tokio::task::yield_now().await;
            }
        })
    };
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { fill(&store, 200, 260).await })
    };
    let mut removed = Vec::new();
    for p in (1..=200).step_by(9) {
        if before[p as usize - 1].content.is_empty() {
            continue;
        }
        assert_eq!(store.remove_contents(&[p]).await.unwrap(), 1);
        removed.push(p);
    }
    reader.await.unwrap();
    writer.await.unwrap();
    let after = everything(&store).await;
    assert_eq!(&after[..200], &without(&before, &removed)[..]);
    assert_eq!(after.len(), 260);
}

#[tokio::test]
async fn an_index_left_stale_by_a_crash_mid_compaction_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap();
    fill(&store, 0, 100).await;
    let before = everything(&store).await;
    store.close().await;
    drop(store);
    let stale = std::fs::read(dir.path().join("log/index.redb")).unwrap();

    let store = EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap();
    assert_eq!(store.remove_contents(&[2, 10, 11]).await.unwrap(), 3);
    store.close().await;
    drop(store);
    // The disk as a crash after the renames, before the index was written
    // out, leaves it: new segments, the old index, the marker.
    std::fs::write(dir.path().join("log/index.redb"), stale).unwrap();
    std::fs::write(compact::marker(&dir.path().join("log")), b"").unwrap();

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert!(!compact::marker(&dir.path().join("log")).exists());
    assert_eq!(everything(&reopened).await, without(&before, &[2, 10, 11]));
}

/// A step of a compaction that [`Failing`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Marker,
    Write,
    Sync,
    Rename,
    SyncDir,
}

/// A file system that fails one step of a compaction, once, after copying
/// the log's files as they stand (what a crash at that moment leaves) to
/// `image`. The index is left out of the copy: a copy taken while its
/// flusher writes would not be what a crash leaves, and the marker makes
/// an open rebuild it whenever the compaction got as far as a rename.
#[derive(Debug)]
struct Failing {
    log_dir: PathBuf,
    image: PathBuf,
    step: Mutex<Option<Step>>,
    renamed: Mutex<bool>,
}

#[derive(Debug)]
struct FailingFile {
    inner: Box<dyn LogFile>,
    fs: Arc<Failing>,
    kind: Option<Step>,
}

impl Failing {
    fn at(&self, step: Step) -> io::Result<()> {
        let mut armed = self.step.lock().unwrap();
        if *armed != Some(step) {
            return Ok(());
        }
        *armed = None;
        let into = self.image.join("log");
        std::fs::create_dir_all(&into)?;
        for entry in std::fs::read_dir(&self.log_dir)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default();
            if !name.to_string_lossy().starts_with("index.redb") && path.is_file() {
                std::fs::copy(&path, into.join(name))?;
            }
        }
        Err(io::Error::other(format!("injected failure at {step:?}")))
    }
}

#[derive(Debug)]
struct FailingFs(Arc<Failing>);

impl Fs for FailingFs {
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        RealFs.open(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let name = path.to_string_lossy();
        let kind = if name.ends_with(compact::TEMP_EXTENSION) {
            Some(Step::Write)
        } else if path == compact::marker(&self.0.log_dir) {
            Some(Step::Marker)
        } else {
            None
        };
        Ok(Box::new(FailingFile {
            inner: RealFs.create(path)?,
            fs: self.0.clone(),
            kind,
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        RealFs.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        // The compaction's renames; not the spare's becoming a segment.
        if !from.ends_with(spare::FILE_NAME) {
            self.0.at(Step::Rename)?;
        }
        RealFs.rename(from, to)?;
        *self.0.renamed.lock().unwrap() = true;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // Only the sync after a rename: the one after the marker comes first.
        if *self.0.renamed.lock().unwrap() {
            self.0.at(Step::SyncDir)?;
        }
        RealFs.sync_dir(dir)
    }
}

impl LogFile for FailingFile {
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if let Some(kind) = self.kind {
            self.fs.at(kind)?;
        }
        self.inner.write_at(offset, buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        if self.kind == Some(Step::Write) {
            self.fs.at(Step::Sync)?;
        }
        self.inner.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn allocate(&mut self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
}

/// Each content of `events` as `before` held it, or gone: never another.
#[track_caller]
fn whole_or_gone(events: &[RecordedEvent], before: &[RecordedEvent]) {
    assert_eq!(events.len(), before.len(), "events were lost");
    for (e, b) in events.iter().zip(before) {
        let mut bare = b.clone();
        bare.content.clear();
        assert!(
            e == b || *e == bare,
            "position {} changed: {e:?}",
            e.position
        );
    }
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_a_whole_log_and_a_retry_finishes() {
    for step in [
        Step::Marker,
        Step::Write,
        Step::Sync,
        Step::Rename,
        Step::SyncDir,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let failing = Arc::new(Failing {
            log_dir: dir.path().join("log"),
            image: image.path().to_owned(),
            step: Mutex::new(None),
            renamed: Mutex::new(false),
        });
        let store =
            EmbeddedStore::open_with(dir.path(), options(Arc::new(FailingFs(failing.clone()))))
                .unwrap();
        fill(&store, 0, 100).await;
        let before = everything(&store).await;
        let removed = [2, 30, 31, 61, 99];

        *failing.step.lock().unwrap() = Some(step);
        let failed = store.remove_contents(&removed).await;
        assert!(
            matches!(failed, Err(Error::Io { .. })),
            "{step:?}: {failed:?}"
        );
        assert!(
            image.path().join("log").exists(),
            "{step:?} was never reached"
        );
        // The store goes on serving whole events, and takes appends.
        whole_or_gone(&everything(&store).await, &before);
        fill(&store, 100, 102).await;

        // What a crash at that step leaves opens whole.
        let crashed = EmbeddedStore::open(image.path()).unwrap();
        whole_or_gone(&everything(&crashed).await, &before);
        assert!(crashed.remove_contents(&removed).await.unwrap() <= 5);
        assert_eq!(
            &everything(&crashed).await[..],
            &without(&before, &removed)[..]
        );
        drop(crashed);

        // A retry finishes what the failure left.
        store.remove_contents(&removed).await.unwrap();
        let after = everything(&store).await;
        assert_eq!(&after[..100], &without(&before, &removed)[..], "{step:?}");
        assert!(
            !compact::marker(&dir.path().join("log")).exists(),
            "{step:?}"
        );
        store.close().await;
        drop(store);
        let reopened = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(everything(&reopened).await, after, "{step:?}");
        let leftovers = files(&dir.path().join("log"))
            .into_iter()
            .filter(|(p, _)| p.to_string_lossy().ends_with(compact::TEMP_EXTENSION))
            .count();
        assert_eq!(leftovers, 0, "{step:?}");
    }
}

#[tokio::test]
async fn an_open_removes_a_rewrite_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with(dir.path(), options(Arc::new(RealFs))).unwrap();
    fill(&store, 0, 40).await;
    let before = everything(&store).await;
    store.close().await;
    drop(store);
    let log = dir.path().join("log");
    let (first, path) = segment::list(&log).unwrap().remove(0);
    let temp = log.join(format!(
        "{}.{}",
        segment::file_name(first),
        compact::TEMP_EXTENSION
    ));
    std::fs::write(&temp, &std::fs::read(&path).unwrap()[..100]).unwrap();

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert!(!temp.exists());
    assert_eq!(everything(&reopened).await, before);
}
