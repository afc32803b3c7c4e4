//! Several key ranges of one index read as one, newest first: an endpoint's
//! attempts of every status are its four ranges of the index by endpoint and
//! status, whose keys end alike in `(recorded at, sequence)`. The store is
//! walked in descending order of what follows each range's prefix (the
//! tail), largest first across the ranges; no two entries share a tail.
//!
//! Each range is read a chunk at a time, the first small and each next one
//! twice as large, so a page that needs a few entries of a range reads a few
//! of its leaves, and one that needs many does not start a scan per entry.
//! Where the walk stops, every entry with a larger tail, in every range, has
//! been passed: a cursor at the last entry passed is exact.

use std::collections::VecDeque;
use std::ops::Bound;

use super::Error;
use super::view::View;
use crate::kv::{Flow, Table};

/// A range of keys of a table.
pub(super) type Range = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// What a merged walk calls with each entry's tail and value.
pub(super) type EachTail<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Flow, Error> + 'a;

/// Entries of a range read by its first chunk.
const FIRST_CHUNK: usize = 16;
/// The largest chunk: a walk that goes far (a rare status, a narrow code)
/// reads a range in scans of this many entries.
const LAST_CHUNK: usize = 512;

impl View {
    /// Calls `each` with the tail and the value of every entry of `ranges`
    /// of `table` in the store (each range with the length of its prefix),
    /// largest tail first across them, until it says stop. One range is
    /// one scan, as [`View::scan_store`] reads it.
    pub(super) fn scan_merged(
        &self,
        table: Table,
        ranges: &[(usize, Range)],
        each: &mut EachTail<'_>,
    ) -> Result<(), Error> {
        if let [(skip, range)] = ranges {
            return self.scan_store(table, range, &mut |key, value| each(&key[*skip..], value));
        }
        let mut runs: Vec<Run> = ranges
            .iter()
            .map(|(skip, range)| Run {
                skip: *skip,
                lower: range.0.clone(),
                upper: range.1.clone(),
                read: VecDeque::new(),
                ended: false,
                chunk: FIRST_CHUNK,
            })
            .collect();
        loop {
            for run in &mut runs {
                run.fill(self, table)?;
            }
            let Some(run) = runs
                .iter_mut()
                .filter(|run| !run.read.is_empty())
                .max_by(|a, b| a.head().cmp(b.head()))
            else {
                return Ok(());
            };
            let (key, value) = run.read.pop_front().expect("only runs holding entries");
            if each(&key[run.skip..], &value)? == Flow::Stop {
                return Ok(());
            }
        }
    }
}

/// One range of a merged walk: the entries read from it and not yet passed,
/// largest first, and the part of it not read yet.
struct Run {
    skip: usize,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    read: VecDeque<(Vec<u8>, Vec<u8>)>,
    ended: bool,
    chunk: usize,
}

impl Run {
    /// The tail of the largest entry read and not yet passed.
    fn head(&self) -> &[u8] {
        self.read.front().map_or(&[], |(key, _)| &key[self.skip..])
    }

    /// Reads the next chunk of the range if every entry read is passed and
    /// the range goes on: until it does not, the walk cannot know which
    /// range holds the next entry.
    fn fill(&mut self, view: &View, table: Table) -> Result<(), Error> {
        if !self.read.is_empty() || self.ended {
            return Ok(());
        }
        let range = (self.lower.clone(), self.upper.clone());
        let (read, chunk) = (&mut self.read, self.chunk);
        view.scan_store(table, &range, &mut |key, value| {
            read.push_back((key.to_vec(), value.to_vec()));
            Ok(if read.len() >= chunk {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
        self.ended = self.read.len() < chunk;
        if let Some((last, _)) = self.read.back() {
            self.upper = Bound::Excluded(last.clone());
        }
        self.chunk = (chunk * 2).min(LAST_CHUNK);
        Ok(())
    }
}
