//! Concurrent clients over TCP: no attempt is lost or doubled, `If-Match`
//! writers racing on one version have exactly one winner, and one
//! `Idempotency-Key` yields one event however many requests race with it.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::task::JoinSet;

use crate::helpers::{attempts_path, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_attempts_are_all_recorded_once() {
    let app = std::sync::Arc::new(spawn_app().await);
    let d = app.delivery().await;
    let mut tasks = JoinSet::new();
    for i in 0..64 {
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
    assert_eq!(etags, (1..=64).collect::<BTreeSet<u64>>());

    assert_eq!(app.attempt_count(&d).await, 64);
    let history = app.history(&d).await;
    let versions: Vec<u64> = history
        .iter()
        .map(|a| a["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (0..64).collect::<Vec<u64>>());
    let errors: BTreeSet<&str> = history
        .iter()
        .map(|a| a["lastError"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 64, "each attempt once");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn if_match_writers_racing_on_one_version_have_exactly_one_winner() {
    let app = std::sync::Arc::new(spawn_app().await);
    let d = app.delivery().await;
    for round in 0..8u64 {
        let etag = app
            .get_delivery(&d)
            .await
            .header("etag")
            .unwrap()
            .to_owned();
        assert_eq!(etag, format!("\"{round}\""));
        let head = app.head();
        let mut tasks = JoinSet::new();
        for w in 0..16 {
            let (app, d, etag) = (app.clone(), d.clone(), etag.clone());
            tasks.spawn(async move {
                let reply = app
                    .send(
                        app.request(Method::POST, &attempts_path(&d))
                            .header("If-Match", etag)
                            .json(
                                &json!({"status": "failed", "lastError": format!("r{round} w{w}")}),
                            ),
                    )
                    .await;
                match reply.status.as_u16() {
                    200 => true,
                    412 => {
                        reply.assert_problem(412, None);
                        false
                    }
                    other => panic!("round {round}: {other} {}", reply.body),
                }
            });
        }
        let mut winners = 0;
        while let Some(won) = tasks.join_next().await {
            winners += usize::from(won.expect("a task panicked"));
        }
        assert_eq!(
            winners, 1,
            "round {round}: {winners} writers won one version"
        );
        assert_eq!(app.head(), head + 1, "round {round}: the losers appended");
    }
    assert_eq!(app.attempt_count(&d).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_racing_attempts_with_one_key_record_one_attempt() {
    let app = std::sync::Arc::new(spawn_app().await);
    let d = app.delivery().await;
    let head = app.head();
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let (app, d) = (app.clone(), d.clone());
        tasks.spawn(async move {
            let reply = app
                .send(
                    app.request(Method::POST, &attempts_path(&d))
                        .header("Idempotency-Key", "attempt-once")
                        .json(&json!({"status": "delivered", "responseStatusCode": 200})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            let etag = reply.header("etag").map(str::to_owned);
            (reply.body, etag)
        });
    }
    let mut answers = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let (body, etag) = done.expect("a task panicked");
        answers.insert((body.to_string(), etag));
    }
    assert_eq!(
        answers.len(),
        1,
        "every answer is the first one: {answers:?}"
    );
    assert_eq!(app.head(), head + 1, "one event appended");
    assert_eq!(app.attempt_count(&d).await, 1);
}
