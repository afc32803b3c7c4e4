//! Who may do what: the bearer key, `x-organization-id`, keys of other
//! organizations, revocation, and resources of other organizations (404, never 403).

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{attempts_path, spawn_app};

#[tokio::test]
async fn record_attempt_refuses_bad_credentials_without_appending() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let path = attempts_path(&d);
    let body = json!({"status": "delivered"});
    let head = app.head();

    // Missing authorization.
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .header("x-organization-id", &app.org)
                .json(&body),
        )
        .await;
    reply.assert_problem(401, None);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    // Empty authorization.
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .header("authorization", "")
                .header("x-organization-id", &app.org)
                .json(&body),
        )
        .await;
    reply.assert_problem(401, None);
    // Not a bearer token.
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .header("authorization", format!("Basic {}", app.key.token))
                .header("x-organization-id", &app.org)
                .json(&body),
        )
        .await;
    reply.assert_problem(401, None);
    // Unknown key, and a known key id with a wrong secret.
    for token in ["hlk_nope", "garbage", &format!("{}0", app.key.token)] {
        let reply = app
            .send(
                app.bare(Method::POST, &path)
                    .bearer_auth(token)
                    .header("x-organization-id", &app.org)
                    .json(&body),
            )
            .await;
        reply.assert_problem(401, None);
    }
    // Missing and empty x-organization-id.
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .bearer_auth(&app.key.token)
                .json(&body),
        )
        .await;
    reply.assert_problem(400, Some("x-organization-id"));
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .bearer_auth(&app.key.token)
                .header("x-organization-id", "")
                .json(&body),
        )
        .await;
    reply.assert_problem(400, Some("x-organization-id"));
    // A key of another organization.
    let (_, other_token) = app.other_org().await;
    let head_after_key = app.head();
    let reply = app
        .send(
            app.bare(Method::POST, &path)
                .bearer_auth(&other_token)
                .header("x-organization-id", &app.org)
                .json(&body),
        )
        .await;
    reply.assert_problem(403, None);

    assert_eq!(app.head(), head_after_key);
    assert!(
        head_after_key == head + 1,
        "only the second key was appended"
    );
    assert_eq!(app.attempt_count(&d).await, 0);
}

#[tokio::test]
async fn another_organizations_resources_are_not_found_on_every_route() {
    let app = spawn_app().await;
    let endpoint = app.endpoint("mine").await;
    let event = app
        .accept_event(json!({"eventType": "x", "payload": {}}))
        .await;
    let d = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (org, token) = app.other_org().await;
    let as_other = |method: Method, path: &str| {
        app.bare(method, path)
            .bearer_auth(&token)
            .header("x-organization-id", &org)
    };
    let ep = endpoint["id"].as_str().unwrap();
    let evt = event["id"].as_str().unwrap();
    let head = app.head();

    for path in [
        format!("/v1/outbound-webhook-endpoints/{ep}"),
        format!("/v1/outbound-webhook-events/{evt}"),
        format!("/v1/outbound-webhook-deliveries/{d}"),
        format!("/v1/outbound-webhook-deliveries/{d}/attempts"),
        format!("/v1/outbound-webhook-deliveries/{d}/events"),
    ] {
        app.send(as_other(Method::GET, &path))
            .await
            .assert_problem(404, None);
    }
    app.send(
        as_other(
            Method::PATCH,
            &format!("/v1/outbound-webhook-endpoints/{ep}"),
        )
        .json(&json!({"name": "x"})),
    )
    .await
    .assert_problem(404, None);
    app.send(as_other(Method::POST, &attempts_path(&d)).json(&json!({"status": "delivered"})))
        .await
        .assert_problem(404, None);
    // Lists show nothing of ours.
    let list = app
        .send(as_other(Method::GET, "/v1/outbound-webhook-deliveries"))
        .await;
    assert_eq!(list.body["data"], json!([]));

    assert_eq!(app.head(), head);
    assert_eq!(app.attempt_count(&d).await, 0);
}

#[tokio::test]
async fn an_unknown_delivery_is_not_found() {
    let app = spawn_app().await;
    app.delivery().await;
    let head = app.head();
    let reply = app
        .record_attempt(
            "dlv_01JUNKNOWN00000000000000",
            &json!({"status": "delivered"}),
        )
        .await;
    reply.assert_problem(404, None);
    assert_eq!(app.head(), head);
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    let ok = app.get("/v1/outbound-webhook-endpoints").await;
    assert_eq!(ok.status, StatusCode::OK);

    app.node
        .ledger
        .revoke_key(&app.key.key_id)
        .await
        .expect("revoke");

    app.get("/v1/outbound-webhook-endpoints")
        .await
        .assert_problem(401, None);
}

#[tokio::test]
async fn the_tree_head_needs_a_key_too() {
    let app = spawn_app().await;
    let reply = app
        .send(app.bare(Method::GET, "/v1/ledger/tree-head"))
        .await;
    reply.assert_problem(401, None);
}
