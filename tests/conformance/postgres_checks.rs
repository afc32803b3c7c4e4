//! Checks of several processes sharing one PostgreSQL database, each played by
//! its own `PostgresStore` (own pool, own listener, own writer): positions stay
//! gapless and in commit order under concurrent writers while a reader tails
//! the log and never skips one; expected versions and claims hold across them;
//! one hears of another's appends; and the hash chain is the one the shared
//! sequencer (and so the embedded log) makes from the same history.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hookledger::store::postgres::{self, PostgresStore};
use hookledger::store::sequencer::Sequencer;
use hookledger::store::{Error, EventStore, ExpectedVersion, NewEvent};

use crate::suite::{event, everything, id_of, within};
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
    const WRITERS: usize = 12;
    const APPENDS: usize = 20;
    let Some(stores) = stores("postgres::tailing_reader", 4).await else {
        return;
    };
    let reader_store = stores[3].clone();
    let done = Arc::new(AtomicBool::new(false));
    // The reader follows the head as it moves, like a projector: each read
    // starts right after the last position it saw and must continue from there.
    let reader = tokio::spawn({
        let done = done.clone();
        async move {
            let mut seen = Vec::new();
            let mut reads = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let batch = reader_store
                    .read_all(seen.len() as u64 + 1, 7)
                    .await
                    .unwrap();
                reads += 1;
                for e in &batch {
                    assert_eq!(
                        e.position,
                        seen.len() as u64 + 1,
                        "the reader skipped a position"
                    );
                    seen.push(e.clone());
                }
                if batch.is_empty() {
                    if finished {
                        return (seen, reads);
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = stores[w % 3].clone();
            tokio::spawn(async move {
                for k in 0..APPENDS {
                    let events: Vec<NewEvent> = (0..(w + k) % 3 + 1)
                        .map(|j| event(&format!("w{w}-{k}-{j}")))
                        .collect();
                    // Half the writers share streams across "processes".
                    let stream = format!("s-{}", w % 6);
                    store
                        .append(&stream, ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        within("a writer", writer).await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (seen, reads) = within("the reader", reader).await.unwrap();
    stores[0].sync_head().await.unwrap();
    let all = everything(stores[0].as_ref()).await;
    assert_eq!(seen, all, "the tail differs from the log read afterwards");
    let expected: usize = (0..WRITERS)
        .map(|w| (0..APPENDS).map(|k| (w + k) % 3 + 1).sum::<usize>())
        .sum();
    assert_eq!(all.len(), expected);
    assert!(reads > 1, "the reader never ran beside the writers");
    // Every stream is gapless in version order too.
    for s in 0..6 {
        let versions: Vec<u64> = all
            .iter()
            .filter(|e| e.stream == format!("s-{s}"))
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_versions_and_claims_hold_across_processes() {
    let Some(stores) = stores("postgres::across_processes", 2).await else {
        return;
    };
    let (a, b) = (stores[0].clone(), stores[1].clone());
    a.append("shared", ExpectedVersion::NoStream, vec![event("a0")])
        .await
        .unwrap();
    // B has not heard of A's append, and is checked against it all the same.
    match b
        .append("shared", ExpectedVersion::NoStream, vec![event("b0")])
        .await
    {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, Some(0)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    b.append("shared", ExpectedVersion::Exact(0), vec![event("b1")])
        .await
        .unwrap();

    let races: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                store
                    .append_claimed(
                        &format!("r-{i}"),
                        ExpectedVersion::NoStream,
                        vec![event(&format!("r{i}"))],
                        vec!["one-of-eight".into()],
                    )
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for race in races {
        match within("a racer", race).await.unwrap() {
            Ok(_) => winners += 1,
            Err(Error::Duplicate { .. }) => {}
            Err(other) => panic!("append failed: {other}"),
        }
    }
    assert_eq!(winners, 1);
    // A reads what B appended once it has asked the database for the head.
    assert_eq!(a.sync_head().await.unwrap(), 3);
    let ids: Vec<_> = everything(a.as_ref()).await.iter().map(id_of).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(&ids[..2], ["a0", "b1"]);
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
    // Replay the same appends, at the same times, through the sequencer the
    // embedded and memory stores use.
    let mut sequencer = Sequencer::default();
    let mut replayed = Vec::new();
    let mut i = 0;
    while i < stored.len() {
        let first = &stored[i];
        let append: Vec<_> = stored[i..]
            .iter()
            .take_while(|e| e.stream == first.stream && e.recorded_at == first.recorded_at)
            .collect();
        let mut batch = sequencer.staging();
        batch
            .stage(
                &first.stream,
                ExpectedVersion::Any,
                append
                    .iter()
                    .map(|e| NewEvent {
                        event_type: e.event_type.clone(),
                        schema_version: e.schema_version,
                        data: e.data.clone(),
                        metadata: e.metadata.clone(),
                    })
                    .collect(),
                first.recorded_at,
            )
            .unwrap();
        let (records, staged) = batch.finish();
        sequencer.commit(staged);
        i += records.len();
        replayed.extend(records);
    }
    assert_eq!(replayed, stored);
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
