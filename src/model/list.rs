//! Lists, newest first by id: endpoints, events and deliveries of one
//! organization, with their filters, served from the secondary indexes.
//!
//! The store's index entries are merged with the rows still in the overlays
//! (which the indexes do not cover yet), the overlay's row deciding where both
//! hold one. A request reads at most [`VISIT_BUDGET`] entries of the store:
//! when a filter matches few rows, the page may come back short, or empty,
//! with a cursor to go on from, so no request's work grows with the history.

use std::ops::Bound;

use projections::model::{Delivery, Endpoint, WebhookEvent};
use projections::{AttemptStatus, EventStatus, Timestamp};

use super::Error;
use super::keys::{Key, Reader};
use super::overlay::Field;
use super::tables::{self, Row, key};
use super::view::View;
use crate::kv::{Flow, Table};

/// Entries of the store one list request reads at most.
pub const VISIT_BUDGET: usize = 4096;

/// Which page: at most `limit` items with ids below `before`.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: usize,
    pub before: Option<String>,
}

/// A page of rows, and the id to go on below, if the list goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<AttemptStatus>,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
}

impl DeliveryFilter {
    pub fn keep(&self, d: &Delivery) -> bool {
        self.status.is_none_or(|s| d.status == s)
            && self
                .endpoint_id
                .as_ref()
                .is_none_or(|id| d.endpoint_id == *id)
            && self.event_id.as_ref().is_none_or(|id| d.event_id == *id)
    }
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub status: Option<EventStatus>,
    pub event_type: Option<String>,
    pub created_after: Option<Timestamp>,
    pub created_before: Option<Timestamp>,
}

impl EventFilter {
    fn keep(&self, e: &WebhookEvent) -> bool {
        self.status.is_none_or(|s| e.status == s)
            && self.event_type.as_ref().is_none_or(|t| e.event_type == *t)
            && self.created_after.is_none_or(|at| e.created_at > at)
            && self.created_before.is_none_or(|at| e.created_at < at)
    }
}

/// Where the store's candidates of a list come from: an index whose entries
/// are `prefix` then the id, or the rows themselves.
struct Source {
    index: Option<(Table, Key)>,
}

impl View {
    pub fn endpoint_list(&self, org: &str, page: &Page) -> Result<Listed<Endpoint>, Error> {
        let source = Source { index: None };
        self.newest_first(
            org,
            tables::ENDPOINTS,
            |o| &o.endpoints,
            &source,
            |_| true,
            |e| &e.id,
            page,
        )
    }

    pub fn delivery_list(
        &self,
        org: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> Result<Listed<Delivery>, Error> {
        if let Some(event_id) = &filter.event_id {
            return self.deliveries_of_event(org, event_id, filter, page);
        }
        let status = filter.status.map(tables::attempt_status_byte);
        let index = match (&filter.endpoint_id, status) {
            (Some(endpoint), Some(status)) => Some((
                tables::DELIVERIES_BY_ENDPOINT_STATUS,
                key::org(org).str(endpoint).byte(status),
            )),
            (Some(endpoint), None) => {
                Some((tables::DELIVERIES_BY_ENDPOINT, key::org(org).str(endpoint)))
            }
            (None, Some(status)) => {
                Some((tables::DELIVERIES_BY_STATUS, key::org(org).byte(status)))
            }
            (None, None) => None,
        };
        self.newest_first(
            org,
            tables::DELIVERIES,
            |o| &o.deliveries,
            &Source { index },
            |d| filter.keep(d),
            |d| &d.id,
            page,
        )
    }

    /// An event's deliveries: at most its fan-out, read by id.
    fn deliveries_of_event(
        &self,
        org: &str,
        event_id: &str,
        filter: &DeliveryFilter,
        page: &Page,
    ) -> Result<Listed<Delivery>, Error> {
        let Some(event) = self.event(org, event_id)? else {
            return Ok(Listed {
                items: Vec::new(),
                next: None,
            });
        };
        let mut ids = event.delivery_ids;
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let mut items = Vec::new();
        for id in ids
            .iter()
            .filter(|id| page.before.as_ref().is_none_or(|before| *id < before))
        {
            if let Some(d) = self.delivery(org, id)?
                && filter.keep(&d)
            {
                items.push(d);
            }
        }
        Ok(paged(items, page.limit, |d| &d.id, None))
    }

    pub fn event_list(
        &self,
        org: &str,
        filter: &EventFilter,
        page: &Page,
    ) -> Result<Listed<WebhookEvent>, Error> {
        let status = filter.status.map(tables::event_status_byte);
        let index = match (&filter.event_type, status) {
            (Some(t), Some(status)) => Some((
                tables::EVENTS_BY_TYPE_STATUS,
                key::org(org).str(t).byte(status),
            )),
            (Some(t), None) => Some((tables::EVENTS_BY_TYPE, key::org(org).str(t))),
            (None, Some(status)) => Some((tables::EVENTS_BY_STATUS, key::org(org).byte(status))),
            (None, None) => None,
        };
        self.newest_first(
            org,
            tables::EVENTS,
            |o| &o.events,
            &Source { index },
            |e| filter.keep(e),
            |e| &e.id,
            page,
        )
    }

    /// The rows of `org` in `table` that `keep` accepts, newest first, from
    /// the overlays and from `source` in the store, merged.
    #[allow(clippy::too_many_arguments)]
    fn newest_first<R: Row + Clone>(
        &self,
        org: &str,
        table: Table,
        field: Field<R>,
        source: &Source,
        keep: impl Fn(&R) -> bool,
        id_of: impl Fn(&R) -> &str,
        page: &Page,
    ) -> Result<Listed<R>, Error> {
        let want = page.limit + 1;
        let rows_of_org = key::org(org);
        let upper = |prefix: &Key| match &page.before {
            Some(id) => Bound::Excluded(prefix.clone().str(id).into_bytes()),
            None => Bound::Excluded(prefix.prefix_end()),
        };
        // The overlays' rows, newest first: the indexes do not cover them yet.
        let range = (
            Bound::Included(rows_of_org.as_bytes().to_vec()),
            upper(&rows_of_org),
        );
        let mut pending: Vec<(Vec<u8>, R)> = self
            .overlaid(field, &range)
            .into_iter()
            .filter(|(_, row)| keep(row))
            .collect();
        let mut items: Vec<R> = Vec::new();
        let mut visited = 0usize;
        let mut last_visited: Option<String> = None;
        let emit_above = |key: &[u8], items: &mut Vec<R>, pending: &mut Vec<(Vec<u8>, R)>| {
            while items.len() < want && pending.last().is_some_and(|(k, _)| k.as_slice() > key) {
                let (_, row) = pending.pop().expect("checked above");
                items.push(row);
            }
        };
        // `pending` pops from its end: newest last.
        let mut visit = |id: &str, row_key: Vec<u8>, row: R| -> Flow {
            emit_above(&row_key, &mut items, &mut pending);
            if items.len() >= want {
                return Flow::Stop;
            }
            last_visited = Some(id.to_owned());
            if keep(&row) {
                items.push(row);
            }
            visited += 1;
            if items.len() >= want || visited >= VISIT_BUDGET {
                Flow::Stop
            } else {
                Flow::Continue
            }
        };
        match &source.index {
            None => {
                let mut failure = None;
                self.scan_store(table, &range, &mut |key, bytes| {
                    if self.overlays_hold(field, key) {
                        return Ok(Flow::Continue);
                    }
                    match R::decode(bytes) {
                        Ok(row) => {
                            let id = id_of(&row).to_owned();
                            Ok(visit(&id, key.to_vec(), row))
                        }
                        Err(e) => {
                            failure = Some(Error::from(e));
                            Ok(Flow::Stop)
                        }
                    }
                })?;
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            Some((index, prefix)) => {
                let range = (Bound::Included(prefix.as_bytes().to_vec()), upper(prefix));
                let skip = prefix.as_bytes().len();
                self.scan_index(*index, &range, &mut |entry| {
                    let id = Reader::new(&entry[skip..]).str().ok_or_else(|| {
                        Error::Inconsistent(format!("a bad entry in {}", index.0))
                    })?;
                    let row_key = rows_of_org.clone().str(&id).into_bytes();
                    if self.overlays_hold(field, &row_key) {
                        return Ok(Flow::Continue);
                    }
                    let Some(row) = self.stored::<R>(table, &row_key)? else {
                        return Err(Error::Inconsistent(format!(
                            "{} names {id}, which has no row",
                            index.0
                        )));
                    };
                    Ok(visit(&id, row_key, row))
                })?;
            }
        }
        let exhausted = visited >= VISIT_BUDGET;
        if !exhausted {
            // The store had nothing more: the rest of the overlays' rows follow.
            while items.len() < want
                && let Some((_, row)) = pending.pop()
            {
                items.push(row);
            }
        }
        let resume = exhausted.then_some(last_visited).flatten();
        Ok(paged(items, page.limit, id_of, resume))
    }
}

/// The first `limit` of `items` (which hold at most one more), and where the
/// list goes on: after the last item if there are more, else at `resume`.
fn paged<R>(
    mut items: Vec<R>,
    limit: usize,
    id_of: impl Fn(&R) -> &str,
    resume: Option<String>,
) -> Listed<R> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|r| id_of(r).to_owned())
    } else {
        resume
    };
    Listed { items, next }
}
