//! The change feed on the real `hookledger` binary: a client following it
//! with Server-Sent Events through a graceful restart and a SIGKILL, while
//! attempts keep being recorded, never misses or repeats an event; and a
//! client that stops reading its stream is cut off, holding nothing.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, record_figures};
use crate::sse;

const ORG: &str = "org_feed";

/// Records attempts on `delivery` until told to stop, through whatever
/// server `base` names now; returns the `lastError` of every acknowledged one.
async fn keep_recording(
    client: Client,
    base: Arc<std::sync::Mutex<String>>,
    delivery: String,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let marker = format!("attempt {n}");
        let url = format!(
            "{}/v1/outbound-webhook-deliveries/{delivery}/attempts",
            base.lock().unwrap()
        );
        let sent = client
            .http
            .post(url)
            .bearer_auth(&client.key)
            .header("x-organization-id", ORG)
            .json(&json!({"status": "failed", "lastError": marker}))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => acknowledged.push(marker),
            // The server is restarting; whatever was not acknowledged may or
            // may not be recorded, and the feed will say which.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    acknowledged
}

/// Reads events from `stream` until it ends (the server went away) or
/// `until` says so; each received event's `(id, event)`.
async fn read_until(
    stream: &mut sse::EventStream,
    received: &mut Vec<(u64, Value)>,
    until: impl Fn(&[(u64, Value)]) -> bool,
) {
    while !until(received) {
        let Some((id, data)) = stream.next_event().await else {
            return;
        };
        let id: u64 = id
            .expect("every event has an id")
            .parse()
            .expect("a sequence");
        let event: Value = serde_json::from_str(&data).expect("data is JSON");
        assert_eq!(event["sequence"], id, "the id is the event's sequence");
        received.push((id, event));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_never_misses_or_repeats_an_event_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let mut server = Server::start(&data).await;
    let client = Client::new(&server, ORG, &key);
    let delivery = client.one_delivery().await;
    let base = Arc::new(std::sync::Mutex::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(keep_recording(
        client.clone(),
        base.clone(),
        delivery.clone(),
        stop.clone(),
    ));
    let http = reqwest::Client::new();
    let mut received: Vec<(u64, Value)> = Vec::new();
    let mut last_id: Option<String> = None;
    for restart in ["SIGTERM", "SIGKILL", "none"] {
        let url = format!("{}/v1/ledger/feed", server.base);
        let mut stream = sse::open(&http, &url, ORG, &key, last_id.as_deref())
            .await
            .unwrap_or_else(|r| panic!("the stream opens: {}", r.body));
        // Follow while attempts arrive, then take the server down under it.
        let target = received.len() + 25;
        read_until(&mut stream, &mut received, |r| r.len() >= target).await;
        assert!(received.len() >= target, "the stream ended early");
        match restart {
            "SIGTERM" => {
                // A graceful stop ends the stream; the client has all it was sent.
                let stopping = tokio::task::spawn_blocking(move || server.stop());
                read_until(&mut stream, &mut received, |_| false).await;
                stopping.await.unwrap();
            }
            "SIGKILL" => {
                server.kill();
                read_until(&mut stream, &mut received, |_| false).await;
            }
            _ => break,
        }
        last_id = stream.last_id.clone();
        server = Server::start(&data).await;
        *base.lock().unwrap() = server.base.clone();
    }
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.unwrap();
    // Everything recorded up to now, read afresh as pages.
    let client = Client::new(&server, ORG, &key);
    let mut feed = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .get(&format!("/v1/ledger/feed?after={after}&limit=250"))
            .await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            break;
        }
        after = page["nextAfter"].as_u64().unwrap();
        feed.extend(data);
    }
    // The stream's last reconnection catches up with the rest.
    let mut stream = sse::open(
        &http,
        &format!("{}/v1/ledger/feed", server.base),
        ORG,
        &key,
        Some(&received.last().unwrap().0.to_string()),
    )
    .await
    .unwrap();
    let total = feed.len();
    read_until(&mut stream, &mut received, |r| r.len() >= total).await;
    let ids: Vec<u64> = received.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=total as u64).collect::<Vec<_>>(),
        "the client missed or repeated an event"
    );
    let streamed: Vec<&Value> = received.iter().map(|(_, e)| e).collect();
    assert_eq!(
        streamed,
        feed.iter().collect::<Vec<_>>(),
        "the stream and the pages agree"
    );
    // Every acknowledged attempt is in it, once.
    let recorded: Vec<&str> = feed
        .iter()
        .filter(|e| e["type"] == "AttemptRecorded")
        .map(|e| e["data"]["lastError"].as_str().unwrap())
        .collect();
    for marker in &acknowledged {
        assert_eq!(
            recorded.iter().filter(|r| *r == marker).count(),
            1,
            "{marker} acknowledged"
        );
    }
    record_figures(
        "feed_resume",
        &format!(
            "{total} events followed across a SIGTERM and a SIGKILL restart, {} attempts acknowledged, 0 missed, 0 repeated",
            acknowledged.len()
        ),
    );
}

#[test]
fn a_client_that_stops_reading_its_event_stream_is_cut_off_holding_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let server = runtime.block_on(Server::start_with(&data, &["--client-timeout", "1"]));
    let client = Client::new(&server, ORG, &key);
    // Far more than the socket buffers on both sides hold: 24 events of 900 KB.
    let big = "x".repeat(900 * 1024);
    runtime.block_on(async {
        client
            .post(
                "/v1/outbound-webhook-endpoints",
                json!({"name": "all", "url": "https://all.example.com/"}),
            )
            .await;
        for _ in 0..24 {
            client
                .post(
                    "/v1/outbound-webhook-events",
                    json!({"eventType": "x", "payload": {"big": big}}),
                )
                .await;
        }
    });
    let total = 24 * big.len();
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "GET /v1/ledger/feed HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\
         authorization: Bearer {key}\r\nx-organization-id: {ORG}\r\n\r\n"
    )
    .unwrap();
    let open_streams = || {
        let text = runtime.block_on(async {
            client
                .http
                .get(format!("{}/metrics", server.base))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        text.lines()
            .find(|l| l.starts_with("hookledger_feed_connections{mode=\"event_stream\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    let resident = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<usize>()
            .unwrap()
            * 1024
    };
    let before = resident();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open_streams().as_deref(), Some("1"), "the stream is open");
    // The socket buffers are full and the server waits for the reader: it
    // holds at most an event or two and the connection's buffers.
    let grown = resident().saturating_sub(before);
    assert!(
        grown < total / 2,
        "the server grew by {grown} bytes for a reader that took nothing of {total}"
    );
    // Reads nothing for three client timeouts.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        open_streams().as_deref(),
        Some("0"),
        "the server still holds the stream of a client that reads nothing"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("the connection is still open after {received} bytes of {total}: {e}"),
        }
    };
    assert!(
        received < total,
        "every event arrived ({ended}): the server waited for the reader"
    );
    record_figures(
        "feed_slow_reader",
        &format!(
            "{received} of {total} bytes of events reached the client before the server cut it off \
             ({ended}); the server grew by {grown} bytes while it waited"
        ),
    );
    // The server serves the feed to others all the same.
    let page = runtime.block_on(client.get("/v1/ledger/feed?limit=2"));
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
}
