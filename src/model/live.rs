//! [`Model`]: the read model of a running node, in layers. The folds write
//! into an overlay in memory; a flusher thread writes the overlay to the
//! on-disk store as one batch, with the position, ledger digest and hash it
//! reflects, every so often or once it is big; readers see the overlay, the
//! one being written, then the store, as one consistent whole (see
//! [`crate::kv::layered`]).
//!
//! A batch is written without an fsync most of the time: the log is the
//! truth, and after a crash the model goes on from the last batch that did
//! reach the disk (at least every `durable_interval`) by replaying the log's
//! tail. Memory is the store's page cache plus at most a few overlays.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use projections::Settings;

use super::overlay::{Chain, Folding, Overlay};
use super::view::View;
use super::{Decoded, Error};
use crate::chain::Hash;
use crate::kv::layered::{Flushing, Layered};
use crate::kv::{Kv, KvRead};

/// How a model keeps its memory and the disk in step.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub settings: Settings,
    pub flushing: Flushing,
    /// Keep the Merkle trees as events are folded. Always on in the server:
    /// a model without them serves no tree heads or proofs. Off only to
    /// measure what keeping them costs (`benches/trees.rs`).
    pub merkle_trees: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: Settings::default(),
            flushing: Flushing {
                bytes: 16 << 20,
                interval: Duration::from_millis(1000),
                durable_interval: Duration::from_secs(2),
            },
            merkle_trees: true,
        }
    }
}

impl Options {
    /// For a replay from the start: overlays of `overlay` bytes, written as
    /// they fill up, durably at least every second: redb reuses the pages a
    /// commit frees only after a durable commit, so a replay of non-durable
    /// commits leaves a file twice the size of its rows (and is slower for the
    /// fresh pages it writes).
    pub fn bulk(settings: Settings, overlay: usize) -> Options {
        Options {
            settings,
            flushing: Flushing {
                bytes: overlay,
                interval: Duration::from_secs(3600),
                durable_interval: Duration::from_secs(1),
            },
            merkle_trees: true,
        }
    }
}

/// The read model of a node. The flusher stops when it is closed or dropped.
pub struct Model {
    layered: Layered<Overlay>,
    settings: Settings,
    merkle_trees: bool,
    applied: AtomicU64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("store", &self.layered)
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Starts a model on `kv`, which holds everything up to `tip`.
    pub fn start(
        kv: Arc<dyn Kv>,
        tip: Chain,
        log_id: Option<Hash>,
        options: Options,
    ) -> Result<Model, Error> {
        let first = Overlay::after(tip, log_id);
        let layered = Layered::start(kv, first, options.flushing, "hookledger-model-flush")?;
        Ok(Model {
            layered,
            settings: options.settings,
            merkle_trees: options.merkle_trees,
            applied: AtomicU64::new(tip.position()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The position of the last event folded.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// The chain after the last event folded.
    pub fn tip(&self) -> Chain {
        self.layered.layers().active().tip
    }

    /// Folds `events`, which must follow the last one folded without a gap,
    /// extending the ledger digest over them. On an error the model takes no
    /// more events: it may hold part of the batch.
    pub fn apply(&self, events: &[Decoded]) -> Result<(), Error> {
        self.fold(events, None)
    }

    /// [`Model::apply`] for events whose chain the caller folded already,
    /// on another thread: `tip` is the chain after the last of them.
    pub fn apply_chained(&self, events: &[Decoded], tip: Chain) -> Result<(), Error> {
        self.fold(events, Some(tip))
    }

    fn fold(&self, events: &[Decoded], chained: Option<Chain>) -> Result<(), Error> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let (settings, trees) = (self.settings, self.merkle_trees);
        let folded = self.layered.change(|active, frozen, kv| {
            let expected = active.tip.position() + 1;
            if first.recorded.position != expected {
                return Err(Error::Gap {
                    position: first.recorded.position,
                    expected,
                });
            }
            if let Some(tip) = chained.filter(|t| t.position() != last.recorded.position) {
                return Err(Error::Gap {
                    position: last.recorded.position,
                    expected: tip.position(),
                });
            }
            if first.recorded.position == 1 {
                active.log_id = Some(first.hash);
            }
            let mut tip = active.tip;
            let mut rows = Folding {
                overlay: active,
                frozen,
                kv,
                hash: [0; 32],
                trees,
            };
            let ledger_tree = super::tables::key::ledger_tree();
            let result = events.iter().try_for_each(|event| {
                if chained.is_none() {
                    tip.fold(event.recorded.position, &event.hash)?;
                }
                rows.hash = event.hash;
                rows.tree_append(&ledger_tree)?;
                projections::apply(&mut rows, &event.recorded, &settings)
            });
            let tip = chained.unwrap_or(tip);
            rows.overlay.tip = tip;
            result.map(|()| tip)
        })?;
        match folded {
            Ok(tip) => {
                self.applied.store(tip.position(), Ordering::Release);
                Ok(())
            }
            // Part of the batch may be in the overlay: take no more.
            Err(e @ Error::Gap { .. }) => Err(e),
            Err(e) => {
                self.layered.fail(e.to_string());
                Err(e)
            }
        }
    }

    /// A consistent view for reading.
    pub fn view(&self) -> View {
        View::new(self.layered.layers(), self.applied())
    }

    /// Writes everything folded so far to the store and syncs it.
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.layered.flush()?)
    }

    /// Stops the flusher after a last, durable write.
    pub fn close(&self) -> Result<(), Error> {
        Ok(self.layered.close()?)
    }

    /// Why the model takes no more events, if it does not.
    pub fn failed(&self) -> Option<String> {
        self.layered.failed()
    }

    /// A snapshot of the store alone: what was written out so far.
    pub fn snapshot(&self) -> Result<Arc<dyn KvRead>, Error> {
        Ok(self.layered.stored()?)
    }
}
