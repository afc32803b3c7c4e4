//! A stream's row read from the disk must not hold the memtables: the
//! writer takes in its next batch while a reader waits on the store below.

use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::*;
use crate::kv::{Error as KvError, Visit};

/// The stream whose row a read of the store is held back on.
const HELD: &str = "held-back";

/// Whether reads of [`HELD`]'s row wait, and a wake for when they may go on.
#[derive(Debug, Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

/// The real store, whose snapshots wait at the gate before they read
/// [`HELD`]'s row, after saying so on `entered`.
struct Gated {
    kv: RedbKv,
    gate: Arc<Gate>,
    entered: Mutex<mpsc::Sender<()>>,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gated").finish_non_exhaustive()
    }
}

struct GatedRead {
    read: Arc<dyn KvRead>,
    gate: Arc<Gate>,
    entered: mpsc::Sender<()>,
}

impl KvRead for GatedRead {
    fn get(&self, table: Table, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, KvError> {
        if table == STREAMS && key == HELD.as_bytes() {
            let _ = self.entered.send(());
            let mut closed = self.gate.closed.lock().unwrap();
            while *closed {
                closed = self.gate.opened.wait(closed).unwrap();
            }
        }
        self.read.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        each: &mut Visit<'_>,
    ) -> std::result::Result<(), KvError> {
        self.read.scan(table, from, to, reverse, each)
    }
}

impl Kv for Gated {
    fn read(&self) -> std::result::Result<Arc<dyn KvRead>, KvError> {
        Ok(Arc::new(GatedRead {
            read: self.kv.read()?,
            gate: self.gate.clone(),
            entered: self.entered.lock().unwrap().clone(),
        }))
    }

    fn write(&self, batch: &WriteBatch, durable: bool) -> std::result::Result<(), KvError> {
        self.kv.write(batch, durable)
    }

    fn path(&self) -> &Path {
        self.kv.path()
    }
}

fn record(position: u64, stream: &str) -> RecordedEvent {
    RecordedEvent {
        position,
        stream: stream.to_owned(),
        version: 0,
        event_type: "AttemptRecorded".into(),
        schema_version: 1,
        recorded_at: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
        prev_hash: [0; 32],
        hash: [position as u8; 32],
        content: Vec::new(),
    }
}

#[test]
fn a_batch_is_taken_in_while_a_reader_waits_on_the_disk_for_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let (entered, entering) = mpsc::channel();
    let kv = Gated {
        kv: RedbKv::open(&dir.path().join("index.redb"), &TABLES, 1 << 20).unwrap(),
        gate: gate.clone(),
        entered: Mutex::new(entered),
    };
    let index = Arc::new(Index::new(Some(Arc::new(kv)), Pending::default(), &[], 0).unwrap());

    *gate.closed.lock().unwrap() = true;
    let reader = std::thread::spawn({
        let index = index.clone();
        move || index.lookup().tip(HELD).map(|tip| tip.is_none())
    });
    entering
        .recv_timeout(Duration::from_secs(5))
        .expect("the reader reaches the store");

    // The writer's next batch, on another stream, while the reader waits.
    let (taken, taking) = mpsc::channel();
    let writer = std::thread::spawn({
        let index = index.clone();
        move || {
            let place = Place {
                position: 1,
                offset: 0,
                len: 64,
            };
            let result = index.extend(vec![record(1, "other")], &[place], &[]);
            let _ = taken.send(());
            result
        }
    });
    let waited = taking.recv_timeout(Duration::from_secs(2));

    *gate.closed.lock().unwrap() = false;
    gate.opened.notify_all();
    writer.join().unwrap().unwrap();
    assert!(reader.join().unwrap().unwrap(), "no such stream yet");
    assert!(
        waited.is_ok(),
        "the batch waited for a reader reading the disk"
    );
    assert_eq!(
        index.lookup().tip("other").unwrap().map(|tip| tip.version),
        Some(0)
    );
}
