//! How long group commits take: the write and its sync on the embedded log,
//! the transaction on PostgreSQL, the append on KurrentDB. Every append that
//! a commit covers waits that long before its 2xx, so this is the floor under
//! the write path's latency and what a slow disk shows up in first. Counted
//! in fixed buckets, from any thread, without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket takes the rest.
pub const BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

const COUNTS: usize = BUCKETS_MICROS.len() + 1;

/// Commits counted by how long they took: `counts[i]` took at most
/// `BUCKETS_MICROS[i]` and more than the bound before it; the last, longer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitTimes {
    pub counts: [u64; COUNTS],
    pub sum_micros: u64,
}

impl CommitTimes {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Counts commits as they finish.
#[derive(Debug, Default)]
pub struct CommitClock {
    counts: [AtomicU64; COUNTS],
    sum_micros: AtomicU64,
}

impl CommitClock {
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS
            .iter()
            .position(|&upper| micros <= upper)
            .unwrap_or(BUCKETS_MICROS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn times(&self) -> CommitTimes {
        CommitTimes {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_the_first_bucket_that_holds_it() {
        let clock = CommitClock::default();
        for micros in [
            0, 100, 101, 2_999, 3_000, 3_001, 250_000, 250_001, 9_000_000,
        ] {
            clock.record(Duration::from_micros(micros));
        }
        let times = clock.times();
        // 0 and 100; 101; 2 999 and 3 000; 3 001; 250 000; the two past it.
        assert_eq!(times.counts, [2, 1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 1, 2]);
        assert_eq!(times.count(), 9);
        assert_eq!(times.sum_micros, 9_509_202);
    }
}
