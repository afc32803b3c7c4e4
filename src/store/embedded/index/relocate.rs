//! Taking a compacted segment into the index: its new file, the new places
//! of the frames that moved in it, and the recent records whose content is
//! gone, all swapped in while no read is between finding a frame's place
//! and choosing the file to read it from.
//!
//! The new places go into the active memtable, where they override what the
//! frozen memtable and the store below say of those positions until they
//! are written out over them. A reader that found its frames before the
//! swap reads them through the old file's handle, whose bytes the rename
//! left as they were.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Index, Place, SegmentFile, store_error, stream_row};
use crate::store::{Error, Result};

/// A frame whose offset a compaction changed, with what the index keys it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    /// Where it starts in the new file, and its length there.
    pub offset: u64,
    pub len: u64,
}

impl Index {
    /// The segments, by first position, with the files reads use now.
    pub fn segment_files(&self) -> Vec<(u64, Arc<SegmentFile>)> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| (s.first_position, s.file.clone()))
            .collect()
    }

    /// Makes `file` the segment that starts at `first_position`, with its
    /// frames at the places `moved` gives (the others where they were), and
    /// drops the content of the recent records at `removed` (sorted). Fails
    /// without changing anything when a stream of `moved` is unknown.
    pub fn relocate(
        &self,
        first_position: u64,
        file: Arc<SegmentFile>,
        moved: &[Moved],
        removed: &[u64],
    ) -> Result<()> {
        let _relocating = self.relocating.write().unwrap_or_else(|e| e.into_inner());
        if let Some(layered) = self.layered() {
            let changed = layered.change(|pending, frozen, kv| -> Result<()> {
                // Every stream's id first, so that a failure changes nothing.
                let mut ids: HashMap<&str, u64> = HashMap::new();
                let mut rows = Vec::with_capacity(moved.len());
                for m in moved {
                    let id = match ids.get(m.stream.as_str()) {
                        Some(&id) => id,
                        None => {
                            let row = stream_row(Some(pending), frozen, kv, &m.stream)
                                .map_err(store_error)?
                                .ok_or_else(|| {
                                    Error::Unavailable(format!(
                                        "the log's index knows no stream {:?}, moved at position {}",
                                        m.stream, m.position
                                    ))
                                })?;
                            ids.insert(&m.stream, row.id);
                            row.id
                        }
                    };
                    rows.push(id);
                }
                for (m, id) in moved.iter().zip(rows) {
                    let place = Place {
                        position: m.position,
                        offset: m.offset,
                        len: m.len,
                    };
                    if pending.moved.insert(m.position, (id, m.version, place)).is_none() {
                        pending.bytes += 48;
                    }
                    if let Some(head) = pending.head.as_mut()
                        && head.place.position == m.position
                    {
                        head.place = place;
                    }
                }
                Ok(())
            });
            changed.map_err(store_error)??;
        }
        let mut segments = self.segments.write().unwrap_or_else(|e| e.into_inner());
        if let Some(segment) = segments
            .iter_mut()
            .find(|s| s.first_position == first_position)
        {
            segment.file = file;
        }
        drop(segments);
        // The cursor's offset may lie in the old file.
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !removed.is_empty() {
            let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
            let recent = &mut *recent;
            for record in recent.records.iter_mut() {
                if removed.binary_search(&record.position).is_ok() {
                    recent.bytes -= record.content.len();
                    record.content = Vec::new();
                }
            }
        }
        Ok(())
    }

    /// Writes everything indexed so far out, durably.
    pub fn flush(&self) -> Result<()> {
        match self.layered() {
            Some(layered) => layered.flush().map_err(store_error),
            None => Ok(()),
        }
    }
}
