//! Endpoint health: how many of an endpoint's attempts ended in each status
//! and each status-code class, and when the latest success and failure were,
//! over all time or since a given instant.
//!
//! The fold keeps a [`Tally`] per endpoint for all time and one per time
//! bucket at six levels (second, minute, hour, day, 30 days, 360 days). The
//! widths are fixed and each divides the next, so the buckets of one level
//! tile the next level's exactly and need no calendar. [`since`] answers for
//! any instant `T` from at most 59 + 59 + 23 + 29 + 11 buckets plus one per
//! 360 days between `T` and now, and the attempts of the one partial second
//! after `T`, counted one by one: what an answer costs never grows with the
//! endpoint's history, only with how far back `T` is, by one row a year.
//!
//! Pure: nothing here reads a clock or does I/O; rows come through [`Rows`]
//! when folding and through [`Tallies`] when answering.

use serde::Serialize;

use crate::rows::Rows;
use crate::values::{AttemptStatus, Timestamp};

/// Counts of attempts, and the latest times of success and failure among them.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    pub pending: u64,
    pub retry_scheduled: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Attempts that reported no response status code.
    pub no_code: u64,
    /// Attempts by the class of their response status code: `1xx` to `5xx`.
    pub classes: [u64; 5],
    /// The latest `delivered` attempt.
    pub last_success_at: Option<Timestamp>,
    /// The latest `failed` or `retry_scheduled` attempt: either way the
    /// endpoint did not take the webhook.
    pub last_failure_at: Option<Timestamp>,
    /// The latest attempt of any status.
    pub last_at: Option<Timestamp>,
}

impl Tally {
    /// Counts one attempt in.
    pub fn count(&mut self, status: AttemptStatus, code: Option<u16>, at: Timestamp) {
        let by_status = match status {
            AttemptStatus::Pending => &mut self.pending,
            AttemptStatus::RetryScheduled => &mut self.retry_scheduled,
            AttemptStatus::Delivered => &mut self.delivered,
            AttemptStatus::Failed => &mut self.failed,
        };
        *by_status += 1;
        match class(code) {
            Some(i) => self.classes[i] += 1,
            None => self.no_code += 1,
        }
        let latest = |slot: &mut Option<Timestamp>| *slot = (*slot).max(Some(at));
        match status {
            AttemptStatus::Delivered => latest(&mut self.last_success_at),
            AttemptStatus::Failed | AttemptStatus::RetryScheduled => {
                latest(&mut self.last_failure_at);
            }
            AttemptStatus::Pending => {}
        }
        latest(&mut self.last_at);
    }

    /// Adds the attempts `other` counts, which must be others than these.
    pub fn add(&mut self, other: &Tally) {
        self.pending += other.pending;
        self.retry_scheduled += other.retry_scheduled;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.no_code += other.no_code;
        for (mine, theirs) in self.classes.iter_mut().zip(other.classes) {
            *mine += theirs;
        }
        self.last_success_at = self.last_success_at.max(other.last_success_at);
        self.last_failure_at = self.last_failure_at.max(other.last_failure_at);
        self.last_at = self.last_at.max(other.last_at);
    }

    /// How many attempts it counts.
    pub fn attempts(&self) -> u64 {
        self.pending + self.retry_scheduled + self.delivered + self.failed
    }
}

/// The index into [`Tally::classes`] of a response status code (100 to 599).
fn class(code: Option<u16>) -> Option<usize> {
    let i = usize::from(code? / 100).checked_sub(1)?;
    (i < 5).then_some(i)
}

/// A level of buckets: its width, or all time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    All,
    Days360,
    Days30,
    Day,
    Hour,
    Minute,
    Second,
}

const SECOND: i64 = 1_000_000;

impl Level {
    /// The levels of buckets, widest first.
    pub const BUCKETS: [Level; 6] = [
        Level::Days360,
        Level::Days30,
        Level::Day,
        Level::Hour,
        Level::Minute,
        Level::Second,
    ];

    /// The width of its buckets in microseconds (all time: none).
    pub fn width(self) -> Option<i64> {
        Some(match self {
            Level::All => return None,
            Level::Days360 => 360 * 86_400 * SECOND,
            Level::Days30 => 30 * 86_400 * SECOND,
            Level::Day => 86_400 * SECOND,
            Level::Hour => 3_600 * SECOND,
            Level::Minute => 60 * SECOND,
            Level::Second => SECOND,
        })
    }

    /// The level's byte in a key; they sort as the levels do.
    pub fn byte(self) -> u8 {
        self as u8
    }
}

/// One row of an endpoint's counters: all time, or the bucket of `level`
/// that begins at `start` (microseconds, a multiple of the level's width).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    pub level: Level,
    pub start: i64,
}

impl Bucket {
    pub const ALL: Bucket = Bucket {
        level: Level::All,
        start: 0,
    };

    /// The bucket of `level` that holds `at`.
    pub fn of(level: Level, at: Timestamp) -> Bucket {
        let start = match level.width() {
            Some(width) => at.micros().div_euclid(width) * width,
            None => 0,
        };
        Bucket { level, start }
    }
}

/// Counts an attempt at `at` into its endpoint's counters: all time and the
/// bucket at each level that holds `at`.
pub fn count<R: Rows + ?Sized>(
    rows: &mut R,
    org: &str,
    endpoint_id: &str,
    (status, code): (AttemptStatus, Option<u16>),
    at: Timestamp,
) -> Result<(), R::Error> {
    let total = rows.tally_mut(org, endpoint_id, Bucket::ALL)?;
    let latest = total.last_at;
    total.count(status, code, at);
    for level in Level::BUCKETS {
        let bucket = Bucket::of(level, at);
        // A bucket later than the one holding the latest attempt so far holds
        // nothing yet: attempts come mostly in time order, so most buckets are
        // written fresh without being looked up.
        let fresh = latest.is_none_or(|l| Bucket::of(level, l).start < bucket.start);
        if fresh {
            let mut tally = Tally::default();
            tally.count(status, code, at);
            rows.put_tally(org, endpoint_id, bucket, tally)?;
        } else {
            rows.tally_mut(org, endpoint_id, bucket)?
                .count(status, code, at);
        }
    }
    Ok(())
}

/// How the attempts at or after an instant are counted: the bucket rows of
/// each span, and one by one the attempts of `exact`, the part of a second
/// before the first whole one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `[from, to)` in microseconds.
    pub exact: Option<(i64, i64)>,
    /// The buckets of `level` whose start is in `[from, to)` (`to` absent:
    /// unbounded), finest level first.
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub level: Level,
    pub from: i64,
    pub to: Option<i64>,
}

/// The smallest multiple of `width` at or after `at`.
fn ceil(at: i64, width: i64) -> i64 {
    match at.rem_euclid(width) {
        0 => at,
        r => at.saturating_add(width - r),
    }
}

/// Splits `[since, ∞)` into whole buckets, as few as the levels allow, and
/// the partial second at its start.
pub fn plan(since: Timestamp) -> Plan {
    let since = since.micros();
    let mut from = ceil(since, SECOND);
    let exact = (since < from).then_some((since, from));
    let mut spans = Vec::with_capacity(Level::BUCKETS.len());
    // Finest first: each level fills up to the next level's boundary.
    let mut levels = Level::BUCKETS.iter().rev().peekable();
    while let Some(&level) = levels.next() {
        let to = levels
            .peek()
            .and_then(|next| next.width())
            .map(|width| ceil(from, width));
        if to.is_none_or(|to| from < to) {
            spans.push(Span { level, from, to });
        }
        if let Some(to) = to {
            from = to;
        }
    }
    Plan { exact, spans }
}

/// Reads an endpoint's counters, to answer with [`since`].
pub trait Tallies {
    type Error;

    /// The all-time row.
    fn total(&mut self) -> Result<Tally, Self::Error>;
    /// The sum of the buckets of `span`.
    fn sum(&mut self, span: Span) -> Result<Tally, Self::Error>;
    /// The endpoint's attempts recorded in `[from, to)`, counted one by one.
    fn recount(&mut self, from: i64, to: i64) -> Result<Tally, Self::Error>;
}

/// The endpoint's attempts recorded at or after `since` (absent: all).
pub fn since<T: Tallies + ?Sized>(
    tallies: &mut T,
    since: Option<Timestamp>,
) -> Result<Tally, T::Error> {
    let Some(since) = since else {
        return tallies.total();
    };
    let plan = plan(since);
    let mut sum = Tally::default();
    if let Some((from, to)) = plan.exact {
        sum.add(&tallies.recount(from, to)?);
    }
    for span in plan.spans {
        sum.add(&tallies.sum(span)?);
    }
    Ok(sum)
}

/// `GET /v1/outbound-webhook-endpoints/{id}/stats`: an endpoint's attempts
/// since an instant (or ever).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthView {
    pub endpoint_id: String,
    pub since: Option<Timestamp>,
    pub attempts: u64,
    pub by_status: ByStatus,
    pub by_status_code_class: ByClass,
    pub without_response_status_code: u64,
    pub last_success_at: Option<Timestamp>,
    pub last_failure_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByStatus {
    pub pending: u64,
    pub retry_scheduled: u64,
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ByClass {
    #[serde(rename = "1xx")]
    pub informational: u64,
    #[serde(rename = "2xx")]
    pub success: u64,
    #[serde(rename = "3xx")]
    pub redirection: u64,
    #[serde(rename = "4xx")]
    pub client_error: u64,
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl HealthView {
    pub fn new(endpoint_id: &str, since: Option<Timestamp>, t: &Tally) -> HealthView {
        let [
            informational,
            success,
            redirection,
            client_error,
            server_error,
        ] = t.classes;
        HealthView {
            endpoint_id: endpoint_id.to_owned(),
            since,
            attempts: t.attempts(),
            by_status: ByStatus {
                pending: t.pending,
                retry_scheduled: t.retry_scheduled,
                delivered: t.delivered,
                failed: t.failed,
            },
            by_status_code_class: ByClass {
                informational,
                success,
                redirection,
                client_error,
                server_error,
            },
            without_response_status_code: t.no_code,
            last_success_at: t.last_success_at,
            last_failure_at: t.last_failure_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        crate::RetryAt::parse(text).expect("a date-time").at()
    }

    #[test]
    fn a_whole_second_needs_no_recount() {
        let plan = plan(at("2024-03-05T10:20:30Z"));
        assert_eq!(plan.exact, None);
        let first = plan.spans[0];
        assert_eq!(first.level, Level::Second);
        assert_eq!(first.from, at("2024-03-05T10:20:30Z").micros());
        assert_eq!(first.to, Some(at("2024-03-05T10:21:00Z").micros()));
    }

    #[test]
    fn a_fraction_is_recounted_up_to_the_next_second() {
        let plan = plan(at("2024-03-05T10:20:30.25Z"));
        assert_eq!(
            plan.exact,
            Some((
                at("2024-03-05T10:20:30.25Z").micros(),
                at("2024-03-05T10:20:31Z").micros()
            ))
        );
    }

    #[test]
    fn the_spans_tile_the_rest_of_time_with_few_buckets() {
        let since = at("2019-07-14T23:59:58.5Z");
        let plan = plan(since);
        let mut from = plan.exact.map_or(since.micros(), |(_, to)| to);
        let mut buckets = 0;
        for span in &plan.spans {
            assert_eq!(span.from, from, "no gap and no overlap");
            let width = span.level.width().unwrap();
            assert_eq!(span.from % width, 0, "{span:?} starts on a bucket");
            if let Some(to) = span.to {
                buckets += (to - span.from) / width;
                from = to;
            }
        }
        assert_eq!(plan.spans.last().unwrap().to, None);
        assert!(buckets <= 59 + 59 + 23 + 29 + 11, "{buckets} buckets");
    }

    #[test]
    fn retry_scheduled_counts_as_a_failure_and_pending_as_neither() {
        let mut t = Tally::default();
        t.count(AttemptStatus::Pending, None, Timestamp(1));
        assert_eq!((t.last_success_at, t.last_failure_at), (None, None));
        t.count(AttemptStatus::RetryScheduled, Some(503), Timestamp(2));
        assert_eq!(t.last_failure_at, Some(Timestamp(2)));
        t.count(AttemptStatus::Delivered, Some(200), Timestamp(3));
        assert_eq!(t.last_success_at, Some(Timestamp(3)));
        assert_eq!(
            (t.classes, t.no_code, t.attempts()),
            ([0, 1, 0, 0, 1], 1, 3)
        );
    }
}
