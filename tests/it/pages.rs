//! Every list is bounded by bytes as well as by items: a page stops before the
//! item that would take its body past `--max-page-bytes`, always takes one
//! item if one is left, and `nextCursor` walks on to the end with every item
//! once, in order. Large fan-outs, payloads and response bodies cannot make
//! one answer hundreds of megabytes.

use hookledger::limits::Limits;
use serde_json::{Value, json};

use crate::helpers::{TestApp, attempts_path, spawn_app};

/// Every page of `path`, followed to its end with `?limit=250`, with the
/// size of each body; the items newest (or, for histories, oldest) first.
async fn walk(app: &TestApp, path: &str) -> (Vec<usize>, Vec<Value>) {
    let mut sizes = Vec::new();
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit=250&cursor={c}"),
            None => format!("{path}{sep}limit=250"),
        };
        let page = app.get(&url).await;
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        sizes.push(page.bytes.len());
        let data = page.body["data"].as_array().unwrap().clone();
        assert!(
            !data.is_empty() || cursor.is_none(),
            "an empty page mid-list"
        );
        items.extend(data);
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return (sizes, items),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_list_of_wide_events_is_paged_by_bytes_not_only_by_items() {
    let app = spawn_app().await;
    // The shape, scaled down: every event fans out to 200 endpoints.
    for i in 0..200 {
        app.create_endpoint(json!({"name": format!("receiver {i:03}"), "url": format!("https://r{i}.example.com/hooks/webhook")}))
            .await;
    }
    let mut accepted = Vec::new();
    for n in 0..24 {
        let event = app
            .accept_event(json!({"eventType": "order.paid", "payload": {"n": n}}))
            .await;
        accepted.push(event["id"].as_str().unwrap().to_owned());
    }
    accepted.reverse();

    let (sizes, items) = walk(&app, "/v1/outbound-webhook-events").await;

    let budget = Limits::default().page_bytes;
    assert!(sizes.len() > 1, "one page of {} bytes", sizes[0]);
    for size in &sizes {
        assert!(*size <= budget, "a page of {size} bytes");
    }
    assert_eq!(ids(&items), accepted, "every event once, newest first");
    assert!(
        items
            .iter()
            .all(|e| e["deliveries"].as_array().unwrap().len() == 200)
    );
    crate::binary::record_figures(
        "pages",
        &format!(
            "pages: 24 events fanned out to 200 endpoints each, ?limit=250: {} pages of at most {} bytes",
            sizes.len(),
            sizes.iter().max().unwrap()
        ),
    );
}

#[tokio::test]
async fn a_page_always_takes_one_item_however_large() {
    let app = spawn_app().await;
    app.endpoint("receiver").await;
    let big = "x".repeat(200_000);
    for n in 0..3 {
        app.accept_event(json!({"eventType": "big", "payload": {"n": n, "blob": big}}))
            .await;
    }
    app.node.ledger.set_limits(Limits {
        page_bytes: 1000,
        ..Limits::default()
    });
    for path in [
        "/v1/outbound-webhook-events",
        "/v1/outbound-webhook-deliveries",
        "/v1/outbound-webhook-endpoints",
    ] {
        let (sizes, items) = walk(&app, path).await;
        let expected = if path.ends_with("endpoints") { 1 } else { 3 };
        assert_eq!(items.len(), expected, "{path}");
        assert_eq!(sizes.len(), expected, "{path}: one item a page");
    }
}

#[tokio::test]
async fn histories_of_large_attempts_are_paged_by_bytes() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    let body = "y".repeat(300_000);
    for n in 0..7 {
        let reply = app
            .record_attempt(
                &d,
                &json!({"status": "failed", "responseBody": {"n": n, "body": body}}),
            )
            .await;
        assert_eq!(reply.status, 200);
    }
    let budget = Limits::default().page_bytes;
    for path in [
        attempts_path(&d),
        format!("/v1/outbound-webhook-deliveries/{d}/events"),
    ] {
        let (sizes, items) = walk(&app, &path).await;
        assert!(sizes.len() >= 3, "{path}: {sizes:?}");
        for size in &sizes {
            assert!(*size <= budget, "{path}: a page of {size} bytes");
        }
        let versions: Vec<u64> = items
            .iter()
            .map(|i| i["version"].as_u64().unwrap())
            .collect();
        assert_eq!(
            versions,
            (0..7).collect::<Vec<u64>>(),
            "{path}: each once, oldest first"
        );
    }
}
