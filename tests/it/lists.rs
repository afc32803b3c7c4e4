//! Lists: newest first, `limit` 1..=250, opaque cursors across pages, and the
//! filters of events and deliveries; a bad parameter is a 400 naming it.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Follows `nextCursor` to the end; returns the ids in order and the page count.
async fn walk(app: &TestApp, path: &str) -> (Vec<String>, usize) {
    let pages = app.every_page(path).await;
    let ids = pages
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap())
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, pages.len())
}

#[tokio::test]
async fn endpoints_page_newest_first_to_the_end() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            app.endpoint(&format!("e{i}")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    created.reverse();

    let (ids, pages) = walk(&app, "/v1/outbound-webhook-endpoints?limit=2").await;

    assert_eq!(ids, created);
    assert_eq!(pages, 3);
    let (ids, pages) = walk(&app, "/v1/outbound-webhook-endpoints?limit=1").await;
    assert_eq!((ids.len(), pages), (5, 5));
    let (ids, pages) = walk(&app, "/v1/outbound-webhook-endpoints?limit=250").await;
    assert_eq!((ids.len(), pages), (5, 1));
    let (ids, _) = walk(&app, "/v1/outbound-webhook-endpoints").await;
    assert_eq!(ids, created);
}

#[tokio::test]
async fn bad_list_parameters_are_named() {
    let app = spawn_app().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("limit=ten", "limit"),
        ("cursor=nothex", "cursor"),
        ("cursor=00", "cursor"),
        ("limit=1&limit=2", "limit"),
    ] {
        app.get(&format!("/v1/outbound-webhook-endpoints?{query}"))
            .await
            .assert_problem(400, Some(field));
    }
    for (query, field) in [
        ("status=bogus", "status"),
        ("createdAfter=yesterday", "createdAfter"),
        ("createdBefore=2023-02-30T00:00:00Z", "createdBefore"),
        ("eventType=", "eventType"),
    ] {
        app.get(&format!("/v1/outbound-webhook-events?{query}"))
            .await
            .assert_problem(400, Some(field));
    }
    for (query, field) in [
        ("status=Delivered", "status"),
        ("endpointId=", "endpointId"),
        ("eventId=", "eventId"),
    ] {
        app.get(&format!("/v1/outbound-webhook-deliveries?{query}"))
            .await
            .assert_problem(400, Some(field));
    }
    // A cursor from another list is not a cursor of this one.
    app.endpoint("a").await;
    app.endpoint("b").await;
    let page = app.get("/v1/outbound-webhook-endpoints?limit=1").await;
    let cursor = page.body["nextCursor"].as_str().unwrap();
    app.get(&format!("/v1/outbound-webhook-events?cursor={cursor}"))
        .await
        .assert_problem(400, Some("cursor"));
}

fn ids(reply: &Value) -> BTreeSet<String> {
    reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn events_filter_by_status_type_and_creation_time() {
    let app = spawn_app().await;
    app.create_endpoint(
        json!({"name": "a", "url": "https://a.example.com/", "eventTypes": ["paid"]}),
    )
    .await;
    let skipped = app
        .accept_event(json!({"eventType": "refunded", "payload": {}}))
        .await;
    let pending = app
        .accept_event(json!({"eventType": "paid", "payload": {}}))
        .await;
    let delivered = app
        .accept_event(json!({"eventType": "paid", "payload": {}}))
        .await;
    let d = delivered["deliveries"][0]["id"].as_str().unwrap();
    app.record_attempt(d, &json!({"status": "delivered"})).await;
    let id = |e: &Value| e["id"].as_str().unwrap().to_owned();

    let by_status = app
        .get("/v1/outbound-webhook-events?status=delivered")
        .await;
    assert_eq!(ids(&by_status.body), BTreeSet::from([id(&delivered)]));
    let by_status = app.get("/v1/outbound-webhook-events?status=skipped").await;
    assert_eq!(ids(&by_status.body), BTreeSet::from([id(&skipped)]));
    let by_type = app.get("/v1/outbound-webhook-events?eventType=paid").await;
    assert_eq!(
        ids(&by_type.body),
        BTreeSet::from([id(&pending), id(&delivered)])
    );
    let after = pending["createdAt"].as_str().unwrap();
    let later = app
        .get(&format!("/v1/outbound-webhook-events?createdAfter={after}"))
        .await;
    assert_eq!(ids(&later.body), BTreeSet::from([id(&delivered)]));
    let earlier = app
        .get(&format!(
            "/v1/outbound-webhook-events?createdBefore={after}"
        ))
        .await;
    assert_eq!(ids(&earlier.body), BTreeSet::from([id(&skipped)]));
    let combined = app
        .get(&format!(
            "/v1/outbound-webhook-events?eventType=paid&status=pending&createdBefore={}",
            delivered["createdAt"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&combined.body), BTreeSet::from([id(&pending)]));
}

#[tokio::test]
async fn deliveries_filter_by_status_endpoint_and_event() {
    let app = spawn_app().await;
    let a = app.endpoint("a").await;
    app.endpoint("b").await;
    let first = app
        .accept_event(json!({"eventType": "x", "payload": {}}))
        .await;
    let second = app
        .accept_event(json!({"eventType": "x", "payload": {}}))
        .await;
    let d = first["deliveries"][0]["id"].as_str().unwrap();
    app.record_attempt(d, &json!({"status": "failed"})).await;

    let all = app.get("/v1/outbound-webhook-deliveries").await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 4);
    assert_eq!(all.body["data"][0]["eventId"], second["id"], "newest first");
    let failed = app
        .get("/v1/outbound-webhook-deliveries?status=failed")
        .await;
    assert_eq!(ids(&failed.body), BTreeSet::from([d.to_owned()]));
    let of_a = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries?endpointId={}",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(of_a.body["data"].as_array().unwrap().len(), 2);
    assert!(
        of_a.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["endpointId"] == a["id"])
    );
    let of_second = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries?eventId={}&status=pending&limit=1",
            second["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(of_second.body["data"].as_array().unwrap().len(), 1);
    assert!(of_second.body["nextCursor"].is_string());
}
