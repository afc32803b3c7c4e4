//! The server's log as an operator reads it (the binary, JSON on stderr): one
//! line per request with its id, method, route, status and time, the
//! organization and resource it concerns once they are known, and every
//! line written out by the time the process exits. Lines are written by a
//! thread of their own, so the last ones are only out if the process waits
//! for it.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, log_lines};

const ORG: &str = "org_logs";
const ROUTE: &str = "/v1/outbound-webhook-deliveries/{outboundWebhookDeliveryId}/attempts";

#[tokio::test]
async fn every_request_has_its_line_and_every_line_is_out_when_serve_exits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let server = Server::start(&data).await;
    let log = server.log.clone();
    let client = Client::new(&server, ORG, &key);
    let delivery = client.one_delivery().await;

    // 8 clients at once, 25 attempts each, every one with its own request id.
    let mut sent = HashSet::new();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let ids: Vec<String> = (0..25).map(|i| format!("log-{c}-{i}")).collect();
        sent.extend(ids.iter().cloned());
        let client = client.clone();
        let path = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");
        clients.spawn(async move {
            for id in ids {
                let status = client
                    .request(reqwest::Method::POST, &path)
                    .header("x-request-id", &id)
                    .json(&json!({"status": "pending"}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200, "attempt {id}");
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    // A request with no key concerns no organization the server knows of.
    let anonymous = reqwest::Client::new()
        .get(format!(
            "{}/v1/outbound-webhook-deliveries/{delivery}",
            server.base
        ))
        .header("x-request-id", "log-anonymous")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(anonymous, 401);
    // Stopped right after the last answer: the lines still queued must come out.
    server.stop();

    let log = std::fs::read_to_string(&log).unwrap();
    let mut logged = HashSet::new();
    for line in log_lines(&log, "answered") {
        let span = &line["span"];
        if span["route"] != ROUTE {
            continue;
        }
        assert_eq!(span["method"], "POST", "{line}");
        assert_eq!(span["org"], ORG, "the line names the organization: {line}");
        assert_eq!(
            span["delivery"],
            delivery.as_str(),
            "and the delivery: {line}"
        );
        assert_eq!(line["fields"]["status"], 200, "{line}");
        assert!(line["fields"]["elapsed_ms"].is_number(), "{line}");
        assert_eq!(line["level"], "INFO", "{line}");
        let id = span["request_id"].as_str().unwrap().to_owned();
        assert!(logged.insert(id.clone()), "{id} logged twice");
    }
    let anonymous = log_lines(&log, "answered")
        .into_iter()
        .find(|line| line["span"]["request_id"] == "log-anonymous")
        .expect("the request without a key has its line");
    assert_eq!(anonymous["fields"]["status"], 401, "{anonymous}");
    assert!(
        anonymous["span"].get("org").is_none(),
        "no organization is named without a key: {anonymous}"
    );
    let missing: Vec<_> = sent.difference(&logged).collect();
    assert!(
        missing.is_empty(),
        "{} of {} requests have no line, e.g. {:?}",
        missing.len(),
        sent.len(),
        missing.first()
    );
    let last: Value = log
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON line");
    assert_eq!(
        last["fields"]["message"], "wrote the read model out",
        "the last line written before exiting"
    );
}
