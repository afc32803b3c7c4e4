//! The backend conformance suite: every `EventStore` backend must pass the same
//! checks, so the rest of hookledger can treat them as interchangeable.
//!
//! Adding a backend takes a [`Backend`] impl (how to open a fresh, empty store;
//! [`Durable`] too if it can reopen the same data) and one `conformance!` line.
//! The checks themselves live in `suite.rs`; checks that only make sense for the
//! embedded log's files live in `embedded.rs`. No check sleeps: each waits on a
//! condition with a deadline.

use std::path::Path;

use hookledger::store::EventStore;
use hookledger::store::embedded::{EmbeddedStore, Options};
use hookledger::store::memory::MemoryStore;

mod embedded;
mod suite;

/// How the suite gets stores of one backend.
trait Backend: Send + Sized {
    type Store: EventStore + 'static;

    /// A fresh, empty store.
    async fn open(&mut self) -> Self::Store;
}

/// A backend whose data outlives its store.
trait Durable: Backend {
    /// Closes `store` cleanly and opens the same data again.
    async fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// Instantiates every check for one backend as a module of `#[tokio::test]`s.
macro_rules! conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            checks!($make; common);
        }
    };
    ($name:ident, $make:expr, durable) => {
        mod $name {
            use super::*;
            checks!($make; common);
            checks!($make; reopen_keeps_everything_and_continues);
        }
    };
}

macro_rules! checks {
    ($make:expr; common) => {
        checks!($make;
            appends_read_back_byte_for_byte,
            positions_are_gapless_in_commit_order,
            read_all_pages_in_bounded_batches,
            wait_beyond_wakes_on_a_later_append,
            expected_version_is_enforced,
            malformed_appends_are_refused,
            concurrent_writers_on_one_stream_lose_nothing,
            hash_chains_link_and_recompute,
        );
    };
    ($make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                crate::suite::$check($make).await;
            }
        )+
    };
}

#[derive(Debug)]
struct Memory;

impl Backend for Memory {
    type Store = MemoryStore;

    async fn open(&mut self) -> MemoryStore {
        MemoryStore::new()
    }
}

/// The embedded log in a temporary directory, with small segments so that
/// every check also crosses segment boundaries.
#[derive(Debug)]
struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    const SEGMENT_SIZE: u64 = 8 * 1024;

    fn new() -> Self {
        Embedded {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn open_dir(dir: &Path) -> EmbeddedStore {
        let options = Options {
            segment_size: Self::SEGMENT_SIZE,
            ..Options::default()
        };
        EmbeddedStore::open_with(dir, options).expect("the store opens")
    }
}

impl Backend for Embedded {
    type Store = EmbeddedStore;

    async fn open(&mut self) -> EmbeddedStore {
        Self::open_dir(self.dir.path())
    }
}

impl Durable for Embedded {
    async fn reopen(&mut self, store: EmbeddedStore) -> EmbeddedStore {
        store.close().await;
        drop(store);
        Self::open_dir(self.dir.path())
    }
}

conformance!(memory, Memory);
conformance!(embedded_store, Embedded::new(), durable);
