//! When the ledger cannot serve: a failing store and a stopped projector answer
//! 503 problems with `Retry-After`, never leak the cause, and append nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hookledger::node::Node;
use hookledger::store::memory::MemoryStore;
use hookledger::store::{self, Appended, EventStore, ExpectedVersion, NewEvent, RecordedEvent};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

/// A memory store whose appends fail while `failing` is set.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl EventStore for FlakyStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> store::Result<Appended> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(store::Error::io(
                "appending",
                std::io::Error::other("disk on fire"),
            ));
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> store::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, max).await
    }

    async fn read_all(&self, from: u64, max: usize) -> store::Result<Vec<RecordedEvent>> {
        self.inner.read_all(from, max).await
    }

    async fn wait_beyond(&self, after: u64) -> store::Result<u64> {
        self.inner.wait_beyond(after).await
    }

    fn head(&self) -> u64 {
        self.inner.head()
    }
}

#[tokio::test]
async fn a_failing_store_is_503_with_retry_after_and_no_cause() {
    let store = Arc::new(FlakyStore::default());
    let node = Node::start(store.clone(), None).await;
    let app = spawn_app_with(node, |state| state).await;
    let d = app.delivery().await;
    let head = app.head();

    store.failing.store(true, Ordering::SeqCst);
    let reply = app
        .record_attempt(&d, &json!({"status": "delivered"}))
        .await;

    reply.assert_problem(503, None);
    assert!(reply.header("retry-after").is_some());
    assert!(
        !reply.body.to_string().contains("disk on fire"),
        "the cause is only logged"
    );
    assert_eq!(app.head(), head);
    store.failing.store(false, Ordering::SeqCst);
    let retried = app
        .record_attempt(&d, &json!({"status": "delivered"}))
        .await;
    assert_eq!(retried.status, StatusCode::OK);
    assert_eq!(app.attempt_count(&d).await, 1);
}

#[tokio::test]
async fn a_stopped_projector_makes_the_api_unavailable() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    // An event no fold understands stops the projector.
    let bogus = NewEvent {
        event_type: "NoSuchEvent".into(),
        schema_version: 1,
        data: b"{}".to_vec(),
        metadata: b"{}".to_vec(),
    };
    app.node
        .store
        .append("bogus-1", ExpectedVersion::Any, vec![bogus])
        .await
        .unwrap();
    let stopped = app.node.projector.wait_for(app.head()).await;
    assert!(
        stopped.is_err(),
        "the projector stops on an event it cannot fold"
    );
    let head = app.head();

    let ready = app.send(app.bare(Method::GET, "/readyz")).await;
    ready.assert_problem(503, None);
    assert!(ready.header("retry-after").is_some());
    app.get("/v1/outbound-webhook-endpoints")
        .await
        .assert_problem(503, None);
    app.record_attempt(&d, &json!({"status": "delivered"}))
        .await
        .assert_problem(503, None);
    assert_eq!(
        app.head(),
        head,
        "no write is decided against a stale model"
    );
    let health = app.send(app.bare(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK, "the process itself is alive");
}
