//! The rows folded since they were last written to the store: an
//! [`Overlay`], kept in memory by table and store key, and [`Folding`], the
//! store-backed implementation of `projections::Rows` that the folds write
//! through. A row the fold asks for is found in the overlay, else in the
//! layers below it (an overlay being written out, then the store), and copied
//! up to be changed; the overlay is written to the store as one batch later.
//!
//! A row copied up remembers the index entries it had below, so that writing
//! it out moves exactly the entries that changed.

use std::collections::{BTreeMap, HashMap};

use projections::Rows;
use projections::health::{Bucket, Tally};
use projections::model::{
    ApiKey, Attempt, Delivery, Endpoint, Erasures, IdempotencyRecord, WebhookEvent,
};

use super::Error;
use super::tables::{self, Row, key};
use crate::chain::{Hash, LedgerDigest};
use crate::kv::layered::Memtable;
use crate::kv::{KvRead, Table, WriteBatch};
use crate::merkle::{self, tiles::Edge, tiles::Tile};

/// The chain after the last event folded: the ledger digest and that event's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    pub digest: LedgerDigest,
    pub last_hash: Hash,
}

impl Chain {
    pub fn position(&self) -> u64 {
        self.digest.position
    }

    /// Folds the event at `position` into the digest; events must come in
    /// position order with no gap.
    pub fn fold(&mut self, position: u64, hash: &Hash) -> Result<(), Error> {
        let expected = self.digest.position + 1;
        if position != expected {
            return Err(Error::Gap { position, expected });
        }
        self.digest.fold(position, hash);
        self.last_hash = *hash;
        Ok(())
    }
}

/// Rows changed since the last write to the store.
#[derive(Debug, Default)]
pub struct Overlay {
    pub endpoints: BTreeMap<Vec<u8>, Endpoint>,
    pub endpoint_versions: BTreeMap<Vec<u8>, Endpoint>,
    pub events: BTreeMap<Vec<u8>, WebhookEvent>,
    /// By `key::org`.
    pub erasures: BTreeMap<Vec<u8>, Erasures>,
    pub deliveries: BTreeMap<Vec<u8>, Delivery>,
    pub attempts: BTreeMap<Vec<u8>, Attempt>,
    pub source_keys: BTreeMap<Vec<u8>, String>,
    pub idempotency: BTreeMap<Vec<u8>, IdempotencyRecord>,
    pub api_keys: BTreeMap<Vec<u8>, ApiKey>,
    /// Each organization's last sequence number, by `key::org`.
    pub sequences: BTreeMap<Vec<u8>, u64>,
    /// `(org, sequence)` -> position.
    pub feed: BTreeMap<Vec<u8>, u64>,
    /// Merkle trees: the tiles completed, and each tree's edge.
    pub tree_tiles: BTreeMap<Vec<u8>, Tile>,
    pub tree_edges: BTreeMap<Vec<u8>, Edge>,
    /// `(org, endpoint id, level, bucket start)` -> health counters.
    pub tallies: BTreeMap<Vec<u8>, Tally>,
    /// The index entries of rows copied up from below, as they were there;
    /// a row absent here is new.
    pub delivery_index: HashMap<Vec<u8>, IndexEntries>,
    pub event_index: HashMap<Vec<u8>, IndexEntries>,
    /// The chain after the last event folded in.
    pub tip: Chain,
    /// The hash of the log's first event, once folded.
    pub log_id: Option<Hash>,
    /// Roughly what the rows take in memory, to decide when to write them out.
    pub bytes: usize,
}

/// The heap bytes a row holds beyond its inline size: its strings and lists.
/// With [`entry_bytes`], what decides when an overlay is written out; an
/// estimate that fell short would let the overlays outgrow the memory they
/// are given.
pub trait Footprint {
    fn heap(&self) -> usize;
}

fn strings<'a>(all: impl IntoIterator<Item = &'a String>) -> usize {
    all.into_iter().map(String::capacity).sum()
}

impl Footprint for Erasures {
    fn heap(&self) -> usize {
        0
    }
}

impl Footprint for String {
    fn heap(&self) -> usize {
        self.capacity()
    }
}

impl Footprint for Endpoint {
    fn heap(&self) -> usize {
        strings([&self.id, &self.organization_id, &self.name, &self.url])
            + strings(&self.event_types)
            + self.event_types.capacity() * size_of::<String>()
    }
}

impl Footprint for WebhookEvent {
    fn heap(&self) -> usize {
        strings([&self.id, &self.organization_id, &self.event_type])
            + strings(&self.source_key)
            + strings(&self.delivery_ids)
            + self.delivery_ids.capacity() * size_of::<String>()
    }
}

impl Footprint for Delivery {
    fn heap(&self) -> usize {
        strings([
            &self.id,
            &self.organization_id,
            &self.event_id,
            &self.endpoint_id,
            &self.endpoint_name,
            &self.endpoint_url,
        ]) + strings(&self.last_error)
    }
}

impl Footprint for Attempt {
    fn heap(&self) -> usize {
        strings([
            &self.organization_id,
            &self.delivery_id,
            &self.event_id,
            &self.endpoint_id,
        ]) + strings(&self.last_error)
    }
}

impl Footprint for u64 {
    fn heap(&self) -> usize {
        0
    }
}

impl Footprint for Hash {
    fn heap(&self) -> usize {
        0
    }
}

impl Footprint for Tally {
    fn heap(&self) -> usize {
        0
    }
}

impl Footprint for Edge {
    fn heap(&self) -> usize {
        Edge::heap(self)
    }
}

impl Footprint for Tile {
    fn heap(&self) -> usize {
        size_of::<[Hash; merkle::tiles::WIDTH]>()
    }
}

impl Footprint for ApiKey {
    fn heap(&self) -> usize {
        strings([&self.id, &self.organization_id])
    }
}

impl Footprint for IdempotencyRecord {
    fn heap(&self) -> usize {
        strings([&self.request_sha256, &self.resource_id])
    }
}

/// What one entry of an overlay's map costs: the key and the row inline in a
/// B-tree node (nodes run about two-thirds full), the key's bytes, and the
/// row's heap.
pub fn entry_bytes<R: Footprint>(key: &[u8], row: &R) -> usize {
    (size_of::<Vec<u8>>() + size_of::<R>()) * 3 / 2 + key.len() + row.heap()
}

/// What remembering a row's index entries costs: three keys and a hash map
/// entry keyed by the row's key.
fn remembered_bytes(key: &[u8], entries: &IndexEntries) -> usize {
    2 * (size_of::<Vec<u8>>() + size_of::<IndexEntries>())
        + key.len()
        + entries.iter().map(|(_, k)| k.capacity()).sum::<usize>()
}

impl Overlay {
    /// An empty overlay that goes on from `tip`.
    pub fn after(tip: Chain, log_id: Option<Hash>) -> Overlay {
        Overlay {
            tip,
            log_id,
            ..Overlay::default()
        }
    }
}

impl Memtable for Overlay {
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    fn successor(&self) -> Overlay {
        Overlay::after(self.tip, self.log_id)
    }

    fn write_out(&self, batch: &mut WriteBatch) {
        super::flush::write_out(self, batch);
    }
}

/// A map of an overlay, to look a row up in every layer the same way.
pub type Field<R> = fn(&Overlay) -> &BTreeMap<Vec<u8>, R>;

/// Looks `key` up in `overlays` (newest first), then in `kv`.
pub fn lookup<R: Row + Clone>(
    overlays: &[&Overlay],
    kv: &dyn KvRead,
    table: Table,
    key: &[u8],
    field: Field<R>,
) -> Result<Option<R>, Error> {
    for overlay in overlays {
        if let Some(row) = field(overlay).get(key) {
            return Ok(Some(row.clone()));
        }
    }
    kv.get(table, key)?
        .map(|bytes| R::decode(&bytes).map_err(Error::from))
        .transpose()
}

/// The rows a fold writes: the overlay being filled, over the layers below.
#[allow(missing_debug_implementations)]
pub struct Folding<'a> {
    pub overlay: &'a mut Overlay,
    /// An overlay being written to the store, if any.
    pub frozen: Option<&'a Overlay>,
    pub kv: &'a dyn KvRead,
    /// The chain hash of the event being folded: the leaf its
    /// organization's Merkle tree gains with its sequence number.
    pub hash: Hash,
    /// Whether the Merkle trees are kept (`Options::merkle_trees`).
    pub trees: bool,
}

impl Folding<'_> {
    fn below<R: Row + Clone>(
        &self,
        table: Table,
        key: &[u8],
        field: Field<R>,
    ) -> Result<Option<R>, Error> {
        let frozen: Vec<&Overlay> = self.frozen.into_iter().collect();
        lookup(&frozen, self.kv, table, key, field)
    }

    fn added(&mut self, bytes: usize) {
        self.overlay.bytes += bytes;
    }

    /// Appends the event being folded to the Merkle tree `tree`: its edge
    /// changes, and the tiles the leaf completes are written once.
    pub fn tree_append(&mut self, tree: &[u8]) -> Result<(), Error> {
        if !self.trees {
            return Ok(());
        }
        if !self.overlay.tree_edges.contains_key(tree) {
            let below = self
                .below(tables::TREE_EDGES, tree, |o| &o.tree_edges)?
                .unwrap_or_default();
            self.added(entry_bytes(tree, &below));
            self.overlay.tree_edges.insert(tree.to_vec(), below);
        }
        let Overlay {
            tree_edges,
            tree_tiles,
            ..
        } = &mut *self.overlay;
        let edge = tree_edges.get_mut(tree).expect("copied up above");
        let before = edge.heap();
        let mut bytes = 0;
        edge.push(merkle::leaf_hash(&self.hash), |level, index, tile| {
            let key = key::tree_tile(tree, level, index);
            bytes += entry_bytes(&key, &tile);
            tree_tiles.insert(key, tile);
        });
        bytes += edge.heap().saturating_sub(before);
        self.added(bytes);
        Ok(())
    }
}

pub use super::tables::IndexEntries;
type FieldMut<R> = fn(&mut Overlay) -> &mut BTreeMap<Vec<u8>, R>;
/// How to compute a row's index entries, and where to remember them.
type Remember<R> = (
    fn(&R) -> IndexEntries,
    fn(&mut Overlay) -> &mut HashMap<Vec<u8>, IndexEntries>,
);

impl Folding<'_> {
    /// The row at `key`, ready to change: copied up from below if it is not
    /// in the overlay yet.
    fn copy_up<R: Row + Clone + Footprint>(
        &mut self,
        table: Table,
        key: Vec<u8>,
        field: Field<R>,
        field_mut: FieldMut<R>,
        remember: Option<Remember<R>>,
    ) -> Result<Option<&mut R>, Error> {
        if !field(self.overlay).contains_key(&key) {
            let Some(row) = self.below(table, &key, field)? else {
                return Ok(None);
            };
            let mut bytes = entry_bytes(&key, &row);
            if let Some((entries, remembered)) = remember {
                let entries = entries(&row);
                bytes += remembered_bytes(&key, &entries);
                remembered(self.overlay)
                    .entry(key.clone())
                    .or_insert(entries);
            }
            self.added(bytes);
            field_mut(self.overlay).insert(key.clone(), row);
        }
        Ok(field_mut(self.overlay).get_mut(&key))
    }
}

impl Rows for Folding<'_> {
    type Error = Error;

    fn endpoint_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Endpoint>, Error> {
        self.copy_up(
            tables::ENDPOINTS,
            key::endpoint(org, id),
            |o| &o.endpoints,
            |o| &mut o.endpoints,
            None,
        )
    }

    fn put_endpoint(&mut self, endpoint: Endpoint) -> Result<(), Error> {
        let org = &endpoint.organization_id;
        let version = key::endpoint_version(org, &endpoint.id, endpoint.version);
        let key = key::endpoint(org, &endpoint.id);
        self.added(entry_bytes(&version, &endpoint) + entry_bytes(&key, &endpoint));
        self.overlay
            .endpoint_versions
            .insert(version, endpoint.clone());
        self.overlay.endpoints.insert(key, endpoint);
        Ok(())
    }

    fn event_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut WebhookEvent>, Error> {
        self.copy_up(
            tables::EVENTS,
            key::event(org, id),
            |o| &o.events,
            |o| &mut o.events,
            Some((tables::event_index, |o| &mut o.event_index)),
        )
    }

    fn put_event(&mut self, event: WebhookEvent) -> Result<(), Error> {
        let key = key::event(&event.organization_id, &event.id);
        self.added(entry_bytes(&key, &event));
        self.overlay.events.insert(key, event);
        Ok(())
    }

    fn erasures_mut(&mut self, org: &str) -> Result<&mut Erasures, Error> {
        let key = key::org(org).into_bytes();
        if !self.overlay.erasures.contains_key(&key) {
            let erasures = self
                .below(tables::ERASURES, &key, |o| &o.erasures)?
                .unwrap_or_default();
            self.added(entry_bytes(&key, &erasures));
            self.overlay.erasures.insert(key.clone(), erasures);
        }
        Ok(self.overlay.erasures.get_mut(&key).expect("inserted above"))
    }

    fn delivery_mut(&mut self, org: &str, id: &str) -> Result<Option<&mut Delivery>, Error> {
        self.copy_up(
            tables::DELIVERIES,
            key::delivery(org, id),
            |o| &o.deliveries,
            |o| &mut o.deliveries,
            Some((tables::delivery_index, |o| &mut o.delivery_index)),
        )
    }

    fn put_delivery(&mut self, delivery: Delivery) -> Result<(), Error> {
        let key = key::delivery(&delivery.organization_id, &delivery.id);
        self.added(entry_bytes(&key, &delivery));
        self.overlay.deliveries.insert(key, delivery);
        Ok(())
    }

    fn sequence(&mut self, org: &str, position: u64) -> Result<u64, Error> {
        let key = key::org(org).into_bytes();
        let last = match self.overlay.sequences.get(&key) {
            Some(last) => *last,
            None => self
                .below(tables::SEQUENCES, &key, |o| &o.sequences)?
                .unwrap_or(0),
        };
        let next = last + 1;
        let entry = key::feed(org, next);
        self.added(entry_bytes(&key, &next) + entry_bytes(&entry, &position));
        self.overlay.sequences.insert(key, next);
        self.overlay.feed.insert(entry, position);
        self.tree_append(&key::org_tree(org))?;
        Ok(next)
    }

    fn put_attempt(&mut self, attempt: Attempt) -> Result<(), Error> {
        let key = key::attempt(
            &attempt.organization_id,
            &attempt.delivery_id,
            attempt.version,
        );
        self.added(entry_bytes(&key, &attempt));
        self.overlay.attempts.insert(key, attempt);
        Ok(())
    }

    fn tally_mut(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
    ) -> Result<&mut Tally, Error> {
        let key = key::tally(org, endpoint_id, bucket);
        if !self.overlay.tallies.contains_key(&key) {
            let tally = self
                .below(tables::ENDPOINT_TALLIES, &key, |o| &o.tallies)?
                .unwrap_or_default();
            self.added(entry_bytes(&key, &tally));
            self.overlay.tallies.insert(key.clone(), tally);
        }
        Ok(self.overlay.tallies.get_mut(&key).expect("inserted above"))
    }

    fn put_tally(
        &mut self,
        org: &str,
        endpoint_id: &str,
        bucket: Bucket,
        tally: Tally,
    ) -> Result<(), Error> {
        let key = key::tally(org, endpoint_id, bucket);
        self.added(entry_bytes(&key, &tally));
        self.overlay.tallies.insert(key, tally);
        Ok(())
    }

    fn source_key(&mut self, org: &str, source_key: &str) -> Result<Option<String>, Error> {
        let key = key::source_key(org, source_key);
        if let Some(event) = self.overlay.source_keys.get(&key) {
            return Ok(Some(event.clone()));
        }
        self.below(tables::SOURCE_KEYS, &key, |o| &o.source_keys)
    }

    fn put_source_key(&mut self, org: &str, source_key: &str, event_id: &str) -> Result<(), Error> {
        let key = key::source_key(org, source_key);
        let event_id = event_id.to_owned();
        self.added(entry_bytes(&key, &event_id));
        self.overlay.source_keys.insert(key, event_id);
        Ok(())
    }

    fn idempotency(&mut self, org: &str, slot: &str) -> Result<Option<IdempotencyRecord>, Error> {
        let key = key::idempotency(org, slot);
        if let Some(record) = self.overlay.idempotency.get(&key) {
            return Ok(Some(record.clone()));
        }
        self.below(tables::IDEMPOTENCY, &key, |o| &o.idempotency)
    }

    fn put_idempotency(
        &mut self,
        org: &str,
        slot: &str,
        record: IdempotencyRecord,
    ) -> Result<(), Error> {
        let key = key::idempotency(org, slot);
        self.added(entry_bytes(&key, &record));
        self.overlay.idempotency.insert(key, record);
        Ok(())
    }

    fn api_key_mut(&mut self, id: &str) -> Result<Option<&mut ApiKey>, Error> {
        self.copy_up(
            tables::API_KEYS,
            key::api_key(id),
            |o| &o.api_keys,
            |o| &mut o.api_keys,
            None,
        )
    }

    fn put_api_key(&mut self, api_key: ApiKey) -> Result<(), Error> {
        let key = key::api_key(&api_key.id);
        self.added(entry_bytes(&key, &api_key));
        self.overlay.api_keys.insert(key, api_key);
        Ok(())
    }
}
