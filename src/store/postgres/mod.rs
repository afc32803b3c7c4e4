//! The PostgreSQL backend: the scale-out store, shared by several server processes.
//!
//! Events live in one table, unique on `(stream, version)`, with a global
//! `position` that is gapless and in commit order: every append transaction first
//! takes the one row of `hookledger_head` `FOR UPDATE`, so positions are handed
//! out by one transaction at a time and each commits before the next can pick
//! its own. A reader of `position > last` can therefore never see N+1 before N
//! (the "skipped events" problem of a sequence-based log). Appends from one
//! process are group-committed by [`writer`]: one transaction, one lock and one
//! commit for every append that queued while the previous batch ran, each still
//! checked exactly against its stream's expected version and claims.
//!
//! Other processes' appends are heard through LISTEN/NOTIFY ([`follow`]), with
//! polling as a fallback, and published as this store's [`EventStore::head`].
//! The schema is created and upgraded by the embedded migrations in
//! `migrations/` ([`migrate`]) when a store opens. This module never assumes it
//! is alone on the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;

use crate::chain::Hash;
use crate::store::{
    Appended, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Result, check_append,
};

mod follow;
mod migrate;
mod tail;
mod tls;
mod writer;

pub use migrate::MIGRATIONS;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections in the pool for reads; the writer and the listener take one
    /// more each.
    pub pool_size: usize,
    /// How often the head is polled in case a notification was missed.
    pub poll_interval: Duration,
    /// Take appends and follow other processes' appends. Off for commands that
    /// only read: no writer, no listener, and the head is the one read at open.
    pub follow: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: 16,
            poll_interval: Duration::from_millis(500),
            follow: true,
        }
    }
}

/// A log in a PostgreSQL database.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    head: Arc<watch::Sender<u64>>,
    tail: Arc<tail::Tail>,
    requests: Mutex<Option<mpsc::UnboundedSender<writer::Request>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<writer::Counters>,
}

/// The name of the channel appends are announced on; the payload is the new head.
pub const CHANNEL: &str = "hookledger_events";

impl PostgresStore {
    /// Connects to `url` (a `postgres://` URL or a libpq key=value string,
    /// with `sslmode` and `sslrootcert` as libpq reads them: see [`tls`]),
    /// applies pending migrations, reads the head and, with `options.follow`,
    /// starts the writer and the follower.
    pub async fn open(url: &str, options: Options) -> Result<PostgresStore> {
        let connect = tls::Connect::parse(url)?;
        let manager = Manager::from_config(
            connect.config.clone(),
            connect.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1) + 1)
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot build the connection pool: {e}")))?;
        migrate::run(&pool).await?;
        let head = Arc::new(watch::Sender::new(read_head(&pool).await?));
        let stats = Arc::new(writer::Counters::default());
        let tail = Arc::new(tail::Tail::default());
        let store = PostgresStore {
            pool: pool.clone(),
            head: head.clone(),
            tail: tail.clone(),
            requests: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            stats: stats.clone(),
        };
        if options.follow {
            let (requests, receiver) = mpsc::unbounded_channel();
            let writer = writer::Writer::new(pool.clone(), head.clone(), tail, stats);
            let mut tasks = store.tasks();
            tasks.push(tokio::spawn(writer.run(receiver)));
            tasks.push(tokio::spawn(follow::listen(
                connect,
                pool.clone(),
                head.clone(),
            )));
            tasks.push(tokio::spawn(follow::poll(
                pool,
                head,
                options.poll_interval,
            )));
            drop(tasks);
            *store.requests_sender() = Some(requests);
        }
        Ok(store)
    }

    /// Appends acknowledged, and the transactions that committed them.
    pub fn stats(&self) -> crate::store::CommitStats {
        self.stats.get()
    }

    /// Stops taking appends and following; reads keep working.
    pub fn close(&self) {
        self.requests_sender().take();
        for task in self.tasks().drain(..) {
            task.abort();
        }
        // Wake waiters: nothing more will be heard.
        self.head.send_modify(|_| {});
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn requests_sender(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<writer::Request>>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Raises the published head to `position` if it is beyond it.
    fn heard(&self, position: u64) {
        raise(&self.head, position);
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl EventStore for PostgresStore {
    #[tracing::instrument(level = "debug", skip(self, events, claims), fields(events = events.len()))]
    async fn append_claimed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        claims: Vec<crate::store::Claim>,
    ) -> Result<Appended> {
        check_append(stream, &events)?;
        let (reply, answer) = oneshot::channel();
        let request = writer::Request {
            stream: stream.to_owned(),
            expected,
            events,
            claims,
            reply,
        };
        let sent = match self.requests_sender().as_ref() {
            Some(requests) => requests.send(request).is_ok(),
            None => false,
        };
        if !sent {
            return Err(Error::Unavailable(
                "the PostgreSQL store is closed or opened for reading only".into(),
            ));
        }
        answer
            .await
            .map_err(|_| Error::Unavailable("the PostgreSQL writer stopped".into()))?
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_stream(&self, stream: &str, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        // No append takes a name with a NUL (`check_append`), and a text
        // parameter cannot carry one: such a stream is empty, as elsewhere.
        if max == 0 || stream.contains('\0') {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT e.position, stream, version, event_type, schema_version, recorded_at, \
                 data, metadata, prev_hash, hash, c.content FROM hookledger_events e \
                 LEFT JOIN hookledger_contents c ON c.position = e.position \
                 WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3",
            )
            .await
            .map_err(|e| db_error("preparing a stream read", e))?;
        let rows = client
            .query(&statement, &[&stream, &to_i64(from), &limit(max)])
            .await
            .map_err(|e| db_error("reading a stream", e))?;
        let events = rows.iter().map(row_to_event).collect::<Result<Vec<_>>>()?;
        if let Some(last) = events.iter().map(|e| e.position).max() {
            self.heard(last);
        }
        Ok(events)
    }

    fn removes_contents(&self) -> bool {
        true
    }

    #[tracing::instrument(level = "debug", skip_all, fields(positions = positions.len()))]
    async fn remove_contents(&self, positions: &[u64]) -> Result<u64> {
        if positions.is_empty() {
            return Ok(0);
        }
        let positions: Vec<i64> = positions.iter().map(|&p| to_i64(p)).collect();
        let client = self.client().await?;
        let removed = client
            .execute(
                "DELETE FROM hookledger_contents WHERE position = ANY($1)",
                &[&positions],
            )
            .await
            .map_err(|e| db_error("removing contents", e))?;
        let held: Vec<u64> = positions.iter().map(|&p| p as u64).collect();
        self.tail.remove_contents(&held);
        Ok(removed)
    }

    #[tracing::instrument(level = "debug", skip(self))]
    async fn read_all(&self, from: u64, max: usize) -> Result<Vec<RecordedEvent>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(events) = self.tail.read(from.max(1), max, self.head()) {
            return Ok(events);
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT e.position, stream, version, event_type, schema_version, recorded_at, \
                 data, metadata, prev_hash, hash, c.content FROM hookledger_events e \
                 LEFT JOIN hookledger_contents c ON c.position = e.position \
                 WHERE e.position >= $1 ORDER BY e.position LIMIT $2",
            )
            .await
            .map_err(|e| db_error("preparing a log read", e))?;
        let rows = client
            .query(&statement, &[&to_i64(from.max(1)), &limit(max)])
            .await
            .map_err(|e| db_error("reading the log", e))?;
        let events = rows.iter().map(row_to_event).collect::<Result<Vec<_>>>()?;
        if let Some(last) = events.last() {
            self.heard(last.position);
        }
        self.tail.extend(&events);
        Ok(events)
    }

    async fn wait_beyond(&self, after: u64) -> Result<u64> {
        let mut head = self.head.subscribe();
        loop {
            let now = *head.borrow_and_update();
            if now > after {
                return Ok(now);
            }
            if self.requests_sender().is_none() {
                return Err(Error::Unavailable(
                    "the PostgreSQL store follows no more appends (closed or read-only)".into(),
                ));
            }
            head.changed()
                .await
                .map_err(|_| Error::Unavailable("store dropped".into()))?;
        }
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn commit_stats(&self) -> Option<crate::store::CommitStats> {
        Some(self.stats())
    }

    async fn sync_head(&self) -> Result<u64> {
        let head = read_head(&self.pool).await?;
        self.heard(head);
        Ok(self.head())
    }
}

/// The head as the database holds it now.
async fn read_head(pool: &Pool) -> Result<u64> {
    let client = pool.get().await.map_err(pool_error)?;
    let row = client
        .query_one("SELECT position FROM hookledger_head", &[])
        .await
        .map_err(|e| db_error("reading the head", e))?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn raise(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|h| {
        if position > *h {
            *h = position;
            true
        } else {
            false
        }
    });
}

fn row_to_event(row: &tokio_postgres::Row) -> Result<RecordedEvent> {
    let position = row.get::<_, i64>(0) as u64;
    let hash = |column: usize, name: &str| -> Result<Hash> {
        let bytes: &[u8] = row.get(column);
        bytes.try_into().map_err(|_| Error::Corrupt {
            file: "hookledger_events".into(),
            offset: 0,
            position,
            reason: format!("{name} is {} bytes, not 32", bytes.len()),
        })
    };
    Ok(RecordedEvent {
        position,
        stream: row.get(1),
        version: row.get::<_, i64>(2) as u64,
        event_type: row.get(3),
        schema_version: row.get::<_, i32>(4) as u32,
        recorded_at: row.get(5),
        data: row.get(6),
        metadata: row.get(7),
        prev_hash: hash(8, "prev_hash")?,
        hash: hash(9, "hash")?,
        content: row.get::<_, Option<Vec<u8>>>(10).unwrap_or_default(),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

/// A driver error as the store's own: the outcome of a failed write is unknown.
fn db_error(context: &str, e: tokio_postgres::Error) -> Error {
    Error::io(context, std::io::Error::other(e))
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    Error::Unavailable(format!("no PostgreSQL connection: {}", with_causes(&e)))
}

/// An error and the errors beneath it, so that a failed connection says why
/// (refused, a certificate not trusted, a bad password).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = inner.source();
    }
    text
}

/// Parameters for a statement, as the driver takes them.
type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// Claims are keyed by their SHA-256, so any claim fits the index.
fn claim_key(claim: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(claim.as_bytes()).to_vec()
}
