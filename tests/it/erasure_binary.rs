//! Retention and erasure through the real `hookledger` binary: `erase --org`
//! beside a running server (through its admin socket) and on PostgreSQL with
//! no server at all, `audit verify` and `projections rebuild --verify` after
//! erasure, a changed byte still caught, `serve --retention` erasing in the
//! background, and the flag refusing what is not a duration.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, hookledger, stderr, stdout, succeeds, walk};
use crate::multinode::{self, Ledger};
use crate::support_postgres;

/// An event whose payload holds `payload_marker` and, on its delivery, two
/// attempts whose response bodies hold `response_marker` and one without a
/// body: `(event id, delivery id)`. Needs an endpoint for every type.
async fn event_with_bodies(
    client: &Client,
    payload_marker: &str,
    response_marker: &str,
) -> (String, String) {
    let event = client
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "invoice.paid", "payload": {"customer": payload_marker}}),
        )
        .await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");
    for i in 0..2 {
        client
            .post(
                &path,
                json!({"status": "failed", "responseStatusCode": 500,
                       "responseBody": {"echo": response_marker, "try": i}}),
            )
            .await;
    }
    client
        .post(&path, json!({"status": "failed", "lastError": "timeout"}))
        .await;
    (event["id"].as_str().unwrap().to_owned(), delivery)
}

async fn endpoint(client: &Client) {
    client
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "all", "url": "https://all.example.com/hook"}),
        )
        .await;
}

/// Whether the event's payload and every bodied attempt of its delivery are
/// served as erased, and nothing serves `marker`.
async fn served_as_erased(client: &Client, event_id: &str, delivery: &str, marker: &str) -> bool {
    let event = client
        .get(&format!("/v1/outbound-webhook-events/{event_id}"))
        .await;
    let attempts = client
        .all(&format!(
            "/v1/outbound-webhook-deliveries/{delivery}/attempts"
        ))
        .await;
    let feed = serde_json::to_string(&feed(client).await).unwrap();
    event["payload"].is_null()
        && event["payloadErased"] == true
        && attempts[..2]
            .iter()
            .all(|a| a["responseBodyErased"] == true)
        && !feed.to_string().contains(marker)
        && !attempts_text(&attempts).contains(marker)
}

/// Every event of the client's organization in the change feed.
async fn feed(client: &Client) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = client
            .get(&format!("/v1/ledger/feed?after={after}&limit=250"))
            .await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            return events;
        }
        after = page["nextAfter"].as_u64().unwrap();
        events.extend(data);
    }
}

fn attempts_text(attempts: &[Value]) -> String {
    serde_json::to_string(attempts).unwrap()
}

/// The `bodies:` line of `audit verify`: `(kept, erased, erasures)`.
fn bodies_line(out: &str) -> (u64, u64, u64) {
    let line = out
        .lines()
        .find(|l| l.starts_with("bodies:"))
        .unwrap_or_else(|| panic!("no bodies line in:\n{out}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 3, "{line}");
    (numbers[0], numbers[1], numbers[2])
}

/// Whether any file below `dir` holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    walk(dir)
        .into_iter()
        .filter(|f| {
            std::fs::read(f)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|f| f.display().to_string())
        .collect()
}

#[tokio::test]
async fn erase_org_beside_a_running_server_goes_through_it_and_is_served_as_erased_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "org_leaving");
    let other_key = create_key(&data, "org_staying");
    let server = Server::start(&data).await;
    let leaving = Client::new(&server, "org_leaving", &key);
    let staying = Client::new(&server, "org_staying", &other_key);
    endpoint(&leaving).await;
    endpoint(&staying).await;
    let mut gone = Vec::new();
    for i in 0..2 {
        let marker = format!("leaving-{i}-body");
        gone.push((event_with_bodies(&leaving, &marker, &marker).await, marker));
    }
    let (kept_id, kept_delivery) =
        event_with_bodies(&staying, "staying-body", "staying-body").await;

    let out = succeeds(hookledger(&data, &["erase", "--org", "org_leaving"]));
    assert!(out.contains("the running server removes them"), "{out}");
    // At once: the command returned when the server had recorded it.
    for ((event_id, delivery), marker) in &gone {
        assert!(
            served_as_erased(&leaving, event_id, delivery, marker).await,
            "{event_id} is still served"
        );
    }
    let kept = staying
        .get(&format!("/v1/outbound-webhook-events/{kept_id}"))
        .await;
    assert_eq!(kept["payload"]["customer"], "staying-body");
    let attempts = staying
        .all(&format!(
            "/v1/outbound-webhook-deliveries/{kept_delivery}/attempts"
        ))
        .await;
    assert_eq!(attempts[0]["responseBody"]["echo"], "staying-body");
    // The history says it was offboarding, asked by no key.
    let erasure = feed(&leaving).await.last().unwrap().clone();
    assert_eq!(erasure["type"], "ContentErased", "{erasure}");
    assert_eq!(erasure["data"]["reason"], "offboarding");
    assert_eq!(erasure["stream"], "erasures-org_leaving");
    assert!(erasure["data"]["eventId"].is_null());
    server.stop();

    // The ledger still verifies, and a rebuilt read model agrees with the
    // live one about what is erased.
    let out = succeeds(hookledger(&data, &["audit", "verify"]));
    assert!(out.starts_with("ok:"), "{out}");
    let (kept, erased, erasures) = bodies_line(&out);
    assert_eq!(kept + erased, 9, "three payloads and six response bodies");
    assert_eq!(erasures, 1);
    let out = succeeds(hookledger(&data, &["projections", "rebuild", "--verify"]));
    assert!(out.contains("no difference"), "{out}");
    let server = Server::start(&data).await;
    let leaving = Client::new(&server, "org_leaving", &key);
    for ((event_id, delivery), marker) in &gone {
        assert!(served_as_erased(&leaving, event_id, delivery, marker).await);
    }
    server.stop();
}

#[tokio::test]
async fn erase_refuses_a_bad_org_and_retention_refuses_what_is_not_a_duration() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for org in ["", "has space", &"o".repeat(300)] {
        let out = hookledger(&data, &["erase", "--org", org]);
        assert_ne!(out.status.code(), Some(0), "--org {org:?}");
        assert!(stderr(&out).contains("--org"), "{}", stderr(&out));
    }
    for bad in ["0s", "abc", "-5m", "500ms", ""] {
        let flag = format!("--retention={bad}");
        // An address that does not parse: were the flag let through, this
        // would fail naming --listen rather than serve for good.
        let out = hookledger(&data, &["serve", &flag, "--listen", "nowhere"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--retention {bad:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("--retention"),
            "--retention {bad:?}: {}",
            stderr(&out)
        );
    }
}

#[tokio::test]
async fn serve_with_retention_erases_old_bodies_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "org_kept_briefly");
    let server = Server::start_with(&data, &["--retention", "2s"]).await;
    let client = Client::new(&server, "org_kept_briefly", &key);
    endpoint(&client).await;
    let (event_id, delivery) = event_with_bodies(&client, "brief-body", "brief-body").await;
    // Served while younger than two seconds.
    let event = client
        .get(&format!("/v1/outbound-webhook-events/{event_id}"))
        .await;
    assert_eq!(event["payload"]["customer"], "brief-body");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !served_as_erased(&client, &event_id, &delivery, "brief-body").await {
        assert!(
            Instant::now() < deadline,
            "not erased within 30 s:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let feed = feed(&client).await;
    let erasures: Vec<&Value> = feed
        .iter()
        .filter(|e| e["type"] == "ContentErased")
        .collect();
    assert!(!erasures.is_empty());
    assert!(erasures.iter().all(|e| e["data"]["reason"] == "retention"));
    assert!(
        erasures
            .iter()
            .all(|e| e["data"]["recordedBefore"].is_string())
    );
    server.stop();
}

/// What a process on the PostgreSQL database at `url` is started with.
fn on_postgres(url: &str) -> Ledger {
    Ledger(vec![
        ("HOOKLEDGER_BACKEND", "postgres".into()),
        ("HOOKLEDGER_POSTGRES_URL", url.into()),
    ])
}

fn env(ledger: &Ledger) -> Vec<(&str, &str)> {
    ledger.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Runs one SQL statement on the database.
async fn sql(url: &str, statement: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let changed = client.execute(statement, &[]).await.unwrap();
    drop(client);
    let _ = driver.await;
    changed
}

/// The number of `hookledger_contents` rows holding `needle`.
async fn contents_holding(url: &str, needle: &str) -> u64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM hookledger_contents \
             WHERE position(convert_to($1, 'UTF8') in content) > 0",
            &[&needle],
        )
        .await
        .unwrap()
        .get(0);
    count as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erase_org_on_postgres_with_no_server_erases_that_org_and_the_ledger_still_verifies() {
    let Some(url) = support_postgres::database("erasure_binary::erase_org_on_postgres").await
    else {
        return;
    };
    let ledger = on_postgres(&url);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key_of = |org: &str| {
        let out = multinode::succeeds(multinode::hookledger(
            &ledger,
            &data,
            &["keys", "create", "--org", org],
        ));
        out.lines().last().unwrap().trim().to_owned()
    };
    let (key, other_key) = (key_of("org_leaving"), key_of("org_staying"));
    let server = Server::spawn(&data, &[], &env(&ledger)).wait_ready().await;
    let leaving = Client::new(&server, "org_leaving", &key);
    let staying = Client::new(&server, "org_staying", &other_key);
    endpoint(&leaving).await;
    endpoint(&staying).await;
    let mut gone = Vec::new();
    for i in 0..2 {
        let marker = format!("leaving-{i}-body");
        gone.push((event_with_bodies(&leaving, &marker, &marker).await, marker));
    }
    let (kept_id, _) = event_with_bodies(&staying, "staying-body", "staying-body").await;
    server.stop();
    assert_eq!(contents_holding(&url, "leaving-0-body").await, 3);

    let out = multinode::succeeds(multinode::hookledger(
        &ledger,
        &data,
        &["erase", "--org", "org_leaving"],
    ));
    assert!(
        out.contains("6 removed from the disk"),
        "two payloads and four response bodies: {out}"
    );
    for (_, marker) in &gone {
        assert_eq!(contents_holding(&url, marker).await, 0, "{marker}");
    }
    assert_eq!(contents_holding(&url, "staying-body").await, 3);

    let server = Server::spawn(&data, &[], &env(&ledger)).wait_ready().await;
    let leaving = Client::new(&server, "org_leaving", &key);
    let staying = Client::new(&server, "org_staying", &other_key);
    for ((event_id, delivery), marker) in &gone {
        assert!(
            served_as_erased(&leaving, event_id, delivery, marker).await,
            "{event_id} is still served"
        );
    }
    let kept = staying
        .get(&format!("/v1/outbound-webhook-events/{kept_id}"))
        .await;
    assert_eq!(kept["payload"]["customer"], "staying-body");
    server.stop();
    assert!(files_holding(&data, "leaving-0-body").is_empty());

    let verify = || multinode::hookledger(&ledger, &data, &["audit", "verify"]);
    let out = multinode::succeeds(verify());
    assert!(out.starts_with("ok:"), "{out}");
    assert_eq!(bodies_line(&out), (3, 6, 1));
    let out = multinode::succeeds(multinode::hookledger(
        &ledger,
        &data,
        &["projections", "rebuild", "--verify"],
    ));
    assert!(out.contains("no difference"), "{out}");

    // One changed byte of a kept body is caught by its digest...
    let position: i64 = {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query_one(
                "SELECT min(position) FROM hookledger_contents \
                 WHERE position(convert_to('staying-body', 'UTF8') in content) > 0",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    };
    let flip = |column: &str, table: &str, at: &str| {
        format!(
            "UPDATE {table} SET {column} = overlay({column} placing \
             (CASE WHEN get_byte({column}, {at}) = 90 THEN 'Y' ELSE 'Z' END)::bytea \
             from {at} + 1 for 1) WHERE position = {position}"
        )
    };
    let original = sql(
        &url,
        "CREATE TABLE saved AS SELECT * FROM hookledger_contents",
    )
    .await;
    assert!(original > 0);
    assert_eq!(
        sql(&url, &flip("content", "hookledger_contents", "20")).await,
        1
    );
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("FAILED at position {position}")),
        "{}",
        stdout(&out)
    );
    sql(
        &url,
        "UPDATE hookledger_contents c SET content = s.content FROM saved s \
         WHERE c.position = s.position",
    )
    .await;
    sql(&url, "DROP TABLE saved").await;
    multinode::succeeds(verify());

    // ...and one changed byte of an event whose body is erased, by its hash.
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (event_id, _) = &gone[0].0;
    let position: i64 = client
        .query_one(
            "SELECT position FROM hookledger_events \
             WHERE stream = $1 AND version = 0",
            &[&format!("event-{event_id}")],
        )
        .await
        .unwrap()
        .get(0);
    // A value changed, the JSON still well-formed and within its schema:
    // only the hash can tell.
    let flip = format!(
        "UPDATE hookledger_events SET data = overlay(data placing 'Z'::bytea \
         from position('invoice.paid'::bytea in data) + 9 for 1) WHERE position = {position}"
    );
    assert_eq!(sql(&url, &flip).await, 1);
    let out = verify();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&format!("FAILED at position {position}")) && report.contains("hash"),
        "{report}"
    );
}
