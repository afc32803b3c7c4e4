//! What auditors check: every record readable, every stream's hash chain intact,
//! every event's data valid for its schema, and what was kept elsewhere: the
//! ledger digest at a position, or the root of the whole-ledger Merkle tree
//! (RFC 9162) at a size, recomputed from the log alone with O(log n) memory.
//! Works on any backend through the store trait.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::chain::{Hash, Hashed, LedgerDigest, ZERO};
use crate::merkle::{self, Frontier};
use crate::store::{self, EventStore, RecordedEvent};

/// Events read per call while scanning.
const BATCH: usize = 8192;

/// The outcome of a full scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The digest up to the last good event.
    pub digest: LedgerDigest,
    pub streams: usize,
    pub bodies: Bodies,
    /// The first thing wrong, if anything is.
    pub failure: Option<Failure>,
}

/// The bodies the scan found: those named by a digest in an event's data
/// (schema 2 on), kept on disk or erased from it, and the erasures recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bodies {
    /// On disk, each checked against its digest.
    pub kept: u64,
    /// Gone from the disk; the digest their hash covers is all that is left.
    pub erased: u64,
    /// `ContentErased` events.
    pub erasures: u64,
}

impl Bodies {
    fn count(&mut self, event: &crate::store::RecordedEvent) {
        if event.event_type == "ContentErased" {
            self.erasures += 1;
        } else if crate::model::names_a_body(event) {
            if event.content.is_empty() {
                self.erased += 1;
            } else {
                self.kept += 1;
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub position: u64,
    pub reason: String,
}

/// What an auditor kept, to hold the log against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The linear ledger digest at `position` (`audit digest`, `/v1/ledger/digest`).
    Digest { position: u64, digest: Hash },
    /// The root of the whole-ledger Merkle tree over the first `size` events.
    Root { size: u64, root: Hash },
}

impl Expected {
    /// The position it is checked at.
    pub fn position(&self) -> u64 {
        match self {
            Expected::Digest { position, .. } => *position,
            Expected::Root { size, .. } => *size,
        }
    }

    /// Why the log does not match, at the position this is checked at.
    fn mismatch(&self, digest: &LedgerDigest, tree: &Frontier) -> Option<String> {
        match self {
            Expected::Digest {
                position,
                digest: kept,
            } if *kept != digest.digest => Some(format!(
                "the ledger digest at position {position} is {}, not the expected {}: the history up to here has changed",
                digest.hex(),
                hex::encode(kept)
            )),
            Expected::Root { size, root } if *root != tree.root() => Some(format!(
                "the ledger's Merkle root at size {size} is {}, not the expected {}: the history up to here has changed",
                hex::encode(tree.root()),
                hex::encode(root)
            )),
            _ => None,
        }
    }
}

/// Scans the whole log. `on_progress` is called with the position after each batch.
pub async fn verify(
    store: &dyn EventStore,
    expected: &[Expected],
    mut on_progress: impl FnMut(u64),
) -> Result<Report, store::Error> {
    let mut digest = LedgerDigest::default();
    // The whole-ledger tree's right edge, kept only when a root is to be checked.
    let roots = expected.iter().any(|e| matches!(e, Expected::Root { .. }));
    let mut tree = Frontier::default();
    let mut tips: HashMap<String, (u64, Hash)> = HashMap::new();
    let mut bodies = Bodies::default();
    let fail = |digest: LedgerDigest, tips: &HashMap<_, _>, position, reason: String| Report {
        digest,
        streams: tips.len(),
        bodies: Bodies::default(),
        failure: Some(Failure { position, reason }),
    };
    loop {
        let events = match store.read_all(digest.position + 1, BATCH).await {
            Ok(events) => events,
            Err(e) => match corrupt_position(&e) {
                Some(position) => return Ok(fail(digest, &tips, position, e.to_string())),
                None => return Err(e),
            },
        };
        if events.is_empty() {
            break;
        }
        for event in &events {
            if let Err(reason) = check(event, digest.position + 1, &tips) {
                return Ok(fail(digest, &tips, digest.position + 1, reason));
            }
            tips.insert(event.stream.clone(), (event.version, event.hash));
            bodies.count(event);
            digest.fold(event.position, &event.hash);
            if roots {
                tree.push_leaf(merkle::leaf_hash(&event.hash));
            }
            let due = expected.iter().filter(|e| e.position() == digest.position);
            if let Some(reason) = due.filter_map(|e| e.mismatch(&digest, &tree)).next() {
                return Ok(fail(digest, &tips, digest.position, reason));
            }
        }
        on_progress(digest.position);
    }
    if let Some(beyond) = expected.iter().find(|e| e.position() > digest.position) {
        let what = match beyond {
            Expected::Digest { .. } => "digest is for position",
            Expected::Root { .. } => "Merkle root is for size",
        };
        return Ok(fail(
            digest,
            &tips,
            digest.position + 1,
            format!(
                "the log ends at position {} but the expected {what} {}: events are missing",
                digest.position,
                beyond.position()
            ),
        ));
    }
    Ok(Report {
        digest,
        streams: tips.len(),
        bodies,
        failure: None,
    })
}

/// The position a corruption error names, if it is one.
pub fn corrupt_position(error: &store::Error) -> Option<u64> {
    match error {
        store::Error::Corrupt { position, .. } => Some(*position),
        _ => None,
    }
}

/// Checks one event against its place in the log and in its stream.
fn check(
    event: &RecordedEvent,
    position: u64,
    tips: &HashMap<String, (u64, Hash)>,
) -> Result<(), String> {
    if event.position != position {
        return Err(format!(
            "expected position {position}, found {}",
            event.position
        ));
    }
    let (version, prev_hash) = match tips.get(&event.stream) {
        Some(&(version, hash)) => (version + 1, hash),
        None => (0, ZERO),
    };
    if event.version != version {
        return Err(format!(
            "stream {} expected version {version}, found {}",
            event.stream, event.version
        ));
    }
    if event.prev_hash != prev_hash {
        return Err(format!(
            "stream {} version {version}: prevHash does not link to the previous event",
            event.stream
        ));
    }
    if Hashed::from(event).hash(&prev_hash) != event.hash {
        return Err(format!(
            "stream {} version {version}: the hash does not match the event's content",
            event.stream
        ));
    }
    crate::model::decode(event).map_err(|e| e.to_string())?;
    Ok(())
}

/// One event as `audit export` writes it: data and metadata byte for byte as
/// stored and hashed, so external tools can recompute every hash.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub schema_version: u32,
    pub recorded_at: projections::Timestamp,
    pub data: &'a RawValue,
    pub metadata: &'a RawValue,
    pub prev_hash: String,
    pub hash: String,
}

impl<'a> Exported<'a> {
    pub fn new(event: &'a RecordedEvent) -> Result<Self, String> {
        let raw = |bytes: &'a [u8], what: &str| -> Result<&'a RawValue, String> {
            serde_json::from_slice(bytes).map_err(|e| {
                format!(
                    "position {}: stored {what} is not JSON: {e}",
                    event.position
                )
            })
        };
        Ok(Exported {
            position: event.position,
            stream: &event.stream,
            version: event.version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            recorded_at: projections::Timestamp::from_micros(event.recorded_at),
            data: raw(&event.data, "data")?,
            metadata: raw(&event.metadata, "metadata")?,
            prev_hash: hex::encode(event.prev_hash),
            hash: hex::encode(event.hash),
        })
    }
}
