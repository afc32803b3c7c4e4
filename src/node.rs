//! One running ledger: the store, the projector that feeds the read model from
//! it, and the write path on top. The server and every command open one here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ledger::Ledger;
use crate::projector::{Projector, Start};
use crate::snapshot::Snapshot;
use crate::store::EventStore;
use crate::store::memory::MemoryStore;

#[derive(Debug, Clone)]
pub struct Node {
    pub store: Arc<dyn EventStore>,
    pub projector: Arc<Projector>,
    pub ledger: Arc<Ledger>,
    /// Where snapshots go; `None` for a store that lives in memory.
    pub snapshot_file: Option<PathBuf>,
}

impl Node {
    /// Opens a node on `store`, loading the snapshot at `snapshot_file` if it
    /// matches the log, and starts the projector. Call [`Node::ready`] to wait
    /// until the model has caught up.
    pub async fn start(store: Arc<dyn EventStore>, snapshot_file: Option<PathBuf>) -> Node {
        let loaded = snapshot_file.as_deref().map(Snapshot::load);
        Self::start_loaded(store, snapshot_file, loaded).await
    }

    /// Opens the store with `open_store` while the snapshot in `snapshot_file`
    /// loads on another thread, then starts the node on both. The two are most
    /// of a restart, and neither needs the other until the snapshot is checked
    /// against the log.
    pub async fn open<E>(
        open_store: impl std::future::Future<Output = Result<Arc<dyn EventStore>, E>>,
        snapshot_file: PathBuf,
    ) -> Result<Node, E> {
        let file = snapshot_file.clone();
        let loading = tokio::task::spawn_blocking(move || Snapshot::load(&file));
        let store = open_store.await;
        let loaded = loading.await.unwrap_or_else(|_| {
            Err(crate::snapshot::Error::Corrupt {
                file: snapshot_file.clone(),
                reason: "loading it panicked".into(),
            })
        });
        Ok(Self::start_loaded(store?, Some(snapshot_file), Some(loaded)).await)
    }

    async fn start_loaded(
        store: Arc<dyn EventStore>,
        snapshot_file: Option<PathBuf>,
        loaded: Option<Result<Snapshot, crate::snapshot::Error>>,
    ) -> Node {
        let (projector, start) = Projector::open_loaded(store.clone(), loaded).await;
        match &start {
            Start::Snapshot { position } => {
                tracing::info!(
                    position,
                    head = store.head(),
                    "loaded the read-model snapshot"
                )
            }
            Start::Empty { reason } if store.head() > 0 => {
                tracing::warn!(%reason, head = store.head(), "rebuilding the read model from the log")
            }
            Start::Empty { .. } => {}
        }
        tokio::spawn(projector.clone().run());
        let ledger = Arc::new(Ledger::new(store.clone(), projector.clone()));
        Node {
            store,
            projector,
            ledger,
            snapshot_file,
        }
    }

    /// A node on an in-memory store, for tests.
    pub async fn in_memory() -> Node {
        Node::start(Arc::new(MemoryStore::new()), None).await
    }

    /// Waits until the read model reflects everything the log held at the call.
    pub async fn ready(&self) -> Result<(), crate::projector::Error> {
        self.projector.wait_for(self.store.head()).await
    }

    /// Saves a snapshot now, if this node keeps them.
    pub fn save_snapshot(&self) -> Result<Option<u64>, crate::snapshot::Error> {
        match &self.snapshot_file {
            Some(file) => self.projector.save(file).map(Some),
            None => Ok(None),
        }
    }
}

/// The snapshot file of a data directory.
pub fn snapshot_file(data_dir: &Path) -> PathBuf {
    crate::snapshot::path_in(data_dir)
}
