//! The schema, as versioned migrations compiled into the binary and applied in
//! order when a store opens. A session-level advisory lock makes processes that
//! start together apply each migration once; applied versions are recorded in
//! `hookledger_migrations`. A database whose schema is newer than this build
//! knows is refused rather than guessed at.

use deadpool_postgres::Pool;

use crate::store::postgres::{db_error, pool_error};
use crate::store::{Error, Result};

/// `(version, name, SQL)`, in order. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "events, head and claims",
        include_str!("migrations/0001_events.sql"),
    ),
    (
        2,
        "claims as bytes",
        include_str!("migrations/0002_claims_as_bytes.sql"),
    ),
    (
        3,
        "claims that expire",
        include_str!("migrations/0003_claim_expiry.sql"),
    ),
    (
        4,
        "contents beside the log",
        include_str!("migrations/0004_contents.sql"),
    ),
];

/// An arbitrary constant naming the migration lock among advisory locks.
const LOCK_KEY: i64 = 0x686f_6f6b_6c65_6467; // "hookledg"

pub async fn run(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    client
        .query_one("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| db_error("taking the migration lock", e))?;
    let result = apply(&mut client).await;
    let unlocked = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| db_error("releasing the migration lock", e));
    result.and(unlocked.map(drop))
}

async fn apply(client: &mut deadpool_postgres::Object) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hookledger_migrations (\
               version integer PRIMARY KEY, \
               name text NOT NULL, \
               applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| db_error("creating the migrations table", e))?;
    let applied: Option<i32> = client
        .query_one("SELECT max(version) FROM hookledger_migrations", &[])
        .await
        .map_err(|e| db_error("reading the schema version", e))?
        .get(0);
    let applied = applied.unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if applied > known {
        return Err(Error::Unavailable(format!(
            "the database schema is at version {applied}, newer than the {known} this build knows"
        )));
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        tracing::info!(version, name, "applying a PostgreSQL migration");
        let tx = client
            .transaction()
            .await
            .map_err(|e| db_error("starting a migration", e))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| db_error(&format!("applying migration {version} ({name})"), e))?;
        tx.execute(
            "INSERT INTO hookledger_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await
        .map_err(|e| db_error("recording a migration", e))?;
        tx.commit()
            .await
            .map_err(|e| db_error(&format!("committing migration {version}"), e))?;
    }
    Ok(())
}
