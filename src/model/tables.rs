//! The read model's tables: their names, their keys, how rows are encoded,
//! and the secondary indexes each row adds. One place, so the writer, the
//! readers and the comparison of two stores all agree.
//!
//! Rows are the `projections` row types archived with rkyv, after one byte of
//! row format. Most index entries carry no value: the key is the whole fact.
//! The exceptions carry what a page needs so that it reads fewer rows: the
//! attempt indexes a reference to the row with its status and code (the index
//! by endpoint and status all that a page shows of the row, so its pages read
//! none), the retry queue a copy of the delivery row, rewritten whenever the
//! row is.

use projections::health::{Bucket, Level, Tally};
use projections::model::{
    ApiKey, Attempt, Delivery, Endpoint, Erasures, IdempotencyRecord, WebhookEvent,
};
use projections::{AttemptStatus, EventStatus};
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::keys::Key;
use crate::kv::{Table, WriteBatch};

pub const META: Table = Table("meta");
pub const ENDPOINTS: Table = Table("endpoints");
pub const ENDPOINT_VERSIONS: Table = Table("endpoint_versions");
pub const EVENTS: Table = Table("events");
/// `(org)` -> what the organization's erasures cover (payloads are not
/// kept here: they are read from the log, where erasure removes them).
pub const ERASURES: Table = Table("erasures");
pub const DELIVERIES: Table = Table("deliveries");
pub const ATTEMPTS: Table = Table("attempts");
pub const SOURCE_KEYS: Table = Table("source_keys");
pub const IDEMPOTENCY: Table = Table("idempotency");
pub const API_KEYS: Table = Table("api_keys");
/// `(org, status, delivery id)`.
pub const DELIVERIES_BY_STATUS: Table = Table("deliveries_by_status");
/// `(org, endpoint id, delivery id)`.
pub const DELIVERIES_BY_ENDPOINT: Table = Table("deliveries_by_endpoint");
/// `(org, endpoint id, status, delivery id)`.
pub const DELIVERIES_BY_ENDPOINT_STATUS: Table = Table("deliveries_by_endpoint_status");
/// `(org, status, event id)`.
pub const EVENTS_BY_STATUS: Table = Table("events_by_status");
/// `(org, event type, event id)`.
pub const EVENTS_BY_TYPE: Table = Table("events_by_type");
/// `(org, event type, status, event id)`.
pub const EVENTS_BY_TYPE_STATUS: Table = Table("events_by_type_status");

/// `(org)` -> the organization's last sequence number.
pub const SEQUENCES: Table = Table("sequences");
/// `(org, sequence)` -> the event's global position: the change feed.
pub const FEED: Table = Table("feed");
/// `(org, recorded at, sequence)` -> the attempt's `(delivery id, version,
/// status, response code)`, as [`attempt_ref`] encodes it. So are the values
/// of the other attempt indexes below, but the last's.
pub const ATTEMPTS_BY_TIME: Table = Table("attempts_by_time");
/// `(org, delivery id, recorded at, sequence)`.
pub const ATTEMPTS_BY_DELIVERY: Table = Table("attempts_by_delivery");
/// `(org, event id, recorded at, sequence)`.
pub const ATTEMPTS_BY_EVENT: Table = Table("attempts_by_event");
/// `(org, status, recorded at, sequence)`.
pub const ATTEMPTS_BY_STATUS: Table = Table("attempts_by_status");
/// `(org, status-code class 1..=5 or 0 for none, recorded at, sequence)`.
pub const ATTEMPTS_BY_CLASS: Table = Table("attempts_by_class");
/// `(org, endpoint id, status, recorded at, sequence)` -> [`attempt_ref`]
/// then the attempt's event id and log position ([`attempt_entry`]): what a
/// page shows of the row, so an endpoint's pages read no rows. An endpoint's
/// attempts of every status are its four status ranges merged.
pub const ATTEMPTS_BY_ENDPOINT_STATUS: Table = Table("attempts_by_endpoint_status");
/// `(org, next retry at, delivery id)` of each delivery whose latest attempt
/// scheduled a retry; `i64::MIN` when it named no time. The value is a copy
/// of the delivery's row, so a page of the queue is a walk of consecutive
/// entries, not one read of the deliveries table per item.
pub const RETRY_QUEUE: Table = Table("retry_queue");
/// `(org, endpoint id, level, bucket start)` -> the endpoint's health
/// counters there (`projections::health`); all time is level 0, start 0.
pub const ENDPOINT_TALLIES: Table = Table("endpoint_tallies");

/// `(tree, tile level, tile index)` -> a complete tile of a Merkle tree
/// (`crate::merkle::tiles`): its hashes at tree level `tile level *
/// tiles::HEIGHT`. A tree is an organization's (`key::org_tree`) or the whole
/// ledger's (`key::ledger_tree`).
pub const TREE_TILES: Table = Table("tree_tiles");
/// `(tree)` -> its size and the hashes right of each tile level's last
/// complete tile.
pub const TREE_EDGES: Table = Table("tree_edges");

/// Every table, in the order a comparison walks them.
pub const ALL: [Table; 28] = [
    META,
    API_KEYS,
    ENDPOINTS,
    ENDPOINT_VERSIONS,
    EVENTS,
    ERASURES,
    DELIVERIES,
    ATTEMPTS,
    SOURCE_KEYS,
    IDEMPOTENCY,
    DELIVERIES_BY_STATUS,
    DELIVERIES_BY_ENDPOINT,
    DELIVERIES_BY_ENDPOINT_STATUS,
    EVENTS_BY_STATUS,
    EVENTS_BY_TYPE,
    EVENTS_BY_TYPE_STATUS,
    SEQUENCES,
    FEED,
    ATTEMPTS_BY_TIME,
    ATTEMPTS_BY_DELIVERY,
    ATTEMPTS_BY_EVENT,
    ATTEMPTS_BY_STATUS,
    ATTEMPTS_BY_CLASS,
    ATTEMPTS_BY_ENDPOINT_STATUS,
    RETRY_QUEUE,
    TREE_TILES,
    TREE_EDGES,
    ENDPOINT_TALLIES,
];

/// Bump on any change to a row's archived form, a key or an index: a store
/// of another format is set aside and rebuilt from the log.
pub const FORMAT: u64 = 9;

/// The first byte of every encoded row.
const ROW_FORMAT: u8 = 1;

pub mod key {
    use super::Key;

    pub fn org(org: &str) -> Key {
        Key::new().str(org)
    }

    pub fn endpoint(org: &str, id: &str) -> Vec<u8> {
        Key::new().str(org).str(id).into_bytes()
    }

    pub fn endpoint_version(org: &str, id: &str, version: u64) -> Vec<u8> {
        Key::new().str(org).str(id).u64(version).into_bytes()
    }

    pub fn event(org: &str, id: &str) -> Vec<u8> {
        Key::new().str(org).str(id).into_bytes()
    }

    pub fn delivery(org: &str, id: &str) -> Vec<u8> {
        Key::new().str(org).str(id).into_bytes()
    }

    pub fn attempt(org: &str, delivery_id: &str, version: u64) -> Vec<u8> {
        Key::new()
            .str(org)
            .str(delivery_id)
            .u64(version)
            .into_bytes()
    }

    pub fn source_key(org: &str, source_key: &str) -> Vec<u8> {
        Key::new().str(org).str(source_key).into_bytes()
    }

    pub fn idempotency(org: &str, slot: &str) -> Vec<u8> {
        Key::new().str(org).str(slot).into_bytes()
    }

    pub fn api_key(id: &str) -> Vec<u8> {
        Key::new().str(id).into_bytes()
    }

    pub fn feed(org: &str, sequence: u64) -> Vec<u8> {
        Key::new().str(org).u64(sequence).into_bytes()
    }

    /// The Merkle tree over an organization's events in sequence order.
    pub fn org_tree(org: &str) -> Vec<u8> {
        Key::new().byte(1).str(org).into_bytes()
    }

    /// The Merkle tree over the whole ledger in position order.
    pub fn ledger_tree() -> Vec<u8> {
        Key::new().byte(0).into_bytes()
    }

    pub fn tree_tile(tree: &[u8], level: u8, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(tree.len() + 9);
        key.extend_from_slice(tree);
        key.push(level);
        key.extend_from_slice(&index.to_be_bytes());
        key
    }

    /// The key of an endpoint's counters in `bucket`.
    pub fn tally(org: &str, endpoint_id: &str, bucket: super::Bucket) -> Vec<u8> {
        tally_level(org, endpoint_id, bucket.level)
            .i64(bucket.start)
            .into_bytes()
    }

    /// The prefix of an endpoint's counters at `level`.
    pub fn tally_level(org: &str, endpoint_id: &str, level: super::Level) -> Key {
        Key::new().str(org).str(endpoint_id).byte(level.byte())
    }
}

/// What a row could not be decoded for.
#[derive(Debug, thiserror::Error)]
#[error("a {what} row does not decode: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

/// A row type of the model.
pub trait Row: Sized {
    const WHAT: &'static str;
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

macro_rules! archived_row {
    ($ty:ty, $what:literal) => {
        impl Row for $ty {
            const WHAT: &'static str = $what;

            fn encode(&self) -> Vec<u8> {
                let body = rkyv::to_bytes::<rancor::Error>(self).expect("a row always serialises");
                let mut out = Vec::with_capacity(1 + body.len());
                out.push(ROW_FORMAT);
                out.extend_from_slice(&body);
                out
            }

            fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                let error = |reason: String| DecodeError {
                    what: $what,
                    reason,
                };
                let Some((&format, body)) = bytes.split_first() else {
                    return Err(error("empty".into()));
                };
                if format != ROW_FORMAT {
                    return Err(error(format!("row format {format}, not {ROW_FORMAT}")));
                }
                // rkyv reads archives in place, so they must be aligned.
                let mut aligned = AlignedVec::<16>::with_capacity(body.len());
                aligned.extend_from_slice(body);
                rkyv::from_bytes::<$ty, rancor::Error>(&aligned).map_err(|e| error(e.to_string()))
            }
        }
    };
}

archived_row!(Endpoint, "endpoint");
archived_row!(WebhookEvent, "event");
archived_row!(Delivery, "delivery");
archived_row!(Attempt, "attempt");
archived_row!(ApiKey, "API key");
archived_row!(IdempotencyRecord, "idempotency");
archived_row!(Tally, "endpoint tally");
archived_row!(Erasures, "erasures");

/// Numbers (sequence counters, positions) are 8 bytes big-endian.
impl Row for u64 {
    const WHAT: &'static str = "number";

    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .map_err(|_| DecodeError {
                what: "number",
                reason: format!("{} bytes, not 8", bytes.len()),
            })
    }
}

/// A Merkle tile is its hashes, one after another.
impl Row for crate::merkle::tiles::Tile {
    const WHAT: &'static str = "tree tile";

    fn encode(&self) -> Vec<u8> {
        self.as_flattened().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut tile = Box::new([[0u8; 32]; crate::merkle::tiles::WIDTH]);
        if bytes.len() != tile.as_flattened().len() {
            return Err(DecodeError {
                what: "tree tile",
                reason: format!("{} bytes, not {}", bytes.len(), tile.as_flattened().len()),
            });
        }
        tile.as_flattened_mut().copy_from_slice(bytes);
        Ok(tile)
    }
}

impl Row for crate::merkle::tiles::Edge {
    const WHAT: &'static str = "tree edge";

    fn encode(&self) -> Vec<u8> {
        crate::merkle::tiles::Edge::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        crate::merkle::tiles::Edge::decode(bytes).ok_or_else(|| DecodeError {
            what: "tree edge",
            reason: format!(
                "{} bytes do not hold a size and its partial tiles",
                bytes.len()
            ),
        })
    }
}

/// Strings (source keys' event ids) are stored as their bytes.
impl Row for String {
    const WHAT: &'static str = "text";

    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| DecodeError {
            what: "text",
            reason: e.to_string(),
        })
    }
}

pub fn attempt_status_byte(status: AttemptStatus) -> u8 {
    match status {
        AttemptStatus::Pending => 0,
        AttemptStatus::RetryScheduled => 1,
        AttemptStatus::Delivered => 2,
        AttemptStatus::Failed => 3,
    }
}

/// The status a byte of [`attempt_status_byte`] stands for.
pub fn attempt_status_of(byte: u8) -> Option<AttemptStatus> {
    match byte {
        0 => Some(AttemptStatus::Pending),
        1 => Some(AttemptStatus::RetryScheduled),
        2 => Some(AttemptStatus::Delivered),
        3 => Some(AttemptStatus::Failed),
        _ => None,
    }
}

/// Every attempt status, by its byte.
pub const ATTEMPT_STATUSES: [AttemptStatus; 4] = [
    AttemptStatus::Pending,
    AttemptStatus::RetryScheduled,
    AttemptStatus::Delivered,
    AttemptStatus::Failed,
];

pub fn event_status_byte(status: EventStatus) -> u8 {
    match status {
        EventStatus::Pending => 0,
        EventStatus::Delivered => 1,
        EventStatus::Failed => 2,
        EventStatus::Skipped => 3,
    }
}

/// A row's index entries: which table, which key.
pub type IndexEntries = Vec<(Table, Vec<u8>)>;

/// The index entries of a delivery.
pub fn delivery_index(d: &Delivery) -> IndexEntries {
    let status = attempt_status_byte(d.status);
    let org = &d.organization_id;
    let mut entries = vec![
        (
            DELIVERIES_BY_STATUS,
            Key::new().str(org).byte(status).str(&d.id).into_bytes(),
        ),
        (
            DELIVERIES_BY_ENDPOINT,
            Key::new()
                .str(org)
                .str(&d.endpoint_id)
                .str(&d.id)
                .into_bytes(),
        ),
        (
            DELIVERIES_BY_ENDPOINT_STATUS,
            Key::new()
                .str(org)
                .str(&d.endpoint_id)
                .byte(status)
                .str(&d.id)
                .into_bytes(),
        ),
    ];
    if d.status == AttemptStatus::RetryScheduled {
        let due = d.next_retry_at.map_or(i64::MIN, |t| t.micros());
        entries.push((
            RETRY_QUEUE,
            Key::new().str(org).i64(due).str(&d.id).into_bytes(),
        ));
    }
    entries
}

/// The index entries of an event.
pub fn event_index(e: &WebhookEvent) -> IndexEntries {
    let status = event_status_byte(e.status);
    let org = &e.organization_id;
    vec![
        (
            EVENTS_BY_STATUS,
            Key::new().str(org).byte(status).str(&e.id).into_bytes(),
        ),
        (
            EVENTS_BY_TYPE,
            Key::new()
                .str(org)
                .str(&e.event_type)
                .str(&e.id)
                .into_bytes(),
        ),
        (
            EVENTS_BY_TYPE_STATUS,
            Key::new()
                .str(org)
                .str(&e.event_type)
                .byte(status)
                .str(&e.id)
                .into_bytes(),
        ),
    ]
}

/// Writes the change of a row's index entries from `old` to `new`: entries
/// that stay are not written again, except in `copy`'s table, whose entry
/// carries the row (`copy`'s bytes) and is written whenever the row is.
pub fn reindex(
    batch: &mut WriteBatch,
    old: Option<IndexEntries>,
    new: IndexEntries,
    copy: Option<(Table, &[u8])>,
) {
    let old = old.unwrap_or_default();
    for (table, key) in &old {
        if !new.contains(&(*table, key.clone())) {
            batch.delete(*table, key.clone());
        }
    }
    for (table, key) in new {
        match copy {
            Some((copied, row)) if copied == table => batch.put(table, key, row.to_vec()),
            _ if !old.contains(&(table, key.clone())) => batch.put(table, key, Vec::new()),
            _ => {}
        }
    }
}

/// The status-code class of an attempt's response: 1 to 5, or 0 for none.
pub fn status_class(code: Option<u16>) -> u8 {
    code.map_or(0, |c| u8::try_from(c / 100).unwrap_or(0))
}

/// The value of an attempt's index entries: where its row is, then its
/// status and response code (0 for none), so a query can refuse an entry
/// that another filter rules out without reading the row.
pub fn attempt_ref(a: &Attempt) -> Vec<u8> {
    ref_key(a).into_bytes()
}

fn ref_key(a: &Attempt) -> Key {
    let code = a.response_status_code.unwrap_or(0).to_be_bytes();
    Key::new()
        .str(&a.delivery_id)
        .u64(a.version)
        .byte(attempt_status_byte(a.status))
        .byte(code[0])
        .byte(code[1])
}

/// The value of an attempt's entry by endpoint and status: [`attempt_ref`],
/// then its event id and log position. With the entry's key (organization,
/// endpoint, status, time, sequence) that is every field of the row that a
/// page of attempts shows; the rest (the last error, the retry's time) it
/// reads from the attempt's event in the log, with the response body.
pub fn attempt_entry(a: &Attempt) -> Vec<u8> {
    ref_key(a).str(&a.event_id).u64(a.position).into_bytes()
}

/// The index entries of an attempt: table, key and value ([`attempt_ref`],
/// or [`attempt_entry`] by endpoint and status). Attempts never change, so
/// these are written once.
pub fn attempt_index(a: &Attempt) -> [(Table, Vec<u8>, Vec<u8>); 6] {
    let org = &a.organization_id;
    let at = a.recorded_at.micros();
    let status = attempt_status_byte(a.status);
    let tail = |key: Key| key.i64(at).u64(a.sequence).into_bytes();
    let at_ref = attempt_ref(a);
    [
        (ATTEMPTS_BY_TIME, tail(Key::new().str(org)), at_ref.clone()),
        (
            ATTEMPTS_BY_DELIVERY,
            tail(Key::new().str(org).str(&a.delivery_id)),
            at_ref.clone(),
        ),
        (
            ATTEMPTS_BY_EVENT,
            tail(Key::new().str(org).str(&a.event_id)),
            at_ref.clone(),
        ),
        (
            ATTEMPTS_BY_STATUS,
            tail(Key::new().str(org).byte(status)),
            at_ref.clone(),
        ),
        (
            ATTEMPTS_BY_CLASS,
            tail(
                Key::new()
                    .str(org)
                    .byte(status_class(a.response_status_code)),
            ),
            at_ref,
        ),
        (
            ATTEMPTS_BY_ENDPOINT_STATUS,
            tail(Key::new().str(org).str(&a.endpoint_id).byte(status)),
            attempt_entry(a),
        ),
    ]
}
