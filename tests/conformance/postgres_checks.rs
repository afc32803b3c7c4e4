//! Checks of several processes sharing one PostgreSQL database, each played by
//! its own `PostgresStore` (own pool, own listener, own writer): positions stay
//! gapless and in commit order under concurrent writers while a reader tails
//! the log and never skips one; expected versions and claims hold across them;
//! one hears of another's appends; and the hash chain is the one the shared
//! sequencer (and so the embedded log) makes from the same history.

use std::sync::Arc;

use hookledger::store::postgres::{self, PostgresStore};
use hookledger::store::{EventStore, ExpectedVersion};

use crate::suite::{event, everything, replay_through_sequencer, shared, within};
use crate::support_postgres;

async fn stores(check: &str, n: usize) -> Option<Vec<Arc<PostgresStore>>> {
    let url = support_postgres::database(check).await?;
    let mut stores = Vec::new();
    for _ in 0..n {
        let options = postgres::Options {
            pool_size: 4,
            ..postgres::Options::default()
        };
        let store = PostgresStore::open(&url, options).await.expect("open");
        stores.push(Arc::new(store));
    }
    Some(stores)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_never_skips_a_position_of_concurrent_writers() {
    let Some(stores) = stores("postgres::tailing_reader", 4).await else {
        return;
    };
    shared::a_tailing_reader_never_skips_a_position(stores, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_versions_and_claims_hold_across_processes() {
    let Some(stores) = stores("postgres::across_processes", 2).await else {
        return;
    };
    shared::expected_versions_and_claims_hold_across(stores[0].clone(), stores[1].clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_hears_of_another_ones_appends() {
    let Some(stores) = stores("postgres::hears", 2).await else {
        return;
    };
    let (a, b) = (stores[0].clone(), stores[1].clone());
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait_beyond(0).await }
    });
    a.append("s", ExpectedVersion::NoStream, vec![event("1")])
        .await
        .unwrap();
    assert_eq!(within("B hearing of A", waiter).await.unwrap().unwrap(), 1);
    assert_eq!(b.head(), 1);
    // sync_head asks the database, without waiting for a notification.
    a.append("s", ExpectedVersion::Exact(0), vec![event("2")])
        .await
        .unwrap();
    assert_eq!(b.sync_head().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hash_chain_is_the_one_the_shared_sequencer_makes() {
    let Some(stores) = stores("postgres::hash_chain", 2).await else {
        return;
    };
    for i in 0..10u64 {
        let store = &stores[(i % 2) as usize];
        let events = (0..i % 3 + 1).map(|j| event(&format!("{i}-{j}"))).collect();
        store
            .append(
                ["x", "y", "z"][(i % 3) as usize],
                ExpectedVersion::Any,
                events,
            )
            .await
            .unwrap();
    }
    stores[0].sync_head().await.unwrap();
    let stored = everything(stores[0].as_ref()).await;
    // The same appends, at the same times, through the sequencer the
    // embedded and memory stores use.
    assert_eq!(replay_through_sequencer(&stored), stored);
}

/// An append the database refuses fails alone: the appends group-committed
/// with it are written and acknowledged, and the log stays gapless. A trigger
/// plays the refusal (any row of a `poison-` stream), as a value the database
/// will not store would.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_the_database_refuses_fails_alone_not_its_batch() {
    const APPENDS: usize = 300;
    let Some(url) = support_postgres::database("postgres::refused_append_fails_alone").await else {
        return;
    };
    let options = postgres::Options {
        pool_size: 4,
        ..postgres::Options::default()
    };
    let store = Arc::new(PostgresStore::open(&url, options).await.expect("open"));
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.stream LIKE 'poison-%' THEN \
               RAISE EXCEPTION 'refusing a row of %', NEW.stream; \
             END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON hookledger_events \
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .expect("the trigger is created");

    // All at once, so that the writer takes them in shared batches.
    let appends: Vec<_> = (0..APPENDS)
        .map(|i| {
            let store = store.clone();
            let stream = if i % 10 == 3 {
                format!("poison-{i}")
            } else {
                format!("good-{i}")
            };
            tokio::spawn(async move {
                let result = store
                    .append(&stream, ExpectedVersion::NoStream, vec![event(&stream)])
                    .await;
                (stream, result)
            })
        })
        .collect();
    let mut refused = 0;
    for append in appends {
        let (stream, result) = within("an append", append).await.unwrap();
        if stream.starts_with("poison-") {
            assert!(result.is_err(), "{stream} was acknowledged");
            refused += 1;
        } else {
            result.unwrap_or_else(|e| panic!("{stream} failed with a refused neighbour: {e}"));
        }
    }
    assert_eq!(refused, APPENDS / 10);
    let stored = everything(store.as_ref()).await;
    let positions: Vec<u64> = stored.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=(APPENDS - refused) as u64).collect::<Vec<_>>()
    );
    assert!(stored.iter().all(|e| e.stream.starts_with("good-")));
    let stats = store.stats();
    eprintln!(
        "{APPENDS} appends, {refused} refused, {} acknowledged in {} transactions",
        stats.appends, stats.commits
    );
    assert_eq!(stats.appends, (APPENDS - refused) as u64);
    assert!(
        stats.commits < stats.appends,
        "no appends shared a transaction: {stats:?}"
    );
}
