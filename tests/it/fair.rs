//! Fair admission on the real binary, over TCP: with room for one request at
//! a time, a tenant flooding the server cannot make another wait behind its
//! queued requests, and its own queue is capped with a 429.
//!
//! The order is read from the server, not from a clock of the test's: with
//! one request running at a time, each endpoint's `createdAt` is taken in the
//! order the requests were let in.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key};
use crate::raw::connect;
use crate::schema::check_response;

const FLOOD: &str = "org_flood";
const VICTIM: &str = "org_victim";
const ENDPOINTS: &str = "/v1/outbound-webhook-endpoints";

/// `hookledger_<name>` as `/metrics` has it now.
async fn gauge(client: &reqwest::Client, server: &Server, name: &str) -> u64 {
    let text = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("hookledger_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// Waits until `/metrics` shows `want` for `name`.
async fn until(client: &reqwest::Client, server: &Server, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = gauge(client, server, name).await;
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {now}, not {want}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create(client: Client, n: usize) -> (u16, Option<String>, Value) {
    let response = client
        .request(reqwest::Method::POST, ENDPOINTS)
        .json(&json!({"name": format!("e{n}"), "url": "https://e.example.com/"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    check_response("POST", ENDPOINTS, status, content_type.as_deref(), &body);
    (status, retry_after, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_cannot_make_another_wait_behind_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flood_key = create_key(&data, FLOOD);
    let victim_key = create_key(&data, VICTIM);
    let server = Server::start_with(
        &data,
        &[
            "--max-requests-in-flight",
            "1",
            "--max-queued-requests-per-org",
            "3",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let flood = Client::new(&server, FLOOD, &flood_key);
    let victim = Client::new(&server, VICTIM, &victim_key);

    // Arrange: the flood's first request holds the one place, its body half sent.
    let body = br#"{"name":"first","url":"https://e.example.com/"}"#;
    let mut first = connect(server.addr);
    let head = format!(
        "POST {ENDPOINTS} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         authorization: Bearer {flood_key}\r\nx-organization-id: {FLOOD}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&body[..10]).unwrap();
    until(&http, &server, "requests_running", 1).await;

    // Four more of the flood's: three wait, the fourth is refused at once.
    let mut waiting = tokio::task::JoinSet::new();
    for n in 0..4 {
        waiting.spawn(create(flood.clone(), n));
    }
    let (status, retry_after, problem) = waiting.join_next().await.unwrap().unwrap();
    assert_eq!(status, 429, "{problem}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    until(&http, &server, "requests_waiting", 3).await;

    // Act: the victim's request comes last, then the flood's first finishes.
    let victims = tokio::spawn(create(victim.clone(), 99));
    until(&http, &server, "requests_waiting", 4).await;
    first.write_all(&body[10..]).unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 201"), "{answer:?}");

    // Assert: the victim was let in before any of the flood's waiting requests.
    let (status, _, victim_endpoint) = victims.await.unwrap();
    assert_eq!(status, 201, "{victim_endpoint}");
    let mut flooded = Vec::new();
    while let Some(done) = waiting.join_next().await {
        let (status, _, endpoint) = done.unwrap();
        assert_eq!(status, 201, "{endpoint}");
        flooded.push(endpoint["createdAt"].as_str().unwrap().to_owned());
    }
    let victim_at = victim_endpoint["createdAt"].as_str().unwrap();
    let first_flooded = flooded.iter().min().unwrap();
    assert!(
        victim_at < first_flooded.as_str(),
        "the victim's request, in at {victim_at}, waited behind the flood's, in from {first_flooded}"
    );
    assert_eq!(gauge(&http, &server, "requests_waiting").await, 0);
    assert_eq!(gauge(&http, &server, "requests_running").await, 0);
    assert!(
        gauge(&http, &server, "requests_refused_busy_total").await >= 1,
        "the refusal is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fair_admission_off_requests_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, FLOOD);
    let server = Server::start_with(
        &data,
        &[
            "--max-requests-in-flight",
            "0",
            "--max-requests-in-flight-per-org",
            "1",
        ],
    )
    .await;
    let client = Client::new(&server, FLOOD, &key);
    // One request held open by its body does not keep another of its
    // organization out, as it would with admission on.
    let mut held = connect(server.addr);
    let head = format!(
        "POST {ENDPOINTS} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         authorization: Bearer {key}\r\nx-organization-id: {FLOOD}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    held.write_all(head.as_bytes()).unwrap();
    let (status, _, body) = create(client, 1).await;
    assert_eq!(status, 201, "{body}");
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookledger_requests_running 0"),
        "no admission, nothing counted:\n{metrics}"
    );
}
