//! Opening the store a command works on.

use std::sync::Arc;

use crate::cli::{Error, StoreArgs};
use crate::node::{Node, snapshot_file};
use crate::store::EventStore;
use crate::store::embedded::EmbeddedStore;

/// The log for writing: one process at a time holds it.
pub fn store_for_writing(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    let store = EmbeddedStore::open(&args.data)
        .map_err(|e| Error::setup(&format!("cannot open the ledger in {}", args.data.display()), e))?;
    Ok(Arc::new(store))
}

/// The log for reading, next to a running server if there is one.
pub fn store_for_reading(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    let store = EmbeddedStore::open_read_only(&args.data)
        .map_err(|e| Error::setup(&format!("cannot read the ledger in {}", args.data.display()), e))?;
    Ok(Arc::new(store))
}

/// A node on the writable store with its read model caught up.
pub async fn node_for_writing(args: &StoreArgs) -> Result<Node, Error> {
    let store = store_for_writing(args)?;
    let node = Node::start(store, Some(snapshot_file(&args.data))).await;
    node.ready()
        .await
        .map_err(|e| Error::setup("cannot load the read model", e))?;
    Ok(node)
}
