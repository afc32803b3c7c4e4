//! Erasure's second half: taking erased bodies off the disk, and retention.
//!
//! An erasure is an event (`ContentErased`): once it is folded, no read
//! serves the bodies it covers (`model::View::servable_content`). The
//! [`Eraser`] then removes those bodies from the store
//! (`EventStore::remove_contents`): it follows the log for erasures, works out
//! the positions each one covers from the read model's indexes, and asks the
//! store to drop their content. It runs in the background of `serve`, and to
//! the end in `hookledger compact` and `hookledger erase`. What it has done is
//! kept in `DATA/erasure.json`, so a restart goes on from there; doing a
//! removal twice is harmless.
//!
//! [`Retention`] is `serve --retention`: now and then it records, for each
//! organization with bodies older than the retention time, an erasure of the
//! bodies recorded before then, which the eraser then removes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use projections::event::{ContentErased, ErasureReason};
use projections::{Command, Event, Timestamp};
use serde::{Deserialize, Serialize};

use crate::ledger::{Context, Ledger};
use crate::projector::Projector;
use crate::store::{Batch, EventStore};

mod covers;

/// Why the eraser or the retention job stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Model(#[from] crate::model::Error),
    #[error(transparent)]
    Projector(#[from] crate::projector::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::Error),
    #[error("the eraser's state in {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("an erasure at position {position} does not decode: {reason}")]
    Decode { position: u64, reason: String },
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Erasures found in the log since the last pass.
    pub erasures: u64,
    /// Contents removed from the disk.
    pub removed: u64,
    /// The log position the pass reached.
    pub through: u64,
}

/// The eraser's progress, kept between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// Every erasure up to this position has been carried out.
    through: u64,
    /// Per organization, the position before which retention has removed
    /// what it covers.
    retained_before: BTreeMap<String, u64>,
    /// When the state was last written, if in this process.
    #[serde(skip)]
    saved_at: Option<std::time::Instant>,
}

/// Removes erased bodies from the store; see the module documentation.
#[derive(Debug)]
pub struct Eraser {
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    path: PathBuf,
    state: tokio::sync::Mutex<State>,
}

/// Positions gathered before they are handed to the store.
const BATCH: usize = 1 << 20;

/// How long the background eraser waits after carrying out erasures before
/// it looks again: erased bytes leave the disk within about this much more
/// than a rewrite takes, and a steady stream of erasures seals the embedded
/// log's active segment at most this often.
pub const SETTLE: Duration = Duration::from_secs(10);

/// The longest the background eraser waits between passes while the log
/// grows: it looks at most this often, not on every append.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How often a pass without erasures writes the eraser's state.
const SAVE_EVERY: Duration = Duration::from_secs(30);

impl Eraser {
    /// The eraser of the ledger whose data directory is `data_dir`.
    pub fn open(
        store: Arc<dyn EventStore>,
        projector: Arc<Projector>,
        data_dir: &Path,
    ) -> Result<Eraser, Error> {
        let path = data_dir.join("erasure.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                return Err(Error::State {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Eraser {
            store,
            projector,
            path,
            state: tokio::sync::Mutex::new(state),
        })
    }

    /// Carries out every erasure up to the log's head: removes from the
    /// store the content of every body they cover.
    pub async fn pass(&self) -> Result<Pass, Error> {
        let mut state = self.state.lock().await;
        let head = self.store.sync_head().await?;
        self.projector.wait_for(head).await?;
        let erasures = self.erasures_between(state.through, head).await?;
        let mut pass = Pass {
            erasures: erasures.len() as u64,
            removed: 0,
            through: head,
        };
        if !self.store.removes_contents() {
            // Nothing to take off: every read hides the erased bodies.
            if !erasures.is_empty() {
                tracing::warn!(
                    erasures = erasures.len(),
                    "this store cannot remove erased bodies from its files; every read hides them"
                );
            }
            state.through = head;
            self.save_if_due(&mut state, !erasures.is_empty())?;
            return Ok(pass);
        }
        // Every erasure's positions together, so that one rewrite of a
        // segment (and, on the embedded log, one seal of the active segment)
        // serves them all; in batches of at most `BATCH` positions.
        let mut positions = Vec::new();
        for (position, erasure) in &erasures {
            let view = self.projector.view()?;
            positions.extend(
                covers::positions(
                    &view,
                    self.store.as_ref(),
                    erasure,
                    *position,
                    &mut state.retained_before,
                )
                .await?,
            );
            if positions.len() >= BATCH {
                pass.removed += self.remove(&mut positions).await?;
            }
        }
        pass.removed += self.remove(&mut positions).await?;
        state.through = head;
        self.save_if_due(&mut state, !erasures.is_empty())?;
        Ok(pass)
    }

    /// Removes the content at `positions`, and empties it.
    async fn remove(&self, positions: &mut Vec<u64>) -> Result<u64, Error> {
        if positions.is_empty() {
            return Ok(0);
        }
        positions.sort_unstable();
        positions.dedup();
        let removed = self.store.remove_contents(positions).await?;
        positions.clear();
        Ok(removed)
    }

    /// Runs [`Eraser::pass`] whenever the log grows, until the task is
    /// dropped; after a pass that carried out erasures it waits
    /// [`SETTLE`] before the next, so that a stream of erasures is taken
    /// off the disk in a few large rewrites rather than many small ones. A
    /// failed pass is logged and tried again later: erased bodies are never
    /// served meanwhile.
    pub async fn follow(self: Arc<Self>) {
        loop {
            let seen = match self.pass().await {
                Ok(pass) => {
                    if pass.erasures > 0 {
                        tokio::time::sleep(SETTLE).await;
                    }
                    if pass.removed > 0 {
                        tracing::info!(
                            erasures = pass.erasures,
                            removed = pass.removed,
                            through = pass.through,
                            "erased bodies removed from the disk"
                        );
                    }
                    pass.through
                }
                Err(e) => {
                    tracing::warn!(error = %e, "removing erased bodies failed; trying again");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            tokio::time::sleep(LOOK_EVERY).await;
            if self.store.wait_beyond(seen).await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// The erasures at positions in `(after, head]`, in position order.
    async fn erasures_between(
        &self,
        after: u64,
        head: u64,
    ) -> Result<Vec<(u64, ContentErased)>, Error> {
        let mut found = Vec::new();
        let mut from = after + 1;
        let mut spent = Batch::default();
        while from <= head {
            let batch = self.store.read_batch(from, 8192, spent).await?;
            let Some(last) = batch.last_position() else {
                break;
            };
            for event in batch.iter() {
                let event = event?;
                if event.position > head || event.event_type != "ContentErased" {
                    continue;
                }
                let decoded =
                    Event::decode(event.event_type, event.schema_version, event.data, None)
                        .map_err(|e| Error::Decode {
                            position: event.position,
                            reason: e.to_string(),
                        })?;
                if let Event::ContentErased(erasure) = decoded {
                    found.push((event.position, erasure));
                }
            }
            from = last + 1;
            spent = batch;
        }
        Ok(found)
    }

    /// Writes the state after a pass that carried out erasures, and
    /// otherwise at most every [`SAVE_EVERY`]: what a pass without erasures
    /// moves on is only where the next start begins to read, and reading a
    /// little more then costs less than two fsyncs on every pass.
    fn save_if_due(&self, state: &mut State, erased: bool) -> Result<(), Error> {
        let due = erased || state.saved_at.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        if due {
            self.save(state)?;
            state.saved_at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Writes the state beside the old one and renames it over, so a crash
    /// leaves one or the other.
    fn save(&self, state: &State) -> Result<(), Error> {
        let failed = |e: std::io::Error| Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let bytes = serde_json::to_vec(state).map_err(|e| Error::State {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        let aside = self.path.with_extension("json.new");
        let mut file = crate::files::create(&aside).map_err(failed)?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        std::fs::rename(&aside, &self.path).map_err(failed)?;
        if let Some(dir) = self.path.parent() {
            crate::files::sync_dir(dir).map_err(failed)?;
        }
        Ok(())
    }
}

/// `serve --retention`: erases the bodies older than the retention time,
/// for each organization, once in a while.
#[derive(Debug)]
pub struct Retention {
    ledger: Arc<Ledger>,
    store: Arc<dyn EventStore>,
    projector: Arc<Projector>,
    /// How long bodies are kept.
    keep: Duration,
}

impl Retention {
    pub fn new(
        ledger: Arc<Ledger>,
        store: Arc<dyn EventStore>,
        projector: Arc<Projector>,
        keep: Duration,
    ) -> Retention {
        Retention {
            ledger,
            store,
            projector,
            keep,
        }
    }

    /// How often the job looks: a hundredth of the retention time, at least
    /// a second and at most an hour.
    pub fn interval(&self) -> Duration {
        (self.keep / 100).clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// Records a retention erasure for each organization that holds bodies
    /// recorded before `now - keep` not yet covered by one; returns how many
    /// it recorded.
    pub async fn pass(&self, now: Timestamp) -> Result<u64, Error> {
        let keep = i64::try_from(self.keep.as_micros()).unwrap_or(i64::MAX);
        let before = Timestamp::from_micros(now.micros().saturating_sub(keep));
        let boundary = covers::first_at_or_after(self.store.as_ref(), before).await?;
        if boundary <= 1 {
            return Ok(0);
        }
        let view = self.projector.view()?;
        let mut recorded = 0;
        for org in covers::organizations(&view)? {
            if !covers::holds_bodies_before(&view, self.store.as_ref(), &org, boundary).await? {
                continue;
            }
            let command = Command::EraseContent {
                organization_id: org.clone(),
                event_id: None,
                recorded_before: Some(before),
                reason: ErasureReason::Retention,
            };
            let ctx = Context {
                organization_id: org,
                ..Context::default()
            };
            self.ledger.execute(command, &ctx, None).await?;
            recorded += 1;
        }
        Ok(recorded)
    }

    /// Runs [`Retention::pass`] every [`Retention::interval`] until the task
    /// is dropped.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Timestamp::from_datetime(chrono::Utc::now());
            match self.pass(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(organizations = n, "retention erased old bodies"),
                Err(e) => tracing::warn!(error = %e, "retention failed; trying again later"),
            }
        }
    }
}
