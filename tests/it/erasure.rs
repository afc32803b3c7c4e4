//! Retention and erasure on the real router over TCP: once an event's content
//! is erased, no route serves its bytes (before anything has taken them off
//! the disk), the erasure is an event in the history, the ledger still
//! verifies and counts what is erased, PostgreSQL keeps no row holding the
//! bytes once the eraser has run, and retention erases exactly what is older
//! than the cut-off. Bodies carry a marker string unique to the test, so
//! "the bytes" is a substring search a user could run on any answer.

use std::sync::Arc;
use std::time::Duration;

use hookledger::erasure::{Eraser, Retention};
use hookledger::ledger::new_id;
use hookledger::node::Node;
use hookledger::projector::Config;
use hookledger::store::memory::MemoryStore;
use projections::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, TestNode, spawn_app, spawn_app_with};
use crate::{sse, support_postgres};

/// A string that appears nowhere but in the bodies a test plants it in.
fn marker(what: &str) -> String {
    format!("{what}-{}", new_id("m"))
}

fn content_path(event_id: &str) -> String {
    format!("/v1/outbound-webhook-events/{event_id}/content")
}

async fn erase(app: &TestApp, event_id: &str) -> Reply {
    app.send(app.request(Method::DELETE, &content_path(event_id)))
        .await
}

/// An event whose payload holds `payload_marker`, fanned out to the app's
/// endpoints, and on its first delivery two failed attempts whose response
/// bodies hold `response_marker` and one without a body: `(event id,
/// delivery id)`.
async fn event_with_bodies(
    app: &TestApp,
    payload_marker: &str,
    response_marker: &str,
) -> (String, String) {
    let event = app
        .accept_event(json!({"eventType": "invoice.paid", "payload": {"customer": payload_marker}}))
        .await;
    let event_id = event["id"].as_str().unwrap().to_owned();
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    for i in 0..2 {
        let reply = app
            .record_attempt(
                &delivery,
                &json!({"status": "failed", "responseStatusCode": 500,
                        "responseBody": {"echo": response_marker, "try": i}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = app
        .record_attempt(
            &delivery,
            &json!({"status": "failed", "lastError": "timeout"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    (event_id, delivery)
}

/// Every event of the app's organization in the change feed, page by page.
async fn feed(app: &TestApp) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = app
            .get(&format!("/v1/ledger/feed?after={after}&limit=3"))
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let data = page.body["data"].as_array().unwrap().clone();
        if data.is_empty() {
            return events;
        }
        after = page.body["nextAfter"].as_u64().unwrap();
        events.extend(data);
    }
}

/// The organization's feed as an event stream: the first `count` events.
async fn feed_stream(app: &TestApp, count: usize) -> String {
    let url = format!("{}/v1/ledger/feed", app.base);
    let mut stream = sse::open(&app.client, &url, &app.org, &app.key.token, None)
        .await
        .expect("the stream opens");
    let mut text = String::new();
    for _ in 0..count {
        let (_, data) = tokio::time::timeout(Duration::from_secs(20), stream.next_event())
            .await
            .expect("the next event in time")
            .expect("the stream goes on");
        text.push_str(&data);
        text.push('\n');
    }
    text
}

/// What every read route serves about an event and its delivery, as text,
/// route by route: the event, the event list, the delivery and its attempt
/// history, the attempts across deliveries, the raw delivery events, the
/// change feed in pages and as an event stream.
async fn every_route(app: &TestApp, event_id: &str, delivery: &str) -> Vec<(&'static str, String)> {
    let text = |pages: Vec<Value>| serde_json::to_string(&pages).unwrap();
    let event = app
        .get(&format!("/v1/outbound-webhook-events/{event_id}"))
        .await;
    assert_eq!(event.status, StatusCode::OK, "{}", event.body);
    let feed = feed(app).await;
    let stream = feed_stream(app, feed.len()).await;
    vec![
        ("GET event", String::from_utf8(event.bytes).unwrap()),
        (
            "event list",
            text(app.every_page("/v1/outbound-webhook-events?limit=2").await),
        ),
        (
            "delivery",
            text(vec![app.get_delivery(delivery).await.body]),
        ),
        (
            "attempt history",
            text(
                app.every_page(&format!(
                    "/v1/outbound-webhook-deliveries/{delivery}/attempts?limit=2"
                ))
                .await,
            ),
        ),
        (
            "attempts across deliveries",
            text(
                app.every_page("/v1/outbound-webhook-attempts?limit=2")
                    .await,
            ),
        ),
        (
            "raw delivery events",
            text(
                app.every_page(&format!(
                    "/v1/outbound-webhook-deliveries/{delivery}/events?limit=2"
                ))
                .await,
            ),
        ),
        ("change feed pages", text(feed)),
        ("change feed stream", stream),
    ]
}

#[tokio::test]
async fn after_delete_content_no_route_serves_the_erased_bytes_before_any_compaction() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    let (payload, response) = (marker("payload"), marker("response"));
    let (event_id, delivery) = event_with_bodies(&app, &payload, &response).await;
    let (kept_payload, kept_response) = (marker("kept-payload"), marker("kept-response"));
    let (kept_id, kept_delivery) = event_with_bodies(&app, &kept_payload, &kept_response).await;

    // Before: the bodies are there to be found, route by route.
    let before = every_route(&app, &event_id, &delivery).await;
    for (route, text) in &before {
        if *route == "delivery" {
            continue; // A delivery's snapshot carries no body.
        }
        assert!(
            text.contains(&payload) || text.contains(&response),
            "{route} serves a body before the erasure: {text}"
        );
    }

    let erased = erase(&app, &event_id).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.body);
    assert_eq!(erased.body["id"], json!(event_id));
    assert_eq!(erased.body["payload"], Value::Null);
    assert_eq!(erased.body["payloadErased"], true);

    // The embedded store here still holds the bytes: nothing has compacted.
    for (route, text) in every_route(&app, &event_id, &delivery).await {
        assert!(
            !text.contains(&payload) && !text.contains(&response),
            "{route} serves an erased body: {text}"
        );
    }
    let event = app
        .get(&format!("/v1/outbound-webhook-events/{event_id}"))
        .await;
    assert_eq!(event.body["payload"], Value::Null);
    assert_eq!(event.body["payloadErased"], true);
    let history = app.history(&delivery).await;
    assert_eq!(history.len(), 3);
    for attempt in &history[..2] {
        assert_eq!(attempt["responseBody"], Value::Null, "{attempt}");
        assert_eq!(attempt["responseBodyErased"], true, "{attempt}");
    }
    // An attempt that never had a body is not "erased".
    assert_eq!(history[2]["responseBody"], Value::Null);
    assert!(
        history[2].get("responseBodyErased").is_none(),
        "{}",
        history[2]
    );
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/events?limit=250"
        ))
        .await;
    let raw = raw.body["data"].as_array().unwrap();
    let erased_raw: Vec<_> = raw.iter().filter(|e| e["contentErased"] == true).collect();
    assert_eq!(erased_raw.len(), 2, "both bodied attempts: {raw:?}");
    assert!(erased_raw.iter().all(|e| e["content"].is_null()));
    // Their hashed data still names each body by its digest.
    assert!(
        erased_raw
            .iter()
            .all(|e| e["data"]["responseBodyDigest"].is_string())
    );

    // The other event is untouched.
    let kept = app
        .get(&format!("/v1/outbound-webhook-events/{kept_id}"))
        .await;
    assert_eq!(kept.body["payload"]["customer"], json!(kept_payload));
    assert!(kept.body.get("payloadErased").is_none(), "{}", kept.body);
    let kept_history = app.history(&kept_delivery).await;
    assert_eq!(
        kept_history[0]["responseBody"]["echo"],
        json!(kept_response)
    );

    // An attempt recorded after the erasure keeps its body; its answer keeps
    // `payload` an object, as the record-attempt contract requires.
    let later = marker("later");
    let answer = app
        .record_attempt(
            &delivery,
            &json!({"status": "delivered", "responseStatusCode": 200, "responseBody": {"echo": later}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["payload"], json!({}));
    assert_eq!(answer.body["payloadErased"], true);
    assert!(!String::from_utf8_lossy(&answer.bytes).contains(&payload));
    let history = app.history(&delivery).await;
    assert_eq!(history[3]["responseBody"]["echo"], json!(later));

    // Another organization cannot erase it, nor learn that it exists; a
    // missing id is the same 404.
    let other = app.another_organization().await;
    erase(&other, &event_id).await.assert_problem(404, None);
    erase(&app, &new_id("evt")).await.assert_problem(404, None);
    let still = app.history(&delivery).await;
    assert_eq!(still[3]["responseBody"]["echo"], json!(later));

    // Erasing again is fine, and erases what was recorded since.
    let again = erase(&app, &event_id).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["payloadErased"], true);
    for (route, text) in every_route(&app, &event_id, &delivery).await {
        assert!(
            !text.contains(&later) && !text.contains(&payload),
            "{route} serves an erased body: {text}"
        );
    }
    let kept = app
        .get(&format!("/v1/outbound-webhook-events/{kept_id}"))
        .await;
    assert_eq!(kept.body["payload"]["customer"], json!(kept_payload));
}

#[tokio::test]
async fn the_erasure_is_an_event_in_the_history_with_who_asked_and_why() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    let (event_id, _) = event_with_bodies(&app, &marker("p"), &marker("r")).await;
    let before = feed(&app).await;
    assert!(before.iter().all(|e| e["type"] != "ContentErased"));
    let reply = erase(&app, &event_id).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let after = feed(&app).await;
    assert_eq!(after.len(), before.len() + 1, "one event more");
    let erasure = after.last().unwrap();
    assert_eq!(erasure["type"], "ContentErased", "{erasure}");
    assert_eq!(erasure["schemaVersion"], 1);
    assert_eq!(erasure["stream"], json!(format!("event-{event_id}")));
    assert_eq!(erasure["metadata"]["keyId"], json!(app.key.key_id));
    assert_eq!(erasure["data"]["eventId"], json!(event_id));
    assert_eq!(erasure["data"]["reason"], "request");
    assert_eq!(erasure["data"]["organizationId"], json!(app.org));
    assert!(erasure["recordedAt"].is_string());
    // It is chained like any other event: the tree grew by it.
    let head = app.get("/v1/ledger/tree-head").await;
    assert_eq!(head.body["treeSize"], json!(after.len()));
}

/// A node on an in-memory store, which removes content when the eraser asks.
async fn memory_app() -> TestApp {
    let node = Node::start(Arc::new(MemoryStore::new()), Config::in_memory())
        .await
        .expect("a node on the memory store");
    spawn_app_with(node, |s| s).await
}

/// The eraser of `app`'s node, its state kept in `dir`.
fn eraser(app: &TestApp, dir: &std::path::Path) -> Eraser {
    Eraser::open(app.node.store.clone(), app.node.projector.clone(), dir).expect("the eraser")
}

#[tokio::test]
async fn after_the_eraser_removes_the_bodies_audit_verify_passes_and_counts_them() {
    let app = memory_app().await;
    app.endpoint("a").await;
    app.endpoint("b").await;
    let payload = marker("payload");
    let (event_id, delivery) = event_with_bodies(&app, &payload, &marker("r")).await;
    let (kept_id, _) = event_with_bodies(&app, &marker("kp"), &marker("kr")).await;
    let state = tempfile::tempdir().unwrap();

    let report = hookledger::audit::verify(app.node.store.as_ref(), &[], |_| {})
        .await
        .unwrap();
    assert_eq!(report.failure, None);
    // Two payloads, two response bodies each; the bodiless attempts name none.
    assert_eq!((report.bodies.kept, report.bodies.erased), (6, 0));

    assert_eq!(erase(&app, &event_id).await.status, StatusCode::OK);
    let pass = eraser(&app, state.path()).pass().await.unwrap();
    assert_eq!((pass.erasures, pass.removed), (1, 3), "{pass:?}");
    assert_eq!(pass.through, app.head());

    let report = hookledger::audit::verify(app.node.store.as_ref(), &[], |_| {})
        .await
        .unwrap();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!(report.bodies.kept, 3, "{report:?}");
    assert_eq!(report.bodies.erased, 3, "{report:?}");
    assert_eq!(report.bodies.erasures, 1, "{report:?}");
    assert_eq!(report.digest.position, app.head());

    // Off the store now, still served as erased, never as an error.
    let event = app
        .get(&format!("/v1/outbound-webhook-events/{event_id}"))
        .await;
    assert_eq!(event.status, StatusCode::OK, "{}", event.body);
    assert_eq!(event.body["payloadErased"], true);
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/events?limit=250"
        ))
        .await;
    assert_eq!(raw.status, StatusCode::OK, "{}", raw.body);
    let feed = feed(&app).await;
    assert!(!serde_json::to_string(&feed).unwrap().contains(&payload));
    let kept = app
        .get(&format!("/v1/outbound-webhook-events/{kept_id}"))
        .await;
    assert!(kept.body["payload"]["customer"].is_string());

    // A second pass has nothing to do; a new eraser on the same state
    // goes on from where the last one stopped.
    let pass = eraser(&app, state.path()).pass().await.unwrap();
    assert_eq!((pass.erasures, pass.removed), (0, 0), "{pass:?}");
}

#[tokio::test]
async fn retention_erases_the_bodies_recorded_before_its_cut_off_and_keeps_the_later_ones() {
    let app = memory_app().await;
    app.endpoint("receiver").await;
    let (old_payload, old_response) = (marker("old-p"), marker("old-r"));
    let (old_id, old_delivery) = event_with_bodies(&app, &old_payload, &old_response).await;
    // Log time has microseconds: the next event is recorded strictly later.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (new_payload, new_response) = (marker("new-p"), marker("new-r"));
    let (new_id, new_delivery) = event_with_bodies(&app, &new_payload, &new_response).await;
    let events = feed(&app).await;
    let cut_off = events
        .iter()
        .find(|e| e["data"]["eventId"] == json!(new_id) && e["type"] == "WebhookEventAccepted")
        .and_then(|e| Timestamp::parse_rfc3339(e["recordedAt"].as_str()?))
        .expect("the new event's acceptance is in the feed");

    let keep = Duration::from_secs(90 * 24 * 3600);
    let retention = Retention::new(
        app.node.ledger.clone(),
        app.node.store.clone(),
        app.node.projector.clone(),
        keep,
    );
    let now = Timestamp::from_micros(cut_off.micros() + keep.as_micros() as i64);
    // Long before the cut-off, nothing is old enough.
    let early = Timestamp::from_micros(now.micros() - 3_600_000_000);
    assert_eq!(retention.pass(early).await.unwrap(), 0);
    assert_eq!(retention.pass(now).await.unwrap(), 1, "one organization");

    let old = app
        .get(&format!("/v1/outbound-webhook-events/{old_id}"))
        .await;
    assert_eq!(old.body["payload"], Value::Null);
    assert_eq!(old.body["payloadErased"], true);
    let history = app.history(&old_delivery).await;
    assert!(history[..2].iter().all(|a| a["responseBodyErased"] == true));
    let new = app
        .get(&format!("/v1/outbound-webhook-events/{new_id}"))
        .await;
    assert_eq!(new.body["payload"]["customer"], json!(new_payload));
    let history = app.history(&new_delivery).await;
    assert_eq!(history[0]["responseBody"]["echo"], json!(new_response));
    let served = serde_json::to_string(&feed(&app).await).unwrap();
    assert!(!served.contains(&old_payload) && !served.contains(&old_response));
    assert!(served.contains(&new_payload) && served.contains(&new_response));

    // Nothing new got old: a second pass records nothing.
    let head = app.head();
    assert_eq!(retention.pass(now).await.unwrap(), 0);
    assert_eq!(app.head(), head, "nothing appended");

    // The erasure is in the history, asked by no key, with its cut-off.
    let events = feed(&app).await;
    let erasure = events.last().unwrap();
    assert_eq!(erasure["type"], "ContentErased", "{erasure}");
    assert_eq!(erasure["data"]["reason"], "retention");
    assert_eq!(
        erasure["data"]["recordedBefore"],
        json!(cut_off.to_rfc3339())
    );
    assert!(erasure["data"]["eventId"].is_null(), "{erasure}");
    assert!(erasure["metadata"].get("keyId").is_none(), "{erasure}");

    // The eraser takes off the store exactly the old bodies.
    let state = tempfile::tempdir().unwrap();
    let pass = eraser(&app, state.path()).pass().await.unwrap();
    assert_eq!((pass.erasures, pass.removed), (1, 3), "{pass:?}");
    let report = hookledger::audit::verify(app.node.store.as_ref(), &[], |_| {})
        .await
        .unwrap();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!((report.bodies.kept, report.bodies.erased), (3, 3));

    // Once the new bodies are old too, the next pass takes them as well.
    let later = Timestamp::from_micros(now.micros() + 1);
    assert_eq!(retention.pass(later).await.unwrap(), 1);
    let new = app
        .get(&format!("/v1/outbound-webhook-events/{new_id}"))
        .await;
    assert_eq!(new.body["payloadErased"], true);

    // Everything recorded so far is old at a cut-off of now: one erasure
    // takes the rest (the new event's response bodies, recorded after its
    // acceptance). Then the organization is quiet: its only event since is
    // that erasure, which lies between this cut-off and the next one and
    // keeps no body, so the next pass records nothing.
    let keep_micros = keep.as_micros() as i64;
    let cut = Timestamp::from_datetime(chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let at = |t: Timestamp| Timestamp::from_micros(t.micros() + keep_micros);
    assert_eq!(retention.pass(at(cut)).await.unwrap(), 1);
    let history = app.history(&new_delivery).await;
    // The first two carried bodies; the third reported none.
    assert!(
        history[..2].iter().all(|a| a["responseBodyErased"] == true),
        "{history:?}"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let next_cut = Timestamp::from_datetime(chrono::Utc::now());
    let head = app.head();
    assert_eq!(retention.pass(at(next_cut)).await.unwrap(), 0);
    assert_eq!(app.head(), head, "nothing appended");
}

#[tokio::test]
async fn wrong_erasure_requests_get_a_clear_4xx_problem_and_change_nothing() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    let payload = marker("p");
    let (event_id, _) = event_with_bodies(&app, &payload, &marker("r")).await;
    let head = app.head();

    let long = "e".repeat(300);
    for id in [
        "evt_%00",
        "evt_%2F..%2Fx",
        "%E2%98%83",
        "evt_%20",
        long.as_str(),
        "evt_..",
    ] {
        let reply = erase(&app, id).await;
        assert!(
            reply.status.is_client_error(),
            "{id}: {} {}",
            reply.status,
            reply.body
        );
        reply.assert_problem(reply.status.as_u16(), None);
    }
    // No credentials, another organization's header with this key.
    let reply = app
        .send(app.bare(Method::DELETE, &content_path(&event_id)))
        .await;
    reply.assert_problem(401, None);
    let reply = app
        .send(
            app.bare(Method::DELETE, &content_path(&event_id))
                .bearer_auth(&app.key.token)
                .header("x-organization-id", new_id("org")),
        )
        .await;
    assert!(reply.status.is_client_error(), "{}", reply.status);
    reply.assert_problem(reply.status.as_u16(), None);
    // Other methods on the content route.
    for method in [Method::GET, Method::POST, Method::PUT] {
        let reply = app
            .send(app.request(method.clone(), &content_path(&event_id)))
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(app.head(), head, "nothing appended");

    // A body is not part of the request: refused, whole or streamed, and
    // nothing erased.
    let reply = app
        .send(
            app.request(Method::DELETE, &content_path(&event_id))
                .json(&json!({"deliveryId": "dlv_only_this_one"})),
        )
        .await;
    reply.assert_problem(400, Some("body"));
    let chunked = raw_delete_chunked(&app, &event_id).await;
    assert!(chunked.starts_with("HTTP/1.1 400"), "{chunked}");
    assert!(chunked.contains("\"field\":\"body\""), "{chunked}");
    assert_eq!(app.head(), head, "nothing appended");
    // An empty body is no body.
    let reply = app
        .send(
            app.request(Method::DELETE, &content_path(&event_id))
                .header("content-length", "0"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

/// `DELETE` of the event's content with a chunked body, over a raw
/// connection: the whole answer, as text.
async fn raw_delete_chunked(app: &TestApp, event_id: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "DELETE {} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n\
         x-organization-id: {}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
        content_path(event_id),
        app.key.token,
        app.org
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    answer
}

/// Every row of every table in the database that holds `needle`: bytea
/// columns searched as bytes, every other column as its text.
async fn rows_holding(client: &tokio_postgres::Client, needle: &str) -> Vec<String> {
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = 'public' \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap();
    assert!(!columns.is_empty(), "the schema has tables");
    let mut found = Vec::new();
    for row in &columns {
        let (table, column, kind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let condition = if kind == "bytea" {
            format!("position(convert_to($1, 'UTF8') in \"{column}\") > 0")
        } else {
            format!("strpos(\"{column}\"::text, $1) > 0")
        };
        let count: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM \"{table}\" WHERE {condition}"),
                &[&needle],
            )
            .await
            .unwrap()
            .get(0);
        if count > 0 {
            found.push(format!("{table}.{column}: {count} rows"));
        }
    }
    found
}

/// Every event row as PostgreSQL holds it, up to `position`.
async fn event_rows(client: &tokio_postgres::Client, position: u64) -> Vec<String> {
    client
        .query(
            "SELECT e::text FROM hookledger_events e WHERE position <= $1 ORDER BY position",
            &[&(position as i64)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_no_row_holds_an_erased_body_once_the_eraser_has_run() {
    let Some(url) = support_postgres::database("erasure::no_row_holds_an_erased_body").await else {
        return;
    };
    let model = tempfile::tempdir().unwrap();
    let store = hookledger::store::postgres::PostgresStore::open(&url, Default::default())
        .await
        .expect("open the PostgreSQL store");
    let node = Node::start(Arc::new(store), Config::in_dir(model.path()))
        .await
        .expect("a node on PostgreSQL");
    let app = spawn_app_with(
        TestNode {
            node,
            dir: None,
            backing: None,
        },
        |s| s,
    )
    .await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);

    app.endpoint("receiver").await;
    let (payload, response) = (marker("payload"), marker("response"));
    let (event_id, _) = event_with_bodies(&app, &payload, &response).await;
    let kept = marker("kept");
    event_with_bodies(&app, &kept, &kept).await;
    assert!(
        !rows_holding(&client, &payload).await.is_empty(),
        "the search finds a body that is there"
    );
    let head = app.head();
    let rows_before = event_rows(&client, head).await;

    assert_eq!(erase(&app, &event_id).await.status, StatusCode::OK);
    let state = tempfile::tempdir().unwrap();
    let pass = eraser(&app, state.path()).pass().await.unwrap();
    assert_eq!((pass.erasures, pass.removed), (1, 3), "{pass:?}");

    for needle in [&payload, &response] {
        let found = rows_holding(&client, needle).await;
        assert!(found.is_empty(), "{needle} is still in {found:?}");
    }
    assert!(
        !rows_holding(&client, &kept).await.is_empty(),
        "the other event's bodies stay"
    );
    assert_eq!(
        event_rows(&client, head).await,
        rows_before,
        "every event row and hash is as it was"
    );
    let report = hookledger::audit::verify(app.node.store.as_ref(), &[], |_| {})
        .await
        .unwrap();
    assert_eq!(report.failure, None, "{report:?}");
    assert_eq!((report.bodies.kept, report.bodies.erased), (3, 3));

    // The read model on disk holds no body either.
    app.node.close().unwrap();
    for file in crate::binary::walk(model.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(payload.len())
                .any(|w| w == payload.as_bytes()),
            "{} holds the payload",
            file.display()
        );
    }
}
