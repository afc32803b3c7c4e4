//! The read model on disk: the rows the folds of `projections` write, kept
//! in an embedded store in the data directory (`DIR/model/readmodel.redb`),
//! with the position, ledger digest and hash they reflect, committed together.
//!
//! - [`live`]: the [`Model`] of a running node: an overlay in memory that
//!   the folds write into, written to the store as one batch at a time.
//! - [`overlay`]: that overlay, and the store-backed `projections::Rows`.
//! - [`view`] and [`list`]: reading through the layers, answers as of a past
//!   position, and the lists with their indexes.
//! - `attempt_list`: attempts across deliveries, from the attempt indexes,
//!   an endpoint's as its status ranges merged (`merge`).
//! - [`queries`]: the retry queue, the change feed.
//! - [`trees`]: the Merkle trees of each organization and of the ledger.
//! - `erasure`: which bodies in the log may still be served.
//! - `stats`: an endpoint's health since an instant, from the fold's counters.
//! - [`tables`] and [`keys`]: what is stored where, and how keys sort.
//! - [`compare`]: two stores row by row, for `projections rebuild --verify`.
//!
//! The store is derived data: [`open`] reads what it reflects, and the
//! projector checks that against the log before trusting it. Memory is the
//! store's page cache (`--cache-size`) and the overlays, whatever the size of
//! the history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chain::{Hash, LedgerDigest};
use crate::kv::{self, Kv, RedbKv};
use crate::store::EventRef;

mod attempt_list;
pub mod compare;
mod erasure;
mod flush;
pub mod keys;
pub mod list;
pub mod live;
mod merge;
pub mod overlay;
pub mod queries;
mod read_ahead;
mod stats;
pub mod tables;
pub mod trees;
pub mod view;

pub use attempt_list::{AttemptFilter, AttemptItem, AttemptMark, Attempts};
pub use erasure::{Shown, body_owner, names_a_body};
pub use list::{DeliveryFilter, EventFilter, Listed, Page};
pub use live::{Model, Options};
pub use overlay::Chain;
pub use queries::{Retries, RetryMark};
pub use trees::Tree;
pub use view::{EventParts, View};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kv(#[from] kv::Error),
    #[error(transparent)]
    Decode(#[from] tables::DecodeError),
    #[error("event at position {position} does not follow the model, which expects {expected}")]
    Gap { position: u64, expected: u64 },
    #[error("the read model is inconsistent: {0}")]
    Inconsistent(String),
    #[error("the read model takes no more events: {0}")]
    Failed(String),
    #[error("event at position {position} cannot be folded: {reason}")]
    Fold { position: u64, reason: String },
}

impl Error {
    /// Whether the store's file is damaged, so the model must be rebuilt.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Kv(kv::Error::Corrupt { .. }) | Error::Decode(_) | Error::Inconsistent(_)
        )
    }
}

/// An event decoded for the folds, with its hash for the ledger digest.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub recorded: projections::Recorded,
    pub hash: Hash,
}

impl Decoded {
    /// Decodes `event` as the folds need it: what they do not read (an
    /// attempt's response body, the request and key ids) is checked and dropped.
    pub fn new(event: &EventRef<'_>) -> Result<Decoded, Error> {
        let fold_error = |reason: String| Error::Fold {
            position: event.position,
            reason,
        };
        let data =
            projections::fold_decode::event(event.event_type, event.schema_version, event.data)
                .map_err(|e| fold_error(e.to_string()))?;
        let metadata = projections::fold_decode::metadata(event.metadata)
            .map_err(|e| fold_error(e.to_string()))?;
        Ok(Decoded {
            recorded: projections::Recorded {
                position: event.position,
                version: event.version,
                recorded_at: projections::Timestamp::from_micros(event.recorded_at),
                metadata,
                event: data,
            },
            hash: *event.hash,
        })
    }

    /// [`Decoded::new`] into `self`, reusing the memory of what it holds.
    /// On an error `self` is unspecified.
    pub fn refill(&mut self, event: &EventRef<'_>) -> Result<(), Error> {
        let fold_error = |reason: String| Error::Fold {
            position: event.position,
            reason,
        };
        let recorded = &mut self.recorded;
        projections::fold_decode::event_into(
            event.event_type,
            event.schema_version,
            event.data,
            &mut recorded.event,
        )
        .map_err(|e| fold_error(e.to_string()))?;
        recorded.metadata = projections::fold_decode::metadata(event.metadata)
            .map_err(|e| fold_error(e.to_string()))?;
        recorded.position = event.position;
        recorded.version = event.version;
        recorded.recorded_at = projections::Timestamp::from_micros(event.recorded_at);
        self.hash = *event.hash;
        Ok(())
    }
}

/// Decodes a stored event whole, metadata and any content it still holds
/// included, as an auditor's tool reads it: content that does not match the
/// digest its hash covers is an error. Whether a body may be *served* is
/// another question, which [`View::servable_content`] answers.
pub fn decode(event: &crate::store::RecordedEvent) -> Result<projections::Recorded, Error> {
    decode_with(
        event,
        (!event.content.is_empty()).then_some(&event.content[..]),
    )
}

/// [`decode`] with `content` in place of the event's own: `None` decodes
/// its bodies as erased.
pub fn decode_with(
    event: &crate::store::RecordedEvent,
    content: Option<&[u8]>,
) -> Result<projections::Recorded, Error> {
    let fold_error = |reason: String| Error::Fold {
        position: event.position,
        reason,
    };
    let data = projections::Event::decode(
        &event.event_type,
        event.schema_version,
        &event.data,
        content,
    )
    .map_err(|e| fold_error(e.to_string()))?;
    let metadata =
        projections::Metadata::decode(&event.metadata).map_err(|e| fold_error(e.to_string()))?;
    Ok(projections::Recorded {
        position: event.position,
        version: event.version,
        recorded_at: projections::Timestamp::from_micros(event.recorded_at),
        metadata,
        event: data,
    })
}

/// A store as [`open`] found it: what it says it reflects.
#[derive(Debug)]
pub struct Stored {
    pub kv: Arc<dyn Kv>,
    /// The row format it was written in; `None` for a new, empty store.
    pub format: Option<u64>,
    pub tip: Chain,
    /// The hash of the log's first event, which ties the store to one log.
    pub log_id: Option<Hash>,
}

/// The directory of the read model in a data directory.
pub fn dir_in(data_dir: &Path) -> PathBuf {
    data_dir.join("model")
}

/// The store's file in a data directory.
pub fn file_in(data_dir: &Path) -> PathBuf {
    dir_in(data_dir).join("readmodel.redb")
}

/// How the memory a model is given (its share of `--cache-size`) is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Bytes of the store's pages kept in memory.
    pub page_cache: usize,
    /// The size at which the folds' overlay is written out. Folds wait while
    /// one overlay is being written and the next has grown to twice this, and
    /// the write's batch is about one overlay's size again: overlays take at
    /// most about five times this.
    pub overlay: usize,
    /// Bytes of payloads read lately from the log, kept for the answers that
    /// carry them (every attempt's answer carries its event's).
    pub payloads: usize,
}

impl Memory {
    /// A sixteenth to payloads, a quarter to the overlays, the rest to the
    /// page cache.
    pub fn of(bytes: usize) -> Memory {
        Memory {
            page_cache: bytes - bytes / 4 - bytes / 16,
            overlay: (bytes / 20).max(1 << 20),
            payloads: bytes / 16,
        }
    }
}

/// Opens (or creates) the store at `file` and reads what it reflects;
/// `cache` bytes of its pages stay in memory.
pub fn open(file: &Path, cache: usize) -> Result<Stored, Error> {
    if let Some(dir) = file.parent() {
        crate::files::create_dir_all(dir)
            .map_err(|e| Error::Failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let kv = Arc::new(RedbKv::open(file, &tables::ALL, cache)?);
    let snapshot = kv.read()?;
    let format = snapshot
        .get(tables::META, flush::META_FORMAT)?
        .map(|b| decode_u64(&b))
        .transpose()?;
    let tip = match snapshot.get(tables::META, flush::META_TIP)? {
        Some(bytes) => decode_tip(&bytes)?,
        None => Chain::default(),
    };
    let log_id = snapshot
        .get(tables::META, flush::META_LOG)?
        .map(|b| {
            <Hash>::try_from(b.as_slice())
                .map_err(|_| Error::Inconsistent("the log id is not 32 bytes".into()))
        })
        .transpose()?;
    Ok(Stored {
        kv,
        format,
        tip,
        log_id,
    })
}

/// Moves a store that cannot be used out of the way, keeping the latest one
/// set aside for inspection; returns where it went.
pub fn set_aside(file: &Path) -> std::io::Result<PathBuf> {
    let aside = file.with_extension("redb.set-aside");
    match std::fs::rename(file, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = file.parent() {
        crate::files::sync_dir(dir)?;
    }
    Ok(aside)
}

fn decode_u64(bytes: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Inconsistent("a meta number is not 8 bytes".into()))
}

fn decode_tip(bytes: &[u8]) -> Result<Chain, Error> {
    let bad = || Error::Inconsistent("the model's position record is malformed".into());
    if bytes.len() != 72 {
        return Err(bad());
    }
    let position = decode_u64(&bytes[..8])?;
    let digest = <Hash>::try_from(&bytes[8..40]).map_err(|_| bad())?;
    let last_hash = <Hash>::try_from(&bytes[40..72]).map_err(|_| bad())?;
    Ok(Chain {
        digest: LedgerDigest { position, digest },
        last_hash,
    })
}
