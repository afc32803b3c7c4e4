//! The API on KurrentDB: the contract and flow tests of this binary run again
//! on a KurrentDB store; two in-process nodes on one ledger agree on keys,
//! `Idempotency-Key`, `sourceKey` and `If-Match`; two `serve` processes share
//! one ledger and a killed one loses nothing; and a process killed between
//! taking a `sourceKey` claim and appending its event has that event
//! recorded once, by the next node the request is retried on; and `serve`
//! says when it starts that events over the server's append size get 413.
//!
//! Each test runs on a fresh ledger prefix of the test double, or of the real
//! server at `HOOKLEDGER_TEST_KURRENTDB_URL` (see `tests/support/kurrentdb.rs`).

use std::sync::Arc;
use std::time::Duration;

use hookledger::node::Node;
use hookledger::store::kurrentdb::{KurrentDbStore, Options};
use serde_json::json;

use crate::across_nodes;
use crate::binary::{Server, log_lines};
use crate::helpers::{TestApp, TestNode, spawn_app_with};
use crate::multinode::{self, Ledger, ORG, hookledger, succeeds};
use crate::support_kurrentdb::{Kurrent, fresh_prefix};

/// The tests of the API modules that cannot pass on KurrentDB, and why: a
/// request body at hookledger's 1 MiB limit makes an event over KurrentDB's
/// default maximum append size (1 MiB with the envelope), which this store
/// refuses with a 413 by design (see `kurrentdb_checks.rs`).
const NOT_ON_KURRENTDB: &[&str] =
    &["http::a_body_over_one_mib_is_413_and_one_at_the_limit_is_accepted"];

/// A node on a fresh ledger (`helpers::new_node` with
/// `HOOKLEDGER_TEST_BACKEND=kurrentdb`).
pub async fn new_node(dir: tempfile::TempDir) -> TestNode {
    let kurrent = Kurrent::start().await;
    let node = node_on(&kurrent, &fresh_prefix(), &dir).await;
    TestNode {
        node,
        dir: Some(dir),
        backing: Some(kurrent),
    }
}

async fn node_on(kurrent: &Kurrent, prefix: &str, dir: &tempfile::TempDir) -> Node {
    let options = Options {
        prefix: prefix.to_owned(),
        ..Options::new(dir.path())
    };
    let store = KurrentDbStore::open(&kurrent.url(), options)
        .await
        .expect("open the KurrentDB store");
    Node::start(
        Arc::new(store),
        hookledger::projector::Config::in_dir(dir.path()),
    )
    .await
    .expect("open the node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attempt_over_the_servers_append_size_is_413_and_never_sent() {
    let kurrent = Kurrent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_on(&kurrent, &fresh_prefix(), &dir).await;
    let app = spawn_app_with(node, |s| s).await;
    let delivery = app.delivery().await;
    let head = app.head();
    let sent = || kurrent.as_double().map(|d| d.stats().appends);
    let before = sent();
    // Within the API's 1 MiB and every limit (a response body has no limit
    // of its own), over KurrentDB's 1 MiB append once recorded.
    let body = json!({"status": "failed", "responseBody": {"b": "e".repeat(1_040_000)}});
    let reply = app.record_attempt(&delivery, &body).await;
    reply.assert_problem(413, None);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("maximum append size") && detail.contains("1048576"),
        "{detail}"
    );
    assert_eq!(app.head(), head);
    assert_eq!(sent(), before, "the refused attempt reached the server");
    assert_eq!(app.attempt_count(&delivery).await, 0);
    // A smaller one is recorded.
    let small = json!({"status": "failed", "responseBody": {"b": "e".repeat(900_000)}});
    let reply = app.record_attempt(&delivery, &small).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    assert_eq!(app.attempt_count(&delivery).await, 1);
}

#[test]
fn the_api_tests_pass_on_kurrentdb() {
    across_nodes::api_tests_pass_on("kurrentdb", &[], NOT_ON_KURRENTDB);
}

/// Two nodes on one fresh ledger; `b` acts with `a`'s organization and key.
/// The server is returned to outlive them.
async fn two_nodes() -> (Kurrent, TestApp, TestApp) {
    let kurrent = Kurrent::start().await;
    let prefix = fresh_prefix();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let node = node_on(&kurrent, &prefix, &dir).await;
        let test_node = TestNode {
            node,
            dir: Some(dir),
            backing: None,
        };
        apps.push(spawn_app_with(test_node, |s| s).await);
    }
    let (mut b, a) = (apps.remove(0), apps.remove(0));
    b.org = a.org.clone();
    b.key = a.key.clone();
    (kurrent, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_issued_through_one_node_authorizes_on_another_at_once() {
    let (_kurrent, a, b) = two_nodes().await;
    across_nodes::a_key_issued_through_one_node_authorizes_on_another_at_once(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_two_nodes_makes_one_event() {
    let (_kurrent, a, b) = two_nodes().await;
    across_nodes::one_idempotency_key_sent_to_two_nodes_makes_one_event(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_source_key_sent_to_two_nodes_makes_one_event() {
    let (_kurrent, a, b) = two_nodes().await;
    across_nodes::one_source_key_sent_to_two_nodes_makes_one_event(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_and_if_match_work_across_nodes() {
    let (_kurrent, a, b) = two_nodes().await;
    across_nodes::attempts_and_if_match_work_across_nodes(a, b).await;
}

fn ledger(kurrent: &Kurrent, prefix: &str) -> Ledger {
    Ledger(vec![
        ("HOOKLEDGER_BACKEND", "kurrentdb".into()),
        ("HOOKLEDGER_KURRENTDB_URL", kurrent.url()),
        ("HOOKLEDGER_KURRENTDB_PREFIX", prefix.into()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_share_one_ledger_and_a_killed_one_loses_nothing() {
    let kurrent = Kurrent::start().await;
    let ledger = ledger(&kurrent, &fresh_prefix());
    multinode::two_nodes_share_a_ledger_and_a_killed_one_loses_nothing(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_killed_between_claim_and_append_has_its_event_recorded_once() {
    let kurrent = Kurrent::start().await;
    let Some(double) = kurrent.double("a_process_killed_between_claim_and_append") else {
        return;
    };
    let prefix = fresh_prefix();
    let ledger = ledger(&kurrent, &prefix);
    let dir = tempfile::tempdir().unwrap();
    let out = succeeds(hookledger(
        &ledger,
        &dir.path().join("cli"),
        &["keys", "create", "--org", ORG],
    ));
    let key = out.lines().last().unwrap().trim().to_owned();
    let a = multinode::Node::start(&ledger, &dir.path().join("a"), &key).await;
    a.post(
        "/v1/outbound-webhook-endpoints",
        json!({"name": "r", "url": "https://r.example.com/hook"}),
    )
    .await;

    // A takes the sourceKey and Idempotency-Key claims; the append of its
    // event stream is held at the server, and A is killed while it waits.
    let hold = double.hold_appends(&format!("{prefix}:event-"));
    let body = json!({"eventType": "invoice.paid", "sourceKey": "inv-1", "payload": {"n": 1}});
    let a = Arc::new(a);
    let in_flight = tokio::spawn({
        let (a, body) = (a.clone(), body.clone());
        async move {
            a.send_with(
                reqwest::Method::POST,
                "/v1/outbound-webhook-events",
                Some(body),
                Some("request-1"),
            )
            .await
        }
    });
    assert!(
        hold.held(1, Duration::from_secs(30)).await,
        "A's event append never reached the server"
    );
    let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let (status, _) = in_flight.await.unwrap();
    assert_eq!(status, 0, "A answered although its append was held");
    // The held append is lost with A: it never reaches the log.
    hold.discard();

    // The client retries on B, with the same key: B finds A's claim without
    // its event, completes it, and answers with that event.
    let b = multinode::Node::start(&ledger, &dir.path().join("b"), &key).await;
    let (status, retried) = b
        .send_with(
            reqwest::Method::POST,
            "/v1/outbound-webhook-events",
            Some(body.clone()),
            Some("request-1"),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {retried}");
    let id = retried["id"].as_str().unwrap().to_owned();
    // The same sourceKey without the key: the same event, not a new one.
    let (status, again) = b
        .send(
            reqwest::Method::POST,
            "/v1/outbound-webhook-events",
            Some(body),
        )
        .await;
    assert_eq!((status, again["id"].as_str()), (200, Some(id.as_str())));
    let events = b.get("/v1/outbound-webhook-events").await;
    let ids: Vec<_> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [id], "one event, recorded once");
    let report = succeeds(hookledger(
        &ledger,
        &dir.path().join("cli"),
        &["audit", "verify"],
    ));
    assert!(report.starts_with("ok: 3 events"), "{report}");
}

/// `serve` with the default limits, whose largest event (a 1 MiB body fanned
/// out) is over KurrentDB's default maximum append size, says so when it
/// starts: such a request gets 413. With an append size that takes every
/// event the limits allow, it says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_says_when_it_starts_that_events_over_the_servers_append_size_get_413() {
    const WARNING: &str = "these limits allow events over this store's limit on one event; \
                           a request that would record one is refused with 413";
    let kurrent = Kurrent::start().await;
    let (url, prefix) = (kurrent.url(), fresh_prefix());
    let dir = tempfile::tempdir().unwrap();
    for (max_append_bytes, warned) in [("1048576", true), ("4194304", false)] {
        let env = [
            ("HOOKLEDGER_BACKEND", "kurrentdb"),
            ("HOOKLEDGER_KURRENTDB_URL", url.as_str()),
            ("HOOKLEDGER_KURRENTDB_PREFIX", prefix.as_str()),
            ("HOOKLEDGER_KURRENTDB_MAX_APPEND_BYTES", max_append_bytes),
        ];
        let data = dir.path().join(max_append_bytes);
        let server = Server::spawn(&data, &[], &env).wait_ready().await;
        let log = server.stop();
        let lines = log_lines(&log, WARNING);
        assert_eq!(
            lines.len(),
            usize::from(warned),
            "{max_append_bytes}:\n{log}"
        );
        if let Some(line) = lines.first() {
            let fields = &line["fields"];
            assert_eq!(fields["store_limit"], 1_048_576 - 16 * 1024, "{line}");
            assert!(
                fields["largest_event"].as_u64() > fields["store_limit"].as_u64(),
                "{line}"
            );
        }
    }
}
