//! A ledger keeps what the sender sent: payload and response-body numbers come
//! back exactly as written, wherever they are read; an integer field takes
//! only a number that is exactly an integer; a key given twice in any object
//! is refused, naming where, with nothing written; and an `Idempotency-Key`
//! compares the JSON, not its bytes, so the same body in another key order
//! is a repeat.

use crate::helpers::{Reply, TestApp, attempts_path, spawn_app};
use reqwest::{Method, StatusCode};

/// Numbers a trip through `f64` changes: 2^64, more digits than a double
/// holds, negative zero and below the smallest double.
const EXACT: &str = r#"{"big":18446744073709551616,"digits":0.1000000000000000055511151231257827,"negativeZero":-0,"tiny":1e-400}"#;

/// Past the largest double: JSON, but `serde_json` (and so the API document
/// check every reply gets here) cannot read it into a value.
const HUGE: &str = r#"{"huge":1E400,"negativeHuge":-2e999999999}"#;

async fn post_raw(app: &TestApp, path: &str, body: &str) -> Reply {
    app.send(
        app.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.bytes).into_owned()
}

#[tokio::test]
async fn payload_and_response_body_numbers_come_back_exactly_as_sent() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    // Whitespace and key order as a client might send them.
    let body = format!(r#"{{ "payload": {EXACT},  "eventType": "n" }}"#);
    let accepted = post_raw(&app, "/v1/outbound-webhook-events", &body).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", text(&accepted));
    assert!(
        text(&accepted).contains(&format!(r#""payload":{EXACT}"#)),
        "{}",
        text(&accepted)
    );
    let event = accepted.body["id"].as_str().unwrap().to_owned();
    let delivery = accepted.body["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let attempt = format!(r#"{{"status":"failed","responseBody":{EXACT}}}"#);
    let recorded = post_raw(&app, &attempts_path(&delivery), &attempt).await;
    assert_eq!(recorded.status, StatusCode::OK, "{}", text(&recorded));

    let shown = app
        .get(&format!("/v1/outbound-webhook-events/{event}"))
        .await;
    assert!(text(&shown).contains(EXACT), "get: {}", text(&shown));
    let listed = app.get("/v1/outbound-webhook-events").await;
    assert!(text(&listed).contains(EXACT), "list: {}", text(&listed));
    let history = app.get(&attempts_path(&delivery)).await;
    assert!(
        text(&history).contains(&format!(r#""responseBody":{EXACT}"#)),
        "history: {}",
        text(&history)
    );
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/events"
        ))
        .await;
    assert!(text(&raw).contains(EXACT), "raw stream: {}", text(&raw));
    // And as the log holds it: the body kept beside the hashed event, after
    // its 16-byte salt.
    let stored = app
        .node
        .store
        .read_stream(&format!("event-{event}"), 0, 1)
        .await
        .expect("the event's stream");
    let content = &stored[0].content;
    assert_eq!(std::str::from_utf8(&content[16..]).unwrap(), EXACT);
}

#[tokio::test]
async fn numbers_past_the_largest_double_are_kept_too() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    // Sent and read without the API-document check, which reads numbers as f64.
    let raw = |method: Method, path: &str| {
        app.client
            .request(method, format!("{}{path}", app.base))
            .bearer_auth(&app.key.token)
            .header("x-organization-id", &app.org)
            .header("content-type", "application/json")
    };
    let body = format!(r#"{{"eventType":"n","payload":{HUGE}}}"#);
    let accepted = raw(Method::POST, "/v1/outbound-webhook-events")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);
    let accepted = accepted.text().await.unwrap();
    assert!(accepted.contains(HUGE), "{accepted}");
    let id = accepted
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let shown = raw(Method::GET, &format!("/v1/outbound-webhook-events/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains(HUGE), "{shown}");
}

#[tokio::test]
async fn an_integer_field_takes_only_numbers_that_are_exactly_integers() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let head = app.head();
    for code in [
        "199.99999999999999999999",
        "200.5",
        "2.0000000000000000001e2",
        "1e-400",
    ] {
        let body = format!(r#"{{"status":"failed","responseStatusCode":{code}}}"#);
        let reply = post_raw(&app, &attempts_path(&d), &body).await;
        reply.assert_problem(400, Some("responseStatusCode"));
    }
    assert_eq!(app.head(), head, "a refused attempt writes nothing");
    // What JSON Schema calls an integer, whatever its notation.
    for code in ["200", "200.0", "2e2", "20000e-2"] {
        let body = format!(r#"{{"status":"failed","responseStatusCode":{code}}}"#);
        let reply = post_raw(&app, &attempts_path(&d), &body).await;
        assert_eq!(reply.status, StatusCode::OK, "{code}: {}", reply.body);
        assert_eq!(
            reply.body["deliveries"][0]["responseStatusCode"], 200,
            "{code}"
        );
    }
}

#[tokio::test]
async fn a_key_given_twice_in_any_object_is_refused_naming_where() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let head = app.head();
    for (path, body, field) in [
        (
            attempts_path(&d),
            r#"{"status":"delivered","responseStatusCode":200,"status":"failed"}"#,
            "status",
        ),
        (
            attempts_path(&d),
            r#"{"status":"failed","responseBody":{"a":{"b":1,"c":2,"b":3}}}"#,
            "responseBody.a.b",
        ),
        (
            "/v1/outbound-webhook-events".to_owned(),
            r#"{"eventType":"x","payload":{"items":[{"id":1},{"id":2,"\u0069d":3}]}}"#,
            "payload.items[1].id",
        ),
        (
            "/v1/outbound-webhook-endpoints".to_owned(),
            r#"{"name":"a","url":"https://a.example.com/","unknown":{"x":1,"x":1}}"#,
            "unknown.x",
        ),
    ] {
        let reply = post_raw(&app, &path, body).await;
        reply.assert_problem(400, Some(field));
    }
    assert_eq!(app.head(), head, "nothing was written");
}

#[tokio::test]
async fn the_same_json_in_another_key_order_is_a_repeat_not_a_conflict() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let send = |body: &'static str| {
        app.send(
            app.request(Method::POST, &attempts_path(&d))
                .header("content-type", "application/json")
                .header("Idempotency-Key", "attempt-1")
                .body(body),
        )
    };
    let first =
        send(r#"{"status":"failed","responseBody":{"a":1,"b":[1,2]},"lastError":"x"}"#).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let head = app.head();

    let reordered =
        send("{ \"lastError\": \"\\u0078\",\n \"responseBody\": {\"b\": [1, 2], \"a\": 1}, \"status\": \"failed\" }")
            .await;

    assert_eq!(reordered.status, StatusCode::OK, "{}", reordered.body);
    assert_eq!(reordered.header("idempotent-replayed"), Some("true"));
    assert_eq!(reordered.body, first.body);
    assert_eq!(app.head(), head, "no second attempt");
    // Another JSON value is still another body.
    let other =
        send(r#"{"status":"failed","responseBody":{"a":1.0,"b":[1,2]},"lastError":"x"}"#).await;
    other.assert_problem(409, None);
    assert_eq!(app.attempt_count(&d).await, 1);
}

/// Earlier versions bound an `Idempotency-Key` to the SHA-256 of the body's
/// bytes as sent. A retry of such a request, sent again byte for byte after
/// an upgrade, is still a repeat and not a 409.
#[tokio::test]
async fn a_key_recorded_against_the_bytes_as_sent_still_replays() {
    use sha2::{Digest, Sha256};

    let app = spawn_app().await;
    let d = app.delivery().await;
    let path = attempts_path(&d);
    let body = r#"{ "status" : "failed",  "lastError": "as sent" }"#;
    // What an earlier version recorded for this request.
    let ctx = hookledger::ledger::Context {
        organization_id: app.org.clone(),
        key_id: Some(app.key.key_id.clone()),
        idempotency: Some(projections::event::Idempotency {
            key: "before-the-upgrade".into(),
            route: format!("POST {path}"),
            request_sha256: hex::encode(Sha256::digest(body.as_bytes())),
        }),
        ..Default::default()
    };
    let command = projections::Command::RecordAttempt {
        delivery_id: d.clone(),
        organization_id: app.org.clone(),
        status: projections::AttemptStatus::Failed,
        response_status_code: None,
        response_body: None,
        last_error: projections::NonEmptyString::parse("as sent"),
        next_retry_at: None,
    };
    app.node.ledger.execute(command, &ctx, None).await.unwrap();
    let head = app.head();

    let retry = app
        .send(
            app.request(Method::POST, &path)
                .header("content-type", "application/json")
                .header("Idempotency-Key", "before-the-upgrade")
                .body(body),
        )
        .await;

    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.head(), head);
    assert_eq!(app.attempt_count(&d).await, 1);
}
