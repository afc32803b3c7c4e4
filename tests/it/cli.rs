//! The command line end to end: the real `hookledger` binary serving, issuing
//! keys beside a running server, stopping on SIGTERM with the read model written out, and
//! the operator and auditor commands on the data it left.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::binary::{
    Client, Server, create_key, hookledger, key_id, log_lines, stdout, succeeds, walk,
};

const ORG: &str = "org_cli";

/// Endpoints, events with and without deliveries, and attempts of every status.
/// Returns the ids of the deliveries that got attempts.
async fn record_a_history(client: &Client) -> Vec<String> {
    for (name, types) in [("all", json!([])), ("orders", json!(["order.created"]))] {
        client
            .post(
                "/v1/outbound-webhook-endpoints",
                json!({"name": name, "url": format!("https://example.com/{name}"), "eventTypes": types}),
            )
            .await;
    }
    let mut deliveries = Vec::new();
    for (i, event_type) in ["order.created", "invoice.paid", "order.created"]
        .iter()
        .enumerate()
    {
        let event = client
            .post(
                "/v1/outbound-webhook-events",
                json!({"eventType": event_type, "sourceKey": format!("src-{i}"), "payload": {"n": i}}),
            )
            .await;
        for delivery in event["deliveries"].as_array().unwrap() {
            deliveries.push(delivery["id"].as_str().unwrap().to_owned());
        }
    }
    for (i, id) in deliveries.iter().enumerate() {
        let path = format!("/v1/outbound-webhook-deliveries/{id}/attempts");
        client
            .post(
                &path,
                json!({"status": "retry_scheduled", "responseStatusCode": 503,
                       "lastError": format!("upstream unavailable {i}"), "nextRetryAt": "2030-01-01T00:00Z"}),
            )
            .await;
        if i % 2 == 0 {
            client
                .post(&path, json!({"status": "delivered", "responseStatusCode": 200, "responseBody": {"ok": true}}))
                .await;
        }
    }
    deliveries
}

#[tokio::test]
async fn keys_work_beside_a_running_server_and_a_revoked_key_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    // The server holds the log; the key goes through its admin socket.
    let key = create_key(&data, ORG);
    let client = Client::new(&server, ORG, &key);
    client.get("/v1/outbound-webhook-endpoints").await;
    let key_id = key_id(&key);
    succeeds(hookledger(&data, &["keys", "revoke", &key_id]));
    let (status, _) = client
        .send(reqwest::Method::GET, "/v1/outbound-webhook-endpoints", None)
        .await;
    assert_eq!(status, 401);
    server.stop();
}

#[tokio::test]
async fn rebuild_verify_and_audit_agree_with_the_live_ledger_and_catch_one_changed_character() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let server = Server::start(&data).await;
    let client = Client::new(&server, ORG, &key);
    let deliveries = record_a_history(&client).await;
    assert!(deliveries.len() >= 4, "the history has several deliveries");
    // The running store's group-commit counters reach /metrics.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let appends = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hookledger_store_appends "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no append counter in:\n{metrics}"));
    assert!(appends >= 10, "{appends} appends counted");
    let before_restart = client
        .get("/v1/outbound-webhook-deliveries?limit=250")
        .await;
    let events_before = client.get("/v1/outbound-webhook-events?limit=250").await;
    let server_log = server.stop();
    let stopped = log_lines(&server_log, "wrote the read model out");
    assert!(!stopped.is_empty(), "SIGTERM wrote the read model out");

    // A restart resumes from the model on disk, at the position it stopped
    // at, and serves everything exactly as before.
    let server = Server::start(&data).await;
    let opened = log_lines(
        &server.log(),
        "opened the read model; replaying the log's tail",
    );
    assert_eq!(
        opened.last().expect("the restart opened the stored model")["fields"]["position"],
        stopped.last().unwrap()["fields"]["position"],
        "nothing is replayed that was written out"
    );
    let client = Client::new(&server, ORG, &client.key);
    assert_eq!(
        client
            .get("/v1/outbound-webhook-deliveries?limit=250")
            .await,
        before_restart
    );
    assert_eq!(
        client.get("/v1/outbound-webhook-events?limit=250").await,
        events_before
    );
    server.stop();

    let out = succeeds(hookledger(&data, &["projections", "rebuild", "--verify"]));
    assert!(out.contains("no difference"), "{out}");
    assert!(out.contains("events/s"), "{out}");

    let out = succeeds(hookledger(&data, &["audit", "verify"]));
    assert!(out.starts_with("ok:"), "{out}");
    let digest: Value =
        serde_json::from_str(&succeeds(hookledger(&data, &["audit", "digest"]))).unwrap();
    let position = digest["position"].as_u64().unwrap();
    let digest = digest["digest"].as_str().unwrap().to_owned();
    succeeds(hookledger(
        &data,
        &[
            "audit",
            "verify",
            "--digest",
            &digest,
            "--position",
            &position.to_string(),
        ],
    ));
    let wrong = format!(
        "{}{}",
        &digest[..63],
        if digest.ends_with('0') { '1' } else { '0' }
    );
    let out = hookledger(
        &data,
        &[
            "audit",
            "verify",
            "--digest",
            &wrong,
            "--position",
            &position.to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("FAILED at position {position}")),
        "{}",
        stdout(&out)
    );

    // Every exported event's hash can be recomputed by an outside tool.
    let export = succeeds(hookledger(&data, &["audit", "export"]));
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, position);
    let mut tips = std::collections::HashMap::new();
    for line in &lines {
        let prev = tips
            .get(line["stream"].as_str().unwrap())
            .cloned()
            .unwrap_or_else(|| "0".repeat(64));
        assert_eq!(line["prevHash"], json!(prev));
        let canonical = format!(
            r#"{{"data":{},"metadata":{},"recordedAt":{},"schemaVersion":{},"stream":{},"type":{},"version":{}}}"#,
            line["data"],
            line["metadata"],
            line["recordedAt"],
            line["schemaVersion"],
            line["stream"],
            line["type"],
            line["version"]
        );
        let mut hasher = Sha256::new();
        hasher.update(hex::decode(&prev).unwrap());
        hasher.update(canonical.as_bytes());
        assert_eq!(
            line["hash"],
            json!(hex::encode(hasher.finalize())),
            "{line}"
        );
        tips.insert(
            line["stream"].as_str().unwrap().to_owned(),
            line["hash"].as_str().unwrap().to_owned(),
        );
    }

    // Replay shows the state after every event of a delivery.
    let replay = succeeds(hookledger(
        &data,
        &["audit", "replay", "--delivery", &deliveries[0]],
    ));
    let states: Vec<Value> = replay
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(states.len(), 3, "accepted, retry_scheduled, delivered");
    assert_eq!(states[0]["state"]["attemptCount"], 0);
    assert_eq!(states[1]["state"]["status"], "retry_scheduled");
    assert_eq!(states[2]["state"]["status"], "delivered");
    assert_eq!(states[2]["state"]["attemptCount"], 2);

    // Change one character of one recorded attempt on disk.
    let target = lines
        .iter()
        .find(|l| l["data"]["lastError"] == "upstream unavailable 1")
        .expect("the attempt is exported");
    let tampered_position = target["position"].as_u64().unwrap();
    let segment = walk(&data.join("log"))
        .into_iter()
        .next()
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(b"upstream unavailable 1".len())
        .position(|w| w == b"upstream unavailable 1")
        .expect("the attempt's bytes are in the segment");
    let original = bytes.clone();
    bytes[at] = b'U';
    std::fs::write(&segment, &bytes).unwrap();
    let out = hookledger(&data, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("FAILED at position {tampered_position}")),
        "{}",
        stdout(&out)
    );

    // A forger who also fixes the frame's checksum is caught by the hash chain.
    let mut forged = original;
    forged[at] = b'U';
    reseal_frame_containing(&mut forged, at);
    std::fs::write(&segment, &forged).unwrap();
    let out = hookledger(&data, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("FAILED at position {tampered_position}"))
            && report.contains("hash"),
        "{report}"
    );
}

/// Recomputes the CRC of the frame that holds byte `at`, as a forger would.
fn reseal_frame_containing(segment: &mut [u8], at: usize) {
    use hookledger::store::embedded::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
    let mut offset = SEGMENT_HEADER_LEN as usize;
    let header = FRAME_HEADER_LEN as usize;
    loop {
        let len_bytes: [u8; 4] = segment[offset..offset + 4].try_into().unwrap();
        // The top two bits are flags: the batch goes on, the frame holds content.
        let len = (u32::from_le_bytes(len_bytes) & 0x3fff_ffff) as usize;
        let end = offset + header + len;
        if (offset..end).contains(&at) {
            let payload = &segment[offset + header..end];
            let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
            segment[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
            return;
        }
        offset = end;
    }
}

#[tokio::test]
async fn an_empty_ledger_says_how_to_create_a_key_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let hint = loop {
        if let Some(line) = server.log().lines().find(|l| l.contains("no API keys yet")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no hint in:\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(hint.contains("hookledger keys create --org"), "{hint}");
    server.stop();
}

/// SIGTERM while a request is inside its handler: the server stops accepting,
/// finishes that request (its attempt is recorded and answered 200), then exits
/// cleanly. `Expect: 100-continue` tells the test the handler has started: the
/// server sends `100 Continue` only when the handler asks for the body.
#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_before_exiting() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let server = Server::start(&data).await;
    let delivery = Client::new(&server, ORG, &key).one_delivery().await;

    let body = br#"{"status":"delivered","responseStatusCode":200}"#;
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/outbound-webhook-deliveries/{delivery}/attempts HTTP/1.1\r\nhost: test\r\n\
         authorization: Bearer {key}\r\nx-organization-id: {ORG}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         expect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
        .await
        .expect("100 Continue in time")
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    nix::sys::signal::kill(server.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    // The listener closes while our request is still open.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    socket.write_all(body).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        socket.read_to_string(&mut response),
    )
    .await
    .expect("the answer in time")
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"attemptCount\":1"), "{response}");
    let mut server = server;
    let status = server.wait_exit();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}\n{}",
        server.log()
    );

    let replay = succeeds(hookledger(
        &data,
        &["audit", "replay", "--delivery", &delivery],
    ));
    assert_eq!(
        replay.lines().count(),
        2,
        "the in-flight attempt is in the log"
    );
}
