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
/// rebuild swaps in a new model, and the server's own model is under test).
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
    let mut server = Server::start(&data).await;
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
        server = Server::start(&data).await;
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

/// How much the servers on `data` have logged so far.
fn server_log_len(data: &Path) -> usize {
    std::fs::read_to_string(crate::binary::log_path(data)).map_or(0, |l| l.len())
}

/// The read model file's size and modification time, to see a write land.
fn model_stamp(file: &Path) -> Option<(u64, std::time::SystemTime)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_a_read_model_write_leaves_it_at_a_committed_position() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = hookledger::model::file_in(&data);
    let key = create_key(&data, ORG);
    let server = Server::start(&data).await;
    let client = Client::new(&server, ORG, &key);
    client
        .post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "r", "url": "https://r.example.com/hook"}),
        )
        .await;
    server.stop();

    // Each try writes a few MiB of events, so the model has much to write,
    // and kills the server the moment the model's file changes on disk.
    let filler = "x".repeat(100 * 1024);
    let mut acknowledged = Vec::new();
    let mut resumed = 0;
    const TRIES: usize = 8;
    for try_ in 0..TRIES {
        let server = Server::start(&data).await;
        let client = Client::new(&server, ORG, &key);
        let before = model_stamp(&file);
        let watched = file.clone();
        let seen = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if model_stamp(&watched) != before {
                    return true;
                }
            }
            false
        });
        let writing = async {
            for i in 0.. {
                let (status, body) = client
                    .send(
                        Method::POST,
                        "/v1/outbound-webhook-events",
                        Some(json!({"eventType": "big", "payload": {"try": try_, "i": i, "filler": filler}})),
                    )
                    .await;
                if status != 201 {
                    return;
                }
                acknowledged.push(body["id"].as_str().unwrap().to_owned());
            }
        };
        let started = tokio::select! {
            started = seen => started.unwrap(),
            () = writing => false,
        };
        server.kill();
        assert!(started, "try {try_}: the model was not written within 15 s");

        let earlier = server_log_len(&data);
        let server = Server::start(&data).await;
        let log = server.log()[earlier..].to_owned();
        let opened = log_lines(&log, "opened the read model; replaying the log's tail");
        let set_aside = log_lines(
            &log,
            "setting the read model aside; it is rebuilt from the log",
        );
        assert!(
            set_aside.is_empty(),
            "try {try_}: a kill damaged the model: {set_aside:?}"
        );
        resumed += opened.len();
        let client = Client::new(&server, ORG, &key);
        for id in &acknowledged {
            client
                .get(&format!("/v1/outbound-webhook-events/{id}"))
                .await;
        }
        server.stop();
    }
    assert_eq!(
        resumed, TRIES,
        "every restart resumed from the stored model"
    );
    succeeds(hookledger(&data, &["audit", "verify"]));
    let out = hookledger(&data, &["projections", "rebuild", "--verify"]);
    assert!(
        out.status.success() && stdout(&out).contains("no difference"),
        "{}",
        stdout(&out)
    );
    record_figures(
        "model-kill",
        &format!(
            "read-model kill: {TRIES} SIGKILLs as the model file changed, {} acknowledged events all served, every restart resumed from a committed position",
            acknowledged.len()
        ),
    );
}
