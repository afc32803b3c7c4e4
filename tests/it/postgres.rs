//! The API on PostgreSQL: the contract and flow tests of this binary run again
//! on a PostgreSQL store, and two nodes serving one database agree on keys,
//! `Idempotency-Key`, `sourceKey` and `If-Match` as if they were one.
//!
//! The nodes here are in-process (own store, pool, listener, projector and
//! HTTP server each); `multinode.rs` does the same with real processes.

use std::sync::Arc;

use hookledger::node::Node;
use hookledger::store::postgres::PostgresStore;

use crate::across_nodes;
use crate::helpers::{TestApp, TestNode, spawn_app_with};
use crate::support_postgres;

#[test]
fn the_api_tests_pass_on_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Starts the cluster (or skips) before handing it to the child.
    if runtime
        .block_on(support_postgres::database(
            "postgres::the_api_tests_pass_on_postgres",
        ))
        .is_none()
    {
        return;
    }
    let url = support_postgres::server_url().expect("the server is up");
    across_nodes::api_tests_pass_on("postgres", &[("HOOKLEDGER_TEST_POSTGRES_URL", url)], &[]);
}

/// A node on the database at `url`, with its own read model.
async fn node_on(url: &str) -> TestNode {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = PostgresStore::open(url, Default::default())
        .await
        .expect("open the PostgreSQL store");
    let node = Node::start(
        Arc::new(store),
        hookledger::projector::Config::in_dir(dir.path()),
    )
    .await
    .expect("open the node");
    TestNode {
        node,
        dir: Some(dir),
        backing: None,
    }
}

/// Two nodes serving one fresh database; `b` acts with `a`'s organization and key.
async fn two_nodes(test: &str) -> Option<(TestApp, TestApp)> {
    let url = support_postgres::database(test).await?;
    let mut b = spawn_app_with(node_on(&url).await, |s| s).await;
    let a = spawn_app_with(node_on(&url).await, |s| s).await;
    b.org = a.org.clone();
    b.key = a.key.clone();
    Some((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_issued_through_one_node_authorizes_on_another_at_once() {
    if let Some((a, b)) = two_nodes("postgres::keys_across_nodes").await {
        across_nodes::a_key_issued_through_one_node_authorizes_on_another_at_once(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_two_nodes_makes_one_event() {
    if let Some((a, b)) = two_nodes("postgres::idempotency_across_nodes").await {
        across_nodes::one_idempotency_key_sent_to_two_nodes_makes_one_event(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_source_key_sent_to_two_nodes_makes_one_event() {
    if let Some((a, b)) = two_nodes("postgres::source_key_across_nodes").await {
        across_nodes::one_source_key_sent_to_two_nodes_makes_one_event(a, b).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_and_if_match_work_across_nodes() {
    if let Some((a, b)) = two_nodes("postgres::if_match_across_nodes").await {
        across_nodes::attempts_and_if_match_work_across_nodes(a, b).await;
    }
}
