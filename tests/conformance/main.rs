//! The backend conformance suite: every `EventStore` backend must pass the same
//! checks, so the rest of hookledger can treat them as interchangeable.
//!
//! Adding a backend takes a [`Backend`] impl (how to open a fresh, empty store;
//! [`Durable`] too if it can reopen the same data) and one `conformance!` line.
//! The checks themselves live in `suite.rs`; checks that only make sense for the
//! embedded log's files live in `embedded.rs`, those of several processes
//! sharing one PostgreSQL database in `postgres_checks.rs`, and those of
//! several nodes sharing one KurrentDB ledger in `kurrentdb_checks.rs` and
//! `kurrentdb_claims.rs`. No check sleeps but to let a claim's time to live
//! pass: each waits on a condition with a deadline.

use std::path::Path;

use hookledger::store::EventStore;
use hookledger::store::embedded::{EmbeddedStore, Options};
use hookledger::store::memory::MemoryStore;
use hookledger::store::postgres::{self, PostgresStore};

mod embedded;
#[cfg(feature = "kurrentdb")]
mod kurrentdb_checks;
#[cfg(feature = "kurrentdb")]
mod kurrentdb_claims;
mod postgres_checks;
mod suite;
#[path = "../support/frames.rs"]
mod support_frames;
#[cfg(feature = "kurrentdb")]
#[path = "../support/kurrentdb.rs"]
mod support_kurrentdb;
#[path = "../support/postgres.rs"]
mod support_postgres;

/// How the suite gets stores of one backend.
trait Backend: Send + Sized {
    type Store: EventStore + 'static;

    /// The backend ready to open stores, or `None` (having said why) when it
    /// cannot run here and the check is skipped.
    async fn ready(self, _check: &str) -> Option<Self> {
        Some(self)
    }

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
            checks!($make;
                reopen_keeps_everything_and_continues,
                read_batch_after_reopen_gives_what_read_all_gives,
                claims_survive_reopen,
                an_expired_claim_is_free_again,
            );
        }
    };
}

macro_rules! checks {
    ($make:expr; common) => {
        checks!($make;
            appends_read_back_byte_for_byte,
            positions_are_gapless_in_commit_order,
            read_all_pages_in_bounded_batches,
            read_batch_gives_what_read_all_gives,
            wait_beyond_wakes_on_a_later_append,
            expected_version_is_enforced,
            malformed_appends_are_refused,
            concurrent_writers_on_one_stream_lose_nothing,
            hash_chains_link_and_recompute,
            claims_are_taken_once,
            racing_claims_have_one_winner,
            any_text_is_a_claim,
        );
    };
    ($make:expr; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let check = concat!(module_path!(), "::", stringify!($check));
                if let Some(backend) = crate::Backend::ready($make, check).await {
                    crate::suite::$check(backend).await;
                }
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
            claims_of: Some(suite::test_claims_of()),
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

/// A fresh database on the test cluster (see `tests/support/postgres.rs`).
#[derive(Debug, Default)]
struct Postgres {
    url: String,
}

impl Postgres {
    async fn open_url(url: &str) -> PostgresStore {
        let options = postgres::Options {
            pool_size: 4,
            ..postgres::Options::default()
        };
        PostgresStore::open(url, options)
            .await
            .expect("the PostgreSQL store opens")
    }
}

impl Backend for Postgres {
    type Store = PostgresStore;

    async fn ready(self, check: &str) -> Option<Self> {
        let url = support_postgres::database(check).await?;
        Some(Postgres { url })
    }

    async fn open(&mut self) -> PostgresStore {
        Self::open_url(&self.url).await
    }
}

impl Durable for Postgres {
    async fn reopen(&mut self, store: PostgresStore) -> PostgresStore {
        store.close();
        drop(store);
        Self::open_url(&self.url).await
    }
}

/// A fresh ledger prefix on KurrentDB: the test double, or the real server at
/// `HOOKLEDGER_TEST_KURRENTDB_URL` (see `tests/support/kurrentdb.rs`).
#[cfg(feature = "kurrentdb")]
#[derive(Debug)]
struct KurrentDb {
    server: Option<support_kurrentdb::Kurrent>,
    prefix: String,
    dir: tempfile::TempDir,
}

#[cfg(feature = "kurrentdb")]
impl KurrentDb {
    fn new() -> Self {
        KurrentDb {
            server: None,
            prefix: support_kurrentdb::fresh_prefix(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    async fn open_store(&self) -> hookledger::store::kurrentdb::KurrentDbStore {
        use hookledger::store::kurrentdb::{KurrentDbStore, Options};
        let url = self.server.as_ref().expect("a server").url();
        let options = Options {
            prefix: self.prefix.clone(),
            ..Options::new(self.dir.path())
        };
        KurrentDbStore::open(&url, options)
            .await
            .expect("the KurrentDB store opens")
    }
}

#[cfg(feature = "kurrentdb")]
impl Backend for KurrentDb {
    type Store = hookledger::store::kurrentdb::KurrentDbStore;

    async fn ready(mut self, _check: &str) -> Option<Self> {
        self.server = Some(support_kurrentdb::Kurrent::start().await);
        Some(self)
    }

    async fn open(&mut self) -> Self::Store {
        self.open_store().await
    }
}

#[cfg(feature = "kurrentdb")]
impl Durable for KurrentDb {
    async fn reopen(&mut self, store: Self::Store) -> Self::Store {
        store.close().await;
        drop(store);
        self.open_store().await
    }
}

conformance!(memory, Memory);
conformance!(embedded_store, Embedded::new(), durable);
conformance!(postgres_store, Postgres::default(), durable);
#[cfg(feature = "kurrentdb")]
conformance!(kurrentdb_store, KurrentDb::new(), durable);
