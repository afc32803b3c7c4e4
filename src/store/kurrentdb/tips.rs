//! The tips of streams, as appends plan on them: each stream's last version,
//! hash and time. Read from the server when unknown, remembered after a
//! write, and kept current by the follower for the streams remembered. Only a
//! hint: a write planned on a stale tip is refused by KurrentDB (it expects
//! the revision the plan was made on) and planned again on the tip read anew.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::Shared;
use super::record::{self, Chain};
use crate::chain::Hash;
use crate::store::{RecordedEvent, Result};

/// Streams whose tips are remembered, at most; then the memory starts afresh.
const TIPS: usize = 16_384;

/// A stream's last event, as an append plans on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub version: u64,
    pub hash: Hash,
    pub recorded_at: i64,
}

/// The tips of recently written streams, by KurrentDB stream name. Only a
/// hint: a write planned on a stale tip is refused by KurrentDB and planned
/// again on the tip read from the server.
#[derive(Debug, Default)]
pub struct Tips(Mutex<HashMap<String, Option<Tip>>>);

impl Tips {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Option<Tip>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, stream: &str) -> Option<Option<Tip>> {
        self.map().get(stream).copied()
    }

    pub fn set(&self, stream: &str, tip: Option<Tip>) {
        let mut map = self.map();
        if map.len() >= TIPS && !map.contains_key(stream) {
            map.clear();
        }
        map.insert(stream.to_owned(), tip);
    }

    pub fn forget(&self, stream: &str) {
        self.map().remove(stream);
    }

    /// Takes a ledger event the follower numbered into a remembered tip.
    pub fn heard(&self, stream: &str, record: &RecordedEvent) {
        let mut map = self.map();
        if let Some(tip) = map.get_mut(stream)
            && tip.is_none_or(|t| t.version < record.version)
        {
            *tip = Some(Tip {
                version: record.version,
                hash: record.hash,
                recorded_at: record.recorded_at,
            });
        }
    }
}

/// The stream's tip as the server holds it.
pub async fn read_tip(shared: &Shared, name: &str) -> Result<Option<Tip>> {
    let last = shared.server.read_stream(name, None, 1).await?;
    let Some(event) = last.first() else {
        return Ok(None);
    };
    let Chain { hash, recorded_at } = record::chain_of(event, 0)?;
    Ok(Some(Tip {
        version: event.revision,
        hash,
        recorded_at,
    }))
}
