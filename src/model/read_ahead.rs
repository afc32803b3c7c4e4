//! Reading the rows a page will show before the page is put together. Rows
//! that are in memory (the store's cache or the kernel's page cache) are read
//! one after another, as a page would read them; once one has to come from
//! the disk, the rest are read on a few threads at once, so a page of 50 rows
//! that are not in memory, each a few random reads of the store's file, waits
//! on the disk about half as long as reading them in turn would. The retry
//! queue uses it: its rows are scattered through the deliveries table.

use std::collections::HashMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use super::Error;
use super::list::VISIT_BUDGET;
use super::tables::Row;
use super::view::View;
use crate::kv::{self, Flow, KvRead, Table};

/// Threads that read a page's rows at once when they are not in memory:
/// this machine's virtio disk answered 180 random 4 KiB reads 2.5 times
/// faster on 4 threads than on one, and hardly faster on 8 or 16.
const READERS: usize = 4;

/// Fewer rows left than this are read in turn: starting threads costs
/// more than it saves on a few (measured on the attempt list by event,
/// 4 or 5 rows a page: the pages' median went from 0.3-0.6 ms to 2.6 ms
/// with threads for them).
const FEW: usize = 8;

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
    /// are [`FEW`] or more) are read on [`READERS`] threads at once, so that
    /// a page whose rows are not in memory waits on the disk about half as
    /// long as it would reading them in turn.
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

/// The values of `table` at `keys`, in order: in turn until a read takes
/// `from_memory` or longer, then the rest on [`READERS`] threads if there
/// are [`FEW`] or more.
fn get_all(
    kv: &dyn KvRead,
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
    if rest.len() < FEW {
        for key in rest {
            values.push(kv.get(table, key)?);
        }
        return Ok(values);
    }
    let read = |part: &[Vec<u8>]| -> kv::Result<Vec<Option<Vec<u8>>>> {
        part.iter().map(|key| kv.get(table, key)).collect()
    };
    let parts: Vec<_> = std::thread::scope(|scope| {
        let readers: Vec<_> = rest
            .chunks(rest.len().div_ceil(READERS))
            .map(|part| scope.spawn(move || read(part)))
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect()
    });
    for part in parts {
        values.extend(part?);
    }
    Ok(values)
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
        let values = get_all(snapshot.as_ref(), tables::DELIVERIES, &keys, Duration::ZERO).unwrap();
        assert_eq!(values, expected(&kv, &keys));
        assert_eq!(values.iter().filter(|v| v.is_some()).count(), 50);
        assert_eq!(values[1].as_deref(), Some(&b"value-49"[..]));
    }

    #[test]
    fn rows_from_memory_and_a_short_rest_are_read_in_turn_alike() {
        let (kv, keys) = store(3);
        let snapshot = kv.read().unwrap();
        for from_memory in [Duration::ZERO, Duration::from_secs(60)] {
            let values =
                get_all(snapshot.as_ref(), tables::DELIVERIES, &keys, from_memory).unwrap();
            assert_eq!(values, expected(&kv, &keys));
        }
    }
}
