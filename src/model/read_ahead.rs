//! Reading the rows a page will show before the page is put together. Rows
//! that are in memory (the store's cache or the kernel's page cache) are read
//! one after another, as a page would read them; once one has to come from
//! the disk, the rest are read on a few threads at once, so a page of 50 rows
//! that are not in memory, each a few random reads of the store's file, waits
//! on the disk about half as long as reading them in turn would. The attempt
//! lists use it: their rows are scattered through the attempts table.
//!
//! The threads are started once, by the first page that needs them, and
//! kept: a page hands them its rows over a channel, which costs a few
//! microseconds where starting threads for each page cost a page of a few
//! rows more than the reads it saved.

use std::collections::HashMap;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc::{self, SendError, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::Error;
use super::list::VISIT_BUDGET;
use super::tables::Row;
use super::view::View;
use crate::kv::{self, Flow, KvRead, Table};

/// Reads of a page's rows that go on at once when they are not in memory
/// (the page's own thread and the kept readers): this machine's virtio disk
/// answered 180 random 4 KiB reads 2.5 times faster on 4 threads than on
/// one, and hardly faster on 8 or 16.
const READERS: usize = 4;

/// Fewer rows left than this are read in turn: handing one row to a reader
/// saves nothing.
const FEW: usize = 2;

/// Longer than a row read from the store's cache or the page cache takes,
/// shorter than one from the disk (55 us a 4 KiB page on this machine).
const FROM_MEMORY: Duration = Duration::from_micros(30);

impl View {
    /// The rows of `rows` that a page put together from `range` of `index`
    /// will read first: `row_key` names the row an entry leads to, if the
    /// page would read it, and the first `want` of them (within the visit
    /// budget) are read at once ([`View::stored_all`]). A page whose rows
    /// are not in memory then waits on the disk for them together, not one
    /// after another; the page itself is put together as before, taking
    /// the rows from here.
    pub(super) fn prefetch<R: Row>(
        &self,
        index: Table,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
        rows: Table,
        want: usize,
        mut row_key: impl FnMut(&[u8], &[u8]) -> Result<Option<Vec<u8>>, Error>,
    ) -> Result<HashMap<Vec<u8>, R>, Error> {
        let mut keys = Vec::with_capacity(want);
        let mut visited = 0usize;
        self.scan_store_in(index, range, reverse, &mut |entry, value| {
            visited += 1;
            keys.extend(row_key(entry, value)?);
            Ok(if keys.len() >= want || visited >= VISIT_BUDGET {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
        let found = self.stored_all::<R>(rows, &keys)?;
        Ok(keys
            .into_iter()
            .zip(found)
            .filter_map(|(key, row)| Some((key, row?)))
            .collect())
    }

    /// The rows of `table` at `keys`, from the store alone, in order. They
    /// are read one after another while they come from memory; from the
    /// first that took as long as a read from the disk, the rest (if there
    /// are [`FEW`] or more) are read [`READERS`] at once, so that a page
    /// whose rows are not in memory waits on the disk about half as long as
    /// it would reading them in turn.
    pub(super) fn stored_all<R: Row>(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<R>>, Error> {
        get_all(self.store(), table, keys, FROM_MEMORY)?
            .into_iter()
            .map(|bytes| {
                bytes
                    .map(|b| R::decode(&b).map_err(Error::from))
                    .transpose()
            })
            .collect()
    }
}

/// A part of a page's reads, handed to a kept reader.
type Job = Box<dyn FnOnce() + Send>;

/// The kept readers' queue: started on first use; `None` if the threads
/// could not be started, and then every page reads in turn.
fn readers() -> Option<&'static Sender<Job>> {
    static READERS_QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    READERS_QUEUE
        .get_or_init(|| {
            let (queue, jobs) = mpsc::channel::<Job>();
            let jobs = Arc::new(Mutex::new(jobs));
            for n in 1..READERS {
                let jobs = jobs.clone();
                std::thread::Builder::new()
                    .name(format!("model-reader-{n}"))
                    .spawn(move || {
                        loop {
                            // The lock is held while waiting for a job, not
                            // while doing it.
                            let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                            match job {
                                Ok(job) => job(),
                                Err(_) => return,
                            }
                        }
                    })
                    .ok()?;
            }
            Some(queue)
        })
        .as_ref()
}

/// What reading a part of a page's rows gave, or the panic it raised.
type PartRead = std::thread::Result<kv::Result<Vec<Option<Vec<u8>>>>>;

/// The values of `table` at `keys`, in order: in turn until a read takes
/// `from_memory` or longer, then the rest [`READERS`] at once (this thread
/// and the kept readers) if there are [`FEW`] or more.
fn get_all(
    kv: &Arc<dyn KvRead>,
    table: Table,
    keys: &[Vec<u8>],
    from_memory: Duration,
) -> kv::Result<Vec<Option<Vec<u8>>>> {
    let mut values = Vec::with_capacity(keys.len());
    let mut rest = keys;
    while let Some((key, after)) = rest.split_first() {
        let started = Instant::now();
        values.push(kv.get(table, key)?);
        rest = after;
        if started.elapsed() >= from_memory {
            break;
        }
    }
    let queue = readers();
    let Some(queue) = queue.filter(|_| rest.len() >= FEW) else {
        for key in rest {
            values.push(kv.get(table, key)?);
        }
        return Ok(values);
    };
    let mut parts = rest.chunks(rest.len().div_ceil(READERS));
    let mine = parts.next().expect("rest holds FEW or more keys");
    let (done, results) = mpsc::channel::<(usize, PartRead)>();
    let mut handed = 0;
    for (n, part) in parts.enumerate() {
        let (kv, part, done) = (kv.clone(), part.to_vec(), done.clone());
        let job: Job = Box::new(move || {
            let read = catch_unwind(AssertUnwindSafe(|| read(kv.as_ref(), table, &part)));
            let _ = done.send((n, read));
        });
        // A queue whose readers are gone: this thread does the part.
        if let Err(SendError(job)) = queue.send(job) {
            job();
        }
        handed += 1;
    }
    drop(done);
    values.extend(read(kv.as_ref(), table, mine)?);
    let mut theirs: Vec<Option<PartRead>> = (0..handed).map(|_| None).collect();
    for _ in 0..handed {
        let (n, read) = results
            .recv()
            .expect("each part sends its result, or its panic, once");
        theirs[n] = Some(read);
    }
    for read in theirs {
        let read = read.expect("every part answered");
        values.extend(read.unwrap_or_else(|panic| resume_unwind(panic))?);
    }
    Ok(values)
}

/// The values of `table` at `keys`, in turn.
fn read(kv: &dyn KvRead, table: Table, keys: &[Vec<u8>]) -> kv::Result<Vec<Option<Vec<u8>>>> {
    keys.iter().map(|key| kv.get(table, key)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Kv, RedbKv, WriteBatch};
    use crate::model::tables;

    /// A store holding `key-0` .. `key-{n-1}` in the deliveries table, each
    /// with a value naming it, and the keys asked for: every other one
    /// missing, the rest out of order.
    fn store(n: usize) -> (RedbKv, Vec<Vec<u8>>) {
        let kv = RedbKv::in_memory(&tables::ALL).unwrap();
        let mut batch = WriteBatch::default();
        for i in 0..n {
            let key = format!("key-{i}").into_bytes();
            batch.put(tables::DELIVERIES, key, format!("value-{i}").into_bytes());
        }
        kv.write(&batch, true).unwrap();
        let keys = (0..2 * n)
            .rev()
            .map(|i| format!("key-{}", i / 2 + (i % 2) * n).into_bytes())
            .collect();
        (kv, keys)
    }

    fn expected(kv: &RedbKv, keys: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
        let snapshot = kv.read().unwrap();
        keys.iter()
            .map(|k| snapshot.get(tables::DELIVERIES, k).unwrap())
            .collect()
    }

    #[test]
    fn rows_read_on_threads_come_back_in_the_order_asked_with_the_missing_ones() {
        let (kv, keys) = store(50);
        let snapshot = kv.read().unwrap();
        // Every read counts as one from the disk: all but the first are
        // read on the threads.
        let values = get_all(&snapshot, tables::DELIVERIES, &keys, Duration::ZERO).unwrap();
        assert_eq!(values, expected(&kv, &keys));
        assert_eq!(values.iter().filter(|v| v.is_some()).count(), 50);
        assert_eq!(values[1].as_deref(), Some(&b"value-49"[..]));
    }

    #[test]
    fn rows_from_memory_and_a_short_rest_are_read_in_turn_alike() {
        let (kv, keys) = store(3);
        let snapshot = kv.read().unwrap();
        for from_memory in [Duration::ZERO, Duration::from_secs(60)] {
            let values = get_all(&snapshot, tables::DELIVERIES, &keys, from_memory).unwrap();
            assert_eq!(values, expected(&kv, &keys));
        }
    }

    #[test]
    fn the_readers_are_started_once_and_kept() {
        let (kv, keys) = store(50);
        let snapshot = kv.read().unwrap();
        for _ in 0..5 {
            let values = get_all(&snapshot, tables::DELIVERIES, &keys, Duration::ZERO).unwrap();
            assert_eq!(values, expected(&kv, &keys));
        }
        let readers = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("model-reader-"))
            .count();
        assert_eq!(readers, READERS - 1, "the same readers served every page");
    }
}
