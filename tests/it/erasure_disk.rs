//! Erased means gone from the disk, checked as an attacker with the data
//! directory would check it: after an erasure, and the compaction that
//! follows it (in the background of a running server, or `hookledger
//! compact` with the server stopped), no byte of an erased body is in any
//! file under the data directory, while every hash still verifies.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, hookledger, stdout, succeeds, walk};

/// The files under `data` that hold `marker`.
fn files_holding(data: &Path, marker: &str) -> Vec<String> {
    walk(data)
        .into_iter()
        .filter(|file| {
            std::fs::read(file)
                .is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .map(|file| file.display().to_string())
        .collect()
}

/// An event whose payload and two attempts' response bodies carry `marker`;
/// returns its id.
async fn event_with_bodies(client: &Client, marker: &str) -> String {
    let event = client
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "customer.updated", "payload": {"email": format!("{marker}@example.com")}}),
        )
        .await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    for status in ["retry_scheduled", "delivered"] {
        client
            .post(
                &format!("/v1/outbound-webhook-deliveries/{delivery}/attempts"),
                json!({"status": status, "responseStatusCode": 200,
                       "responseBody": {"echo": format!("{marker}-response")}}),
            )
            .await;
    }
    event["id"].as_str().unwrap().to_owned()
}

async fn erase(client: &Client, event: &str) -> Value {
    let (status, body) = client
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/outbound-webhook-events/{event}/content"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_bodies_leave_every_file_of_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "org_disk");
    let server = Server::start(&data).await;
    let client = Client::new(&server, "org_disk", &key);
    client
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "all", "url": "https://all.example.com/"}),
        )
        .await;
    let erased = event_with_bodies(&client, "ERASE-ME-7f3a").await;
    let kept = event_with_bodies(&client, "KEEP-ME-19c2").await;
    assert!(!files_holding(&data, "ERASE-ME-7f3a").is_empty());

    let answer = erase(&client, &erased).await;
    assert_eq!(answer["payload"], Value::Null);
    assert_eq!(answer["payloadErased"], true);
    // The running server takes the bytes off the disk in the background.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = files_holding(&data, "ERASE-ME-7f3a");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s after the erasure these files still hold an erased body: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Later writes, and a restart, bring nothing back.
    let later = event_with_bodies(&client, "LATER-5d11").await;
    server.stop();
    assert!(files_holding(&data, "ERASE-ME-7f3a").is_empty());
    assert!(!files_holding(&data, "KEEP-ME-19c2").is_empty());
    assert!(!files_holding(&data, "LATER-5d11").is_empty());

    // Erased while stopped: `erase --org` on the stopped ledger, which
    // compacts before it returns; `compact` then finds nothing left to do.
    let out = succeeds(hookledger(&data, &["erase", "--org", "org_disk"]));
    assert!(out.contains("removed from the disk"), "{out}");
    for marker in ["KEEP-ME-19c2", "LATER-5d11"] {
        assert_eq!(files_holding(&data, marker), Vec::<String>::new());
    }
    let compacted = succeeds(hookledger(&data, &["compact"]));
    assert!(compacted.contains("0 bodies removed"), "{compacted}");

    // Every hash still verifies, and the bodies are counted as erased.
    let verified = hookledger(&data, &["audit", "verify"]);
    assert!(verified.status.success(), "{}", stdout(&verified));
    assert!(
        stdout(&verified).contains("bodies: 0 kept, each matching its digest; 9 erased"),
        "{}",
        stdout(&verified)
    );
    let rebuilt = hookledger(&data, &["projections", "rebuild", "--verify"]);
    assert!(rebuilt.status.success(), "{}", stdout(&rebuilt));

    // The server still answers every event, with its bodies erased.
    let server = Server::start(&data).await;
    let client = Client::new(&server, "org_disk", &key);
    for event in [&erased, &kept, &later] {
        let shown = client
            .get(&format!("/v1/outbound-webhook-events/{event}"))
            .await;
        assert_eq!(shown["payloadErased"], true, "{shown}");
    }
    server.stop();
}
