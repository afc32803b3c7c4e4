//! HTTP-level behaviour shared by every route: body size, content types,
//! unknown routes and methods, request ids. Every non-2xx is problem+json.

use hookledger::api::MAX_BODY_BYTES;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

/// An event body of exactly `len` bytes.
fn event_body_of(len: usize) -> String {
    let frame = r#"{"eventType":"big","payload":{"fill":""}}"#;
    format!(
        r#"{{"eventType":"big","payload":{{"fill":"{}"}}}}"#,
        "a".repeat(len - frame.len())
    )
}

#[tokio::test]
async fn a_body_over_one_mib_is_413_and_one_at_the_limit_is_accepted() {
    let app = spawn_app().await;
    let at_limit = event_body_of(MAX_BODY_BYTES);
    assert_eq!(at_limit.len(), 1024 * 1024);
    let head = app.head();

    let over = app
        .send(
            app.request(Method::POST, "/v1/outbound-webhook-events")
                .header("content-type", "application/json")
                .body(event_body_of(MAX_BODY_BYTES + 1)),
        )
        .await;
    over.assert_problem(413, None);
    assert_eq!(app.head(), head);

    let ok = app
        .send(
            app.request(Method::POST, "/v1/outbound-webhook-events")
                .header("content-type", "application/json")
                .body(at_limit),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(app.head(), head + 1);
}

#[tokio::test]
async fn writes_need_a_json_content_type() {
    let app = spawn_app().await;
    let body = r#"{"name":"n","url":"https://n.example.com/"}"#;
    let post = |content_type: Option<&str>| {
        let request = app
            .request(Method::POST, "/v1/outbound-webhook-endpoints")
            .body(body);
        match content_type {
            Some(c) => request.header("content-type", c),
            None => request,
        }
    };
    let head = app.head();
    for refused in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/merge-patch+json"),
    ] {
        app.send(post(refused)).await.assert_problem(415, None);
    }
    assert_eq!(app.head(), head);

    let ok = app
        .send(post(Some("application/json; charset=utf-8")))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let id = ok.body["id"].as_str().unwrap();
    let patch = app
        .send(
            app.request(
                Method::PATCH,
                &format!("/v1/outbound-webhook-endpoints/{id}"),
            )
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"enabled":false}"#),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK);
    assert_eq!(patch.body["enabled"], false);
    let patch = app
        .send(
            app.request(
                Method::PATCH,
                &format!("/v1/outbound-webhook-endpoints/{id}"),
            )
            .header("content-type", "text/plain")
            .body(r#"{"enabled":true}"#),
        )
        .await;
    patch.assert_problem(415, None);
}

#[tokio::test]
async fn a_path_with_an_empty_segment_is_an_unknown_route_whoever_asks() {
    let app = spawn_app().await;
    let path = "/v1/outbound-webhook-deliveries//attempts";
    app.get(path).await.assert_problem(404, None);
    let (_, other_token) = app.other_org().await;
    let foreign = app
        .bare(Method::GET, path)
        .bearer_auth(&other_token)
        .header("x-organization-id", &app.org);
    app.send(foreign).await.assert_problem(404, None);
    let anonymous = app
        .bare(Method::POST, path)
        .json(&serde_json::json!({"status": "delivered"}));
    app.send(anonymous).await.assert_problem(404, None);
    app.get("/v1/outbound-webhook-events//")
        .await
        .assert_problem(404, None);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = spawn_app().await;
    app.get("/v1/nothing-here").await.assert_problem(404, None);
    app.send(app.bare(Method::GET, "/"))
        .await
        .assert_problem(404, None);
    let delete = app
        .send(app.request(Method::DELETE, "/v1/outbound-webhook-endpoints"))
        .await;
    delete.assert_problem(405, None);
    assert!(
        delete
            .header("allow")
            .is_some_and(|allow| allow.contains("POST")),
        "{:?}",
        delete.headers
    );
    app.send(app.request(
        Method::PUT,
        "/v1/outbound-webhook-deliveries/dlv_1/attempts",
    ))
    .await
    .assert_problem(405, None);
}

#[tokio::test]
async fn the_request_id_is_echoed_and_recorded() {
    let app = spawn_app().await;
    let reply = app
        .send(
            app.request(Method::POST, "/v1/outbound-webhook-endpoints")
                .header("x-request-id", "trace-abc-123")
                .json(&json!({"name": "n", "url": "https://n.example.com/"})),
        )
        .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc-123"));
    let stream = app
        .node
        .ledger
        .read_stream(&format!("endpoint-{}", reply.body["id"].as_str().unwrap()))
        .await
        .unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&stream[0].metadata).unwrap();
    assert_eq!(metadata["requestId"], "trace-abc-123");

    let generated = app.get("/v1/outbound-webhook-endpoints").await;
    assert!(
        generated
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
    let refused = app
        .send(app.bare(Method::GET, "/v1/outbound-webhook-endpoints"))
        .await;
    assert!(
        refused.header("x-request-id").is_some(),
        "errors carry the id too"
    );
}

#[tokio::test]
async fn endpoint_bodies_are_validated_field_by_field() {
    let app = spawn_app().await;
    let head = app.head();
    let reply = app
        .post(
            "/v1/outbound-webhook-endpoints",
            &json!({"name": "", "url": "ftp://x.example.com", "eventTypes": ["ok", ""], "enabled": "yes"}),
        )
        .await;
    reply.assert_problem(400, None);
    let mut fields = reply.error_fields();
    fields.sort();
    assert_eq!(fields, ["enabled", "eventTypes[1]", "name", "url"]);
    let reply = app.post("/v1/outbound-webhook-endpoints", &json!({})).await;
    reply.assert_problem(400, Some("name"));
    assert!(reply.error_fields().contains(&"url".to_owned()));
    let long_name = "n".repeat(257);
    app.post(
        "/v1/outbound-webhook-endpoints",
        &json!({"name": long_name, "url": "https://a.example.com"}),
    )
    .await
    .assert_problem(400, Some("name"));
    let long_url = format!("https://a.example.com/{}", "p".repeat(2048));
    app.post(
        "/v1/outbound-webhook-endpoints",
        &json!({"name": "n", "url": long_url}),
    )
    .await
    .assert_problem(400, Some("url"));
    assert_eq!(app.head(), head);

    let ok = app
        .create_endpoint(json!({"name": "n".repeat(256), "url": "https://a.example.com"}))
        .await;
    assert_eq!(ok["enabled"], true);
    assert_eq!(ok["eventTypes"], json!([]));
}

#[tokio::test]
async fn patches_refuse_nulls_and_an_empty_patch_records_nothing() {
    let app = spawn_app().await;
    let endpoint = app.endpoint("p").await;
    let path = format!(
        "/v1/outbound-webhook-endpoints/{}",
        endpoint["id"].as_str().unwrap()
    );
    let head = app.head();

    app.patch(&path, &json!({"name": null}))
        .await
        .assert_problem(400, Some("name"));
    let same = app.patch(&path, &json!({"name": "p"})).await;
    assert_eq!(same.status, StatusCode::OK);
    let empty = app.patch(&path, &json!({})).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body, endpoint);
    assert_eq!(app.head(), head, "unchanged patches append nothing");

    let changed = app
        .patch(
            &path,
            &json!({"eventTypes": ["a"], "url": "http://q.example.com/"}),
        )
        .await;
    assert_eq!(changed.body["eventTypes"], json!(["a"]));
    assert_eq!(app.head(), head + 1);
    app.patch(
        "/v1/outbound-webhook-endpoints/ep_missing",
        &json!({"name": "x"}),
    )
    .await
    .assert_problem(404, None);
}

#[tokio::test]
async fn event_bodies_are_validated() {
    let app = spawn_app().await;
    let head = app.head();
    for (body, field) in [
        (json!({"payload": {}}), "eventType"),
        (json!({"eventType": "", "payload": {}}), "eventType"),
        (json!({"eventType": "x"}), "payload"),
        (json!({"eventType": "x", "payload": []}), "payload"),
        (json!({"eventType": "x", "payload": null}), "payload"),
        (
            json!({"eventType": "x", "payload": {}, "sourceKey": ""}),
            "sourceKey",
        ),
        (
            json!({"eventType": "x", "payload": {}, "sourceKey": 7}),
            "sourceKey",
        ),
    ] {
        app.post("/v1/outbound-webhook-events", &body)
            .await
            .assert_problem(400, Some(field));
    }
    assert_eq!(app.head(), head);
    let ok = app
        .accept_event(json!({"eventType": "x", "payload": {}, "sourceKey": null}))
        .await;
    assert!(ok["sourceKey"].is_null());
}
