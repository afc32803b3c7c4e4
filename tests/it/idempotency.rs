//! Safe retries: `Idempotency-Key` replays the first answer (same status, the body
//! as it stood then, no new event) and refuses a different body with 409;
//! `If-Match` refuses an attempt on a delivery that moved on with 412.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, attempts_path, spawn_app};

async fn post_with_key(
    app: &TestApp,
    path: &str,
    key: &str,
    body: &Value,
) -> crate::helpers::Reply {
    app.send(
        app.request(Method::POST, path)
            .header("Idempotency-Key", key)
            .json(body),
    )
    .await
}

#[tokio::test]
async fn a_repeated_attempt_replays_the_first_answer_as_it_stood() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let path = attempts_path(&d);
    let body = json!({"status": "retry_scheduled", "nextRetryAt": "2030-01-01T00:00Z"});
    let first = post_with_key(&app, &path, "attempt-1", &body).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("idempotent-replayed"), None);
    // Another attempt moves the delivery on.
    app.record_attempt(&d, &json!({"status": "delivered"}))
        .await;
    let head = app.head();

    let replay = post_with_key(&app, &path, "attempt-1", &body).await;

    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body, "the body as it stood then");
    assert_eq!(replay.header("etag"), Some("\"1\""));
    assert_eq!(app.head(), head, "no new event");
    assert_eq!(app.attempt_count(&d).await, 2);
}

#[tokio::test]
async fn a_reused_key_with_another_body_is_409() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let path = attempts_path(&d);
    post_with_key(&app, &path, "k", &json!({"status": "failed"})).await;
    let head = app.head();

    let reply = post_with_key(&app, &path, "k", &json!({"status": "delivered"})).await;

    reply.assert_problem(409, None);
    assert_eq!(app.head(), head);
    // The same key on another route is another key.
    let other = post_with_key(
        &app,
        "/v1/outbound-webhook-events",
        "k",
        &json!({"eventType": "x", "payload": {}}),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED);
}

#[tokio::test]
async fn creates_replay_with_their_201() {
    let app = spawn_app().await;
    let endpoint_body = json!({"name": "e", "url": "https://e.example.com/"});
    let first = post_with_key(
        &app,
        "/v1/outbound-webhook-endpoints",
        "ep-1",
        &endpoint_body,
    )
    .await;
    let replay = post_with_key(
        &app,
        "/v1/outbound-webhook-endpoints",
        "ep-1",
        &endpoint_body,
    )
    .await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, first.body);

    let event_body = json!({"eventType": "x", "payload": {"a": 1}});
    let first = post_with_key(&app, "/v1/outbound-webhook-events", "evt-1", &event_body).await;
    let d = first.body["deliveries"][0]["id"].as_str().unwrap();
    app.record_attempt(d, &json!({"status": "delivered"})).await;
    let head = app.head();
    let replay = post_with_key(&app, "/v1/outbound-webhook-events", "evt-1", &event_body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(
        replay.body, first.body,
        "the event as it was accepted, before the attempt"
    );
    assert_eq!(app.head(), head);
}

#[tokio::test]
async fn an_idempotency_key_is_at_most_256_characters() {
    let app = spawn_app().await;
    let body = json!({"eventType": "x", "payload": {}});
    let ok = post_with_key(&app, "/v1/outbound-webhook-events", &"k".repeat(256), &body).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let head = app.head();
    post_with_key(&app, "/v1/outbound-webhook-events", &"k".repeat(257), &body)
        .await
        .assert_problem(400, Some("Idempotency-Key"));
    assert_eq!(app.head(), head);
}

#[tokio::test]
async fn if_match_refuses_a_stale_version_with_412() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let path = attempts_path(&d);
    let current = app.get_delivery(&d).await;
    assert_eq!(current.header("etag"), Some("\"0\""));

    let ok = app
        .send(
            app.request(Method::POST, &path)
                .header("If-Match", "\"0\"")
                .json(&json!({"status": "failed"})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("etag"), Some("\"1\""));
    let head = app.head();

    let stale = app
        .send(
            app.request(Method::POST, &path)
                .header("If-Match", "\"0\"")
                .json(&json!({"status": "delivered"})),
        )
        .await;
    stale.assert_problem(412, None);
    assert_eq!(app.head(), head);
    assert_eq!(app.attempt_count(&d).await, 1);

    for accepted in ["1", "*"] {
        let reply = app
            .send(
                app.request(Method::POST, &path)
                    .header("If-Match", accepted)
                    .json(&json!({"status": "pending"})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "If-Match: {accepted}");
    }
    app.send(
        app.request(Method::POST, &path)
            .header("If-Match", "W/\"x\"")
            .json(&json!({"status": "pending"})),
    )
    .await
    .assert_problem(400, Some("If-Match"));
    assert_eq!(app.get_delivery(&d).await.header("etag"), Some("\"3\""));
}
