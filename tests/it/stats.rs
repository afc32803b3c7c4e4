//! `GET /v1/outbound-webhook-endpoints/{id}/stats`: an endpoint's attempts
//! counted by status and status-code class, with its latest success and
//! failure, over all time or at and after `since`; the same answers from the
//! overlays and after they are written to the store; 404 for an endpoint the
//! caller's organization does not have; 400 naming `since` when it is not the
//! contract's date-time.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::*;

fn stats_path(endpoint_id: &str) -> String {
    format!("/v1/outbound-webhook-endpoints/{endpoint_id}/stats")
}

async fn stats(app: &TestApp, endpoint_id: &str, since: Option<&str>) -> Value {
    let mut request = app.request(Method::GET, &stats_path(endpoint_id));
    if let Some(since) = since {
        request = request.query(&[("since", since)]);
    }
    let reply = app.send(request).await;
    assert_eq!(reply.status, 200, "since {since:?}: {}", reply.body);
    reply.body
}

/// `at` moved by `micros`, written as the API writes instants.
fn shifted(at: &str, micros: i64) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("an RFC 3339 instant");
    (at + chrono::Duration::microseconds(micros))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The counts a body reports: attempts, by status (pending, retry_scheduled,
/// delivered, failed), by class (1xx to 5xx) and without a code.
fn counts(body: &Value) -> (u64, [u64; 4], [u64; 5], u64) {
    let n = |v: &Value| v.as_u64().expect("a count");
    let s = &body["byStatus"];
    let c = &body["byStatusCodeClass"];
    (
        n(&body["attempts"]),
        ["pending", "retry_scheduled", "delivered", "failed"].map(|k| n(&s[k])),
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|k| n(&c[k])),
        n(&body["withoutResponseStatusCode"]),
    )
}

/// Records `attempt` on `delivery_id` and returns its `recordedAt`.
async fn record(app: &TestApp, delivery_id: &str, attempt: Value) -> String {
    let reply = app.record_attempt(delivery_id, &attempt).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let history = app.history(delivery_id).await;
    history.last().expect("the attempt")["recordedAt"]
        .as_str()
        .expect("recordedAt")
        .to_owned()
}

#[tokio::test]
async fn counts_follow_the_attempts_and_since_cuts_them_exactly() {
    let app = spawn_app().await;
    let a = app.endpoint("a").await["id"].as_str().unwrap().to_owned();
    let b = app.endpoint("b").await["id"].as_str().unwrap().to_owned();
    // Two events, each fanned out to both endpoints.
    let mut to_a = Vec::new();
    let mut to_b = Vec::new();
    for n in 0..2 {
        let event = app
            .accept_event(json!({"eventType": "invoice.paid", "payload": {"n": n}}))
            .await;
        for d in event["deliveries"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_owned();
            if d["endpointId"] == a.as_str() {
                to_a.push(id);
            } else {
                to_b.push(id);
            }
        }
    }
    let t1 = record(
        &app,
        &to_a[0],
        json!({"status": "retry_scheduled", "responseStatusCode": 503, "nextRetryAt": "2030-01-01T00:00Z"}),
    )
    .await;
    let t2 = record(
        &app,
        &to_a[0],
        json!({"status": "delivered", "responseStatusCode": 200}),
    )
    .await;
    let t3 = record(&app, &to_a[1], json!({"status": "pending"})).await;
    let t4 = record(
        &app,
        &to_a[1],
        json!({"status": "failed", "responseStatusCode": 404, "lastError": "gone"}),
    )
    .await;
    record(
        &app,
        &to_b[0],
        json!({"status": "delivered", "responseStatusCode": 204}),
    )
    .await;
    assert!(t1 < t2 && t2 < t3 && t3 < t4, "{t1} {t2} {t3} {t4}");

    let whole_second_before_t1 = format!("{}Z", &t1[..19]);
    // (since, attempts, by status, by class, without a code, last success, last failure)
    type Expected<'a> = (
        Option<String>,
        (u64, [u64; 4], [u64; 5], u64),
        Option<&'a str>,
        Option<&'a str>,
    );
    let expected: Vec<Expected> = vec![
        (
            None,
            (4, [1, 1, 1, 1], [0, 1, 0, 1, 1], 1),
            Some(&t2),
            Some(&t4),
        ),
        (
            Some("2000-01-01T00:00Z".into()),
            (4, [1, 1, 1, 1], [0, 1, 0, 1, 1], 1),
            Some(&t2),
            Some(&t4),
        ),
        (
            Some(whole_second_before_t1),
            (4, [1, 1, 1, 1], [0, 1, 0, 1, 1], 1),
            Some(&t2),
            Some(&t4),
        ),
        // At an attempt's instant counts it; a microsecond later does not.
        (
            Some(t2.clone()),
            (3, [1, 0, 1, 1], [0, 1, 0, 1, 0], 1),
            Some(&t2),
            Some(&t4),
        ),
        (
            Some(shifted(&t2, 1)),
            (2, [1, 0, 0, 1], [0, 0, 0, 1, 0], 1),
            None,
            Some(&t4),
        ),
        (
            Some(t4.clone()),
            (1, [0, 0, 0, 1], [0, 0, 0, 1, 0], 0),
            None,
            Some(&t4),
        ),
        (
            Some("2999-12-31T23:59:59Z".into()),
            (0, [0; 4], [0; 5], 0),
            None,
            None,
        ),
    ];
    let check = |when: &'static str| {
        let app = &app;
        let a = &a;
        let expected = &expected;
        async move {
            for (since, want, success, failure) in expected {
                let body = stats(app, a, since.as_deref()).await;
                let case = format!("{when}, since {since:?}: {body}");
                assert_eq!(counts(&body), *want, "{case}");
                assert_eq!(body["lastSuccessAt"].as_str(), *success, "{case}");
                assert_eq!(body["lastFailureAt"].as_str(), *failure, "{case}");
                assert_eq!(body["endpointId"], a.as_str(), "{case}");
            }
        }
    };
    check("from the overlays").await;
    // The same answers once the counters and the attempt index are in the store.
    app.node
        .projector
        .model()
        .flush()
        .expect("write the model out");
    check("from the store").await;

    let other = stats(&app, &b, None).await;
    assert_eq!(
        counts(&other),
        (1, [0, 0, 1, 0], [0, 1, 0, 0, 0], 0),
        "{other}"
    );
}

#[tokio::test]
async fn an_endpoint_without_attempts_counts_nothing() {
    let app = spawn_app().await;
    let ep = app.endpoint("quiet").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for since in [None, Some("2024-02-29T12:00:00.5Z")] {
        let body = stats(&app, &ep, since).await;
        assert_eq!(counts(&body), (0, [0; 4], [0; 5], 0), "{body}");
        assert_eq!(body["lastSuccessAt"], Value::Null);
        assert_eq!(body["lastFailureAt"], Value::Null);
        assert_eq!(
            body["since"],
            since.map_or(Value::Null, |_| json!("2024-02-29T12:00:00.500000Z"))
        );
    }
}

#[tokio::test]
async fn an_unknown_endpoint_or_another_organizations_is_404() {
    let app = spawn_app().await;
    let delivery = app.delivery().await;
    record(&app, &delivery, json!({"status": "delivered"})).await;
    let ours = app.get("/v1/outbound-webhook-endpoints").await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(&stats_path("ep_01J0000000000000000000000"))
        .await
        .assert_problem(404, None);

    let (org, token) = app.other_org().await;
    let as_other = |method: Method, path: &str| {
        app.bare(method, path)
            .bearer_auth(&token)
            .header("x-organization-id", &org)
    };
    app.send(as_other(Method::GET, &stats_path(&ours)))
        .await
        .assert_problem(404, None);
    // Their own endpoint is theirs alone.
    let theirs = app
        .send(
            as_other(Method::POST, "/v1/outbound-webhook-endpoints")
                .json(&json!({"name": "theirs", "url": "https://theirs.example.com/hook"})),
        )
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.body);
    let theirs = theirs.body["id"].as_str().unwrap().to_owned();
    app.get(&stats_path(&theirs))
        .await
        .assert_problem(404, None);
    let body = app
        .send(as_other(Method::GET, &stats_path(&theirs)))
        .await
        .body;
    assert_eq!(counts(&body), (0, [0; 4], [0; 5], 0), "{body}");
}

#[tokio::test]
async fn a_since_that_is_not_the_contracts_date_time_is_400_naming_it() {
    let app = spawn_app().await;
    let ep = app.endpoint("a").await["id"].as_str().unwrap().to_owned();
    for bad in [
        "yesterday",
        "",
        "2023-02-29T00:00Z",
        "2023-11-07T05:31:56+01:00",
        "2023-11-07 05:31:56Z",
        "1699334716",
    ] {
        let reply = app
            .send(
                app.request(Method::GET, &stats_path(&ep))
                    .query(&[("since", bad)]),
            )
            .await;
        reply.assert_problem(400, Some("since"));
    }
    let twice = app
        .send(app.request(Method::GET, &stats_path(&ep)).query(&[
            ("since", "2023-11-07T05:31:56Z"),
            ("since", "2023-11-07T05:31:57Z"),
        ]))
        .await;
    twice.assert_problem(400, Some("since"));
}
