//! Writing an overlay to the store: its rows, the index entries that moved,
//! and the chain position they all reflect, as one batch.

use super::overlay::Overlay;
use super::tables::{self, Row};
use crate::kv::{Table, WriteBatch};

/// The meta row keys.
pub const META_FORMAT: &[u8] = b"format";
pub const META_TIP: &[u8] = b"tip";
pub const META_LOG: &[u8] = b"log";

/// Adds to `batch` the writes that put `overlay` into the store.
pub fn write_out(overlay: &Overlay, batch: &mut WriteBatch) {
    let batch = &mut *batch;
    rows(batch, tables::ENDPOINTS, &overlay.endpoints);
    rows(batch, tables::ENDPOINT_VERSIONS, &overlay.endpoint_versions);
    rows(batch, tables::ERASURES, &overlay.erasures);
    rows(batch, tables::SEQUENCES, &overlay.sequences);
    rows(batch, tables::FEED, &overlay.feed);
    rows(batch, tables::TREE_TILES, &overlay.tree_tiles);
    rows(batch, tables::TREE_EDGES, &overlay.tree_edges);
    for (key, attempt) in &overlay.attempts {
        batch.put(tables::ATTEMPTS, key.clone(), attempt.encode());
        for (table, entry, value) in tables::attempt_index(attempt) {
            batch.put(table, entry, value);
        }
    }
    rows(batch, tables::SOURCE_KEYS, &overlay.source_keys);
    rows(batch, tables::IDEMPOTENCY, &overlay.idempotency);
    rows(batch, tables::API_KEYS, &overlay.api_keys);
    rows(batch, tables::ENDPOINT_TALLIES, &overlay.tallies);
    for (key, delivery) in &overlay.deliveries {
        let row = delivery.encode();
        let old = overlay.delivery_index.get(key).cloned();
        let new = tables::delivery_index(delivery);
        tables::reindex(batch, old, new, Some((tables::RETRY_QUEUE, &row)));
        batch.put(tables::DELIVERIES, key.clone(), row);
    }
    for (key, event) in &overlay.events {
        batch.put(tables::EVENTS, key.clone(), event.encode());
        let old = overlay.event_index.get(key).cloned();
        tables::reindex(batch, old, tables::event_index(event), None);
    }
    batch.put(
        tables::META,
        META_FORMAT.to_vec(),
        tables::FORMAT.to_be_bytes().to_vec(),
    );
    batch.put(tables::META, META_TIP.to_vec(), encode_tip(overlay));
    if let Some(log_id) = overlay.log_id {
        batch.put(tables::META, META_LOG.to_vec(), log_id.to_vec());
    }
}

fn rows<R: Row>(
    batch: &mut WriteBatch,
    table: Table,
    rows: &std::collections::BTreeMap<Vec<u8>, R>,
) {
    for (key, row) in rows {
        batch.put(table, key.clone(), row.encode());
    }
}

fn encode_tip(overlay: &Overlay) -> Vec<u8> {
    let tip = &overlay.tip;
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&tip.digest.position.to_be_bytes());
    out.extend_from_slice(&tip.digest.digest);
    out.extend_from_slice(&tip.last_hash);
    out
}
