//! The questions asked across deliveries: attempts by delivery, event,
//! endpoint, status, response code, code class and time; the retry queue;
//! and the per-organization `sequence` that tenant-facing views show.
//!
//! Each answer is checked against a reference built from the deliveries'
//! own histories, which are read from the log, not from the model's indexes.
//! Half of the attempts are written out to the model's store before the rest
//! are recorded, so every answer merges the store's indexes with the rows
//! still in memory.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Follows `nextCursor` to the end; every item of every page.
async fn walk(app: &TestApp, path: &str) -> Vec<Value> {
    let pages = app.every_page(path).await;
    pages
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().iter().cloned())
        .collect()
}

/// Writes everything folded so far to the model's store.
fn write_out(app: &TestApp) {
    app.node
        .projector
        .model()
        .flush()
        .expect("the model writes out");
}

/// Two endpoints, three events fanned out to both: six deliveries, each
/// with a mix of attempts. Returns every attempt as its delivery's history
/// shows it, with `deliveryId`, `eventId` and `endpointId` added.
async fn ledger_of_attempts(app: &TestApp) -> Vec<Value> {
    app.endpoint("alpha").await;
    app.endpoint("beta").await;
    let mut deliveries = Vec::new();
    for n in 0..3 {
        let event = app
            .accept_event(json!({"eventType": "invoice.paid", "payload": {"n": n}}))
            .await;
        for d in event["deliveries"].as_array().unwrap() {
            deliveries.push((
                d["id"].as_str().unwrap().to_owned(),
                event["id"].as_str().unwrap().to_owned(),
                d["endpointId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let bodies = [
        json!({"status": "retry_scheduled", "responseStatusCode": 503, "lastError": "busy", "nextRetryAt": "2030-01-01T00:00:30Z"}),
        json!({"status": "failed", "responseStatusCode": 404}),
        json!({"status": "pending"}),
        json!({"status": "delivered", "responseStatusCode": 200, "responseBody": {"ok": true}}),
        json!({"status": "retry_scheduled", "lastError": "timeout"}),
        json!({"status": "delivered", "responseStatusCode": 204}),
    ];
    for round in 0..2 {
        for (i, (delivery, _, _)) in deliveries.iter().enumerate() {
            let body = &bodies[(i + round * 3) % bodies.len()];
            let reply = app.record_attempt(delivery, body).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        }
        if round == 0 {
            write_out(app);
        }
    }
    let mut all = Vec::new();
    for (delivery, event, endpoint) in &deliveries {
        for mut attempt in app.history(delivery).await {
            attempt["deliveryId"] = json!(delivery);
            attempt["eventId"] = json!(event);
            attempt["endpointId"] = json!(endpoint);
            all.push(attempt);
        }
    }
    // Newest first: by recordedAt, then sequence.
    all.sort_by_key(|a| {
        std::cmp::Reverse((
            a["recordedAt"].as_str().unwrap().to_owned(),
            a["sequence"].as_u64().unwrap(),
        ))
    });
    all
}

fn class(attempt: &Value) -> Option<u64> {
    attempt["responseStatusCode"].as_u64().map(|c| c / 100)
}

#[tokio::test]
async fn attempts_across_deliveries_answer_each_filter_newest_first() {
    let app = spawn_app().await;
    let all = ledger_of_attempts(&app).await;
    assert_eq!(all.len(), 12);

    let listed = walk(&app, "/v1/outbound-webhook-attempts?limit=5").await;
    assert_eq!(
        listed, all,
        "every attempt, newest first, as the histories show them"
    );

    let first = &all[0];
    let middle = all[6]["recordedAt"].as_str().unwrap().to_owned();
    let old_retry = all[7..]
        .iter()
        .find(|a| a["status"] == "retry_scheduled")
        .expect("an older retry");
    type Keep = Box<dyn Fn(&Value) -> bool>;
    let field = |name: &'static str, value: Value| -> Keep { Box::new(move |a| a[name] == value) };
    let cases: Vec<(String, Keep)> = vec![
        (
            format!("deliveryId={}", first["deliveryId"].as_str().unwrap()),
            field("deliveryId", first["deliveryId"].clone()),
        ),
        (
            format!("eventId={}", first["eventId"].as_str().unwrap()),
            field("eventId", first["eventId"].clone()),
        ),
        (
            format!("endpointId={}", first["endpointId"].as_str().unwrap()),
            field("endpointId", first["endpointId"].clone()),
        ),
        (
            "status=delivered".into(),
            field("status", json!("delivered")),
        ),
        ("status=pending".into(), field("status", json!("pending"))),
        (
            "responseStatusCode=404".into(),
            field("responseStatusCode", json!(404)),
        ),
        (
            "statusCodeClass=2xx".into(),
            Box::new(|a| class(a) == Some(2)),
        ),
        (
            "statusCodeClass=5xx".into(),
            Box::new(|a| class(a) == Some(5)),
        ),
        (
            format!("recordedAfter={middle}"),
            Box::new({
                let middle = middle.clone();
                move |a| a["recordedAt"].as_str().unwrap() > middle.as_str()
            }),
        ),
        (
            format!("recordedBefore={middle}"),
            Box::new({
                let middle = middle.clone();
                move |a| a["recordedAt"].as_str().unwrap() < middle.as_str()
            }),
        ),
        (
            format!(
                "endpointId={}&status=retry_scheduled&recordedBefore={middle}",
                old_retry["endpointId"].as_str().unwrap()
            ),
            Box::new({
                let (endpoint, middle) = (old_retry["endpointId"].clone(), middle.clone());
                move |a| {
                    a["endpointId"] == endpoint
                        && a["status"] == "retry_scheduled"
                        && a["recordedAt"].as_str().unwrap() < middle.as_str()
                }
            }),
        ),
    ];
    for (query, keep) in &cases {
        let expected: Vec<&Value> = all.iter().filter(|a| keep(a)).collect();
        assert!(!expected.is_empty(), "{query} should match some attempts");
        let got = walk(
            &app,
            &format!("/v1/outbound-webhook-attempts?{query}&limit=2"),
        )
        .await;
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{query}");
    }
    // Outside every range: nothing, and no error.
    for query in [
        "deliveryId=dlv_none",
        "eventId=evt_none",
        "endpointId=ep_none",
        "statusCodeClass=1xx",
        "responseStatusCode=599",
        "recordedAfter=2999-01-01T00:00:00Z",
        "recordedBefore=2000-01-01T00:00:00Z",
    ] {
        let got = walk(&app, &format!("/v1/outbound-webhook-attempts?{query}")).await;
        assert!(got.is_empty(), "{query} matched {got:?}");
    }
}

/// An endpoint's attempts of one status come from an index of their own:
/// every endpoint and status, page by page, gives what a filter over the
/// histories gives, from the store and from the rows still in memory alike.
#[tokio::test]
async fn an_endpoints_attempts_of_one_status_match_a_filter_over_the_histories() {
    let app = spawn_app().await;
    let all = ledger_of_attempts(&app).await;
    let endpoints: BTreeSet<&str> = all
        .iter()
        .map(|a| a["endpointId"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints.len(), 2);
    let mut matched = 0;
    for endpoint in &endpoints {
        for status in ["pending", "retry_scheduled", "delivered", "failed"] {
            let expected: Vec<&Value> = all
                .iter()
                .filter(|a| a["endpointId"] == *endpoint && a["status"] == status)
                .collect();
            matched += expected.len();
            for limit in [1, 2, 50] {
                let query = format!("endpointId={endpoint}&status={status}&limit={limit}");
                let got = walk(&app, &format!("/v1/outbound-webhook-attempts?{query}")).await;
                assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{query}");
            }
        }
    }
    assert_eq!(
        matched,
        all.len(),
        "each attempt is in one endpoint and status"
    );
}

/// An endpoint's attempts of every status are its four status ranges of
/// the index by endpoint and status, merged newest first: with the statuses
/// interleaved, in the store and still in memory, every page size, and the
/// other filters beside it, the pages give what a filter over the histories
/// gives.
#[tokio::test]
async fn an_endpoints_attempts_of_every_status_merge_its_status_ranges() {
    let app = spawn_app().await;
    let all = ledger_of_attempts(&app).await;
    let middle = all[6]["recordedAt"].as_str().unwrap().to_owned();
    let endpoints: BTreeSet<&str> = all
        .iter()
        .map(|a| a["endpointId"].as_str().unwrap())
        .collect();
    for endpoint in &endpoints {
        let of_endpoint: Vec<&Value> = all
            .iter()
            .filter(|a| a["endpointId"] == *endpoint)
            .collect();
        let statuses: BTreeSet<&str> = of_endpoint
            .iter()
            .map(|a| a["status"].as_str().unwrap())
            .collect();
        assert!(statuses.len() >= 3, "{endpoint}: statuses {statuses:?}");
        type Keep = Box<dyn Fn(&Value) -> bool>;
        let cases: Vec<(String, Keep)> = vec![
            (String::new(), Box::new(|_| true)),
            (
                "&responseStatusCode=503".into(),
                Box::new(|a| a["responseStatusCode"] == 503),
            ),
            (
                "&statusCodeClass=2xx".into(),
                Box::new(|a| class(a) == Some(2)),
            ),
            (
                format!("&recordedAfter={middle}"),
                Box::new({
                    let middle = middle.clone();
                    move |a| a["recordedAt"].as_str().unwrap() > middle.as_str()
                }),
            ),
            (
                format!("&recordedBefore={middle}"),
                Box::new({
                    let middle = middle.clone();
                    move |a| a["recordedAt"].as_str().unwrap() < middle.as_str()
                }),
            ),
        ];
        for (more, keep) in &cases {
            let expected: Vec<&Value> = of_endpoint.iter().copied().filter(|a| keep(a)).collect();
            for limit in [1, 2, 3, 50] {
                let query = format!("endpointId={endpoint}{more}&limit={limit}");
                let got = walk(&app, &format!("/v1/outbound-webhook-attempts?{query}")).await;
                assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{query}");
            }
        }
    }
}

#[tokio::test]
async fn bad_attempt_filters_are_400_naming_the_parameter() {
    let app = spawn_app().await;
    for (query, field) in [
        ("status=done", "status"),
        ("responseStatusCode=99", "responseStatusCode"),
        ("responseStatusCode=600", "responseStatusCode"),
        ("responseStatusCode=2xx", "responseStatusCode"),
        ("statusCodeClass=6xx", "statusCodeClass"),
        ("statusCodeClass=2XX", "statusCodeClass"),
        ("statusCodeClass=200", "statusCodeClass"),
        (
            "responseStatusCode=200&statusCodeClass=2xx",
            "statusCodeClass",
        ),
        ("recordedAfter=yesterday", "recordedAfter"),
        ("recordedBefore=2024-13-01T00:00:00Z", "recordedBefore"),
        ("endpointId=", "endpointId"),
        ("eventId=", "eventId"),
        ("deliveryId=", "deliveryId"),
        ("limit=0", "limit"),
        ("limit=251", "limit"),
        ("cursor=zz", "cursor"),
    ] {
        app.get(&format!("/v1/outbound-webhook-attempts?{query}"))
            .await
            .assert_problem(400, Some(field));
    }
    // A cursor of another list is refused too.
    let deliveries = app.get("/v1/outbound-webhook-deliveries?limit=1").await;
    assert_eq!(deliveries.status, StatusCode::OK);
    let foreign = hex::encode("dlv:dlv_1");
    app.get(&format!("/v1/outbound-webhook-attempts?cursor={foreign}"))
        .await
        .assert_problem(400, Some("cursor"));
}

#[tokio::test]
async fn another_organization_sees_none_of_the_attempts_or_retries() {
    let app = spawn_app().await;
    let all = ledger_of_attempts(&app).await;
    let (org, token) = app.other_org().await;
    let as_other = |path: &str| {
        app.bare(reqwest::Method::GET, path)
            .bearer_auth(&token)
            .header("x-organization-id", &org)
    };
    let endpoint = all[0]["endpointId"].as_str().unwrap();
    for path in [
        "/v1/outbound-webhook-attempts".to_owned(),
        format!("/v1/outbound-webhook-attempts?endpointId={endpoint}"),
        format!(
            "/v1/outbound-webhook-attempts?deliveryId={}",
            all[0]["deliveryId"].as_str().unwrap()
        ),
        "/v1/outbound-webhook-deliveries?nextRetryBefore=2999-01-01T00:00:00Z".to_owned(),
    ] {
        let reply = app.send(as_other(&path)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_eq!(reply.body["data"], json!([]), "{path}");
    }
}

/// Records `body` on `delivery`, asserting 200.
async fn attempt(app: &TestApp, delivery: &str, body: Value) {
    let reply = app.record_attempt(delivery, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

fn ids(items: &[Value]) -> Vec<&str> {
    items.iter().map(|d| d["id"].as_str().unwrap()).collect()
}

/// One delivery for each endpoint named: endpoints for every event type, and
/// one event fanned out to them.
async fn fanned_out(app: &crate::helpers::TestApp, names: &[&str]) -> Vec<String> {
    for name in names {
        app.endpoint(name).await;
    }
    let event = app
        .accept_event(json!({"eventType": "order.shipped", "payload": {}}))
        .await;
    ids(event["deliveries"].as_array().unwrap())
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_retry_queue_lists_due_retries_soonest_first() {
    let app = spawn_app().await;
    let d = fanned_out(&app, &["a", "b", "c", "d", "e"]).await;
    let retry = |at: &str| json!({"status": "retry_scheduled", "nextRetryAt": at});
    attempt(&app, &d[0], retry("2030-01-01T00:00:10Z")).await;
    attempt(&app, &d[1], retry("2030-01-01T00:00:05Z")).await;
    write_out(&app);
    attempt(&app, &d[2], retry("2030-01-01T00:00:20Z")).await;
    attempt(&app, &d[3], json!({"status": "retry_scheduled"})).await;
    // Scheduled, then delivered: no longer waiting.
    attempt(&app, &d[4], retry("2030-01-01T00:00:01Z")).await;
    attempt(
        &app,
        &d[4],
        json!({"status": "delivered", "responseStatusCode": 200}),
    )
    .await;
    // Rescheduled later: it moves in the queue.
    attempt(&app, &d[1], retry("2030-01-01T00:00:15Z")).await;

    let queue = |before: &str| {
        let app = &app;
        let path = format!("/v1/outbound-webhook-deliveries?nextRetryBefore={before}&limit=1");
        async move { walk(app, &path).await }
    };
    let all = queue("2030-01-01T00:00:20Z").await;
    // No time named: due at once, first; then by nextRetryAt, inclusive.
    assert_eq!(ids(&all), [&d[3], &d[0], &d[1], &d[2]]);
    assert!(all[0]["nextRetryAt"].is_null());
    assert_eq!(all[1]["nextRetryAt"], "2030-01-01T00:00:10.000000Z");
    assert!(all.iter().all(|x| x["status"] == "retry_scheduled"));
    assert_eq!(
        ids(&queue("2030-01-01T00:00:14.999999Z").await),
        [&d[3], &d[0]]
    );
    assert_eq!(ids(&queue("2020-01-01T00:00:00Z").await), [&d[3]]);

    let explicit = walk(
        &app,
        "/v1/outbound-webhook-deliveries?status=retry_scheduled&nextRetryBefore=2030-01-01T00:00:12Z",
    )
    .await;
    assert_eq!(ids(&explicit), [&d[3], &d[0]]);
    let endpoint = all[2]["endpointId"].as_str().unwrap();
    let one_endpoint = walk(
        &app,
        &format!(
            "/v1/outbound-webhook-deliveries?nextRetryBefore=2031-01-01T00:00:00Z&endpointId={endpoint}"
        ),
    )
    .await;
    assert_eq!(ids(&one_endpoint), [&d[1]]);

    for (query, field) in [
        (
            "status=delivered&nextRetryBefore=2030-01-01T00:00:00Z",
            "status",
        ),
        ("nextRetryBefore=soon", "nextRetryBefore"),
        ("nextRetryBefore=2030-01-01T00:00:00Z&cursor=00", "cursor"),
    ] {
        app.get(&format!("/v1/outbound-webhook-deliveries?{query}"))
            .await
            .assert_problem(400, Some(field));
    }
}

/// The queue's entries carry their deliveries' rows: a delivery scheduled
/// again for the same time, after its first schedule was written to the
/// store, shows its latest attempt there, as its own `GET` does; one that
/// is delivered leaves the queue.
#[tokio::test]
async fn the_retry_queue_shows_each_deliverys_latest_row() {
    let app = spawn_app().await;
    let d = fanned_out(&app, &["a", "b"]).await;
    let retry = |error: &str| {
        json!({"status": "retry_scheduled", "responseStatusCode": 503, "lastError": error,
               "nextRetryAt": "2030-01-01T00:00:10Z"})
    };
    attempt(&app, &d[0], retry("busy")).await;
    attempt(&app, &d[1], retry("busy")).await;
    write_out(&app);
    attempt(&app, &d[0], retry("still busy")).await;
    attempt(
        &app,
        &d[1],
        json!({"status": "delivered", "responseStatusCode": 200}),
    )
    .await;
    write_out(&app);

    let queue = walk(
        &app,
        "/v1/outbound-webhook-deliveries?nextRetryBefore=2030-01-01T00:00:10Z",
    )
    .await;
    assert_eq!(ids(&queue), [&d[0]]);
    assert_eq!(queue[0]["attemptCount"], 2);
    assert_eq!(queue[0]["lastError"], "still busy");
    let shown = app
        .get(&format!("/v1/outbound-webhook-deliveries/{}", d[0]))
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(
        queue[0], shown.body,
        "the queue shows the delivery as it is"
    );
}

#[tokio::test]
async fn tenant_views_show_the_organizations_sequence_not_the_global_position() {
    let app = spawn_app().await;
    // Another organization's events take global positions in between.
    let (org, token) = app.other_org().await;
    let delivery = app.delivery().await;
    for n in 0..3 {
        let other = app
            .bare(reqwest::Method::POST, "/v1/outbound-webhook-endpoints")
            .bearer_auth(&token)
            .header("x-organization-id", &org)
            .json(&json!({"name": format!("o{n}"), "url": "https://o.example.com/h"}));
        assert_eq!(app.send(other).await.status, StatusCode::CREATED);
        attempt(
            &app,
            &delivery,
            json!({"status": "failed", "responseStatusCode": 500}),
        )
        .await;
    }
    let history = app.history(&delivery).await;
    let raw = app
        .get(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/events"
        ))
        .await;
    let listed = walk(
        &app,
        &format!("/v1/outbound-webhook-attempts?deliveryId={delivery}"),
    )
    .await;

    // The organization's events: its key (1), the endpoint (2), the event (3),
    // then the attempts, with no gaps for the other organization's.
    let sequences = |items: &[Value]| -> BTreeSet<u64> {
        items
            .iter()
            .map(|a| a["sequence"].as_u64().unwrap())
            .collect()
    };
    let expected: BTreeSet<u64> = [4, 5, 6].into();
    assert_eq!(sequences(&history), expected);
    assert_eq!(sequences(raw.body["data"].as_array().unwrap()), expected);
    assert_eq!(sequences(&listed), expected);
    for item in history.iter().chain(raw.body["data"].as_array().unwrap()) {
        assert!(item.get("position").is_none(), "{item}");
    }
}
