//! Which log positions an erasure covers, worked out from the read model's
//! indexes rather than by reading the log: an event's own bodies from its
//! deliveries' attempt rows, an organization's from its change feed, and
//! retention's by a binary search of the log's time order.

use std::collections::BTreeMap;
use std::ops::Bound;

use projections::Timestamp;
use projections::event::ContentErased;

use super::Error;
use crate::kv::Flow;
use crate::model::View;
use crate::model::keys::Reader;
use crate::model::tables;
use crate::store::EventStore;

/// Feed entries read at a time.
const PAGE: usize = 4096;

/// The positions whose bodies `erasure`, at `position`, covers (some may
/// hold none: the store skips those). `retained_before` is where earlier
/// retention erasures left off, per organization; it is moved on.
pub async fn positions(
    view: &View,
    store: &dyn EventStore,
    erasure: &ContentErased,
    position: u64,
    retained_before: &mut BTreeMap<String, u64>,
) -> Result<Vec<u64>, Error> {
    let org = &erasure.organization_id;
    if let Some(id) = &erasure.event_id {
        return event_positions(view, org, id, position);
    }
    match erasure.recorded_before {
        None => feed_positions(view, org, 0, position),
        Some(before) => {
            let from = retained_before.get(org).copied().unwrap_or(0);
            let until = first_at_or_after(store, before).await?.min(position);
            let positions = feed_positions_from(view, org, from, until)?;
            retained_before.insert(org.clone(), until.max(from));
            Ok(positions)
        }
    }
}

/// The acceptance of event `id` and every attempt on its deliveries, before
/// `position`.
fn event_positions(view: &View, org: &str, id: &str, position: u64) -> Result<Vec<u64>, Error> {
    let Some(event) = view.event(org, id)? else {
        return Ok(Vec::new());
    };
    let mut positions = vec![event.position];
    for delivery_id in &event.delivery_ids {
        let Some(delivery) = view.delivery(org, delivery_id)? else {
            continue;
        };
        for version in 0..delivery.version {
            if let Some(attempt) = view.attempt(org, delivery_id, version)?
                && attempt.position < position
            {
                positions.push(attempt.position);
            }
        }
    }
    Ok(positions)
}

/// The positions of the organization's events after sequence `after` and
/// before position `until`.
fn feed_positions(view: &View, org: &str, after: u64, until: u64) -> Result<Vec<u64>, Error> {
    let mut positions = Vec::new();
    let mut after = after;
    loop {
        let page = view.feed(org, after, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(positions);
        };
        for (_, position) in page {
            if position >= until {
                return Ok(positions);
            }
            positions.push(position);
        }
        after = last;
    }
}

/// The positions of the organization's events at or after position `from`
/// and before `until`.
fn feed_positions_from(view: &View, org: &str, from: u64, until: u64) -> Result<Vec<u64>, Error> {
    if from >= until {
        return Ok(Vec::new());
    }
    let after = sequence_before(view, org, from)?;
    feed_positions(view, org, after, until)
}

/// The last sequence number of the organization whose event lies before
/// position `position` (0 if none): a binary search of its feed, which
/// rises with position.
fn sequence_before(view: &View, org: &str, position: u64) -> Result<u64, Error> {
    let (mut lo, mut hi) = (0, view.last_sequence(org)?);
    // Invariant: the event at `lo` (none for 0) is before `position`, the
    // one after `hi` is not.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let at = view
            .feed(org, mid - 1, 1)?
            .first()
            .map_or(u64::MAX, |&(_, p)| p);
        if at < position {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// The first log position recorded at or after `at`; one past the head if
/// none is. Log time never goes back, so a binary search finds it.
pub async fn first_at_or_after(store: &dyn EventStore, at: Timestamp) -> Result<u64, Error> {
    let head = store.sync_head().await?;
    let (mut lo, mut hi) = (1, head + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let recorded = store
            .read_all(mid, 1)
            .await?
            .first()
            .map_or(i64::MAX, |e| e.recorded_at);
        if recorded < at.micros() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Every organization the model knows: those with a sequence number.
pub fn organizations(view: &View) -> Result<Vec<String>, Error> {
    let mut orgs = Vec::new();
    view.scan(
        tables::SEQUENCES,
        |o| &o.sequences,
        (Bound::Unbounded, Bound::Unbounded),
        false,
        &mut |key, _last: u64| {
            if let Some(org) = Reader::new(key).str() {
                orgs.push(org);
            }
            Ok(Flow::Continue)
        },
    )?;
    Ok(orgs)
}

/// Events of an organization read to find a body before giving up and
/// saying it may hold one.
const LOOK_AHEAD: usize = 64;

/// Whether the organization has bodies before position `boundary` that no
/// erasure has covered yet: among its events at or after the first position
/// recorded at its last retention time (and after its last erasure of
/// everything), one that keeps a body. An organization whose only events
/// there are its own erasures, endpoints or keys holds none, so a quiet
/// organization is not erased again and again.
pub async fn holds_bodies_before(
    view: &View,
    store: &dyn EventStore,
    org: &str,
    boundary: u64,
) -> Result<bool, Error> {
    let erasures = view.erasures(org)?;
    let from = match erasures.recorded_before {
        Some(before) => first_at_or_after(store, before).await?,
        None => 0,
    };
    let from = from.max(erasures.all_before);
    if from >= boundary {
        return Ok(false);
    }
    let after = sequence_before(view, org, from)?;
    let positions: Vec<u64> = view
        .feed(org, after, LOOK_AHEAD)?
        .into_iter()
        .map(|(_, position)| position)
        .filter(|&position| position < boundary)
        .collect();
    if positions.len() == LOOK_AHEAD {
        // Too many to look at one by one: erasing finds out.
        return Ok(true);
    }
    let records = store.read_positions(&positions).await?;
    Ok(records
        .iter()
        .any(|record| crate::model::names_a_body(record) && !record.content.is_empty()))
}
