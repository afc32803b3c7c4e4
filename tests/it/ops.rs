//! The operational routes: liveness, readiness, metrics and the API document.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_readiness_answer_without_a_key() {
    let app = spawn_app().await;
    let health = app.send(app.bare(Method::GET, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let ready = app.send(app.bare(Method::GET, "/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["position"], app.head());
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_appends() {
    let app = spawn_app().await;
    let d = app.delivery().await;
    app.record_attempt(&d, &json!({"status": "delivered"}))
        .await;
    app.get("/v1/nothing").await;

    let metrics = app.send(app.bare(Method::GET, "/metrics")).await;

    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(metrics.bytes).unwrap();
    assert!(
        text.contains(r#"hookledger_http_requests_total{route="/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/attempts",method="POST",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",method="GET",status="404""#));
    assert!(
        text.contains(r#"hookledger_append_duration_seconds_count{command="record_attempt"} 1"#)
    );
    assert!(text.contains("hookledger_projection_lag_events 0"));
    assert!(text.contains("hookledger_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_api_document_is_served_and_covers_the_contract() {
    let app = spawn_app().await;
    let doc = app.send(app.bare(Method::GET, "/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let op = &doc.body["paths"]["/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/attempts"]
        ["post"];
    let schema = &doc.body["components"]["schemas"]["RecordOutboundWebhookDeliveryAttempt"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/RecordOutboundWebhookDeliveryAttempt"
    );
    assert_eq!(schema["required"], json!(["status"]));
    assert_eq!(
        schema["properties"]["status"]["enum"],
        json!(["pending", "retry_scheduled", "delivered", "failed"])
    );
    assert_eq!(schema["properties"]["responseStatusCode"]["minimum"], 100);
    assert_eq!(schema["properties"]["responseStatusCode"]["maximum"], 599);
    assert_eq!(schema["properties"]["lastError"]["minLength"], 1);
    let pattern = schema["properties"]["nextRetryAt"]["pattern"]
        .as_str()
        .unwrap();
    assert!(pattern.starts_with(r"^(?:(?:\d\d[2468][048]|"));
    let responses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
    for status in [
        "200", "400", "401", "403", "404", "409", "412", "413", "415", "503",
    ] {
        assert!(
            responses.iter().any(|s| *s == status),
            "{status} is documented"
        );
    }
    let _: &Value = &doc.body["components"]["schemas"]["OutboundWebhookDeliverySnapshot"];
}

#[tokio::test]
async fn store_stats_feed_the_fsync_gauges() {
    let node = crate::helpers::new_node().await;
    let app = crate::helpers::spawn_app_with(node, |state| {
        let clock = hookledger::store::CommitClock::default();
        for micros in [80, 900, 4_000, 400_000] {
            clock.record(std::time::Duration::from_micros(micros));
        }
        let commit_times = clock.times();
        state.with_store_stats(move || hookledger::api::metrics::StoreStats {
            appends: 12,
            fsyncs: 4,
            commit_times,
        })
    })
    .await;
    let metrics = app.send(app.bare(Method::GET, "/metrics")).await;
    let text = String::from_utf8(metrics.bytes).unwrap();
    assert!(text.contains("hookledger_store_appends 12"), "{text}");
    assert!(text.contains("hookledger_store_fsyncs 4"));
    assert!(text.contains("hookledger_store_fsync_batch_size 3"));
    // Cumulative buckets, in seconds, as Prometheus reads them.
    for line in [
        "# TYPE hookledger_store_commit_duration_seconds histogram",
        "hookledger_store_commit_duration_seconds_count 4",
        "hookledger_store_commit_duration_seconds_sum 0.40498",
        "hookledger_store_commit_duration_seconds_bucket{le=\"0.0001\"} 1",
        "hookledger_store_commit_duration_seconds_bucket{le=\"0.001\"} 2",
        "hookledger_store_commit_duration_seconds_bucket{le=\"0.003\"} 2",
        "hookledger_store_commit_duration_seconds_bucket{le=\"0.005\"} 3",
        "hookledger_store_commit_duration_seconds_bucket{le=\"0.25\"} 3",
        "hookledger_store_commit_duration_seconds_bucket{le=\"+Inf\"} 4",
    ] {
        assert!(text.contains(line), "{line} is not in {text}");
    }
}

#[tokio::test]
async fn every_group_commit_of_the_embedded_log_is_timed() {
    let data = tempfile::tempdir().unwrap();
    let key = crate::binary::create_key(data.path(), "org_commit_times");
    let server = crate::binary::Server::start(data.path()).await;
    let client = crate::binary::Client::new(&server, "org_commit_times", &key);
    let delivery = client.one_delivery().await;
    for _ in 0..20 {
        client
            .post(
                &format!("/v1/outbound-webhook-deliveries/{delivery}/attempts"),
                json!({"status": "delivered"}),
            )
            .await;
    }
    let response = client.request(Method::GET, "/metrics").send().await;
    let text = response.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    // One at a time: each append its own commit, each commit timed.
    let commits = value("hookledger_store_fsyncs");
    assert!(commits >= 22.0, "{commits} commits for 22 appends");
    let timed = "hookledger_store_commit_duration_seconds";
    assert_eq!(value(&format!("{timed}_count")), commits);
    assert_eq!(value(&format!("{timed}_bucket{{le=\"+Inf\"}}")), commits);
    assert!(value(&format!("{timed}_sum")) > 0.0);
}

#[tokio::test]
async fn a_writes_waits_for_the_store_and_the_model_are_timed_apart() {
    let data = tempfile::tempdir().unwrap();
    let key = crate::binary::create_key(data.path(), "org_waits");
    let server = crate::binary::Server::start(data.path()).await;
    let client = crate::binary::Client::new(&server, "org_waits", &key);
    let delivery = client.one_delivery().await;
    let path = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");
    for _ in 0..20 {
        client.post(&path, json!({"status": "failed"})).await;
    }
    // A repeat is answered from the first write: it waits for nothing.
    for _ in 0..2 {
        let status = client
            .request(Method::POST, &path)
            .header("idempotency-key", "waits-once")
            .json(&json!({"status": "delivered"}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    let text = client
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let series = |metric: &str, part: &str| {
        value(&format!(
            "hookledger_{metric}_{part}{{command=\"record_attempt\"}}"
        ))
    };
    assert_eq!(series("append_duration_seconds", "count"), 22.0);
    let whole = series("append_duration_seconds", "sum");
    let mut parts = 0.0;
    for wait in ["append_store_wait_seconds", "append_model_wait_seconds"] {
        assert_eq!(series(wait, "count"), 21.0, "one sample a write: {text}");
        let sum = series(wait, "sum");
        assert!(sum > 0.0, "{wait} took no time: {text}");
        parts += sum;
    }
    assert!(
        parts <= whole,
        "the waits ({parts} s) are part of the write path ({whole} s)"
    );
}

#[tokio::test]
async fn serve_stops_accepting_and_returns_on_shutdown() {
    let node = crate::helpers::new_node().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hookledger::api::serve(
        listener,
        hookledger::api::AppState::new(node.node.clone()),
        async {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let up = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(up.status(), StatusCode::OK);

    stop.send(()).unwrap();

    let result = tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .expect("the task did not panic");
    assert!(result.is_ok());
    assert!(
        client
            .get(format!("http://{address}/healthz"))
            .send()
            .await
            .is_err()
    );
}
