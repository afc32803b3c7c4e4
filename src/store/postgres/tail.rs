//! The latest events this process committed or read, contiguous by position,
//! so that the local projector following its own writes reads them from memory
//! instead of back from the database. Only ever holds committed events, and
//! only a run without gaps, so a read served from it is exactly what the table
//! would return (or a prefix of it, which `read_all` allows).

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::store::RecordedEvent;

/// Event bytes kept at most; the oldest go first.
const MAX_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct Tail {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<RecordedEvent>,
    bytes: usize,
}

fn size(e: &RecordedEvent) -> usize {
    e.stream.len() + e.event_type.len() + e.data.len() + e.metadata.len() + e.content.len() + 128
}

impl Tail {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes committed events in position order; a gap before them (events of
    /// other processes not seen here) starts the run afresh.
    pub fn extend(&self, events: &[RecordedEvent]) {
        let mut inner = self.inner();
        for event in events {
            let next = inner.events.back().map(|e| e.position + 1);
            match next {
                Some(next) if event.position < next => continue,
                Some(next) if event.position > next => {
                    inner.events.clear();
                    inner.bytes = 0;
                }
                _ => {}
            }
            inner.bytes += size(event);
            inner.events.push_back(event.clone());
        }
        while inner.bytes > MAX_BYTES && inner.events.len() > 1 {
            if let Some(old) = inner.events.pop_front() {
                inner.bytes -= size(&old);
            }
        }
    }

    /// Drops the content of the held events at `positions`, as the table
    /// just did.
    pub fn remove_contents(&self, positions: &[u64]) {
        let mut inner = self.inner();
        let Some(first) = inner.events.front().map(|e| e.position) else {
            return;
        };
        for &position in positions {
            let Some(i) = position
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
            else {
                continue;
            };
            let freed = match inner.events.get_mut(i) {
                Some(event) if event.position == position => {
                    std::mem::take(&mut event.content).len()
                }
                _ => 0,
            };
            inner.bytes -= freed;
        }
    }

    /// Up to `max` events from position `from`, if the run holds `from` and
    /// reaches `head`, the last position this process has heard of: a read
    /// served here ends no earlier than one from the table would have when
    /// that head was heard.
    pub fn read(&self, from: u64, max: usize, head: u64) -> Option<Vec<RecordedEvent>> {
        let inner = self.inner();
        if inner.events.back()?.position < head {
            return None;
        }
        let first = inner.events.front()?.position;
        let skip = usize::try_from(from.checked_sub(first)?).ok()?;
        if skip >= inner.events.len() {
            return None;
        }
        Some(inner.events.range(skip..).take(max).cloned().collect())
    }
}
