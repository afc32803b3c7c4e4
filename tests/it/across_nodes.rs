//! What two nodes sharing one ledger must agree on, whatever the backend that
//! shares it: a key issued through one authorizes on the other at once, one
//! `Idempotency-Key` or `sourceKey` sent to both makes one event, and
//! `If-Match` holds across them. `postgres.rs` and `kurrentdb.rs` run these on
//! their own pairs of nodes; `b` acts with `a`'s organization and key.

use std::process::Command;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::helpers::{TestApp, attempts_path};

/// The modules of this binary whose tests only use `spawn_app`, and so run on
/// whichever store `helpers::new_node` picks.
const API_MODULES: &[&str] = &[
    "audit::",
    "auth::",
    "concurrency::",
    "exact::",
    "flow::",
    "http::",
    "idempotency::",
    "limits::",
    "lists::",
    "ops::",
    "pages::",
    "record_attempt::",
];

/// Runs the API tests of this binary again in a child, with
/// `HOOKLEDGER_TEST_BACKEND=backend` and `env`, skipping the tests named in
/// `skip`; fails unless they pass, and enough of them ran.
pub fn api_tests_pass_on(backend: &str, env: &[(&str, String)], skip: &[&str]) {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args(API_MODULES)
        .args(["--test-threads", "4"])
        .env("HOOKLEDGER_TEST_BACKEND", backend);
    for name in skip {
        child.args(["--skip", name]);
    }
    for (key, value) in env {
        child.env(key, value);
    }
    let output = child.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the API tests failed on {backend}:\n{stdout}\n{stderr}"
    );
    // Make sure the filter matched what it should, and say what ran.
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("test result:"))
        .unwrap_or_default();
    let passed: usize = summary
        .split_whitespace()
        .skip_while(|w| *w != "ok.")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 40,
        "too few API tests ran on {backend}: {summary}"
    );
    eprintln!("on {backend}: {summary}");
}

pub async fn a_key_issued_through_one_node_authorizes_on_another_at_once(a: TestApp, b: TestApp) {
    for _ in 0..5 {
        let key = a.node.ledger.issue_key(&a.org).await.unwrap();
        let reply = b
            .send(
                b.bare(Method::GET, "/v1/outbound-webhook-endpoints")
                    .bearer_auth(&key.token)
                    .header("x-organization-id", &a.org),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let unknown = b
        .send(
            b.bare(Method::GET, "/v1/outbound-webhook-endpoints")
                .bearer_auth("hlk_01J00000000000000000000000_00")
                .header("x-organization-id", &a.org),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

pub async fn one_idempotency_key_sent_to_two_nodes_makes_one_event(a: TestApp, b: TestApp) {
    a.endpoint("r").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let head = a.node.store.sync_head().await.unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..16 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let reply = app
                .send(
                    app.request(Method::POST, "/v1/outbound-webhook-events")
                        .header("Idempotency-Key", "same-everywhere")
                        .json(&json!({"eventType": "x", "payload": {"once": true}})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            reply.body["id"].as_str().unwrap().to_owned()
        });
    }
    let mut ids = std::collections::BTreeSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), 1, "every answer names the one event: {ids:?}");
    assert_eq!(a.node.store.sync_head().await.unwrap(), head + 1);

    // A different body under the same key is refused on either node.
    for app in [&a, &b] {
        let reply = app
            .send(
                app.request(Method::POST, "/v1/outbound-webhook-events")
                    .header("Idempotency-Key", "same-everywhere")
                    .json(&json!({"eventType": "x", "payload": {"once": false}})),
            )
            .await;
        reply.assert_problem(409, None);
    }
}

pub async fn one_source_key_sent_to_two_nodes_makes_one_event(a: TestApp, b: TestApp) {
    a.endpoint("r").await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = JoinSet::new();
    for i in 0..12 {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let reply = app
                .post(
                    "/v1/outbound-webhook-events",
                    &json!({"eventType": "x", "sourceKey": "order-1", "payload": {"i": i}}),
                )
                .await;
            assert!(
                reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
                "{}",
                reply.body
            );
            (reply.status, reply.body["id"].as_str().unwrap().to_owned())
        });
    }
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (status, id) = done.unwrap();
        created += usize::from(status == StatusCode::CREATED);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(created, 1, "one 201, the rest 200 with the first event");
}

pub async fn attempts_and_if_match_work_across_nodes(a: TestApp, b: TestApp) {
    // Created on A, recorded on B at once.
    let d = a.delivery().await;
    let first = b.record_attempt(&d, &json!({"status": "failed"})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.header("etag"), Some("\"1\""));

    // A client that read version 1 on B writes with If-Match on A, whose model
    // may not have heard of that attempt yet.
    let on_a = a
        .send(
            a.request(Method::POST, &attempts_path(&d))
                .header("If-Match", "\"1\"")
                .json(&json!({"status": "retry_scheduled", "nextRetryAt": "2030-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(on_a.status, StatusCode::OK, "{}", on_a.body);
    assert_eq!(on_a.header("etag"), Some("\"2\""));

    // Two clients holding version 2 race on the two nodes: one wins, one 412.
    let body = json!({"status": "delivered"});
    let (ra, rb) = tokio::join!(
        a.send(
            a.request(Method::POST, &attempts_path(&d))
                .header("If-Match", "\"2\"")
                .json(&body)
        ),
        b.send(
            b.request(Method::POST, &attempts_path(&d))
                .header("If-Match", "\"2\"")
                .json(&body)
        ),
    );
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412], "{} / {}", ra.body, rb.body);
    let loser = if ra.status == StatusCode::PRECONDITION_FAILED {
        &ra
    } else {
        &rb
    };
    loser.assert_problem(412, None);

    // A stale tag is 412 on either node and appends nothing.
    let head = a.node.store.sync_head().await.unwrap();
    for app in [&a, &b] {
        let reply = app
            .send(
                app.request(Method::POST, &attempts_path(&d))
                    .header("If-Match", "\"1\"")
                    .json(&body),
            )
            .await;
        reply.assert_problem(412, None);
    }
    assert_eq!(b.node.store.sync_head().await.unwrap(), head);
    b.node.ledger.sync().await.unwrap();
    assert_eq!(b.attempt_count(&d).await, 3);
    let history: Vec<Value> = b.history(&d).await;
    assert_eq!(history.len(), 3);
}
