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
