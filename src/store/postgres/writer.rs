//! Group commit for the PostgreSQL store: one task per process turns every
//! append that queued while the previous transaction ran into one transaction.
//!
//! The transaction takes the head row `FOR UPDATE` (the global write lock, held
//! by one transaction of one process at a time), reads the tips of the streams
//! and the claims the batch touches, and stages the appends in one
//! [`Staging`](crate::store::sequencer::Staging), exactly as the embedded writer
//! does: each append is checked against its own expected version and claims,
//! and a refused one leaves the others in. It then inserts the events and
//! claims, moves the head, announces it with `pg_notify` and commits. Nothing
//! is acknowledged before the commit returns; a failed commit fails every
//! append of the batch with an outcome the caller must treat as unknown.
//!
//! One append must not fail the others: when the database refuses a statement
//! of the batch before the commit (a value it will not store, a trigger, a
//! constraint), nothing was written, so the batch is split in two and each
//! half tried again, down to the append the database refuses alone, which is
//! the only one answered with the error. Failures that would fail any append
//! (a lost connection, a serialization failure, a full disk) fail the batch.
//!
//! Because the lock is taken before positions are chosen and released only by
//! the commit, transactions commit in position order: a reader can never see a
//! position before all the positions below it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, watch};

use crate::store::postgres::tail::Tail;
use crate::store::postgres::{CHANNEL, Params, claim_key, db_error, pool_error, raise};
use crate::store::sequencer::{Sequencer, StreamTip, give_back, now_micros};
use crate::store::{Appended, Error, Held, RecordedEvent, Result};

/// Event bytes one transaction takes at most; later appends wait for the next.
const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Appends one transaction takes at most.
const BATCH_APPENDS: usize = 2048;

/// One append waiting for the writer.
pub use crate::store::sequencer::Pending as Request;

#[derive(Debug, Default)]
pub struct Counters {
    appends: AtomicU64,
    batches: AtomicU64,
    /// How long each committed transaction took.
    clock: crate::store::CommitClock,
}

impl Counters {
    pub fn get(&self) -> crate::store::CommitStats {
        crate::store::CommitStats {
            appends: self.appends.load(Ordering::Relaxed),
            commits: self.batches.load(Ordering::Relaxed),
            times: self.clock.times(),
        }
    }
}

#[derive(Debug)]
pub struct Writer {
    pool: Pool,
    head: Arc<watch::Sender<u64>>,
    tail: Arc<Tail>,
    counters: Arc<Counters>,
}

impl Writer {
    pub fn new(
        pool: Pool,
        head: Arc<watch::Sender<u64>>,
        tail: Arc<Tail>,
        counters: Arc<Counters>,
    ) -> Writer {
        Writer {
            pool,
            head,
            tail,
            counters,
        }
    }

    /// Serves appends until every sender is gone.
    pub async fn run(self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut pending: Option<Request> = None;
        loop {
            let first = match pending.take() {
                Some(request) => request,
                None => match requests.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            let mut size = first.size();
            let mut batch = vec![first];
            while size < BATCH_BYTES && batch.len() < BATCH_APPENDS {
                match requests.try_recv() {
                    Ok(request) => {
                        size += request.size();
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            // Leave a too-large append for the next batch unless it is alone.
            if size > BATCH_BYTES && batch.len() > 1 {
                pending = batch.pop();
            }
            self.commit(batch).await;
        }
    }

    /// Commits `requests`, splitting the batch wherever the database refuses
    /// a statement, until every append has its own answer.
    async fn commit(&self, requests: Vec<Request>) {
        let mut batches = vec![requests];
        while let Some(mut requests) = batches.pop() {
            let started = std::time::Instant::now();
            match self.transact(&mut requests).await {
                Ok((results, records)) => {
                    self.counters.clock.record(started.elapsed());
                    self.acknowledge(requests, results, records);
                }
                Err(Failure::Refused(e)) if requests.len() > 1 => {
                    tracing::warn!(error = %e, appends = requests.len(),
                        "the database refused a statement of a batch; trying its halves apart");
                    let second = requests.split_off(requests.len() / 2);
                    batches.push(second);
                    batches.push(requests);
                }
                Err(Failure::Refused(e) | Failure::Failed(e)) => {
                    tracing::warn!(error = %e, appends = requests.len(), "a PostgreSQL append transaction failed");
                    for request in requests {
                        let _ = request.reply.send(Err(copy_error(&e)));
                    }
                }
            }
        }
    }

    /// Answers the appends of a committed transaction.
    fn acknowledge(
        &self,
        requests: Vec<Request>,
        results: Vec<Result<Appended>>,
        records: Vec<RecordedEvent>,
    ) {
        if let Some(last) = records.last() {
            // Committed: keep them for the local reader before waking it.
            let head = last.position;
            self.tail.extend(&records);
            raise(&self.head, head);
            let acknowledged = results.iter().filter(|r| r.is_ok()).count() as u64;
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .appends
                .fetch_add(acknowledged, Ordering::Relaxed);
        }
        for (request, result) in requests.into_iter().zip(results) {
            // The caller may have gone away; its append stands all the same.
            let _ = request.reply.send(result);
        }
    }

    /// Runs one transaction for `requests`; returns each append's result and the
    /// records it committed.
    async fn transact(
        &self,
        requests: &mut [Request],
    ) -> Result<(Vec<Result<Appended>>, Vec<RecordedEvent>), Failure> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| Failure::Failed(pool_error(e)))?;
        let tx = client
            .transaction()
            .await
            .map_err(failed("starting an append transaction"))?;
        let lock = tx
            .prepare_cached("SELECT position, recorded_at FROM hookledger_head FOR UPDATE")
            .await
            .map_err(failed("preparing the head lock"))?;
        let tips = tx
            .prepare_cached(
                "SELECT s.stream, e.version, e.hash FROM unnest($1::text[]) AS s(stream) \
                 CROSS JOIN LATERAL (SELECT version, hash FROM hookledger_events \
                 WHERE stream = s.stream ORDER BY version DESC LIMIT 1) e",
            )
            .await
            .map_err(failed("preparing the tip read"))?;
        let taken = tx
            .prepare_cached(
                "SELECT claim, position, expires_at FROM hookledger_claims WHERE claim_sha256 = ANY($1)",
            )
            .await
            .map_err(failed("preparing the claim read"))?;

        let mut streams: Vec<&str> = requests.iter().map(|r| r.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        let claim_keys: Vec<Vec<u8>> = requests
            .iter()
            .flat_map(|r| r.claims.iter().map(|c| claim_key(&c.name)))
            .collect();
        // One round trip: the lock first, then the reads it protects.
        let (head_row, tip_rows, claim_rows) = tokio::try_join!(
            tx.query_one(&lock, &[]),
            async { tx.query(&tips, &[&streams]).await },
            async {
                if claim_keys.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(&taken, &[&claim_keys]).await
                }
            },
        )
        .map_err(refused("locking the head"))?;
        let head = head_row.get::<_, i64>(0) as u64;
        let clock: i64 = head_row.get(1);
        let tips: HashMap<String, StreamTip> = tip_rows
            .iter()
            .map(|row| {
                let hash: &[u8] = row.get(2);
                let tip = StreamTip {
                    version: row.get::<_, i64>(1) as u64,
                    hash: hash.try_into().unwrap_or([0; 32]),
                };
                (row.get::<_, String>(0), tip)
            })
            .collect();
        let taken: HashMap<String, Held> = claim_rows
            .iter()
            .map(|row| {
                let claim: Vec<u8> = row.get(0);
                let claim = String::from_utf8(claim)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                let held = Held {
                    position: row.get::<_, i64>(1) as u64,
                    expires_at: row.get(2),
                };
                (claim, held)
            })
            .collect();
        let sequencer = Sequencer::resume(head, clock, tips, taken);
        let mut batch = sequencer.staging();
        let results = batch.stage_pending(requests, now_micros());
        let (records, staged) = batch.finish();
        let Some(last) = records.last() else {
            // Every append was refused: nothing to write.
            tx.rollback()
                .await
                .map_err(failed("ending an empty transaction"))?;
            return Ok((results, Vec::new()));
        };
        let (new_head, new_clock) = (last.position, last.recorded_at);
        let claims: Vec<(String, Held)> = staged.claims().map(|(c, h)| (c.to_owned(), h)).collect();

        let insert = tx
            .prepare_cached(
                "INSERT INTO hookledger_events (position, stream, version, event_type, \
                 schema_version, recorded_at, data, metadata, prev_hash, hash) \
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], \
                 $5::integer[], $6::bigint[], $7::bytea[], $8::bytea[], $9::bytea[], $10::bytea[])",
            )
            .await
            .map_err(failed("preparing the event insert"))?;
        let insert_contents = tx
            .prepare_cached(
                "INSERT INTO hookledger_contents (position, content) \
                 SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            )
            .await
            .map_err(failed("preparing the content insert"))?;
        let insert_claims = tx
            .prepare_cached(
                "INSERT INTO hookledger_claims (claim_sha256, claim, position, expires_at) \
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (claim_sha256) DO UPDATE \
                 SET position = EXCLUDED.position, expires_at = EXCLUDED.expires_at",
            )
            .await
            .map_err(failed("preparing the claim insert"))?;
        let move_head = tx
            .prepare_cached("UPDATE hookledger_head SET position = $1, recorded_at = $2")
            .await
            .map_err(failed("preparing the head update"))?;
        let notify = tx
            .prepare_cached("SELECT pg_notify($1, $2)")
            .await
            .map_err(failed("preparing the notification"))?;

        let columns = Columns::of(&records);
        let params = columns.params();
        let claim_columns = (
            claims.iter().map(|(c, _)| claim_key(c)).collect::<Vec<_>>(),
            claims.iter().map(|(c, _)| c.as_bytes()).collect::<Vec<_>>(),
            claims
                .iter()
                .map(|(_, h)| h.position as i64)
                .collect::<Vec<_>>(),
            claims.iter().map(|(_, h)| h.expires_at).collect::<Vec<_>>(),
        );
        let (content_positions, contents): (Vec<i64>, Vec<&[u8]>) = records
            .iter()
            .filter(|r| !r.content.is_empty())
            .map(|r| (r.position as i64, r.content.as_slice()))
            .unzip();
        let head_text = new_head.to_string();
        let (new_head_i64, channel) = (new_head as i64, CHANNEL);
        let written = tokio::try_join!(
            async {
                // The contents name their events: inserted after them.
                let events = tx.execute(&insert, &params).await?;
                if !contents.is_empty() {
                    tx.execute(&insert_contents, &[&content_positions, &contents])
                        .await?;
                }
                Ok(events)
            },
            async {
                if claims.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(
                        &insert_claims,
                        &[
                            &claim_columns.0,
                            &claim_columns.1,
                            &claim_columns.2,
                            &claim_columns.3,
                        ],
                    )
                    .await
                }
            },
            async { tx.execute(&move_head, &[&new_head_i64, &new_clock]).await },
            async { tx.query_one(&notify, &[&channel, &head_text]).await },
        )
        .map_err(refused("writing the batch"));
        if let Err(failure) = written {
            drop(tx);
            drop(params);
            drop(columns);
            drop(contents);
            // Nothing was written: the appends keep their events for another try.
            give_back(requests, &results, records);
            return Err(failure);
        }
        // A failed commit may or may not have committed: never tried again.
        tx.commit()
            .await
            .map_err(|e| Failure::Failed(db_error("committing the batch", e)))?;
        drop(params);
        drop(columns);
        drop(contents);
        Ok((results, records))
    }
}

/// The records of a batch as one array per column, for one `unnest` insert.
struct Columns<'a> {
    position: Vec<i64>,
    stream: Vec<&'a str>,
    version: Vec<i64>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    recorded_at: Vec<i64>,
    data: Vec<&'a [u8]>,
    metadata: Vec<&'a [u8]>,
    prev_hash: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of(records: &'a [RecordedEvent]) -> Columns<'a> {
        Columns {
            position: records.iter().map(|r| r.position as i64).collect(),
            stream: records.iter().map(|r| r.stream.as_str()).collect(),
            version: records.iter().map(|r| r.version as i64).collect(),
            event_type: records.iter().map(|r| r.event_type.as_str()).collect(),
            schema_version: records.iter().map(|r| r.schema_version as i32).collect(),
            recorded_at: records.iter().map(|r| r.recorded_at).collect(),
            data: records.iter().map(|r| r.data.as_slice()).collect(),
            metadata: records.iter().map(|r| r.metadata.as_slice()).collect(),
            prev_hash: records.iter().map(|r| r.prev_hash.as_slice()).collect(),
            hash: records.iter().map(|r| r.hash.as_slice()).collect(),
        }
    }

    fn params(&self) -> Params<'_> {
        vec![
            &self.position,
            &self.stream,
            &self.version,
            &self.event_type,
            &self.schema_version,
            &self.recorded_at,
            &self.data,
            &self.metadata,
            &self.prev_hash,
            &self.hash,
        ]
    }
}

/// Each failed append gets its own copy of the batch's error.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(reason) => Error::Unavailable(reason.clone()),
        Error::Io { context, source } => Error::io(
            context.clone(),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        other => Error::Unavailable(other.to_string()),
    }
}

/// Why a transaction wrote nothing.
#[derive(Debug)]
enum Failure {
    /// The database refused a statement before the commit, for a reason that
    /// may lie in one append's data; nothing of the batch was written.
    Refused(Error),
    /// Anything else: a lost connection, a failed commit, a database that
    /// cannot take writes now. A failed commit's outcome is unknown.
    Failed(Error),
}

/// Maps a statement's error before the commit: [`Failure::Refused`] when the
/// database answered with an error that an append's own data can cause, else
/// [`Failure::Failed`].
fn refused(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Failure {
    move |e| {
        // SQLSTATE classes that concern the connection, the transaction or the
        // server as a whole: any append would fail the same way.
        const EVERY_APPEND: [&str; 7] = ["08", "40", "53", "55", "57", "58", "XX"];
        let per_append = e
            .as_db_error()
            .is_some_and(|db| !EVERY_APPEND.iter().any(|c| db.code().code().starts_with(c)));
        let error = db_error(context, e);
        if per_append {
            Failure::Refused(error)
        } else {
            Failure::Failed(error)
        }
    }
}

/// Maps an error no append's data can cause: [`Failure::Failed`].
fn failed(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Failure {
    move |e| Failure::Failed(db_error(context, e))
}
