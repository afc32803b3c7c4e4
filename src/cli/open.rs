//! Opening the store a command works on.

use std::sync::Arc;

use crate::cli::{Error, StoreArgs};
use crate::store::EventStore;
use crate::store::embedded::EmbeddedStore;

/// The log for writing: one process at a time holds it.
pub fn store_for_writing(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    try_store_for_writing(args).map_err(|e| {
        Error::setup(
            &format!("cannot open the ledger in {}", args.data.display()),
            e,
        )
    })
}

/// The log for writing, with the store's own error, so a caller can tell that
/// another process holds it.
pub fn try_store_for_writing(args: &StoreArgs) -> Result<Arc<dyn EventStore>, crate::store::Error> {
    Ok(Arc::new(EmbeddedStore::open(&args.data)?))
}

/// The log for reading, next to a running server if there is one.
pub fn store_for_reading(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    let store = EmbeddedStore::open_read_only(&args.data).map_err(|e| {
        Error::setup(
            &format!("cannot read the ledger in {}", args.data.display()),
            e,
        )
    })?;
    Ok(Arc::new(store))
}
