//! Unit tests of the layered store's write-outs: what reaches the store, and
//! when nothing does.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::*;
use crate::kv::{RedbKv, Table};

const ROWS: Table = Table("rows");

/// Changes by key, in memory until written out.
#[derive(Default)]
struct Rows(BTreeMap<Vec<u8>, Vec<u8>>);

impl Memtable for Rows {
    fn bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn successor(&self) -> Self {
        Rows::default()
    }

    fn write_out(&self, batch: &mut WriteBatch) {
        for (k, v) in &self.0 {
            batch.put(ROWS, k.clone(), v.clone());
        }
    }
}

/// The real store, with every write it is asked for noted: (ops, durable).
#[derive(Debug)]
struct Noted {
    kv: RedbKv,
    writes: Mutex<Vec<(usize, bool)>>,
}

impl Kv for Noted {
    fn read(&self) -> Result<Arc<dyn KvRead>, Error> {
        self.kv.read()
    }

    fn write(&self, batch: &WriteBatch, durable: bool) -> Result<(), Error> {
        self.writes.lock().unwrap().push((batch.len(), durable));
        self.kv.write(batch, durable)
    }

    fn path(&self) -> &std::path::Path {
        self.kv.path()
    }
}

fn writes(kv: &Noted) -> Vec<(usize, bool)> {
    kv.writes.lock().unwrap().clone()
}

/// Polls `done` for up to five seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_idle_store_is_not_written_once_its_last_change_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let noted = Arc::new(Noted {
        kv: RedbKv::open(&dir.path().join("kv.redb"), &[ROWS], 1 << 20).unwrap(),
        writes: Mutex::new(Vec::new()),
    });
    let flushing = Flushing {
        bytes: 1 << 20,
        interval: Duration::from_millis(5),
        durable_interval: Duration::from_millis(20),
    };
    let layered = Layered::start(noted.clone(), Rows::default(), flushing, "test-flush").unwrap();
    layered
        .change(|rows, _, _| rows.0.insert(b"k".to_vec(), b"v".to_vec()))
        .unwrap();

    // The change is written out, then synced by a later write if not by its own.
    eventually("the change to be synced", || {
        let w = writes(&noted);
        w.iter().any(|&(ops, _)| ops == 1) && w.last().is_some_and(|&(_, durable)| durable)
    });
    let settled = writes(&noted);
    // Forty intervals and ten sync intervals with nothing changed.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(writes(&noted), settled, "an idle store was written");
    layered.flush().unwrap();
    assert_eq!(
        writes(&noted),
        settled,
        "a flush with nothing to sync wrote"
    );

    // A later change is written and synced as before.
    layered
        .change(|rows, _, _| rows.0.insert(b"k2".to_vec(), b"v2".to_vec()))
        .unwrap();
    layered.close().unwrap();
    let after = writes(&noted);
    assert!(
        after.len() > settled.len(),
        "the later change was not written"
    );
    assert_eq!(after.last().map(|&(_, durable)| durable), Some(true));
    let stored = noted.kv.read().unwrap();
    assert_eq!(
        stored.get(ROWS, b"k2").unwrap().as_deref(),
        Some(&b"v2"[..])
    );
}
