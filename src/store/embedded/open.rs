//! Opening the log for writing: the persisted index checked against the log,
//! and the log's tail after it scanned, checked and indexed.
//!
//! The index says which position it reaches, where that frame lies and the
//! hash it holds. When the frame is there with that position and hash, the
//! index belongs to this log and only the frames after it are read; anything
//! else (no index, damage, another log, a log cut back behind it) means the
//! index is set aside and the whole log scanned. A scan writes what it
//! indexes out segment by segment, so its memory does not grow with the log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::kv::layered::Memtable;
use crate::kv::{self, Kv, KvRead, WriteBatch};
use crate::store::embedded::index::{self, Head, Pending, Place};
use crate::store::embedded::segment::{self, Found, Scan, Scanned};
use crate::store::embedded::{compact, frame};
use crate::store::sequencer::{Fallback, Lookup, Sequencer, StreamTip};
use crate::store::{ClaimsOf, Error, Held, RecordedEvent, Result};

/// What an open for writing found.
#[derive(Debug)]
pub struct Opened {
    pub kv: Arc<dyn Kv>,
    /// What the scan indexed and has not written out yet.
    pub pending: Pending,
    pub scan: Scan,
}

/// Opens the index in `log_dir` and brings it up to the end of the log.
pub fn for_writing(
    log_dir: &Path,
    files: &[(u64, PathBuf)],
    claims_of: Option<ClaimsOf>,
    cache: usize,
) -> Result<Opened> {
    let marker = index::damage_marker(log_dir);
    if marker.exists() {
        let reason = std::fs::read_to_string(&marker).unwrap_or_default();
        tracing::warn!(%reason, "not using the log's index, found damaged while serving; rebuilding it from the whole log");
        set_aside(log_dir)?;
        std::fs::remove_file(&marker)
            .map_err(|e| Error::io(format!("removing {}", marker.display()), e))?;
    }
    // A compaction cut short may have moved frames the index still places
    // where they were.
    let marker = compact::marker(log_dir);
    if marker.exists() {
        tracing::warn!(
            "a compaction of the log was cut short; rebuilding the log's index from the whole log"
        );
        set_aside(log_dir)?;
        std::fs::remove_file(&marker)
            .map_err(|e| Error::io(format!("removing {}", marker.display()), e))?;
    }
    let (kv, stored) = open_index(log_dir, cache)?;
    let resume = match trusted(&stored, files) {
        Ok(resume) => resume,
        Err(reason) => {
            tracing::warn!(%reason, "not using the log's index; rebuilding it from the whole log");
            drop(kv);
            set_aside(log_dir)?;
            return for_writing(log_dir, files, claims_of, cache);
        }
    };
    let lookup = Arc::new(Stored(RwLock::new(kv.read().map_err(index_error)?)));
    let mut pending = Pending::default();
    pending.resume(stored.next_id, resume.as_ref().map(|r| r.head));
    let mut scan = Scan::default();
    let sequencer = match &resume {
        Some(r) => {
            for (first, path) in &files[..=r.file] {
                scan.segments.push(Scanned {
                    path: path.clone(),
                    first_position: *first,
                    end: r.head.place.offset + r.head.place.len,
                    crc: 0,
                });
            }
            Sequencer::restore(
                Default::default(),
                r.head.place.position,
                r.clock,
                Default::default(),
                claims_of,
            )
        }
        None => Sequencer::with_claims_of(claims_of),
    };
    scan.sequencer = sequencer.with_fallback(Fallback(lookup.clone()));
    if let Some(r) = &resume {
        tracing::debug!(
            position = r.head.place.position,
            "the log's index holds the log up to here"
        );
        // Only the segments from the one the index ends in are read.
        scan.segments.truncate(r.file + 1);
        // The last segment is checked whole: its frames before the index's
        // end too, since they are the ones a crash or a bad disk touched last.
        // Sealed segments are checked on every read and by `audit verify`.
        if r.file + 1 == files.len() {
            let (first, path) = &files[r.file];
            segment::check_last(*first, path)?;
        }
    }
    let mut indexer = Indexer {
        kv: kv.clone(),
        lookup,
        pending,
    };
    let scan = segment::scan_files(files, scan, &mut indexer)?;
    Ok(Opened {
        kv,
        pending: indexer.pending,
        scan,
    })
}

/// Where the index ends in the log, when it can be trusted.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// The segment file its head lies in.
    file: usize,
    head: Head,
    /// The time stamped on the head's event.
    clock: i64,
}

/// Whether the index belongs to this log as it stands; where it ends if it does.
fn trusted(stored: &index::Stored, files: &[(u64, PathBuf)]) -> Result<Option<Resume>, String> {
    if stored.format.is_none() {
        return Ok(None);
    }
    if !index::current_format(stored) {
        return Err(format!(
            "it is of format {:?}, not this build's",
            stored.format
        ));
    }
    let Some(head) = stored.head else {
        return Ok(None);
    };
    let position = head.place.position;
    let file = files
        .partition_point(|(first, _)| *first <= position)
        .checked_sub(1)
        .ok_or_else(|| format!("no segment holds position {position}, where it ends"))?;
    let path = &files[file].1;
    let mut bytes = vec![0; head.place.len as usize];
    let read = std::fs::File::open(path)
        .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, head.place.offset));
    read.map_err(|e| format!("cannot read the frame of position {position}: {e}"))?;
    let (event, _) = frame::read(&bytes)
        .map_err(|e| format!("the frame of position {position} does not check out: {e}"))?;
    if event.position != position || event.hash != head.hash {
        return Err(format!(
            "the log at position {position} is not the event it indexed"
        ));
    }
    Ok(Some(Resume {
        file,
        head,
        clock: event.recorded_at,
    }))
}

/// Opens the index file; one that does not open is set aside for a new one.
fn open_index(log_dir: &Path, cache: usize) -> Result<(Arc<dyn Kv>, index::Stored)> {
    match index::open_file(log_dir, cache) {
        Ok(opened) => Ok(opened),
        Err(kv::Error::Locked(path)) => Err(Error::Unavailable(format!(
            "{} is open in another process",
            path.display()
        ))),
        Err(e) => {
            tracing::warn!(error = %e, "the log's index does not open; rebuilding it from the whole log");
            set_aside(log_dir)?;
            index::open_file(log_dir, cache).map_err(index_error)
        }
    }
}

/// Moves the index file out of the way, keeping it for inspection.
fn set_aside(log_dir: &Path) -> Result<()> {
    let file = index::file_in(log_dir);
    let aside = file.with_extension("redb.set-aside");
    match std::fs::rename(&file, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("setting {} aside", file.display()), e)),
    }
    Ok(())
}

fn index_error(e: kv::Error) -> Error {
    Error::Unavailable(format!("the log's index: {e}"))
}

/// Tips and claims from the index as last written, for the scan's checks.
struct Stored(RwLock<Arc<dyn KvRead>>);

impl Stored {
    fn now(&self) -> Arc<dyn KvRead> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Lookup for Stored {
    fn tip(&self, stream: &str) -> Option<StreamTip> {
        index::StoredLookup(self.now()).tip(stream)
    }

    fn claim(&self, claim: &str) -> Option<Held> {
        index::StoredLookup(self.now()).claim(claim)
    }
}

/// Indexes what the scan finds, writing it out as it grows.
struct Indexer {
    kv: Arc<dyn Kv>,
    lookup: Arc<Stored>,
    pending: Pending,
}

/// A scan writes what it indexed out once it holds this much.
const WRITE_OUT: usize = 32 << 20;

impl Found for Indexer {
    fn event(&mut self, segment: &Scanned, offset: u64, len: u64, event: RecordedEvent) {
        let place = Place {
            position: event.position,
            offset,
            len,
        };
        let _ = segment;
        let stored = self.lookup.now();
        let lookup = |stream: &str| index::stored_row(stored.as_ref(), stream);
        self.pending.add(&event, place, &lookup);
    }

    fn segment_done(&mut self, _segment: &Scanned, seq: &mut Sequencer) -> Result<()> {
        for (claim, held) in seq.claims() {
            self.pending.claim(claim, held);
        }
        if self.pending.bytes() < WRITE_OUT {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        self.pending.write_out(&mut batch);
        self.kv.write(&batch, false).map_err(index_error)?;
        *self.lookup.0.write().unwrap_or_else(|e| e.into_inner()) =
            self.kv.read().map_err(index_error)?;
        self.pending = self.pending.successor();
        seq.forget();
        Ok(())
    }
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Indexer(..)")
    }
}
