//! [`Rows`]: the small interface through which the folds read and write the
//! read model, and [`MemoryRows`], its in-memory implementation.
//!
//! The server keeps its rows in an on-disk store behind the same interface
//! (`hookledger::model`); the tests, the given/when/then harness and the
//! decisions use `MemoryRows`. A getter takes `&mut self` so that an
//! implementation may load the row on first use and hand out a reference to
//! its own copy; what the fold changes through it is written back.

use std::collections::BTreeMap;
use std::convert::Infallible;

use crate::health::{Bucket, Span, Tallies, Tally};
use crate::key::Key;
use crate::model::{
    ApiKey, Attempt, Delivery, Endpoint, Erasures, IdempotencyRecord, WebhookEvent,
};

/// The rows a fold reads and writes. Every method names the organization
/// first: no row of one organization is reachable from another's.
pub trait Rows {
    /// Why a row could not be read or written (none, in memory).
    type Error;

    fn endpoint_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Endpoint>, Self::Error>;
    /// Inserts or replaces the endpoint, and records it as it stands at its
    /// version, so a past answer about it can be given again.
    fn put_endpoint(&mut self, endpoint: Endpoint) -> Result<(), Self::Error>;

    fn event_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut WebhookEvent>, Self::Error>;
    /// Inserts or replaces an event.
    fn put_event(&mut self, event: WebhookEvent) -> Result<(), Self::Error>;

    /// The organization's erasures that are not about one event, none if it
    /// has had none.
    fn erasures_mut(&mut self, org: &str) -> Result<&mut Erasures, Self::Error>;

    fn delivery_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Delivery>, Self::Error>;
    fn put_delivery(&mut self, delivery: Delivery) -> Result<(), Self::Error>;

    /// Gives the organization's next event its sequence number (1, 2, 3… in
    /// the order events are folded, so in commit order on every node and in
    /// every rebuild) and records the event's global `position` under it.
    fn sequence(&mut self, org: &str, position: u64) -> Result<u64, Self::Error>;

    /// Records an attempt; attempts are never changed afterwards.
    fn put_attempt(&mut self, attempt: Attempt) -> Result<(), Self::Error>;

    /// An endpoint's health counters in `bucket`, all zero if it has none.
    fn tally_mut(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
    ) -> Result<&mut Tally, Self::Error>;
    /// Writes the counters of a bucket that holds none yet, without looking
    /// for them first.
    fn put_tally(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
        tally: Tally,
    ) -> Result<(), Self::Error>;

    /// The event accepted with `key`, if any.
    fn source_key(&mut self, org: &str, key: &str) -> Result<Option<String>, Self::Error>;
    fn put_source_key(&mut self, org: &str, key: &str, event_id: &str) -> Result<(), Self::Error>;

    fn idempotency(
        &mut self,
        org: &str,
        slot: &str,
    ) -> Result<Option<IdempotencyRecord>, Self::Error>;
    fn put_idempotency(
        &mut self,
        org: &str,
        slot: &str,
        record: IdempotencyRecord,
    ) -> Result<(), Self::Error>;

    /// Keys are looked up before the organization is known, so by id alone.
    fn api_key_mut(&mut self, id: &str) -> Result<Option<&mut ApiKey>, Self::Error>;
    fn put_api_key(&mut self, key: ApiKey) -> Result<(), Self::Error>;
}

/// The whole read model in memory, per organization. What the tests fold
/// into, and what a decision is handed: the rows a command needs, loaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryRows {
    pub tenants: BTreeMap<String, Tenant>,
    /// By key id.
    pub api_keys: BTreeMap<String, ApiKey>,
}

/// One organization's rows. Maps are ordered by ULID id, so by creation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenant {
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Each endpoint as it stood at each version: `(id, version)`.
    pub endpoint_versions: BTreeMap<(String, u64), Endpoint>,
    pub events: BTreeMap<Key, WebhookEvent>,
    pub erasures: Erasures,
    pub deliveries: BTreeMap<Key, Delivery>,
    /// `(delivery id, 0-based version)`.
    pub attempts: BTreeMap<(Key, u64), Attempt>,
    /// `sourceKey` -> event id.
    pub source_keys: BTreeMap<String, String>,
    /// `route` + "\n" + `Idempotency-Key` -> the write it produced.
    pub idempotency: BTreeMap<String, IdempotencyRecord>,
    /// Sequence number -> global position of each of the organization's events.
    pub feed: BTreeMap<u64, u64>,
    /// `(endpoint id, bucket)` -> the endpoint's health counters there.
    pub tallies: BTreeMap<(String, Bucket), Tally>,
}

impl MemoryRows {
    pub fn tenant(&self, org: &str) -> Option<&Tenant> {
        self.tenants.get(org)
    }

    fn tenant_mut(&mut self, org: &str) -> &mut Tenant {
        // Look up before inserting: `entry` would allocate the key every time.
        if !self.tenants.contains_key(org) {
            self.tenants.insert(org.to_owned(), Tenant::default());
        }
        self.tenants.get_mut(org).expect("inserted above")
    }

    pub fn api_key(&self, id: &str) -> Option<&ApiKey> {
        self.api_keys.get(id)
    }
}

impl Tenant {
    pub fn delivery(&self, id: &str) -> Option<&Delivery> {
        self.deliveries.get(&Key::new(id))
    }

    pub fn event(&self, id: &str) -> Option<&WebhookEvent> {
        self.events.get(&Key::new(id))
    }

    /// The attempt at `version` of a delivery's stream.
    pub fn attempt(&self, delivery_id: &str, version: u64) -> Option<&Attempt> {
        self.attempts.get(&(Key::new(delivery_id), version))
    }

    /// An endpoint's health counters, to answer [`crate::health::since`] with.
    pub fn tallies<'a>(&'a self, endpoint_id: &'a str) -> TenantTallies<'a> {
        TenantTallies {
            tenant: self,
            endpoint_id,
        }
    }

    /// The idempotency record for a key sent to a route, if any.
    pub fn idempotency(&self, route: &str, key: &str) -> Option<&IdempotencyRecord> {
        self.idempotency
            .get(&crate::model::idempotency_slot(route, key))
    }
}

impl Rows for MemoryRows {
    type Error = Infallible;

    fn endpoint_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Endpoint>, Infallible> {
        Ok(self
            .tenants
            .get_mut(org)
            .and_then(|t| t.endpoints.get_mut(id)))
    }

    fn put_endpoint(&mut self, endpoint: Endpoint) -> Result<(), Infallible> {
        let tenant = self.tenant_mut(&endpoint.organization_id);
        tenant
            .endpoint_versions
            .insert((endpoint.id.clone(), endpoint.version), endpoint.clone());
        tenant.endpoints.insert(endpoint.id.clone(), endpoint);
        Ok(())
    }

    fn event_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut WebhookEvent>, Infallible> {
        Ok(self
            .tenants
            .get_mut(org)
            .and_then(|t| t.events.get_mut(&Key::new(id))))
    }

    fn put_event(&mut self, event: WebhookEvent) -> Result<(), Infallible> {
        let tenant = self.tenant_mut(&event.organization_id);
        tenant.events.insert(Key::new(&event.id), event);
        Ok(())
    }

    fn erasures_mut(&mut self, org: &str) -> Result<&mut Erasures, Infallible> {
        Ok(&mut self.tenant_mut(org).erasures)
    }

    fn delivery_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Delivery>, Infallible> {
        Ok(self
            .tenants
            .get_mut(org)
            .and_then(|t| t.deliveries.get_mut(&Key::new(id))))
    }

    fn put_delivery(&mut self, delivery: Delivery) -> Result<(), Infallible> {
        self.tenant_mut(&delivery.organization_id)
            .deliveries
            .insert(Key::new(&delivery.id), delivery);
        Ok(())
    }

    fn sequence(&mut self, org: &str, position: u64) -> Result<u64, Infallible> {
        let feed = &mut self.tenant_mut(org).feed;
        let next = feed.last_key_value().map_or(1, |(last, _)| last + 1);
        feed.insert(next, position);
        Ok(next)
    }

    fn put_attempt(&mut self, attempt: Attempt) -> Result<(), Infallible> {
        self.tenant_mut(&attempt.organization_id)
            .attempts
            .insert((Key::new(&attempt.delivery_id), attempt.version), attempt);
        Ok(())
    }

    fn tally_mut(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
    ) -> Result<&mut Tally, Infallible> {
        Ok(self
            .tenant_mut(org)
            .tallies
            .entry((endpoint_id.to_owned(), bucket))
            .or_default())
    }

    fn put_tally(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
        tally: Tally,
    ) -> Result<(), Infallible> {
        self.tenant_mut(org)
            .tallies
            .insert((endpoint_id.to_owned(), bucket), tally);
        Ok(())
    }

    fn source_key(&mut self, org: &str, key: &str) -> Result<Option<String>, Infallible> {
        Ok(self
            .tenants
            .get(org)
            .and_then(|t| t.source_keys.get(key))
            .cloned())
    }

    fn put_source_key(&mut self, org: &str, key: &str, event_id: &str) -> Result<(), Infallible> {
        self.tenant_mut(org)
            .source_keys
            .insert(key.to_owned(), event_id.to_owned());
        Ok(())
    }

    fn idempotency(
        &mut self,
        org: &str,
        slot: &str,
    ) -> Result<Option<IdempotencyRecord>, Infallible> {
        Ok(self
            .tenants
            .get(org)
            .and_then(|t| t.idempotency.get(slot))
            .cloned())
    }

    fn put_idempotency(
        &mut self,
        org: &str,
        slot: &str,
        record: IdempotencyRecord,
    ) -> Result<(), Infallible> {
        self.tenant_mut(org)
            .idempotency
            .insert(slot.to_owned(), record);
        Ok(())
    }

    fn api_key_mut(&mut self, id: &str) -> Result<Option<&mut ApiKey>, Infallible> {
        Ok(self.api_keys.get_mut(id))
    }

    fn put_api_key(&mut self, key: ApiKey) -> Result<(), Infallible> {
        self.api_keys.insert(key.id.clone(), key);
        Ok(())
    }
}

/// One endpoint's health counters in a [`Tenant`].
#[derive(Debug, Clone, Copy)]
pub struct TenantTallies<'a> {
    tenant: &'a Tenant,
    endpoint_id: &'a str,
}

impl Tallies for TenantTallies<'_> {
    type Error = Infallible;

    fn total(&mut self) -> Result<Tally, Infallible> {
        let key = (self.endpoint_id.to_owned(), Bucket::ALL);
        Ok(self.tenant.tallies.get(&key).copied().unwrap_or_default())
    }

    fn sum(&mut self, span: Span) -> Result<Tally, Infallible> {
        let first = (
            self.endpoint_id.to_owned(),
            Bucket {
                level: span.level,
                start: span.from,
            },
        );
        let mut sum = Tally::default();
        for ((endpoint_id, bucket), t) in self.tenant.tallies.range(first..) {
            if endpoint_id != self.endpoint_id
                || bucket.level != span.level
                || span.to.is_some_and(|to| bucket.start >= to)
            {
                break;
            }
            sum.add(t);
        }
        Ok(sum)
    }

    fn recount(&mut self, from: i64, to: i64) -> Result<Tally, Infallible> {
        let mut sum = Tally::default();
        for a in self.tenant.attempts.values() {
            if a.endpoint_id == self.endpoint_id && (from..to).contains(&a.recorded_at.micros()) {
                sum.count(a.status, a.response_status_code, a.recorded_at);
            }
        }
        Ok(sum)
    }
}
