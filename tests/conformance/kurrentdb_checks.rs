//! Checks of several nodes sharing one KurrentDB ledger, each played by its
//! own `KurrentDbStore` (own client, follower and positions): positions are
//! dense and agree across nodes however many foreign events `$all` holds;
//! a tailing reader never skips one; an append over the server's size limit
//! never reaches it; the positions kept on disk are checked against the
//! server; and the hash chain is the one the shared sequencer makes. Claims
//! across nodes are checked in `kurrentdb_claims.rs`.
//!
//! Each runs on the test double unless `HOOKLEDGER_TEST_KURRENTDB_URL` names
//! a real server; a check that needs two servers is skipped, saying so, on a
//! real one.

use std::sync::Arc;

use hookledger::store::kurrentdb::{KurrentDbStore, Options};
use hookledger::store::{Error, EventStore, ExpectedVersion};

use crate::suite::{claimed, event, everything, id_of, replay_through_sequencer, shared};
use crate::support_kurrentdb::{Kurrent, fresh_prefix};

/// A node on `url` under `prefix`, with its own data directory.
pub struct Node {
    pub store: Arc<KurrentDbStore>,
    _dir: tempfile::TempDir,
}

pub async fn node(url: &str, prefix: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let store = KurrentDbStore::open(url, options(prefix, dir.path()))
        .await
        .unwrap();
    Node {
        store: Arc::new(store),
        _dir: dir,
    }
}

pub fn options(prefix: &str, dir: &std::path::Path) -> Options {
    Options {
        prefix: prefix.to_owned(),
        ..Options::new(dir)
    }
}

pub async fn nodes(url: &str, prefix: &str, n: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(node(url, prefix).await);
    }
    nodes
}

/// A plain client, as another application sharing the server would use.
fn foreign_client(url: &str) -> kurrentdb::Client {
    kurrentdb::Client::new(url.parse().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_dense_among_foreign_events_and_every_node_agrees() {
    let kurrent = Kurrent::start().await;
    let prefix = fresh_prefix();
    let nodes = nodes(&kurrent.url(), &prefix, 2).await;
    let (a, b) = (&nodes[0].store, &nodes[1].store);
    let foreign = foreign_client(&kurrent.url());
    let other_ledger = format!("{prefix}x:s");
    let mut mine = 0;
    for i in 0..30u64 {
        // Other applications' events, and another ledger whose prefix
        // extends this one's, between the ledger's own.
        let stream = match i % 3 {
            0 => format!("orders-{prefix}"),
            1 => other_ledger.clone(),
            _ => format!("{prefix}-not-a-ledger-stream"),
        };
        let data = serde_json::json!({"i": i});
        foreign
            .append_to_stream(
                stream,
                &Default::default(),
                kurrentdb::EventData::json("Foreign", &data).unwrap(),
            )
            .await
            .unwrap();
        let node = if i % 2 == 0 { a } else { b };
        let events = (0..i % 3 + 1).map(|j| event(&format!("{i}-{j}"))).collect();
        let appended = node
            .append(&format!("s-{}", i % 4), ExpectedVersion::Any, events)
            .await
            .unwrap();
        assert_eq!(
            *appended.positions.start(),
            mine + 1,
            "a gap in the positions"
        );
        mine = *appended.positions.end();
    }
    a.sync_head().await.unwrap();
    b.sync_head().await.unwrap();
    let (seen_a, seen_b) = (everything(a.as_ref()).await, everything(b.as_ref()).await);
    assert_eq!(seen_a, seen_b, "two nodes number the ledger differently");
    let positions: Vec<u64> = seen_a.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=mine).collect::<Vec<_>>());

    // Where the same events lie in $all: far apart, with foreign events between.
    let mut read = foreign
        .read_all(&kurrentdb::ReadAllOptions::default().max_count(10_000))
        .await
        .unwrap();
    let mut log_positions = Vec::new();
    let mut foreign_between = 0;
    while let Some(e) = read.next().await.unwrap() {
        let e = e.get_original_event();
        if e.stream_id().starts_with(&format!("{prefix}:")) {
            log_positions.push(e.position.prepare);
        } else if !log_positions.is_empty() && e.stream_id().contains(&prefix) {
            foreign_between += 1;
        }
    }
    assert_eq!(log_positions.len() as u64, mine);
    assert!(
        log_positions.windows(2).all(|w| w[1] > w[0] + 1),
        "log positions are dense"
    );
    assert!(foreign_between > 0, "no foreign event between the ledger's");

    // A third node that starts now numbers it the same way, from nothing.
    let c = node(&kurrent.url(), &prefix).await;
    assert_eq!(everything(c.store.as_ref()).await, seen_a);
    // And reads from any position start at the right event.
    assert_eq!(c.store.read_all(17, 3).await.unwrap(), seen_a[16..19]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_never_skips_a_position_of_concurrent_writers() {
    let kurrent = Kurrent::start().await;
    let nodes = nodes(&kurrent.url(), &fresh_prefix(), 4).await;
    let stores = nodes.iter().map(|n| n.store.clone()).collect();
    shared::a_tailing_reader_never_skips_a_position(stores, 15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_over_the_servers_size_limit_never_reaches_it() {
    let kurrent = Kurrent::start().await;
    let prefix = fresh_prefix();
    let n = node(&kurrent.url(), &prefix).await;
    let store = &n.store;
    let appends_before = kurrent.as_double().map(|d| d.stats().appends);
    // One MiB of data: within hookledger's own limit, over KurrentDB's.
    let mut big = event("big");
    big.data = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 * 1024)).into_bytes();
    let refused = store.append("s", ExpectedVersion::Any, vec![big]).await;
    match refused {
        Err(Error::Invalid(reason)) => assert!(reason.contains("1048576"), "{reason}"),
        other => panic!("expected the append refused for its size, got {other:?}"),
    }
    // Several events that fit one by one but not together.
    let half = |id: &str| {
        let mut e = event(id);
        e.data = format!(r#"{{"pad":"{}"}}"#, "y".repeat(600 * 1024)).into_bytes();
        e
    };
    let refused = store
        .append("s", ExpectedVersion::Any, vec![half("h1"), half("h2")])
        .await;
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    if let (Some(before), Some(double)) = (appends_before, kurrent.as_double()) {
        assert_eq!(
            double.stats().appends,
            before,
            "a refused append reached the server"
        );
    }
    // The largest event the store names fits, with a claim too.
    let mut largest = claimed("largest", "k");
    let room = store.max_event_bytes() - largest.metadata.len() - largest.event_type.len();
    largest.data = format!(r#""{}""#, "z".repeat(room - 2)).into_bytes();
    store
        .append_claimed(
            "s",
            ExpectedVersion::Any,
            vec![largest.clone()],
            vec!["k".into()],
        )
        .await
        .expect("the largest event is taken, claim and all");
    assert_eq!(
        store.read_stream("s", 0, 1).await.unwrap()[0].data,
        largest.data
    );
    // Two appends of half the limit each, queued together, are written as
    // two KurrentDB appends, never one over the limit.
    let writes = (half("q1"), half("q2"));
    let (first, second) = tokio::join!(
        store.append("q", ExpectedVersion::Any, vec![writes.0]),
        store.append("q", ExpectedVersion::Any, vec![writes.1]),
    );
    first.unwrap();
    second.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_positions_are_checked_against_the_server_they_came_from() {
    let prefix = fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let first = Kurrent::start().await;
    let store = KurrentDbStore::open(&first.url(), options(&prefix, dir.path()))
        .await
        .unwrap();
    for i in 0..5 {
        store
            .append("s", ExpectedVersion::Any, vec![event(&format!("one-{i}"))])
            .await
            .unwrap();
    }
    store.close().await;
    drop(store);
    // The same data directory pointed at another server holding another
    // ledger under the same prefix: the kept numbering is not trusted.
    let second = Kurrent::start().await;
    if matches!(second, Kurrent::Real(_)) {
        eprintln!(
            "SKIPPED kept_positions_…: it needs two servers, which only the test double gives"
        );
        return;
    }
    let other = node(&second.url(), &prefix).await;
    for i in 0..3 {
        other
            .store
            .append("t", ExpectedVersion::Any, vec![event(&format!("two-{i}"))])
            .await
            .unwrap();
    }
    let store = KurrentDbStore::open(&second.url(), options(&prefix, dir.path()))
        .await
        .unwrap();
    assert_eq!(store.head(), 3);
    let ids: Vec<_> = everything(&store).await.iter().map(id_of).collect();
    assert_eq!(ids, ["two-0", "two-1", "two-2"]);
    store.close().await;
    drop(store);
    // Back on the first server, it counts that one's ledger again.
    let store = KurrentDbStore::open(&first.url(), options(&prefix, dir.path()))
        .await
        .unwrap();
    assert_eq!(store.head(), 5);
    assert_eq!(id_of(&store.read_all(5, 1).await.unwrap()[0]), "one-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hash_chain_is_the_one_the_shared_sequencer_makes() {
    let kurrent = Kurrent::start().await;
    let prefix = fresh_prefix();
    let nodes = nodes(&kurrent.url(), &prefix, 2).await;
    for i in 0..10u64 {
        let store = &nodes[(i % 2) as usize].store;
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
    nodes[0].store.sync_head().await.unwrap();
    let stored = everything(nodes[0].store.as_ref()).await;
    assert_eq!(replay_through_sequencer(&stored), stored);
}
