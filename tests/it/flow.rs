//! The whole life of a webhook event over real TCP: endpoints, fan-out, attempts,
//! history, the raw stream, the derived statuses, `skipped`, and `sourceKey`.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{attempts_path, spawn_app};

#[tokio::test]
async fn an_event_fans_out_is_attempted_and_ends_delivered() {
    // Arrange: one endpoint for everything, one disabled, one for another type.
    let app = spawn_app().await;
    let all = app.endpoint("all").await;
    let disabled = app
        .create_endpoint(
            json!({"name": "off", "url": "https://off.example.com/", "enabled": false}),
        )
        .await;
    assert_eq!(disabled["enabled"], false);
    let other = app
        .create_endpoint(json!({"name": "other", "url": "http://other.example.com/h", "eventTypes": ["user.created"]}))
        .await;
    assert_eq!(other["eventTypes"], json!(["user.created"]));

    // Act: accept an event.
    let event = app
        .accept_event(
            json!({"eventType": "invoice.paid", "sourceKey": "inv_1", "payload": {"amount": 42}}),
        )
        .await;

    // Assert: one delivery, to the only subscribed enabled endpoint.
    assert_eq!(event["status"], "pending");
    assert_eq!(event["endpointCount"], 1);
    assert_eq!(event["payload"], json!({"amount": 42}));
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["endpointId"], all["id"]);
    assert_eq!(delivery["endpointName"], "all");
    assert_eq!(delivery["endpointUrl"], all["url"]);
    assert_eq!(delivery["attemptCount"], 0);
    assert_eq!(delivery["status"], "pending");
    for field in [
        "responseStatusCode",
        "lastError",
        "nextRetryAt",
        "attemptedAt",
        "deliveredAt",
    ] {
        assert!(delivery[field].is_null(), "{field} is present as null");
    }
    let delivery_id = delivery["id"].as_str().unwrap().to_owned();

    // Act: a failed attempt with a retry, then a success.
    let first = app
        .record_attempt(
            &delivery_id,
            &json!({"status": "retry_scheduled", "responseStatusCode": 503, "responseBody": {"error": "busy"},
                    "lastError": "503 from receiver", "nextRetryAt": "2030-01-01T00:00:30Z"}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.header("etag"), Some("\"1\""));
    assert_eq!(first.body["id"], event["id"]);
    assert_eq!(first.body["status"], "pending");
    let d = &first.body["deliveries"][0];
    assert_eq!(d["status"], "retry_scheduled");
    assert_eq!(d["attemptCount"], 1);
    assert_eq!(d["responseStatusCode"], 503);
    assert_eq!(d["lastError"], "503 from receiver");
    assert_eq!(d["nextRetryAt"], "2030-01-01T00:00:30.000000Z");
    assert!(d["attemptedAt"].is_string());
    assert!(d["deliveredAt"].is_null());

    let second = app
        .record_attempt(
            &delivery_id,
            &json!({"status": "delivered", "responseStatusCode": 200}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.header("etag"), Some("\"2\""));
    let d = &second.body["deliveries"][0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attemptCount"], 2);
    assert!(
        d["lastError"].is_null(),
        "absent fields of the latest attempt count as null"
    );
    assert!(d["nextRetryAt"].is_null());
    assert!(d["deliveredAt"].is_string());
    assert_eq!(second.body["status"], "delivered");

    // Assert: the history, oldest first, with the request fields as sent.
    let history = app.history(&delivery_id).await;
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["attemptNumber"], 1);
    assert_eq!(history[0]["status"], "retry_scheduled");
    assert_eq!(history[0]["responseBody"], json!({"error": "busy"}));
    assert_eq!(history[0]["nextRetryAt"], "2030-01-01T00:00:30Z");
    assert_eq!(history[0]["version"], 0);
    assert_eq!(history[1]["attemptNumber"], 2);
    assert_eq!(history[1]["version"], 1);
    assert!(history[1]["responseBody"].is_null());
    assert!(history[1]["lastError"].is_null());
    let sequence = |i: usize| history[i]["sequence"].as_u64().expect("a sequence number");
    assert!(
        sequence(0) < sequence(1),
        "the second attempt was recorded later"
    );

    // Assert: the raw stream chains its hashes.
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery_id}/events"
        ))
        .await;
    assert_eq!(raw.status, StatusCode::OK);
    let events = raw.body["data"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["type"], "AttemptRecorded");
    assert_eq!(events[0]["prevHash"], "0".repeat(64));
    assert_eq!(events[1]["prevHash"], events[0]["hash"]);
    assert_eq!(events[0]["hash"], history[0]["hash"]);
    assert_eq!(events[0]["data"]["deliveryId"], delivery_id.as_str());
    assert!(events[0]["metadata"]["requestId"].is_string());
    assert_eq!(events[0]["metadata"]["keyId"], app.key.key_id.as_str());

    // Assert: the event reads back delivered.
    let got = app
        .get(&format!(
            "/v1/outbound-webhook-events/{}",
            event["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["status"], "delivered");
    assert_eq!(got.body["deliveries"][0]["attemptCount"], 2);
}

#[tokio::test]
async fn an_event_nobody_subscribes_to_is_skipped() {
    let app = spawn_app().await;
    app.create_endpoint(
        json!({"name": "other", "url": "https://o.example.com/", "eventTypes": ["a.b"]}),
    )
    .await;
    let event = app
        .accept_event(json!({"eventType": "c.d", "payload": {}}))
        .await;
    assert_eq!(event["status"], "skipped");
    assert_eq!(event["endpointCount"], 0);
    assert_eq!(event["deliveries"], json!([]));
    assert!(event["sourceKey"].is_null());
}

#[tokio::test]
async fn a_repeated_source_key_returns_the_first_event_with_200() {
    let app = spawn_app().await;
    app.endpoint("r").await;
    let first = app
        .accept_event(json!({"eventType": "x", "sourceKey": "k-1", "payload": {"v": 1}}))
        .await;
    let head = app.head();

    let repeat = app
        .post(
            "/v1/outbound-webhook-events",
            &json!({"eventType": "x", "sourceKey": "k-1", "payload": {"v": 2}}),
        )
        .await;

    assert_eq!(repeat.status, StatusCode::OK);
    assert_eq!(repeat.body["id"], first["id"]);
    assert_eq!(repeat.body["payload"], json!({"v": 1}));
    assert_eq!(app.head(), head, "nothing was appended");
    let other_key = app
        .post(
            "/v1/outbound-webhook-events",
            &json!({"eventType": "x", "sourceKey": "k-2", "payload": {}}),
        )
        .await;
    assert_eq!(other_key.status, StatusCode::CREATED);
    assert_ne!(other_key.body["id"], first["id"]);
}

#[tokio::test]
async fn deliveries_snapshot_the_endpoint_as_it_was_at_fan_out() {
    let app = spawn_app().await;
    let endpoint = app.endpoint("before").await;
    let event = app
        .accept_event(json!({"eventType": "x", "payload": {}}))
        .await;
    let id = endpoint["id"].as_str().unwrap();

    let patched = app
        .patch(
            &format!("/v1/outbound-webhook-endpoints/{id}"),
            &json!({"name": "after"}),
        )
        .await;

    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["name"], "after");
    let delivery_id = event["deliveries"][0]["id"].as_str().unwrap();
    let delivery = app.get_delivery(delivery_id).await;
    assert_eq!(delivery.body["endpointName"], "before");
    let recorded = app.get(&attempts_path(delivery_id)).await;
    assert_eq!(recorded.body["data"], json!([]));
}
