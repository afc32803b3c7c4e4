//! An organization's attempts across its deliveries, newest first, filtered
//! by delivery, event, endpoint, status, response code or its class, and
//! time.
//!
//! Each answer is key ranges of one attempt index in the store, merged with
//! the attempts still in the overlays (which the indexes do not cover yet).
//! Every entry says where its row is and the attempt's status and response
//! code, so an entry that a filter rules out costs no read of a row. The
//! entries by endpoint and status say all that a page shows of the row (its
//! event id and log position too), so an endpoint's pages read no rows: with
//! a status they are one range, without one the endpoint's four status
//! ranges merged newest first (`merge`). The other lists read their page's
//! rows before they put the page together, at once when they are not in
//! memory (`read_ahead`). Like every list, a request reads at most
//! [`VISIT_BUDGET`] entries of the store and may come back short, with a
//! cursor to go on from.

use std::collections::HashMap;
use std::ops::Bound;

use projections::model::Attempt;
use projections::{AttemptStatus, Timestamp};

use super::Error;
use super::keys::{Key, Reader};
use super::list::VISIT_BUDGET;
use super::merge::Range;
use super::queries::finish;
use super::tables::{self, key};
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

/// What an attempt list shows of an attempt: its row but for the last error
/// and the retry's time, which a page reads from the attempt's event in the
/// log (at `position`), with the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptItem {
    pub delivery_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    /// 0-based version in the delivery's stream.
    pub version: u64,
    pub position: u64,
    pub sequence: u64,
    pub recorded_at: Timestamp,
    pub status: AttemptStatus,
    pub response_status_code: Option<u16>,
}

impl From<Attempt> for AttemptItem {
    fn from(a: Attempt) -> AttemptItem {
        AttemptItem {
            delivery_id: a.delivery_id,
            event_id: a.event_id,
            endpoint_id: a.endpoint_id,
            version: a.version,
            position: a.position,
            sequence: a.sequence,
            recorded_at: a.recorded_at,
            status: a.status,
            response_status_code: a.response_status_code,
        }
    }
}

/// The fields of an attempt that a filter looks at, borrowed from a row or
/// an item.
struct Facts<'a> {
    delivery_id: &'a str,
    event_id: &'a str,
    endpoint_id: &'a str,
    status: AttemptStatus,
    code: Option<u16>,
    recorded_at: i64,
}

impl AttemptFilter {
    fn accepts(&self, a: Facts<'_>) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        same(&self.delivery_id, a.delivery_id)
            && same(&self.event_id, a.event_id)
            && same(&self.endpoint_id, a.endpoint_id)
            && self.status.is_none_or(|s| a.status == s)
            && self.response_status_code.is_none_or(|c| a.code == Some(c))
            && self
                .status_class
                .is_none_or(|c| tables::status_class(a.code) == c)
            && self
                .recorded_after
                .is_none_or(|t| a.recorded_at > t.micros())
            && self
                .recorded_before
                .is_none_or(|t| a.recorded_at < t.micros())
    }

    /// Whether the filter accepts this attempt.
    pub fn keep(&self, a: &AttemptItem) -> bool {
        self.accepts(Facts {
            delivery_id: &a.delivery_id,
            event_id: &a.event_id,
            endpoint_id: &a.endpoint_id,
            status: a.status,
            code: a.response_status_code,
            recorded_at: a.recorded_at.micros(),
        })
    }

    fn keep_row(&self, a: &Attempt) -> bool {
        self.accepts(Facts {
            delivery_id: &a.delivery_id,
            event_id: &a.event_id,
            endpoint_id: &a.endpoint_id,
            status: a.status,
            code: a.response_status_code,
            recorded_at: a.recorded_at.micros(),
        })
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

    /// The index whose ranges hold the fewest entries the filter refuses:
    /// an id narrows most (an endpoint's by status, one range if the status
    /// is given, else each status's), then the status code's class, then
    /// the status.
    fn source(&self, org: &str) -> Source {
        let of_org = key::org(org);
        let refs = |table: Table, prefix: Key| Source {
            table,
            prefixes: vec![prefix],
            whole: None,
        };
        if let Some(id) = &self.delivery_id {
            refs(tables::ATTEMPTS_BY_DELIVERY, of_org.str(id))
        } else if let Some(id) = &self.event_id {
            refs(tables::ATTEMPTS_BY_EVENT, of_org.str(id))
        } else if let Some(id) = &self.endpoint_id {
            let statuses = match self.status {
                Some(status) => vec![status],
                None => tables::ATTEMPT_STATUSES.to_vec(),
            };
            let endpoint = of_org.str(id);
            Source {
                table: tables::ATTEMPTS_BY_ENDPOINT_STATUS,
                prefixes: statuses
                    .into_iter()
                    .map(|s| endpoint.clone().byte(tables::attempt_status_byte(s)))
                    .collect(),
                whole: Some(id.clone()),
            }
        } else if let Some(class) = self.status_class.or(self
            .response_status_code
            .map(|c| tables::status_class(Some(c))))
        {
            refs(tables::ATTEMPTS_BY_CLASS, of_org.byte(class))
        } else if let Some(status) = self.status {
            refs(
                tables::ATTEMPTS_BY_STATUS,
                of_org.byte(tables::attempt_status_byte(status)),
            )
        } else {
            refs(tables::ATTEMPTS_BY_TIME, of_org)
        }
    }

    /// The part of the range of entries under `prefix` that the filter's
    /// times and `before` leave.
    fn range(&self, prefix: &Key, before: Option<AttemptMark>) -> Range {
        let lower = match self.recorded_after {
            None => Bound::Included(prefix.as_bytes().to_vec()),
            Some(t) => match t.micros().checked_add(1) {
                Some(next) => Bound::Included(prefix.clone().i64(next).into_bytes()),
                None => Bound::Excluded(prefix.prefix_end()),
            },
        };
        let mut upper = Bound::Excluded(prefix.prefix_end());
        if let Some(t) = self.recorded_before {
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
        (lower, upper)
    }
}

/// Where the store's candidates of an attempt list are: ranges of `table`,
/// each `prefix` then the attempt's `(recorded at, sequence)`, read as one.
/// `whole`: the endpoint whose entries carry every field of an item
/// ([`tables::attempt_entry`]), so no row is read; `None` when the entries
/// only lead to the rows.
struct Source {
    table: Table,
    prefixes: Vec<Key>,
    whole: Option<String>,
}

/// What an attempt index entry's value says ([`tables::attempt_ref`]):
/// where the row is, and the attempt's status byte and response code (0 for
/// none); for an entry by endpoint and status ([`tables::attempt_entry`])
/// also the attempt's event id and log position.
struct AttemptRef {
    delivery_id: String,
    version: u64,
    status: u8,
    code: u16,
    rest: Option<(String, u64)>,
}

impl AttemptRef {
    fn read(value: &[u8], whole: bool) -> Option<AttemptRef> {
        let mut at = Reader::new(value);
        let mut read = AttemptRef {
            delivery_id: at.str()?,
            version: at.u64()?,
            status: at.byte()?,
            code: u16::from_be_bytes([at.byte()?, at.byte()?]),
            rest: None,
        };
        if whole {
            read.rest = Some((at.str()?, at.u64()?));
        }
        at.is_empty().then_some(read)
    }

    /// The item of an entry that carries it whole: the entry's key says its
    /// endpoint, time and sequence.
    fn into_item(self, endpoint_id: &str, mark: AttemptMark) -> Option<AttemptItem> {
        let (event_id, position) = self.rest?;
        Some(AttemptItem {
            delivery_id: self.delivery_id,
            event_id,
            endpoint_id: endpoint_id.to_owned(),
            version: self.version,
            position,
            sequence: mark.sequence,
            recorded_at: Timestamp::from_micros(mark.recorded_at),
            status: tables::attempt_status_of(self.status)?,
            response_status_code: (self.code != 0).then_some(self.code),
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
    pub fn of(a: &AttemptItem) -> AttemptMark {
        AttemptMark {
            recorded_at: a.recorded_at.micros(),
            sequence: a.sequence,
        }
    }
}

/// A page of attempts, and the mark to go on below if the list goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempts {
    pub items: Vec<AttemptItem>,
    pub next: Option<AttemptMark>,
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
        let below = |a: &Attempt| {
            before.is_none_or(|b| {
                AttemptMark {
                    recorded_at: a.recorded_at.micros(),
                    sequence: a.sequence,
                } < b
            })
        };
        // The overlays' attempts, oldest first so that the newest pops first.
        let of_org = key::org(org);
        let rows = (
            Bound::Included(of_org.as_bytes().to_vec()),
            Bound::Excluded(of_org.prefix_end()),
        );
        let mut pending: Vec<AttemptItem> = self
            .overlaid_where(|o| &o.attempts, &rows, |a| filter.keep_row(a) && below(a))
            .into_values()
            .map(AttemptItem::from)
            .collect();
        pending.sort_by_key(AttemptMark::of);

        let source = filter.source(org);
        let table = source.table;
        let ranges: Vec<(usize, Range)> = source
            .prefixes
            .iter()
            .map(|prefix| (prefix.as_bytes().len(), filter.range(prefix, before)))
            .collect();
        let bad = || Error::Inconsistent(format!("a bad entry in {}", table.0));
        // The rows the page will read, where the entries do not rule them
        // out: scattered through the attempts table, a few reads of the disk
        // each when they are not in memory, so read at once. Entries that
        // carry their items lead to no rows.
        let mut read: HashMap<Vec<u8>, Attempt> = match (&source.whole, ranges.as_slice()) {
            (None, [(_, range)]) => {
                self.prefetch(table, range, true, tables::ATTEMPTS, want, |_, value| {
                    let at = AttemptRef::read(value, false).ok_or_else(bad)?;
                    let row_key = key::attempt(org, &at.delivery_id, at.version);
                    Ok((filter.may_keep(at.status, at.code)
                        && !self.overlays_hold(|o| &o.attempts, &row_key))
                    .then_some(row_key))
                })?
            }
            _ => HashMap::new(),
        };

        let mut items: Vec<AttemptItem> = Vec::new();
        let mut visited = 0usize;
        let mut last_visited = None;
        self.scan_merged(table, &ranges, &mut |tail, value| {
            let mut tail = Reader::new(tail);
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
            let at = AttemptRef::read(value, source.whole.is_some()).ok_or_else(bad)?;
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
                let item = match &source.whole {
                    Some(endpoint_id) => at.into_item(endpoint_id, mark).ok_or_else(bad)?,
                    None => {
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
                        AttemptItem::from(row)
                    }
                };
                if filter.keep(&item) {
                    items.push(item);
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
}

#[cfg(test)]
#[path = "attempt_list_tests.rs"]
mod tests;
