//! The questions asked across deliveries but the attempt lists
//! (`attempt_list`): the retry queue, and the change feed, an
//! organization's events by sequence number.
//!
//! Each answer is one key range of one index in the store, merged with the
//! rows still in the overlays (which the indexes do not cover yet). Like the
//! lists, a request reads at most [`VISIT_BUDGET`] entries of the store; when
//! the other filters match few of them, the page comes back short, or empty,
//! with a cursor to go on from, so no request's work grows with the history.
//! The retry queue's entries carry their delivery rows, so its page reads no
//! rows.

use std::ops::Bound;

use projections::model::Delivery;
use projections::{AttemptStatus, Timestamp};

use super::Error;
use super::keys::Reader;
use super::list::{DeliveryFilter, VISIT_BUDGET};
use super::tables::{self, Row, key};
use super::view::View;
use crate::kv::Flow;

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
pub(super) fn finish<R, M>(
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
