//! What one tenant may store is bounded: every string a client sends has a
//! length limit, an endpoint a number of event types, an organization a
//! number of endpoints, and an event a fan-out. Each limit is refused with a
//! problem naming the field and the limit, appends nothing, and is set by a
//! `serve` flag or its environment variable. Fan-out is capped where it is
//! made, when an endpoint subscribes: an event is always accepted.

use hookledger::limits::Limits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, hookledger, stderr};
use crate::helpers::{Reply, TestApp, attempts_path, spawn_app};

/// `reply` is a problem of `status` naming `field`, whose message names `limit`.
#[track_caller]
fn assert_limit(reply: &Reply, status: u16, field: &str, limit: &str) {
    reply.assert_problem(status, Some(field));
    let named = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["field"] == field && e["message"].as_str().unwrap().contains(limit));
    assert!(named, "the message does not name {limit}: {}", reply.body);
}

async fn app_with(limits: Limits) -> TestApp {
    let app = spawn_app().await;
    app.node.ledger.set_limits(limits);
    app
}

#[tokio::test]
async fn every_string_and_list_past_its_limit_is_400_naming_the_field_and_the_limit() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    app.node.ledger.set_limits(Limits {
        name_length: 5,
        url_length: 30,
        event_type_length: 4,
        event_types_per_endpoint: 2,
        source_key_length: 3,
        last_error_length: 6,
        idempotency_key_length: 8,
        ..Limits::default()
    });
    let head = app.head();
    let endpoints = "/v1/outbound-webhook-endpoints";
    let events = "/v1/outbound-webhook-events";
    for (path, body, field, limit) in [
        (
            endpoints,
            json!({"name": "sixsix", "url": "https://a.example.com/"}),
            "name",
            "max-name-length",
        ),
        (
            endpoints,
            json!({"name": "a", "url": format!("https://a.example.com/{}", "x".repeat(20))}),
            "url",
            "max-url-length",
        ),
        (
            endpoints,
            json!({"name": "a", "url": "https://a.example.com/", "eventTypes": ["a", "b", "c"]}),
            "eventTypes",
            "max-event-types-per-endpoint",
        ),
        (
            endpoints,
            json!({"name": "a", "url": "https://a.example.com/", "eventTypes": ["a", "fiver"]}),
            "eventTypes[1]",
            "max-event-type-length",
        ),
        (
            events,
            json!({"eventType": "fiver", "payload": {}}),
            "eventType",
            "max-event-type-length",
        ),
        (
            events,
            json!({"eventType": "a", "sourceKey": "four", "payload": {}}),
            "sourceKey",
            "max-source-key-length",
        ),
        (
            &attempts_path(&d),
            json!({"status": "failed", "lastError": "sevense"}),
            "lastError",
            "max-last-error-length",
        ),
    ] {
        let reply = app.post(path, &body).await;
        assert_limit(&reply, 400, field, limit);
    }
    let ep = app.get(&format!("{endpoints}?limit=1")).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = app
        .patch(
            &format!("{endpoints}/{ep}"),
            &json!({"eventTypes": ["a", "b", "c"]}),
        )
        .await;
    assert_limit(&reply, 400, "eventTypes", "max-event-types-per-endpoint");
    let reply = app
        .send(
            app.request(Method::POST, events)
                .header("Idempotency-Key", "nine-char")
                .json(&json!({"eventType": "a", "payload": {}})),
        )
        .await;
    assert_limit(&reply, 400, "Idempotency-Key", "max-idempotency-key-length");
    assert_eq!(app.head(), head, "nothing was written");
    // At the limits, all is accepted.
    let reply = app
        .post(
            endpoints,
            &json!({"name": "fiver", "url": "https://a.example.com/", "eventTypes": ["four", "b"]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
}

#[tokio::test]
async fn an_endpoint_past_the_organizations_limit_is_409_naming_the_limit() {
    let app = app_with(Limits {
        endpoints_per_organization: 3,
        ..Limits::default()
    })
    .await;
    for i in 0..3 {
        app.endpoint(&format!("e{i}")).await;
    }
    let head = app.head();

    let reply = app
        .post(
            "/v1/outbound-webhook-endpoints",
            &json!({"name": "e3", "url": "https://e3.example.com/", "enabled": false}),
        )
        .await;

    assert_limit(&reply, 409, "body", "max-endpoints-per-org");
    assert_eq!(reply.body["type"], "/problems/limit-exceeded");
    assert_eq!(app.head(), head);
    // Another organization has its own count.
    let (org, token) = app.other_org().await;
    let other = app
        .send(
            app.bare(Method::POST, "/v1/outbound-webhook-endpoints")
                .bearer_auth(token)
                .header("x-organization-id", org)
                .json(&json!({"name": "e", "url": "https://e.example.com/"})),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
}

#[tokio::test]
async fn fan_out_is_capped_when_endpoints_subscribe_never_when_an_event_arrives() {
    let app = app_with(Limits {
        fan_out: 2,
        ..Limits::default()
    })
    .await;
    let endpoints = "/v1/outbound-webhook-endpoints";
    let create = |name: &str, types: Value, enabled: bool| json!({"name": name, "url": format!("https://{name}.example.com/"), "eventTypes": types, "enabled": enabled});
    app.create_endpoint(create("a1", json!(["a"]), true)).await;
    app.create_endpoint(create("all", json!([]), true)).await;
    let head = app.head();

    // A third receiver of "a", by creation, by a patch, by enabling.
    let reply = app
        .post(endpoints, &create("a3", json!(["b", "a"]), true))
        .await;
    assert_limit(&reply, 409, "eventTypes", "max-fan-out");
    assert!(reply.body["detail"].as_str().unwrap().contains("\"a\""));
    let reply = app.post(endpoints, &create("every", json!([]), true)).await;
    assert_limit(&reply, 409, "eventTypes", "max-fan-out");
    assert_eq!(app.head(), head);
    let b = app.create_endpoint(create("b", json!(["b"]), true)).await;
    let b = b["id"].as_str().unwrap();
    let reply = app
        .patch(
            &format!("{endpoints}/{b}"),
            &json!({"eventTypes": ["b", "a"]}),
        )
        .await;
    assert_limit(&reply, 409, "eventTypes", "max-fan-out");
    let off = app
        .create_endpoint(create("off", json!(["a"]), false))
        .await;
    let off = off["id"].as_str().unwrap();
    let reply = app
        .patch(&format!("{endpoints}/{off}"), &json!({"enabled": true}))
        .await;
    assert_limit(&reply, 409, "enabled", "max-fan-out");

    // Events are accepted whatever the limit says now: the cap was kept
    // when the endpoints subscribed, and a lowered limit refuses only what
    // would widen a fan-out further.
    app.node.ledger.set_limits(Limits {
        fan_out: 1,
        ..Limits::default()
    });
    let event = app
        .accept_event(json!({"eventType": "a", "payload": {}}))
        .await;
    assert_eq!(event["endpointCount"], 2);
    let renamed = app
        .patch(
            &format!("{endpoints}/{b}"),
            &json!({"name": "b2", "eventTypes": []}),
        )
        .await;
    assert_limit(&renamed, 409, "eventTypes", "max-fan-out");
    let narrowed = app
        .patch(&format!("{endpoints}/{b}"), &json!({"name": "b2"}))
        .await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
}

#[tokio::test]
async fn serve_takes_its_limits_from_flags_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "org_limits");
    let server = Server::spawn(
        &data,
        &["--max-endpoints-per-org", "2"],
        &[("HOOKLEDGER_MAX_EVENT_TYPES_PER_ENDPOINT", "1")],
    )
    .wait_ready()
    .await;
    let client = Client::new(&server, "org_limits", &key);
    let endpoint =
        |types: Value| json!({"name": "e", "url": "https://e.example.com/", "eventTypes": types});
    let (status, body) = client
        .send(
            Method::POST,
            "/v1/outbound-webhook-endpoints",
            Some(endpoint(json!(["a", "b"]))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("max-event-types-per-endpoint"),
        "{body}"
    );
    for _ in 0..2 {
        client
            .post("/v1/outbound-webhook-endpoints", endpoint(json!(["a"])))
            .await;
    }
    let (status, body) = client
        .send(
            Method::POST,
            "/v1/outbound-webhook-endpoints",
            Some(endpoint(json!(["a"]))),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("max-endpoints-per-org"), "{body}");
    server.stop();

    let help = hookledger(&data, &["serve", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    for flag in [
        "--max-endpoints-per-org",
        "--max-event-types-per-endpoint",
        "--max-fan-out",
        "--max-name-length",
        "--max-url-length",
        "--max-event-type-length",
        "--max-source-key-length",
        "--max-last-error-length",
        "--max-idempotency-key-length",
        "--max-page-bytes",
    ] {
        assert!(help.contains(flag), "serve --help does not list {flag}");
    }
}

#[test]
fn serve_refuses_limits_whose_largest_event_would_not_fit_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let output = hookledger(dir.path(), &["serve", "--max-fan-out", "100000"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--max-fan-out 100000"),
        "{}",
        stderr(&output)
    );
}

/// The server's peak resident memory so far, from `/proc`.
fn peak_rss_bytes(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// What once took the server from 17 MB to 924 MB in seconds (and, under an
/// address-space limit, into a crash loop): endpoints with 130 000 event types
/// each. Now each is refused at the limit, and the bodies that make a JSON
/// parser allocate most (many keys, many small strings, deep nesting) are read
/// without building a tree of them.
#[tokio::test]
async fn bodies_built_to_make_the_server_allocate_leave_its_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "org_alloc");
    let server = Server::start(&data).await;
    let client = Client::new(&server, "org_alloc", &key);
    let head = |c: Client| async move { c.get("/readyz").await["head"].as_u64().unwrap() };
    let before = head(client.clone()).await;

    let types: Vec<String> = (0..130_000).map(|i| format!("{i:05x}")).collect();
    let bloated = serde_json::to_vec(
        &json!({"name": "bloat", "url": "https://b.example.com/", "eventTypes": types}),
    )
    .unwrap();
    let keys: serde_json::Map<String, Value> =
        (0..90_000).map(|i| (format!("{i:x}"), json!(0))).collect();
    let many_keys = serde_json::to_vec(&json!({"name": keys, "url": "x"})).unwrap();
    let many_strings =
        serde_json::to_vec(&json!({"eventType": vec![""; 300_000], "payload": {}})).unwrap();
    let deep = format!(
        r#"{{"eventType":"x","payload":{}1{}}}"#,
        "[".repeat(500_000),
        "]".repeat(500_000)
    );
    let bodies: Vec<(&str, Vec<u8>)> = [
        ("/v1/outbound-webhook-endpoints", bloated),
        ("/v1/outbound-webhook-endpoints", many_keys),
        ("/v1/outbound-webhook-events", many_strings),
        ("/v1/outbound-webhook-events", deep.into_bytes()),
    ]
    .into_iter()
    .collect();
    for (path, body) in &bodies {
        assert!(body.len() <= 1024 * 1024, "{path}: {} bytes", body.len());
    }

    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let client = client.clone();
        let bodies = bodies.clone();
        senders.spawn(async move {
            let mut refused = 0;
            for round in 0..50 {
                let (path, body) = &bodies[(worker + round) % bodies.len()];
                let response = client
                    .request(Method::POST, path)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 400, "{path}");
                refused += 1;
            }
            refused
        });
    }
    let refused: usize = senders.join_all().await.into_iter().sum();

    assert_eq!(refused, 200);
    assert_eq!(head(client.clone()).await, before, "nothing was written");
    let peak = peak_rss_bytes(&server);
    assert!(
        peak < 256 * 1024 * 1024,
        "the server's peak RSS reached {} MiB",
        peak / 1024 / 1024
    );
    crate::binary::record_figures(
        "limits-memory",
        &format!(
            "hostile bodies: 200 bodies of up to 1 MiB refused, server peak RSS {} MiB",
            peak / 1024 / 1024
        ),
    );
    server.stop();
}
