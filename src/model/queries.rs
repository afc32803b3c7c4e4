//! The questions asked across deliveries: attempts by delivery, event,
//! endpoint, status, status-code class and time; the retry queue; and the
//! change feed, an organization's events by sequence number.
//!
//! Each answer is one key range of one index in the store, merged with the
//! rows still in the overlays (which the indexes do not cover yet). Like the
//! lists, a request reads at most [`VISIT_BUDGET`] entries of the store; when
//! the other filters match few of them, the page comes back short, or empty,
//! with a cursor to go on from, so no request's work grows with the history.
//! The attempt lists read their page's rows before they put the page
//! together, at once when they are not in memory (`read_ahead`); the retry
//! queue's entries carry their delivery rows, so its page reads no rows.

use std::collections::HashMap;
use std::ops::Bound;

use projections::model::{Attempt, Delivery};
use projections::{AttemptStatus, Timestamp};

use super::Error;
use super::keys::{Key, Reader};
use super::list::{DeliveryFilter, VISIT_BUDGET};
use super::tables::{self, Row, key};
use super::view::View;
use crate::kv::{Flow, Table};

/// Which attempts: every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub delivery_id: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub status: Option<AttemptStatus>,
    pub response_status_code: Option<u16>,
    /// 1 to 5: `1xx` to `5xx`.
    pub status_class: Option<u8>,
    /// Strictly after, strictly before.
    pub recorded_after: Option<Timestamp>,
    pub recorded_before: Option<Timestamp>,
}

impl AttemptFilter {
    fn keep(&self, a: &Attempt) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&self.delivery_id, &a.delivery_id)
            && same(&self.event_id, &a.event_id)
            && same(&self.endpoint_id, &a.endpoint_id)
            && self.status.is_none_or(|s| a.status == s)
            && self
                .response_status_code
                .is_none_or(|c| a.response_status_code == Some(c))
            && self
                .status_class
                .is_none_or(|c| tables::status_class(a.response_status_code) == c)
            && self
                .recorded_after
                .is_none_or(|t| a.recorded_at.micros() > t.micros())
            && self
                .recorded_before
                .is_none_or(|t| a.recorded_at.micros() < t.micros())
    }

    /// Whether an attempt of this status byte and response code (0 for
    /// none), as its index entries carry them, may pass: what the entry
    /// rules out needs no read of the row.
    fn may_keep(&self, status: u8, code: u16) -> bool {
        let code = (code != 0).then_some(code);
        self.status
            .is_none_or(|s| tables::attempt_status_byte(s) == status)
            && self.response_status_code.is_none_or(|c| code == Some(c))
            && self
                .status_class
                .is_none_or(|c| tables::status_class(code) == c)
    }

    /// The index whose range holds the fewest entries the filter refuses:
    /// an id narrows most (an endpoint's with the status if both are
    /// given), then the status code's class, then the status.
    fn source(&self, org: &str) -> (Table, Key) {
        let of_org = key::org(org);
        if let Some(id) = &self.delivery_id {
            (tables::ATTEMPTS_BY_DELIVERY, of_org.str(id))
        } else if let Some(id) = &self.event_id {
            (tables::ATTEMPTS_BY_EVENT, of_org.str(id))
        } else if let (Some(id), Some(status)) = (&self.endpoint_id, self.status) {
            (
                tables::ATTEMPTS_BY_ENDPOINT_STATUS,
                of_org.str(id).byte(tables::attempt_status_byte(status)),
            )
        } else if let Some(id) = &self.endpoint_id {
            (tables::ATTEMPTS_BY_ENDPOINT, of_org.str(id))
        } else if let Some(class) = self.status_class.or(self
            .response_status_code
            .map(|c| tables::status_class(Some(c))))
        {
            (tables::ATTEMPTS_BY_CLASS, of_org.byte(class))
        } else if let Some(status) = self.status {
            (
                tables::ATTEMPTS_BY_STATUS,
                of_org.byte(tables::attempt_status_byte(status)),
            )
        } else {
            (tables::ATTEMPTS_BY_TIME, of_org)
        }
    }
}

/// What an attempt index entry's value says ([`tables::attempt_ref`]):
/// where the row is, and the attempt's status byte and response code (0 for
/// none).
struct AttemptRef {
    delivery_id: String,
    version: u64,
    status: u8,
    code: u16,
}

impl AttemptRef {
    fn read(value: &[u8]) -> Option<AttemptRef> {
        let mut at = Reader::new(value);
        Some(AttemptRef {
            delivery_id: at.str()?,
            version: at.u64()?,
            status: at.byte()?,
            code: u16::from_be_bytes([at.byte()?, at.byte()?]),
        })
    }
}

/// A place in the order of attempts, newest first: when it was recorded,
/// then the organization's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttemptMark {
    pub recorded_at: i64,
    pub sequence: u64,
}

impl AttemptMark {
    pub fn of(a: &Attempt) -> AttemptMark {
        AttemptMark {
            recorded_at: a.recorded_at.micros(),
            sequence: a.sequence,
        }
    }
}

/// A page of attempts, and the mark to go on below if the list goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempts {
    pub items: Vec<Attempt>,
    pub next: Option<AttemptMark>,
}

/// A place in the retry queue: the time a retry is due, then the delivery id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryMark {
    /// Microseconds; `i64::MIN` for a retry that named no time.
    pub due: i64,
    pub delivery_id: String,
}

impl RetryMark {
    pub fn of(d: &Delivery) -> RetryMark {
        RetryMark {
            due: due(d),
            delivery_id: d.id.clone(),
        }
    }
}

/// When a scheduled retry is due; one that named no time is due at once.
fn due(d: &Delivery) -> i64 {
    d.next_retry_at.map_or(i64::MIN, |t| t.micros())
}

/// A page of the retry queue, and the mark to go on after.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    pub items: Vec<Delivery>,
    pub next: Option<RetryMark>,
}

/// The page of a query that read the store's candidates into `items` (at
/// most `limit + 1`), `visited` of them, the last at `last_visited`: if the
/// store had no more, the overlays' rows left in `pending` (which pops in
/// order) follow; the first `limit` items, and where the list goes on: after
/// the last item if there are more, at the last entry read if the visit
/// budget ran out first, else nowhere.
fn finish<R, M>(
    mut items: Vec<R>,
    mut pending: Vec<R>,
    limit: usize,
    visited: usize,
    last_visited: Option<M>,
    mark: impl Fn(&R) -> M,
) -> (Vec<R>, Option<M>) {
    let want = limit + 1;
    let exhausted = visited >= VISIT_BUDGET && items.len() < want;
    if !exhausted {
        while items.len() < want
            && let Some(row) = pending.pop()
        {
            items.push(row);
        }
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(mark)
    } else if exhausted {
        last_visited
    } else {
        None
    };
    (items, next)
}

impl View {
    /// The organization's attempts that `filter` accepts, newest first:
    /// at most `limit`, below `before` if given.
    pub fn attempt_list(
        &self,
        org: &str,
        filter: &AttemptFilter,
        limit: usize,
        before: Option<AttemptMark>,
    ) -> Result<Attempts, Error> {
        let want = limit + 1;
        let below = |mark: AttemptMark| before.is_none_or(|b| mark < b);
        // The overlays' attempts, oldest first so that the newest pops first.
        let of_org = key::org(org);
        let rows = (
            Bound::Included(of_org.as_bytes().to_vec()),
            Bound::Excluded(of_org.prefix_end()),
        );
        let mut pending: Vec<Attempt> = self
            .overlaid_where(
                |o| &o.attempts,
                &rows,
                |a| filter.keep(a) && below(AttemptMark::of(a)),
            )
            .into_values()
            .collect();
        pending.sort_by_key(AttemptMark::of);

        let (table, prefix) = filter.source(org);
        let lower = match filter.recorded_after {
            None => Bound::Included(prefix.as_bytes().to_vec()),
            Some(t) => match t.micros().checked_add(1) {
                Some(next) => Bound::Included(prefix.clone().i64(next).into_bytes()),
                None => Bound::Excluded(prefix.prefix_end()),
            },
        };
        let mut upper = Bound::Excluded(prefix.prefix_end());
        if let Some(t) = filter.recorded_before {
            upper = Bound::Excluded(prefix.clone().i64(t.micros()).into_bytes());
        }
        if let Some(mark) = before {
            let at = prefix
                .clone()
                .i64(mark.recorded_at)
                .u64(mark.sequence)
                .into_bytes();
            if matches!(&upper, Bound::Excluded(u) if at < *u) {
                upper = Bound::Excluded(at);
            }
        }

        let range = (lower, upper);
        let skip = prefix.as_bytes().len();
        let bad = || Error::Inconsistent(format!("a bad entry in {}", table.0));
        // The rows the page will read, where the entries do not rule them
        // out: scattered through the attempts table, a few reads of the disk
        // each when they are not in memory, so read at once.
        let mut read: HashMap<Vec<u8>, Attempt> =
            self.prefetch(table, &range, true, tables::ATTEMPTS, want, |_, value| {
                let at = AttemptRef::read(value).ok_or_else(bad)?;
                let row_key = key::attempt(org, &at.delivery_id, at.version);
                Ok((filter.may_keep(at.status, at.code)
                    && !self.overlays_hold(|o| &o.attempts, &row_key))
                .then_some(row_key))
            })?;

        let mut items: Vec<Attempt> = Vec::new();
        let mut visited = 0usize;
        let mut last_visited = None;
        self.scan_store(table, &range, &mut |entry, value| {
            let mut tail = Reader::new(&entry[skip..]);
            let mark = AttemptMark {
                recorded_at: tail.i64().ok_or_else(bad)?,
                sequence: tail.u64().ok_or_else(bad)?,
            };
            while items.len() < want && pending.last().is_some_and(|a| AttemptMark::of(a) > mark) {
                items.push(pending.pop().expect("checked above"));
            }
            if items.len() >= want {
                return Ok(Flow::Stop);
            }
            let at = AttemptRef::read(value).ok_or_else(bad)?;
            last_visited = Some(mark);
            visited += 1;
            if !filter.may_keep(at.status, at.code) {
                return Ok(if visited >= VISIT_BUDGET {
                    Flow::Stop
                } else {
                    Flow::Continue
                });
            }
            let row_key = key::attempt(org, &at.delivery_id, at.version);
            if !self.overlays_hold(|o| &o.attempts, &row_key) {
                let row = match read.remove(&row_key) {
                    Some(row) => Some(row),
                    None => self.stored::<Attempt>(tables::ATTEMPTS, &row_key)?,
                }
                .ok_or_else(|| {
                    Error::Inconsistent(format!(
                        "{} names attempt {} of {}, which has no row",
                        table.0, at.version, at.delivery_id
                    ))
                })?;
                if filter.keep(&row) {
                    items.push(row);
                }
            }
            Ok(if items.len() >= want || visited >= VISIT_BUDGET {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
        let (items, next) = finish(
            items,
            pending,
            limit,
            visited,
            last_visited,
            AttemptMark::of,
        );
        Ok(Attempts { items, next })
    }

    /// The organization's deliveries whose latest attempt scheduled a retry
    /// due at or before `due_by`, soonest first (a retry that named no time
    /// first of all), that `filter` also accepts: at most `limit`, after
    /// `after` if given.
    pub fn retry_queue(
        &self,
        org: &str,
        due_by: Timestamp,
        limit: usize,
        after: Option<&RetryMark>,
        filter: &DeliveryFilter,
    ) -> Result<Retries, Error> {
        let want = limit + 1;
        let due_by = due_by.micros();
        let wanted = |d: &Delivery| {
            d.status == AttemptStatus::RetryScheduled
                && due(d) <= due_by
                && after.is_none_or(|a| RetryMark::of(d) > *a)
                && filter.keep(d)
        };
        let of_org = key::org(org);
        let rows = (
            Bound::Included(of_org.as_bytes().to_vec()),
            Bound::Excluded(of_org.prefix_end()),
        );
        // Newest last after the reverse sort: the soonest pops first.
        let mut pending: Vec<Delivery> = self
            .overlaid_where(|o| &o.deliveries, &rows, wanted)
            .into_values()
            .collect();
        pending.sort_by_key(|d| std::cmp::Reverse(RetryMark::of(d)));

        let lower = match after {
            None => Bound::Included(of_org.as_bytes().to_vec()),
            Some(mark) => Bound::Excluded(
                of_org
                    .clone()
                    .i64(mark.due)
                    .str(&mark.delivery_id)
                    .into_bytes(),
            ),
        };
        let upper = match due_by.checked_add(1) {
            Some(next) => Bound::Excluded(of_org.clone().i64(next).into_bytes()),
            None => Bound::Excluded(of_org.prefix_end()),
        };
        let range = (lower, upper);
        let skip = of_org.as_bytes().len();
        let bad = || Error::Inconsistent(format!("a bad entry in {}", tables::RETRY_QUEUE.0));
        // Each entry carries its delivery's row: the page reads no other.
        let mut items: Vec<Delivery> = Vec::new();
        let mut visited = 0usize;
        let mut last_visited = None;
        self.scan_store_in(tables::RETRY_QUEUE, &range, false, &mut |entry, value| {
            let mut tail = Reader::new(&entry[skip..]);
            let mark = RetryMark {
                due: tail.i64().ok_or_else(bad)?,
                delivery_id: tail.str().ok_or_else(bad)?,
            };
            while items.len() < want && pending.last().is_some_and(|d| RetryMark::of(d) < mark) {
                items.push(pending.pop().expect("checked above"));
            }
            if items.len() >= want {
                return Ok(Flow::Stop);
            }
            let row_key = key::delivery(org, &mark.delivery_id);
            visited += 1;
            if !self.overlays_hold(|o| &o.deliveries, &row_key) {
                let row = Delivery::decode(value)?;
                if row.id != mark.delivery_id || RetryMark::of(&row) != mark {
                    return Err(Error::Inconsistent(format!(
                        "the retry queue's entry for {} holds another delivery's row",
                        mark.delivery_id
                    )));
                }
                if filter.keep(&row) {
                    items.push(row);
                }
            }
            last_visited = Some(mark);
            Ok(if items.len() >= want || visited >= VISIT_BUDGET {
                Flow::Stop
            } else {
                Flow::Continue
            })
        })?;
        let (items, next) = finish(items, pending, limit, visited, last_visited, RetryMark::of);
        Ok(Retries { items, next })
    }

    /// The organization's events after sequence number `after`, in sequence
    /// order: at most `limit` of `(sequence, global position)`.
    pub fn feed(&self, org: &str, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, Error> {
        let mut out = Vec::new();
        if limit == 0 || after == u64::MAX {
            return Ok(out);
        }
        let of_org = key::org(org);
        let skip = of_org.as_bytes().len();
        let range = (
            Bound::Included(key::feed(org, after + 1)),
            Bound::Excluded(of_org.prefix_end()),
        );
        self.scan(
            tables::FEED,
            |o| &o.feed,
            range,
            false,
            &mut |k, position| {
                let sequence = Reader::new(&k[skip..])
                    .u64()
                    .ok_or_else(|| Error::Inconsistent("a bad entry in feed".into()))?;
                out.push((sequence, position));
                Ok(if out.len() >= limit {
                    Flow::Stop
                } else {
                    Flow::Continue
                })
            },
        )?;
        Ok(out)
    }

    /// The organization's last sequence number: how many events it has.
    pub fn last_sequence(&self, org: &str) -> Result<u64, Error> {
        let key = key::org(org).into_bytes();
        Ok(self
            .get(tables::SEQUENCES, &key, |o| &o.sequences)?
            .unwrap_or_default())
    }
}
