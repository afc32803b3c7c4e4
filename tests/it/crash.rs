//! Crash safety of the real binary: `hookledger serve` is killed with SIGKILL at
//! random moments while eight writers record attempts, and restarted each time.
//! After every kill the ledger must hold every attempt that got a 2xx, each once;
//! an attempt whose answer was lost may be there or not, but whole (in the
//! history, the raw stream, `attemptCount` and the delivery's status alike);
//! `audit verify` passes and `projections rebuild --verify` finds no difference.
//!
//! The kill delays come from a seeded generator; the seed is in every failure
//! message, and `HOOKLEDGER_CRASH_SEED=N` replays it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hookledger::snapshot::Snapshot;
use reqwest::Method;
use serde_json::json;
use tokio::task::JoinSet;

use crate::binary::{
    Client, Rng, Server, copy_data, create_key, hookledger, log_lines, record_figures, stdout,
    succeeds,
};

const ORG: &str = "org_crash";
const WRITERS: usize = 8;
const DELIVERIES: usize = 4;
const ROUNDS: usize = 20;

/// What a writer learned about one attempt it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 2xx: the attempt must survive any crash.
    Acknowledged,
    /// No answer (the server died): the attempt may or may not be recorded.
    InDoubt,
}

#[derive(Debug, Clone)]
struct Sent {
    delivery: usize,
    outcome: Outcome,
}

/// Records attempts on delivery `w % DELIVERIES` until the server stops answering.
async fn writer(
    client: Client,
    deliveries: Vec<String>,
    round: usize,
    w: usize,
) -> Vec<(String, Sent)> {
    let delivery = w % DELIVERIES;
    let path = format!(
        "/v1/outbound-webhook-deliveries/{}/attempts",
        deliveries[delivery]
    );
    let statuses = ["failed", "retry_scheduled", "delivered", "pending"];
    let mut sent = Vec::new();
    for n in 0.. {
        let marker = format!("r{round}-w{w}-n{n}");
        let body =
            json!({"status": statuses[n % 4], "lastError": marker, "responseStatusCode": 500});
        let answer = client.request(Method::POST, &path).json(&body).send().await;
        let outcome = match answer {
            Ok(response) if response.status().is_success() => Outcome::Acknowledged,
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                panic!("round {round}: attempt {marker} answered {status}: {text}");
            }
            Err(_) => Outcome::InDoubt,
        };
        sent.push((marker, Sent { delivery, outcome }));
        if outcome == Outcome::InDoubt {
            return sent;
        }
    }
    sent
}

/// Figures from checking the ledger against what the writers were told.
#[derive(Debug, Default)]
struct Checked {
    acknowledged: usize,
    in_doubt: usize,
    in_doubt_recorded: usize,
}

/// Checks every delivery over HTTP against `sent`; `context` names the round and seed.
async fn check_ledger(
    client: &Client,
    deliveries: &[String],
    events: &[String],
    sent: &HashMap<String, Sent>,
    context: &str,
) -> Checked {
    let mut checked = Checked::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, id) in deliveries.iter().enumerate() {
        let history = client
            .all(&format!("/v1/outbound-webhook-deliveries/{id}/attempts"))
            .await;
        let raw = client
            .all(&format!("/v1/outbound-webhook-deliveries/{id}/events"))
            .await;
        let delivery = client
            .get(&format!("/v1/outbound-webhook-deliveries/{id}"))
            .await;
        let event = client
            .get(&format!("/v1/outbound-webhook-events/{}", events[i]))
            .await;
        let count = history.len() as u64;
        assert_eq!(
            delivery["attemptCount"], count,
            "{context}: {id} attemptCount vs history"
        );
        assert_eq!(
            raw.len() as u64,
            count,
            "{context}: {id} raw stream vs history"
        );
        assert_eq!(
            event["deliveries"][0]["attemptCount"], count,
            "{context}: {id} the parent event's view"
        );
        for (n, attempt) in history.iter().enumerate() {
            assert_eq!(
                attempt["attemptNumber"],
                n as u64 + 1,
                "{context}: {id} numbering"
            );
            assert_eq!(
                raw[n]["hash"], attempt["hash"],
                "{context}: {id} raw vs history at {n}"
            );
            let marker = attempt["lastError"].as_str().unwrap_or_default().to_owned();
            let Some(s) = sent.get(&marker) else {
                panic!("{context}: {id} holds attempt {marker:?}, which no writer sent");
            };
            assert_eq!(
                s.delivery, i,
                "{context}: {marker} landed on the wrong delivery"
            );
            *seen.entry(marker).or_default() += 1;
        }
        if let Some(last) = history.last() {
            for field in ["status", "lastError", "responseStatusCode"] {
                assert_eq!(
                    delivery[field], last[field],
                    "{context}: {id} {field} is not the latest attempt's"
                );
            }
        }
    }
    for (marker, s) in sent {
        let times = seen.get(marker).copied().unwrap_or(0);
        assert!(times <= 1, "{context}: {marker} recorded {times} times");
        match s.outcome {
            Outcome::Acknowledged => {
                checked.acknowledged += 1;
                assert_eq!(
                    times, 1,
                    "{context}: acknowledged attempt {marker} was lost"
                );
            }
            Outcome::InDoubt => {
                checked.in_doubt += 1;
                checked.in_doubt_recorded += times;
            }
        }
    }
    checked
}

/// `audit verify` on the data, and `projections rebuild --verify` on a copy (the
/// rebuild writes a snapshot, and the server's own snapshots are under test).
fn check_offline(data: &Path, context: &str) {
    let out = hookledger(data, &["audit", "verify"]);
    assert!(
        out.status.success() && stdout(&out).starts_with("ok:"),
        "{context}: audit verify: {}",
        stdout(&out)
    );
    let copy = tempfile::tempdir().unwrap();
    copy_data(data, copy.path());
    let out = hookledger(copy.path(), &["projections", "rebuild", "--verify"]);
    assert!(
        out.status.success() && stdout(&out).contains("no difference"),
        "{context}: rebuild --verify: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_attempt() {
    let (mut rng, seed) = Rng::seeded_from_env("HOOKLEDGER_CRASH_SEED");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, ORG);
    let serve_args = ["--snapshot-interval", "1"];
    let mut server = Server::start_with(&data, &serve_args).await;
    let client = Client::new(&server, ORG, &key);
    client
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "r", "url": "https://r.example.com/hook"}),
        )
        .await;
    let mut deliveries = Vec::new();
    let mut events = Vec::new();
    for i in 0..DELIVERIES {
        let event = client
            .post(
                "/v1/outbound-webhook-events",
                json!({"eventType": "crash.test", "payload": {"i": i}}),
            )
            .await;
        events.push(event["id"].as_str().unwrap().to_owned());
        deliveries.push(event["deliveries"][0]["id"].as_str().unwrap().to_owned());
    }

    let mut sent: HashMap<String, Sent> = HashMap::new();
    let mut last = Checked::default();
    for round in 0..ROUNDS {
        let context = format!("round {round} (seed {seed}; HOOKLEDGER_CRASH_SEED={seed} replays)");
        let client = Client::new(&server, ORG, &key);
        let mut writers = JoinSet::new();
        for w in 0..WRITERS {
            writers.spawn(writer(client.clone(), deliveries.clone(), round, w));
        }
        let delay = rng.between(30..700);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        while let Some(done) = writers.join_next().await {
            sent.extend(done.expect("a writer panicked"));
        }

        check_offline(&data, &context);
        server = Server::start_with(&data, &serve_args).await;
        let client = Client::new(&server, ORG, &key);
        last = check_ledger(&client, &deliveries, &events, &sent, &context).await;
    }
    server.stop();
    check_offline(&data, &format!("after the last clean stop (seed {seed})"));

    let figures = format!(
        "crash: seed {seed}, {ROUNDS} SIGKILL rounds, {WRITERS} writers, {} acknowledged attempts, 0 lost, \
         {} in doubt at a kill of which {} were recorded whole and {} not at all",
        last.acknowledged,
        last.in_doubt,
        last.in_doubt_recorded,
        last.in_doubt - last.in_doubt_recorded
    );
    record_figures("crash", &figures);
    assert!(
        last.acknowledged >= ROUNDS * WRITERS,
        "too few writes to mean anything: {figures}"
    );
}

/// True when the snapshot directory shows a write under way: a temp file, or
/// the snapshot file itself changed since `before`.
fn snapshot_write_started(dir: &Path, before: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        name != "readmodel.snap" || e.metadata().map(|m| m.len()).ok() != Some(before.len() as u64)
    }) || std::fs::read(dir.join("readmodel.snap")).is_ok_and(|b| b != before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_a_snapshot_write_leaves_the_previous_snapshot_usable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let snapshots = data.join("snapshots");
    let file = hookledger::node::snapshot_file(&data);
    let key = create_key(&data, ORG);
    let serve_args = ["--snapshot-interval", "1"];
    let server = Server::start_with(&data, &serve_args).await;
    let client = Client::new(&server, ORG, &key);
    client
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "r", "url": "https://r.example.com/hook"}),
        )
        .await;
    // A read model of a few MiB, so that writing its snapshot takes a while.
    let filler = "x".repeat(200 * 1024);
    let mut delivery = String::new();
    for i in 0..20 {
        let event = client
            .post(
                "/v1/outbound-webhook-events",
                json!({"eventType": "big", "payload": {"i": i, "filler": filler}}),
            )
            .await;
        delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    }
    server.stop();
    let attempts = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");

    let mut landed = None;
    for try_ in 0..30 {
        let previous = std::fs::read(&file).expect("a snapshot exists");
        let position = Snapshot::load(&file)
            .expect("the previous snapshot loads")
            .position();
        let server = Server::start_with(&data, &serve_args).await;
        let client = Client::new(&server, ORG, &key);
        client
            .post(
                &attempts,
                json!({"status": "failed", "lastError": format!("try {try_}")}),
            )
            .await;
        // Watch for the periodic snapshot to start, and kill the server at once.
        let watched = snapshots.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if snapshot_write_started(&watched, &previous) {
                    return true;
                }
            }
            false
        });
        let started = seen.await.unwrap();
        server.kill();
        assert!(started, "try {try_}: no snapshot write began within 10 s");

        let after = Snapshot::load(&file).unwrap_or_else(|e| {
            panic!("try {try_}: the snapshot left by a kill during its write is unusable: {e}")
        });
        let temp_left = std::fs::read_dir(&snapshots)
            .unwrap()
            .flatten()
            .any(|e| e.file_name() != "readmodel.snap");
        if temp_left {
            // The kill landed between creating the new file and renaming it.
            assert_eq!(
                after.position(),
                position,
                "try {try_}: the previous snapshot changed"
            );
            landed = Some((try_, position));
            break;
        }
    }
    let (tries, position) = landed.expect("no kill landed inside a snapshot write in 30 tries");

    let server = Server::start_with(&data, &serve_args).await;
    let loaded = log_lines(&server.log(), "loaded the read-model snapshot");
    let last_start = loaded.last().expect("the restart loaded a snapshot");
    assert_eq!(
        last_start["fields"]["position"], position,
        "the restart used the previous snapshot"
    );
    let client = Client::new(&server, ORG, &key);
    let history = client.all(&attempts).await;
    assert_eq!(
        history.len(),
        tries + 1,
        "every acknowledged attempt is served"
    );
    server.stop();
    succeeds(hookledger(&data, &["projections", "rebuild", "--verify"]));
    record_figures(
        "snapshot-kill",
        &format!(
            "snapshot kill: landed inside a snapshot write on try {}",
            tries + 1
        ),
    );
}
