//! One running ledger: the store, the projector that feeds the read model
//! from it, and the write path on top. The server and every command open one
//! here.

use std::sync::Arc;

use crate::ledger::Ledger;
use crate::projector::{self, Projector, Start};
use crate::store::EventStore;
use crate::store::memory::MemoryStore;

#[derive(Debug, Clone)]
pub struct Node {
    pub store: Arc<dyn EventStore>,
    pub projector: Arc<Projector>,
    pub ledger: Arc<Ledger>,
}

impl Node {
    /// Opens a node on `store` with the read model `config` names (set aside
    /// and rebuilt if it does not match the log) and starts the projector.
    /// Call [`Node::ready`] to wait until the model has caught up.
    pub async fn start(
        store: Arc<dyn EventStore>,
        config: projector::Config,
    ) -> Result<Node, projector::Error> {
        let settings = config.options.settings;
        let payload_cache = config.payload_cache_bytes;
        let (projector, start) = Projector::open(store.clone(), config).await?;
        match &start {
            Start::Resumed { position } => tracing::info!(
                position,
                head = store.head(),
                "opened the read model; replaying the log's tail"
            ),
            Start::Fresh {
                reason: Some(reason),
            } if store.head() > 0 => {
                tracing::warn!(%reason, head = store.head(), "building the read model from the log")
            }
            Start::Fresh { .. } => {}
        }
        tokio::spawn(projector.clone().run());
        let ledger = Arc::new(Ledger::new(
            store.clone(),
            projector.clone(),
            settings,
            payload_cache,
        ));
        Ok(Node {
            store,
            projector,
            ledger,
        })
    }

    /// A node on an in-memory store and model, for tests.
    pub async fn in_memory() -> Node {
        Node::start(Arc::new(MemoryStore::new()), projector::Config::in_memory())
            .await
            .expect("an in-memory node always opens")
    }

    /// Waits until the read model reflects everything the log held at the call.
    pub async fn ready(&self) -> Result<(), projector::Error> {
        self.projector.wait_for(self.store.head()).await
    }

    /// Writes the read model out durably, so the next start replays little.
    pub fn close(&self) -> Result<(), projector::Error> {
        self.projector.close()
    }
}
