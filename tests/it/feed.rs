//! The change feed, `GET /v1/ledger/feed`, on the real router over TCP:
//! pages in sequence order inside and outside their range, isolation between
//! organizations, long-polls, event streams, the connection limits and the
//! metrics. Following across a restart of the binary, and a client that stops
//! reading, are in `feed_binary.rs`.

use std::collections::HashSet;
use std::time::Duration;

use hookledger::api::feed::FeedLimits;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, new_node, spawn_app, spawn_app_with};
use crate::sse;

/// Every event of the app's organization, page by page from `after = 0`.
async fn walk(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .get(&format!("/v1/ledger/feed?after={after}&limit={limit}"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let data = page.body["data"].as_array().unwrap().clone();
        let next = page.body["nextAfter"].as_u64().unwrap();
        match data.last() {
            Some(last) => assert_eq!(last["sequence"].as_u64(), Some(next)),
            None => {
                assert_eq!(next, after, "an empty page goes on where it was asked");
                return events;
            }
        }
        assert!(data.len() <= limit);
        events.extend(data);
        after = next;
    }
}

fn sequences(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect()
}

/// An organization with a delivery and `attempts` attempts on it.
async fn busy(app: &TestApp, attempts: usize) -> String {
    let delivery = app.delivery().await;
    for i in 0..attempts {
        let reply = app
            .record_attempt(
                &delivery,
                &json!({"status": "failed", "lastError": format!("e{i}")}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    delivery
}

#[tokio::test]
async fn the_feed_pages_through_every_event_in_sequence_order_as_stored() {
    let app = spawn_app().await;
    let delivery = busy(&app, 5).await;
    let events = walk(&app, 2).await;
    // The key, the endpoint, the event, five attempts: 1, 2, 3… with no gap.
    assert_eq!(sequences(&events), (1..=8).collect::<Vec<u64>>());
    assert_eq!(
        walk(&app, 250).await,
        events,
        "any page size walks the same feed"
    );
    for event in &events {
        assert!(
            event.get("position").is_none(),
            "no global position: {event}"
        );
    }
    // The delivery's events are exactly its raw stream, bytes as hashed.
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/events?limit=250"
        ))
        .await;
    let stream = format!("delivery-{delivery}");
    let in_feed: Vec<&Value> = events.iter().filter(|e| e["stream"] == stream).collect();
    let raw = raw.body["data"].as_array().unwrap();
    assert_eq!(in_feed.len(), raw.len());
    for (fed, stored) in in_feed.iter().zip(raw) {
        for field in [
            "stream",
            "type",
            "schemaVersion",
            "version",
            "recordedAt",
            "data",
            "metadata",
            "prevHash",
            "hash",
        ] {
            assert_eq!(fed[field], stored[field], "{field}");
        }
    }
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[1..3], ["EndpointCreated", "WebhookEventAccepted"]);
}

#[tokio::test]
async fn pages_outside_the_range_are_empty_and_bad_parameters_are_400_naming_them() {
    let app = spawn_app().await;
    busy(&app, 2).await;
    let last = *sequences(&walk(&app, 250).await).last().unwrap();
    // At and beyond the end: empty, going on from where it was asked.
    for after in [last, last + 1, 1_000_000, u64::MAX] {
        let page = app.get(&format!("/v1/ledger/feed?after={after}")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body, json!({"data": [], "nextAfter": after}));
    }
    // Inside: exactly the rest, and `limit` counts.
    let page = app
        .get(&format!("/v1/ledger/feed?after={}", last - 2))
        .await;
    assert_eq!(
        sequences(page.body["data"].as_array().unwrap()),
        [last - 1, last]
    );
    let page = app.get("/v1/ledger/feed?limit=1").await;
    assert_eq!(sequences(page.body["data"].as_array().unwrap()), [1]);
    assert_eq!(page.body["nextAfter"], 1);
    let page = app.get("/v1/ledger/feed?wait=0").await;
    assert_eq!(page.body["data"].as_array().unwrap().len() as u64, last);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("limit=x", "limit"),
        ("after=-1", "after"),
        ("after=1.5", "after"),
        ("after=18446744073709551616", "after"),
        ("after=", "after"),
        ("after=%FF", "after"),
        ("after=1&after=2", "after"),
        ("wait=61s", "wait"),
        ("wait=5m", "wait"),
        ("wait=soon", "wait"),
        ("wait=-1", "wait"),
        ("wait=", "wait"),
    ] {
        let reply = app.get(&format!("/v1/ledger/feed?{query}")).await;
        reply.assert_problem(400, Some(field));
    }
    // Junk in several parameters names each of them.
    let reply = app.get("/v1/ledger/feed?after=x&limit=0&wait=x").await;
    reply.assert_problem(400, None);
    assert_eq!(reply.error_fields(), ["after", "limit", "wait"]);
    // Authenticated like every route.
    let reply = app.send(app.bare(Method::GET, "/v1/ledger/feed")).await;
    reply.assert_problem(401, None);
}

#[tokio::test]
async fn an_organization_sees_only_its_own_events_numbered_from_one() {
    let app = spawn_app().await;
    busy(&app, 3).await;
    let other = app.another_organization().await;
    let (other_org, other_token) = (other.org.clone(), other.key.token.clone());
    // Events of both organizations, interleaved in the log.
    let theirs = busy(&other, 1).await;
    busy(&app, 2).await;
    let ours = walk(&app, 3).await;
    let others = walk(&other, 3).await;
    assert_eq!(
        sequences(&ours),
        (1..=ours.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        sequences(&others),
        (1..=others.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        others.len(),
        4,
        "the key, the endpoint, the event, one attempt"
    );
    let hashes = |events: &[Value]| -> HashSet<String> {
        events
            .iter()
            .map(|e| e["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(hashes(&ours).is_disjoint(&hashes(&others)));
    for event in &ours {
        let text = event.to_string();
        assert!(
            !text.contains(&other_org) && !text.contains(&theirs),
            "another organization's event in the feed: {text}"
        );
    }
    // A long-poll and a stream of the other organization see nothing of ours.
    let last_theirs = others.len();
    let poll = other
        .get(&format!("/v1/ledger/feed?after={last_theirs}&wait=1s"))
        .await;
    assert_eq!(poll.body["data"], json!([]));
    let url = format!("{}/v1/ledger/feed?after={last_theirs}", app.base);
    let mut stream = sse::open(&app.client, &url, &other_org, &other_token, None)
        .await
        .unwrap();
    busy(&app, 1).await;
    other.endpoint("theirs").await;
    let (id, data) = stream.next_event().await.unwrap();
    let event: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(id, Some((last_theirs + 1).to_string()));
    assert_eq!(
        event["type"], "EndpointCreated",
        "their next event, not ours"
    );
    assert!(data.contains("theirs"), "{data}");
}

#[tokio::test]
async fn a_long_poll_answers_when_an_event_arrives_and_empty_at_the_deadline() {
    let app = spawn_app().await;
    let delivery = busy(&app, 0).await;
    let last = *sequences(&walk(&app, 250).await).last().unwrap();
    let poll = {
        let request = app.request(
            Method::GET,
            &format!("/v1/ledger/feed?after={last}&wait=30s"),
        );
        let app_client = app.client.clone();
        tokio::spawn(async move { app_client.execute(request.build().unwrap()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !poll.is_finished(),
        "the long-poll answered before anything happened"
    );
    let reply = app
        .record_attempt(
            &delivery,
            &json!({"status": "delivered", "responseStatusCode": 200}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let response = poll.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    crate::schema::check_response(
        "GET",
        "/v1/ledger/feed",
        200,
        Some("application/json"),
        &bytes,
    );
    let page: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(sequences(page["data"].as_array().unwrap()), [last + 1]);
    assert_eq!(page["data"][0]["type"], "AttemptRecorded");
    assert_eq!(page["nextAfter"], last + 1);
    // Nothing more arrives: empty at the deadline, going on where it was.
    let page = app
        .get(&format!("/v1/ledger/feed?after={}&wait=1s", last + 1))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, json!({"data": [], "nextAfter": last + 1}));
    // Something already there: at once.
    let page = app
        .get(&format!("/v1/ledger/feed?after={last}&wait=60"))
        .await;
    assert_eq!(sequences(page.body["data"].as_array().unwrap()), [last + 1]);
}

#[tokio::test]
async fn an_event_stream_sends_every_event_with_its_sequence_as_id_and_resumes_after_last_event_id()
{
    let app = spawn_app().await;
    let delivery = busy(&app, 2).await;
    let url = format!("{}/v1/ledger/feed", app.base);
    let token = app.key.token.clone();
    let mut stream = sse::open(&app.client, &url, &app.org, &token, None)
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(sse::Frame::Retry(1000)));
    let existing = walk(&app, 250).await;
    for expected in &existing {
        let (id, data) = stream.next_event().await.unwrap();
        let event: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(&event, expected);
        assert_eq!(id, Some(expected["sequence"].to_string()));
    }
    // Live: each new event as it is recorded.
    for i in 0..3 {
        app.record_attempt(
            &delivery,
            &json!({"status": "failed", "lastError": format!("live {i}")}),
        )
        .await;
        let (id, data) = stream.next_event().await.unwrap();
        let event: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(event["data"]["lastError"], format!("live {i}"));
        assert_eq!(id, Some((existing.len() as u64 + 1 + i).to_string()));
    }
    let last = stream.last_id.clone().unwrap();
    drop(stream);
    // Reconnecting with Last-Event-ID resumes exactly after it, whatever `after` says.
    app.record_attempt(
        &delivery,
        &json!({"status": "failed", "lastError": "while away"}),
    )
    .await;
    let mut stream = sse::open(
        &app.client,
        &format!("{url}?after=1"),
        &app.org,
        &token,
        Some(&last),
    )
    .await
    .unwrap();
    let (id, data) = stream.next_event().await.unwrap();
    assert_eq!(id, Some((last.parse::<u64>().unwrap() + 1).to_string()));
    assert!(data.contains("while away"), "{data}");
    let refused = sse::open(&app.client, &url, &app.org, &token, Some("x1")).await;
    refused
        .unwrap_err()
        .assert_problem(400, Some("Last-Event-ID"));
}

#[tokio::test]
async fn feed_connections_are_bounded_per_organization_and_counted_in_metrics() {
    let node = new_node().await;
    let app = spawn_app_with(node, |state| {
        state.with_feed_limits(FeedLimits {
            per_organization: 2,
            per_node: 3,
            ..FeedLimits::default()
        })
    })
    .await;
    let url = format!("{}/v1/ledger/feed", app.base);
    let token = app.key.token.clone();
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(
            sse::open(&app.client, &url, &app.org, &token, None)
                .await
                .unwrap(),
        );
    }
    let refused = sse::open(&app.client, &url, &app.org, &token, None)
        .await
        .unwrap_err();
    refused.assert_problem(429, None);
    assert!(refused.header("retry-after").is_some());
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("max-feed-connections-per-org"),
        "{}",
        refused.body
    );
    // A long-poll counts too; a plain page does not.
    let poll = app.get("/v1/ledger/feed?after=100&wait=5s").await;
    poll.assert_problem(429, None);
    assert_eq!(app.get("/v1/ledger/feed").await.status, StatusCode::OK);
    // Another organization has its own places, up to the server's.
    let (org, other_token) = app.other_org().await;
    let theirs = sse::open(&app.client, &url, &org, &other_token, None)
        .await
        .unwrap();
    let full = sse::open(&app.client, &url, &org, &other_token, None)
        .await
        .unwrap_err();
    full.assert_problem(429, None);
    assert!(
        full.body["detail"]
            .as_str()
            .unwrap()
            .contains("max-feed-connections:")
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("hookledger_feed_connections{mode=\"event_stream\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hookledger_feed_connections_refused_total 3"),
        "{metrics}"
    );
    // Closing frees the places.
    drop(theirs);
    let mut stream = open.pop().unwrap();
    drop(open);
    let first = stream.next_event().await.unwrap();
    assert_eq!(first.0.as_deref(), Some("1"));
    drop(stream);
    let mut freed = false;
    for _ in 0..100 {
        let metrics = app.metrics().await;
        if metrics.contains("hookledger_feed_connections{mode=\"event_stream\"} 0") {
            assert!(metrics.contains("hookledger_feed_events_sent_total{mode=\"event_stream\"}"));
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "closed streams still counted");
    sse::open(&app.client, &url, &app.org, &token, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_idle_event_stream_sends_a_heartbeat_comment() {
    let app = spawn_app().await;
    let last = walk(&app, 250).await.len();
    let url = format!("{}/v1/ledger/feed?after={last}", app.base);
    let mut stream = sse::open(&app.client, &url, &app.org, &app.key.token, None)
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(sse::Frame::Retry(1000)));
    assert_eq!(
        stream.next().await,
        Some(sse::Frame::Comment(" heartbeat".into())),
        "`: heartbeat` after 15 s without an event"
    );
}
