//! An in-memory [`EventStore`] for unit tests and for tools that fold a history
//! they hold in hand. It keeps the same guarantees as a durable backend except
//! durability itself, and passes the same conformance suite.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::store::sequencer::{Sequencer, now_micros};
use crate::store::{Appended, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Result};

#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    head: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    sequencer: Sequencer,
    events: Vec<RecordedEvent>,
    /// Stream name -> positions of its events, in version order.
    streams: HashMap<String, Vec<u64>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            head: watch::Sender::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed:
        // every change below is made after all checks.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl EventStore for MemoryStore {
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<crate::store::Claim>,
    ) -> Result<Appended> {
        let mut state = self.state();
        let mut batch = state.sequencer.staging();
        let appended = batch.stage_claimed(stream, expected, events, &claims, now_micros())?;
        let (records, staged) = batch.finish();
        state.sequencer.commit(staged);
        let positions = state.streams.entry(stream.to_owned()).or_default();
        positions.extend(records.iter().map(|r| r.position));
        state.events.extend(records);
        let head = state.sequencer.head();
        drop(state);
        // Appends racing each other publish in any order: the head only rises.
        self.head.send_if_modified(|h| {
            let rises = head > *h;
            *h = (*h).max(head);
            rises
        });
        Ok(appended)
    }

    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.state();
        let Some(positions) = state.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(positions
            .iter()
            .skip(from)
            .take(max)
            .map(|&p| state.events[p as usize - 1].clone())
            .collect())
    }

    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        let state = self.state();
        let start = usize::try_from(from.max(1) - 1).unwrap_or(usize::MAX);
        Ok(state.events.iter().skip(start).take(max).cloned().collect())
    }

    fn removes_contents(&self) -> bool {
        true
    }

    async fn remove_contents(&self, positions: &[u64]) -> Result<u64> {
        let mut state = self.state();
        let mut removed = 0;
        for &position in positions {
            let Some(index) = position.checked_sub(1) else {
                continue;
            };
            if let Some(event) = usize::try_from(index)
                .ok()
                .and_then(|i| state.events.get_mut(i))
                && !event.content.is_empty()
            {
                event.content = Vec::new();
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn wait_beyond(&self, after: u64) -> Result<u64> {
        let mut head = self.head.subscribe();
        let reached = head
            .wait_for(|&h| h > after)
            .await
            .map_err(|_| crate::store::Error::Unavailable("store closed".into()))?;
        Ok(*reached)
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }
}
