//! [`View`]: reading the model through its layers (the overlay being folded
//! into, the one being written out, the store) as one consistent whole.
//!
//! A view holds each layer only for the moment of one lookup, so readers
//! never keep the folds waiting. Answers about the past (a delivery at a
//! version, an event as it stood right after a given position) are computed
//! from the delivery's row and its immutable attempt rows: a lookup or two,
//! whatever the length of the history.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLockReadGuard};

use projections::Body;
use projections::model::{
    ApiKey, Attempt, Delivery, Endpoint, Erasures, IdempotencyRecord, WebhookEvent,
};
use projections::view::{DeliverySnapshot, EventSnapshot};

use super::Error;
use super::overlay::{Field, Overlay, lookup};
use super::tables::{self, Row, key};
use crate::kv::layered::Layers;
use crate::kv::{Flow, KvRead, Table};

/// What a scan of the model calls with each key and row it passes.
type Each<'a, R> = dyn FnMut(&[u8], R) -> Result<Flow, Error> + 'a;
/// The same over the stored bytes of each row.
type EachStored<'a> = dyn FnMut(&[u8], &[u8]) -> Result<Flow, Error> + 'a;

/// An event as its snapshot shows it, but for its payload: that is the
/// content of the event that accepted it, in the log at `event.position`.
#[derive(Debug, Clone)]
pub struct EventParts {
    pub event: WebhookEvent,
    pub deliveries: Vec<DeliverySnapshot>,
}

impl EventParts {
    pub fn with_payload(self, payload: Body) -> EventSnapshot {
        EventSnapshot::new(&self.event, payload, self.deliveries)
    }
}

/// A consistent view of the model for reading.
#[derive(Clone)]
pub struct View {
    layers: Layers<Overlay>,
    position: u64,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

fn read(layer: &std::sync::RwLock<Overlay>) -> RwLockReadGuard<'_, Overlay> {
    layer.read().unwrap_or_else(|e| e.into_inner())
}

impl View {
    pub(super) fn new(layers: Layers<Overlay>, position: u64) -> View {
        View { layers, position }
    }

    /// The position of the last event folded when the view was taken; later
    /// ones may show too.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub(super) fn get<R: Row + Clone>(
        &self,
        table: Table,
        key: &[u8],
        field: Field<R>,
    ) -> Result<Option<R>, Error> {
        let active = read(&self.layers.active);
        if let Some(row) = field(&active).get(key) {
            return Ok(Some(row.clone()));
        }
        drop(active);
        let frozen = self.layers.frozen.as_deref().map(read);
        let overlays: Vec<&Overlay> = frozen.as_deref().into_iter().collect();
        lookup(&overlays, self.layers.kv.as_ref(), table, key, field)
    }

    pub fn endpoint(&self, org: &str, id: &str) -> Result<Option<Endpoint>, Error> {
        self.get(tables::ENDPOINTS, &key::endpoint(org, id), |o| &o.endpoints)
    }

    pub fn event(&self, org: &str, id: &str) -> Result<Option<WebhookEvent>, Error> {
        self.get(tables::EVENTS, &key::event(org, id), |o| &o.events)
    }

    /// What the organization's erasures that are not about one event cover.
    pub fn erasures(&self, org: &str) -> Result<Erasures, Error> {
        Ok(self
            .get(tables::ERASURES, key::org(org).as_bytes(), |o| &o.erasures)?
            .unwrap_or_default())
    }

    pub fn delivery(&self, org: &str, id: &str) -> Result<Option<Delivery>, Error> {
        self.get(tables::DELIVERIES, &key::delivery(org, id), |o| {
            &o.deliveries
        })
    }

    pub fn attempt(
        &self,
        org: &str,
        delivery_id: &str,
        version: u64,
    ) -> Result<Option<Attempt>, Error> {
        self.get(
            tables::ATTEMPTS,
            &key::attempt(org, delivery_id, version),
            |o| &o.attempts,
        )
    }

    pub fn source_key(&self, org: &str, source_key: &str) -> Result<Option<String>, Error> {
        self.get(
            tables::SOURCE_KEYS,
            &key::source_key(org, source_key),
            |o| &o.source_keys,
        )
    }

    pub fn idempotency(&self, org: &str, slot: &str) -> Result<Option<IdempotencyRecord>, Error> {
        self.get(tables::IDEMPOTENCY, &key::idempotency(org, slot), |o| {
            &o.idempotency
        })
    }

    pub fn api_key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        self.get(tables::API_KEYS, &key::api_key(id), |o| &o.api_keys)
    }

    /// Whether any API key was ever issued.
    pub fn has_api_keys(&self) -> Result<bool, Error> {
        let mut any = false;
        self.scan(
            tables::API_KEYS,
            |o| &o.api_keys,
            (Bound::Unbounded, Bound::Unbounded),
            false,
            &mut |_, _| {
                any = true;
                Ok(Flow::Stop)
            },
        )?;
        Ok(any)
    }

    /// The delivery as it stood after its first `version` events.
    pub fn delivery_at_version(
        &self,
        org: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<Delivery>, Error> {
        let Some(now) = self.delivery(org, id)? else {
            return Ok(None);
        };
        if version >= now.version {
            return Ok((version == now.version).then_some(now));
        }
        let latest = match version.checked_sub(1) {
            Some(v) => Some(
                self.attempt(org, id, v)?
                    .ok_or_else(|| missing("attempt", id))?,
            ),
            None => None,
        };
        let accepted_at = self.accepted_at(org, &now)?;
        Ok(Some(now.as_of(latest.as_ref(), accepted_at)))
    }

    /// The delivery as it stood right after global position `position`.
    pub fn delivery_as_of(
        &self,
        org: &str,
        id: &str,
        position: u64,
    ) -> Result<Option<Delivery>, Error> {
        let Some(now) = self.delivery(org, id)? else {
            return Ok(None);
        };
        if now.position <= position {
            return Ok(Some(now));
        }
        // Attempts are in position order along the stream: walk back from
        // the latest to the last one at or before `position`. An answer
        // asked for right after its own write finds it in a step or two.
        let mut latest = None;
        for version in (0..now.version).rev() {
            let attempt = self
                .attempt(org, id, version)?
                .ok_or_else(|| missing("attempt", id))?;
            if attempt.position <= position {
                latest = Some(attempt);
                break;
            }
        }
        let accepted_at = self.accepted_at(org, &now)?;
        Ok(Some(now.as_of(latest.as_ref(), accepted_at)))
    }

    fn accepted_at(&self, org: &str, delivery: &Delivery) -> Result<u64, Error> {
        Ok(self
            .event(org, &delivery.event_id)?
            .ok_or_else(|| missing("event", &delivery.event_id))?
            .position)
    }

    /// The event with its deliveries as they stood right after `position`
    /// (`None`: as they stand now), all but its payload, which is in the log.
    pub fn event_snapshot(
        &self,
        org: &str,
        id: &str,
        position: Option<u64>,
    ) -> Result<Option<EventParts>, Error> {
        let Some(event) = self.event(org, id)? else {
            return Ok(None);
        };
        let position = position.unwrap_or(u64::MAX);
        if event.position > position {
            return Ok(None);
        }
        let mut deliveries = Vec::with_capacity(event.delivery_ids.len());
        for delivery_id in &event.delivery_ids {
            let delivery = self
                .delivery_as_of(org, delivery_id, position)?
                .ok_or_else(|| missing("delivery", delivery_id))?;
            deliveries.push(DeliverySnapshot::from(&delivery));
        }
        Ok(Some(EventParts { event, deliveries }))
    }

    /// The endpoint as it stood right after `position`.
    pub fn endpoint_as_of(
        &self,
        org: &str,
        id: &str,
        position: u64,
    ) -> Result<Option<Endpoint>, Error> {
        let Some(now) = self.endpoint(org, id)? else {
            return Ok(None);
        };
        if now.position <= position {
            return Ok(Some(now));
        }
        for version in (1..now.version).rev() {
            let then = self
                .get(
                    tables::ENDPOINT_VERSIONS,
                    &key::endpoint_version(org, id, version),
                    |o| &o.endpoint_versions,
                )?
                .ok_or_else(|| missing("endpoint version", id))?;
            if then.position <= position {
                return Ok(Some(then));
            }
        }
        Ok(None)
    }

    /// Every endpoint of the organization, in id order.
    pub fn endpoints(&self, org: &str) -> Result<Vec<Endpoint>, Error> {
        let prefix = key::org(org);
        let range = (
            Bound::Included(prefix.as_bytes().to_vec()),
            Bound::Excluded(prefix.prefix_end()),
        );
        let mut all = Vec::new();
        self.scan(
            tables::ENDPOINTS,
            |o| &o.endpoints,
            range,
            false,
            &mut |_, e| {
                all.push(e);
                Ok(Flow::Continue)
            },
        )?;
        Ok(all)
    }

    /// Calls `each` with the rows of `table` whose keys lie in `range`, from
    /// every layer, the newest layer's row where several hold a key, in key
    /// order (descending with `reverse`), until it says stop.
    pub fn scan<R: Row + Clone>(
        &self,
        table: Table,
        field: Field<R>,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
        each: &mut Each<'_, R>,
    ) -> Result<(), Error> {
        let overlaid = self.overlaid(field, &range);
        let mut pending: Box<dyn Iterator<Item = (&Vec<u8>, &R)>> = if reverse {
            Box::new(overlaid.iter().rev())
        } else {
            Box::new(overlaid.iter())
        };
        let mut next = pending.next();
        let before = |a: &[u8], b: &[u8]| if reverse { a > b } else { a < b };
        let mut stopped = false;
        let mut failure = None;
        let bounds = (as_slice(&range.0), as_slice(&range.1));
        let mut visit = |key: &[u8], bytes: &[u8]| -> Result<Flow, Error> {
            while let Some((k, row)) = next.filter(|(k, _)| before(k, key)) {
                if each(k, row.clone())? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                next = pending.next();
            }
            if overlaid.contains_key(key) {
                return Ok(Flow::Continue);
            }
            each(key, R::decode(bytes)?)
        };
        self.layers.kv.scan(
            table,
            bounds.0,
            bounds.1,
            reverse,
            &mut |key, bytes| match visit(key, bytes) {
                Ok(Flow::Continue) => Ok(Flow::Continue),
                Ok(Flow::Stop) => {
                    stopped = true;
                    Ok(Flow::Stop)
                }
                Err(e) => {
                    failure = Some(e);
                    Ok(Flow::Stop)
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        while !stopped && let Some((k, row)) = next {
            if each(k, row.clone())? == Flow::Stop {
                break;
            }
            next = pending.next();
        }
        Ok(())
    }

    /// The rows of the overlays in `range`, the newest layer's where several
    /// hold a key.
    pub(super) fn overlaid<R: Clone>(
        &self,
        field: Field<R>,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> BTreeMap<Vec<u8>, R> {
        let mut rows = BTreeMap::new();
        if let Some(frozen) = &self.layers.frozen {
            let frozen = read(frozen);
            for (k, row) in field(&frozen).range::<Vec<u8>, _>(range.clone()) {
                rows.insert(k.clone(), row.clone());
            }
        }
        let active = read(&self.layers.active);
        for (k, row) in field(&active).range::<Vec<u8>, _>(range.clone()) {
            rows.insert(k.clone(), row.clone());
        }
        rows
    }

    /// The rows of the overlays in `range` that `keep` accepts, the newest
    /// layer's row deciding where several hold a key; rows it refuses are
    /// not copied.
    pub(super) fn overlaid_where<R: Clone>(
        &self,
        field: Field<R>,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        keep: impl Fn(&R) -> bool,
    ) -> BTreeMap<Vec<u8>, R> {
        let mut rows = BTreeMap::new();
        if let Some(frozen) = &self.layers.frozen {
            let frozen = read(frozen);
            for (k, row) in field(&frozen).range::<Vec<u8>, _>(range.clone()) {
                if keep(row) {
                    rows.insert(k.clone(), row.clone());
                }
            }
        }
        let active = read(&self.layers.active);
        for (k, row) in field(&active).range::<Vec<u8>, _>(range.clone()) {
            if keep(row) {
                rows.insert(k.clone(), row.clone());
            } else {
                rows.remove(k);
            }
        }
        rows
    }

    /// The index entries of `table` in `range` from the store alone, in
    /// descending order; the caller checks each against the overlays.
    pub(super) fn scan_index(
        &self,
        table: Table,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut dyn FnMut(&[u8]) -> Result<Flow, Error>,
    ) -> Result<(), Error> {
        let mut failure = None;
        self.layers.kv.scan(
            table,
            as_slice(&range.0),
            as_slice(&range.1),
            true,
            &mut |key, _| match each(key) {
                Ok(flow) => Ok(flow),
                Err(e) => {
                    failure = Some(e);
                    Ok(Flow::Stop)
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }

    /// The entries of `table` in `range` from the store alone, descending.
    pub(super) fn scan_store(
        &self,
        table: Table,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        each: &mut EachStored<'_>,
    ) -> Result<(), Error> {
        self.scan_store_in(table, range, true, each)
    }

    /// The entries of `table` in `range` from the store alone, in key order
    /// (descending with `reverse`).
    pub(super) fn scan_store_in(
        &self,
        table: Table,
        range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        reverse: bool,
        each: &mut EachStored<'_>,
    ) -> Result<(), Error> {
        let mut failure = None;
        self.layers.kv.scan(
            table,
            as_slice(&range.0),
            as_slice(&range.1),
            reverse,
            &mut |key, value| match each(key, value) {
                Ok(flow) => Ok(flow),
                Err(e) => {
                    failure = Some(e);
                    Ok(Flow::Stop)
                }
            },
        )?;
        failure.map_or(Ok(()), Err)
    }

    /// The row at `key` of `table` in the store alone.
    pub(super) fn stored<R: Row>(&self, table: Table, key: &[u8]) -> Result<Option<R>, Error> {
        self.layers
            .kv
            .get(table, key)?
            .map(|bytes| R::decode(&bytes).map_err(Error::from))
            .transpose()
    }

    /// The store under the overlays.
    pub(super) fn store(&self) -> &Arc<dyn KvRead> {
        &self.layers.kv
    }

    /// Whether an overlay holds the row at `key` of the map `field`.
    pub(super) fn overlays_hold<R>(&self, field: Field<R>, key: &[u8]) -> bool {
        if field(&read(&self.layers.active)).contains_key(key) {
            return true;
        }
        self.layers
            .frozen
            .as_deref()
            .is_some_and(|f| field(&read(f)).contains_key(key))
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(b) => Bound::Included(b.as_slice()),
        Bound::Excluded(b) => Bound::Excluded(b.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A row another row points at is missing: the model is inconsistent.
fn missing(what: &str, id: &str) -> Error {
    Error::Inconsistent(format!("the {what} row of {id} is missing"))
}
