//! Opening the store a command works on: the embedded log in the data
//! directory, or a PostgreSQL database or KurrentDB ledger shared with other
//! processes.

use std::sync::Arc;

use crate::cli::{Backend, Error, StoreArgs};
use crate::store::EventStore;
use crate::store::embedded::{self, EmbeddedStore};
use crate::store::postgres::{self, PostgresStore};

/// The log for writing. The embedded log takes one process at a time; a
/// PostgreSQL database any number.
pub async fn store_for_writing(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    try_store_for_writing(args)
        .await
        .map_err(|e| Error::setup(&format!("cannot open the ledger in {}", where_(args)), e))
}

/// The log for writing, with the store's own error, so a caller can tell that
/// another process holds it.
pub async fn try_store_for_writing(
    args: &StoreArgs,
) -> Result<Arc<dyn EventStore>, crate::store::Error> {
    match args.backend {
        Backend::Embedded => {
            let options = embedded::Options {
                claims_of: Some(crate::ledger::store_claims_of(args.settings())),
                index_cache: args.log_cache(),
                ..embedded::Options::default()
            };
            Ok(Arc::new(EmbeddedStore::open_with(&args.data, options)?))
        }
        Backend::Postgres => {
            // The data directory still holds this process's read model and socket.
            crate::files::create_dir_all(&args.data).map_err(|e| {
                crate::store::Error::io(format!("creating {}", args.data.display()), e)
            })?;
            let store = PostgresStore::open(postgres_url(args)?, postgres::Options::default());
            Ok(Arc::new(store.await?))
        }
        Backend::Kurrentdb => kurrentdb(args, true).await,
    }
}

/// The log for reading, next to running servers if there are any.
pub async fn store_for_reading(args: &StoreArgs) -> Result<Arc<dyn EventStore>, Error> {
    let store: Result<Arc<dyn EventStore>, _> = match args.backend {
        Backend::Embedded => EmbeddedStore::open_read_only(&args.data).map(|s| Arc::new(s) as _),
        Backend::Postgres => {
            let options = postgres::Options {
                follow: false,
                pool_size: 4,
                ..postgres::Options::default()
            };
            match postgres_url(args) {
                Ok(url) => PostgresStore::open(url, options)
                    .await
                    .map(|s| Arc::new(s) as _),
                Err(e) => Err(e),
            }
        }
        Backend::Kurrentdb => kurrentdb(args, false).await,
    };
    store.map_err(|e| Error::setup(&format!("cannot read the ledger in {}", where_(args)), e))
}

fn postgres_url(args: &StoreArgs) -> Result<&str, crate::store::Error> {
    args.postgres_url
        .as_ref()
        .map(|url| url.0.as_str())
        .ok_or_else(|| {
            crate::store::Error::Unavailable(
                "--backend postgres needs --postgres-url or HOOKLEDGER_POSTGRES_URL".into(),
            )
        })
}

/// The KurrentDB ledger; `follow` for a process that appends and serves.
/// Its positions are kept in the data directory.
#[cfg(feature = "kurrentdb")]
async fn kurrentdb(
    args: &StoreArgs,
    follow: bool,
) -> Result<Arc<dyn EventStore>, crate::store::Error> {
    use crate::store::kurrentdb::{KurrentDbStore, Options};
    let url = args.kurrentdb_url.as_ref().ok_or_else(|| {
        crate::store::Error::Unavailable(
            "--backend kurrentdb needs --kurrentdb-url or HOOKLEDGER_KURRENTDB_URL".into(),
        )
    })?;
    let options = Options {
        prefix: args.kurrentdb_prefix.clone(),
        follow,
        max_append_bytes: args.kurrentdb_max_append_bytes,
        ..Options::new(&args.data)
    };
    Ok(Arc::new(KurrentDbStore::open(&url.0, options).await?))
}

#[cfg(not(feature = "kurrentdb"))]
async fn kurrentdb(_: &StoreArgs, _: bool) -> Result<Arc<dyn EventStore>, crate::store::Error> {
    Err(crate::store::Error::Unavailable(
        "this hookledger was built without KurrentDB support; build it with `--features kurrentdb`"
            .into(),
    ))
}

/// Names the ledger in messages, without the URL's password.
fn where_(args: &StoreArgs) -> String {
    match args.backend {
        Backend::Embedded => args.data.display().to_string(),
        Backend::Postgres => "the PostgreSQL database".to_owned(),
        Backend::Kurrentdb => format!("KurrentDB under the prefix {}", args.kurrentdb_prefix),
    }
}
