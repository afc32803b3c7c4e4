//! Every rule of the record-attempt contract (`docs/DESIGN.md` §1), each with a value just
//! inside and just outside it. A refused attempt is a 400 problem naming the
//! field, and nothing is appended.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, attempts_path, spawn_app};

/// Asserts the attempt is recorded: 200 and one more attempt.
async fn accepted(app: &TestApp, delivery: &str, body: Value) {
    let before = app.attempt_count(delivery).await;
    let reply = app.record_attempt(delivery, &body).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{body} should be accepted: {}",
        reply.body
    );
    assert_eq!(app.attempt_count(delivery).await, before + 1);
}

/// Asserts the attempt is refused with a 400 naming `field`, appending nothing.
async fn refused(app: &TestApp, delivery: &str, body: Value, field: &str) {
    let (head, before) = (app.head(), app.attempt_count(delivery).await);
    let reply = app.record_attempt(delivery, &body).await;
    reply.assert_problem(400, Some(field));
    assert_eq!(app.head(), head, "{body} appended something");
    assert_eq!(app.attempt_count(delivery).await, before);
}

#[tokio::test]
async fn status_is_a_required_enum() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for status in ["pending", "retry_scheduled", "delivered", "failed"] {
        accepted(&app, &d, json!({"status": status})).await;
    }
    refused(&app, &d, json!({"status": "Delivered"}), "status").await;
    refused(&app, &d, json!({"status": ""}), "status").await;
    refused(&app, &d, json!({"status": 1}), "status").await;
    refused(&app, &d, json!({"status": null}), "status").await;
    refused(&app, &d, json!({}), "status").await;
    refused(&app, &d, json!({"responseStatusCode": 200}), "status").await;
}

#[tokio::test]
async fn response_status_code_is_an_integer_from_100_to_599_or_null() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for code in [json!(100), json!(599), json!(null), json!(200.0)] {
        accepted(
            &app,
            &d,
            json!({"status": "failed", "responseStatusCode": code}),
        )
        .await;
    }
    for code in [
        json!(99),
        json!(600),
        json!(200.5),
        json!("200"),
        json!(true),
        json!({}),
        json!(-200),
    ] {
        refused(
            &app,
            &d,
            json!({"status": "failed", "responseStatusCode": code}),
            "responseStatusCode",
        )
        .await;
    }
    let history = app.history(&d).await;
    assert_eq!(
        history[3]["responseStatusCode"], 200,
        "200.0 is recorded as the integer 200"
    );
}

#[tokio::test]
async fn response_body_is_an_object_when_present() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    accepted(&app, &d, json!({"status": "delivered", "responseBody": {}})).await;
    accepted(
        &app,
        &d,
        json!({"status": "delivered", "responseBody": {"nested": [1, {"a": null}]}}),
    )
    .await;
    accepted(&app, &d, json!({"status": "delivered"})).await;
    for body in [json!([]), json!("x"), json!(null), json!(5), json!(false)] {
        refused(
            &app,
            &d,
            json!({"status": "delivered", "responseBody": body}),
            "responseBody",
        )
        .await;
    }
    let history = app.history(&d).await;
    assert_eq!(
        history[1]["responseBody"],
        json!({"nested": [1, {"a": null}]})
    );
    assert!(history[2]["responseBody"].is_null());
}

#[tokio::test]
async fn last_error_is_a_non_empty_string_or_null() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for error in [json!("a"), json!("é"), json!(null)] {
        accepted(&app, &d, json!({"status": "failed", "lastError": error})).await;
    }
    for error in [json!(""), json!(5), json!(["a"])] {
        refused(
            &app,
            &d,
            json!({"status": "failed", "lastError": error}),
            "lastError",
        )
        .await;
    }
}

#[tokio::test]
async fn next_retry_at_follows_the_contract_pattern() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for at in [
        json!("2024-02-29T00:00:00Z"),
        json!("2000-02-29T12:00:00Z"),
        json!("2023-04-30T23:59:59Z"),
        json!("2023-11-07T05:31Z"),
        json!("2023-11-07T05:31:56.123456789Z"),
        json!("2023-11-07T00:00:00Z"),
        json!(null),
    ] {
        accepted(
            &app,
            &d,
            json!({"status": "retry_scheduled", "nextRetryAt": at}),
        )
        .await;
    }
    for at in [
        json!("2023-02-29T00:00:00Z"),
        json!("1900-02-29T00:00:00Z"),
        json!("2023-04-31T00:00:00Z"),
        json!("2023-11-07T05:31:56+00:00"),
        json!("2023-11-07T05:31:56z"),
        json!("2023-11-07T24:00:00Z"),
        json!("2023-11-07T05:31:56.Z"),
        json!("2023-11-07"),
        json!(""),
        json!(1_700_000_000),
    ] {
        refused(
            &app,
            &d,
            json!({"status": "retry_scheduled", "nextRetryAt": at}),
            "nextRetryAt",
        )
        .await;
    }
    let history = app.history(&d).await;
    assert_eq!(
        history[3]["nextRetryAt"], "2023-11-07T05:31Z",
        "recorded as sent"
    );
}

#[tokio::test]
async fn every_invalid_field_is_named_at_once() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let head = app.head();
    let reply = app
        .record_attempt(
            &d,
            &json!({"status": "done", "responseStatusCode": 600, "responseBody": [], "lastError": "", "nextRetryAt": "soon"}),
        )
        .await;
    reply.assert_problem(400, None);
    let mut fields = reply.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "lastError",
            "nextRetryAt",
            "responseBody",
            "responseStatusCode",
            "status"
        ]
    );
    assert_eq!(app.head(), head);
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_not_recorded() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    accepted(
        &app,
        &d,
        json!({"status": "pending", "attemptedBy": "worker-7"}),
    )
    .await;
    let raw = app
        .get(&format!("/v1/outbound-webhook-deliveries/{d}/events"))
        .await;
    let data = &raw.body["data"][0]["data"];
    assert!(data.get("attemptedBy").is_none(), "{data}");
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_as_body() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for raw in ["{\"status\": ", "[]", "\"pending\"", "null", ""] {
        let request = app
            .request(Method::POST, &attempts_path(&d))
            .header("content-type", "application/json")
            .body(raw);
        let reply = app.send(request).await;
        reply.assert_problem(400, Some("body"));
    }
    assert_eq!(app.attempt_count(&d).await, 0);
}

#[tokio::test]
async fn the_response_is_the_parent_event_with_all_its_deliveries() {
    let app = spawn_app().await;
    app.endpoint("a").await;
    app.endpoint("b").await;
    let event = app
        .accept_event(json!({"eventType": "x", "payload": {"k": "v"}}))
        .await;
    let first = event["deliveries"][0]["id"].as_str().unwrap();

    let reply = app
        .record_attempt(first, &json!({"status": "failed"}))
        .await;

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["endpointCount"], 2);
    let deliveries = reply.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0]["status"], "failed");
    assert_eq!(deliveries[1]["status"], "pending");
    assert_eq!(
        reply.body["status"], "pending",
        "one delivery is still pending"
    );
    assert_eq!(reply.header("etag"), Some("\"1\""));
}
