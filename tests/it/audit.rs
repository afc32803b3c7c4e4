//! What auditors read: a delivery as of a past version, the raw stream paged
//! oldest first, and the tree head that replaces the ledger digest for tenants.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn as_of_version_shows_the_delivery_after_its_first_n_events() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    app.record_attempt(
        &d,
        &json!({"status": "retry_scheduled", "lastError": "boom", "responseStatusCode": 500}),
    )
    .await;
    app.record_attempt(
        &d,
        &json!({"status": "delivered", "responseStatusCode": 204}),
    )
    .await;
    let path = format!("/v1/outbound-webhook-deliveries/{d}");

    let now = app.get(&path).await;
    assert_eq!(now.header("etag"), Some("\"2\""));
    assert_eq!(now.body["status"], "delivered");

    let at0 = app.get(&format!("{path}?asOfVersion=0")).await;
    assert_eq!(at0.status, StatusCode::OK);
    assert_eq!(at0.header("etag"), Some("\"0\""));
    assert_eq!(at0.body["status"], "pending");
    assert_eq!(at0.body["attemptCount"], 0);

    let at1 = app.get(&format!("{path}?asOfVersion=1")).await;
    assert_eq!(at1.body["status"], "retry_scheduled");
    assert_eq!(at1.body["lastError"], "boom");
    assert_eq!(at1.body["responseStatusCode"], 500);
    assert_eq!(at1.body["attemptCount"], 1);

    let at2 = app.get(&format!("{path}?asOfVersion=2")).await;
    assert_eq!(at2.body, now.body);

    app.get(&format!("{path}?asOfVersion=3"))
        .await
        .assert_problem(400, Some("asOfVersion"));
    app.get(&format!("{path}?asOfVersion=-1"))
        .await
        .assert_problem(400, Some("asOfVersion"));
    app.get(&format!("{path}?asOfVersion=x"))
        .await
        .assert_problem(400, Some("asOfVersion"));
}

#[tokio::test]
async fn the_raw_stream_pages_oldest_first() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    for i in 0..5 {
        app.record_attempt(
            &d,
            &json!({"status": "failed", "lastError": format!("e{i}")}),
        )
        .await;
    }
    let mut versions = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/outbound-webhook-deliveries/{d}/events?limit=2");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get(&path).await;
        pages += 1;
        versions.extend(
            page.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["version"].as_u64().unwrap()),
        );
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(versions, vec![0, 1, 2, 3, 4]);
    assert_eq!(pages, 3);
    let history = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{d}/attempts?limit=3"
        ))
        .await;
    assert_eq!(history.body["data"].as_array().unwrap().len(), 3);
    let next = history.body["nextCursor"].as_str().unwrap();
    let rest = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{d}/attempts?limit=3&cursor={next}"
        ))
        .await;
    assert_eq!(rest.body["data"][0]["attemptNumber"], 4);
    assert!(rest.body["nextCursor"].is_null());
}

#[tokio::test]
async fn tenants_get_their_tree_head_not_the_ledger_digest() {
    let app = spawn_app().await;
    // The digest's position would tell a tenant every other tenant's volume.
    let digest = app.get("/v1/ledger/digest").await;
    digest.assert_problem(404, None);
    let before = app.get("/v1/ledger/tree-head").await;
    assert_eq!(before.status, StatusCode::OK);
    let d = app.delivery().await;
    app.record_attempt(&d, &json!({"status": "delivered"}))
        .await;
    let after = app.get("/v1/ledger/tree-head").await;
    let grown =
        after.body["treeSize"].as_u64().unwrap() - before.body["treeSize"].as_u64().unwrap();
    assert_eq!(grown, 3, "an endpoint, an event and an attempt");
    assert_ne!(after.body["rootHash"], before.body["rootHash"]);
}
