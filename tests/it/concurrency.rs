//! Concurrent clients over TCP: no attempt is lost or doubled, and one
//! `Idempotency-Key` yields one event however many requests race with it.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_attempts_are_all_recorded() {
    let app = std::sync::Arc::new(spawn_app().await);
    let d = app.delivery().await;
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let (app, d) = (app.clone(), d.clone());
        tasks.spawn(async move {
            let reply = app
                .record_attempt(
                    &d,
                    &json!({"status": "failed", "lastError": format!("attempt {i}")}),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let etag: u64 = reply
                .header("etag")
                .unwrap()
                .trim_matches('"')
                .parse()
                .unwrap();
            let shown = reply.body["deliveries"][0]["attemptCount"]
                .as_u64()
                .unwrap();
            (etag, shown)
        });
    }
    let mut etags = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (etag, shown) = done.expect("a task panicked");
        assert_eq!(
            shown, etag,
            "each answer shows the delivery right after its own attempt"
        );
        etags.insert(etag);
    }
    assert_eq!(etags, (1..=32).collect::<BTreeSet<u64>>());

    assert_eq!(app.attempt_count(&d).await, 32);
    let history = app.history(&d).await;
    let versions: Vec<u64> = history
        .iter()
        .map(|a| a["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (0..32).collect::<Vec<u64>>());
    let errors: BTreeSet<&str> = history
        .iter()
        .map(|a| a["lastError"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 32, "each attempt once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_requests_with_one_key_make_one_event() {
    let app = std::sync::Arc::new(spawn_app().await);
    app.endpoint("r").await;
    let head = app.head();
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let app = app.clone();
        tasks.spawn(async move {
            let reply = app
                .send(
                    app.request(Method::POST, "/v1/outbound-webhook-events")
                        .header("Idempotency-Key", "same")
                        .json(&json!({"eventType": "x", "payload": {"once": true}})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
            reply.body["id"].as_str().unwrap().to_owned()
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        ids.insert(done.expect("a task panicked"));
    }

    assert_eq!(ids.len(), 1, "every answer names the one event");
    assert_eq!(app.head(), head + 1, "one event appended");
    let list = app.get("/v1/outbound-webhook-events").await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
}
