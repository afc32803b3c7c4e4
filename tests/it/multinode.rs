//! Several `hookledger serve` processes, the real binary, on one shared
//! ledger (a PostgreSQL database here, a KurrentDB ledger in `kurrentdb.rs`):
//! what is recorded through one is served by the other, both report the same
//! ledger digest, and killing one with SIGKILL loses nothing it acknowledged.
//! No fixed sleeps: every wait is on a condition with a deadline.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::support_postgres;

pub const ORG: &str = "org_multinode";
const DEADLINE: Duration = Duration::from_secs(30);

/// How every process reaches the shared ledger: the backend settings, as
/// environment variables.
#[derive(Debug, Clone)]
pub struct Ledger(pub Vec<(&'static str, String)>);

impl Ledger {
    fn postgres(url: &str) -> Ledger {
        Ledger(vec![
            ("HOOKLEDGER_BACKEND", "postgres".into()),
            ("HOOKLEDGER_POSTGRES_URL", url.into()),
        ])
    }

    fn command(&self, data: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookledger"));
        command
            .envs(self.0.iter().map(|(k, v)| (k, v)))
            .env("HOOKLEDGER_DATA", data)
            .env("HOOKLEDGER_LOG_FORMAT", "json");
        command
    }
}

/// Runs `hookledger` on `ledger` with the data directory `data`.
pub fn hookledger(ledger: &Ledger, data: &Path, args: &[&str]) -> Output {
    ledger
        .command(data)
        .args(args)
        .output()
        .expect("the binary runs")
}

#[track_caller]
pub fn succeeds(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A `hookledger serve` child on a free port.
pub struct Node {
    pub child: Child,
    base: String,
    http: reqwest::Client,
    pub key: String,
}

impl Node {
    pub async fn start(ledger: &Ledger, data: &Path, key: &str) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = ledger
            .command(data)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        let node = Node {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            key: key.to_owned(),
        };
        eventually("the node becomes ready", || async {
            reqwest::get(format!("{}/readyz", node.base))
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        node
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.send_with(method, path, body, None).await
    }

    /// [`Node::send`] with an `Idempotency-Key`.
    pub async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("x-organization-id", ORG);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            // A killed node answers nothing: not acknowledged.
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn attempt_errors(&self, delivery: &str) -> BTreeSet<String> {
        let mut errors = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts?limit=250");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).await;
            for attempt in page["data"].as_array().unwrap() {
                errors.insert(attempt["lastError"].as_str().unwrap_or_default().to_owned());
            }
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return errors,
            }
        }
    }

    /// The organization's tree head without its signature and time, which
    /// differ between servers: `{treeSize, rootHash}`.
    pub async fn tree(&self) -> Value {
        let head = self.get("/v1/ledger/tree-head").await;
        json!({"treeSize": head["treeSize"], "rootHash": head["rootHash"]})
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` until it holds; fails the test after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_serve_processes_share_one_database_and_a_killed_one_loses_nothing() {
    let Some(url) = support_postgres::database("multinode").await else {
        return;
    };
    two_nodes_share_a_ledger_and_a_killed_one_loses_nothing(&Ledger::postgres(&url)).await;
}

/// Two `serve` processes on `ledger`, the key issued by the CLI beside them;
/// attempts through both, then many in flight on A when it is killed.
pub async fn two_nodes_share_a_ledger_and_a_killed_one_loses_nothing(ledger: &Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b, data_cli) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("cli"),
    );
    let a = Node::start(ledger, &data_a, "").await;
    let b = Node::start(ledger, &data_b, "").await;
    // The key is issued straight into the database by the CLI, beside both.
    let out = succeeds(hookledger(
        ledger,
        &data_cli,
        &["keys", "create", "--org", ORG],
    ));
    let key = out.lines().last().unwrap().trim().to_owned();
    let (mut a, mut b) = (a, b);
    a.key = key.clone();
    b.key = key;

    // Arrange: an endpoint and an event through A; attempts through both.
    a.post(
        "/v1/outbound-webhook-endpoints",
        json!({"name": "r", "url": "https://r.example.com/hook"}),
    )
    .await;
    let event = a
        .post(
            "/v1/outbound-webhook-events",
            json!({"eventType": "invoice.paid", "payload": {"n": 1}}),
        )
        .await;
    let delivery = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/outbound-webhook-deliveries/{delivery}/attempts");
    let mut expected = BTreeSet::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        let error = format!("sequential {i}");
        node.post(&path, json!({"status": "failed", "lastError": error}))
            .await;
        expected.insert(error);
    }

    // Attempts recorded on A appear on B, and both agree on the tree.
    eventually("B serves every attempt", || async {
        b.attempt_errors(&delivery).await == expected
    })
    .await;
    eventually("A and B report the same tree", || async {
        let (ta, tb) = (a.tree().await, b.tree().await);
        ta == tb && ta["treeSize"].as_u64() == Some(13)
    })
    .await;

    // Act: many attempts in flight on A when it is killed.
    let a = std::sync::Arc::new(a);
    let mut inflight = JoinSet::new();
    for i in 0..64 {
        let (a, path) = (a.clone(), path.clone());
        inflight.spawn(async move {
            let error = format!("in flight {i}");
            let (status, _) = a
                .send(
                    reqwest::Method::POST,
                    &path,
                    Some(json!({"status": "retry_scheduled", "lastError": error})),
                )
                .await;
            (status, error)
        });
    }
    let mut acknowledged = BTreeSet::new();
    let mut killed = false;
    while let Some(done) = inflight.join_next().await {
        let (status, error) = done.unwrap();
        if status == 200 {
            acknowledged.insert(error);
        } else {
            assert!(killed, "an attempt failed before A was killed: {status}");
        }
        if acknowledged.len() == 8 && !killed {
            // SIGKILL: no shutdown, no last write of the model, requests cut mid-way.
            let pid = nix::unistd::Pid::from_raw(a.child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            killed = true;
        }
    }
    assert!(killed && acknowledged.len() >= 8);

    // Assert: B serves everything A acknowledged, and the log checks out.
    eventually("B serves every attempt A acknowledged", || async {
        let served = b.attempt_errors(&delivery).await;
        acknowledged.is_subset(&served) && expected.is_subset(&served)
    })
    .await;
    let served = b.attempt_errors(&delivery).await;
    eprintln!(
        "A acknowledged {} attempts before SIGKILL; {} in flight were lost unacknowledged or landed",
        acknowledged.len(),
        64 - acknowledged.len()
    );
    let rebuilt = succeeds(hookledger(ledger, &data_cli, &["projections", "rebuild"]));
    assert!(
        rebuilt.contains("swapped in the new read model"),
        "{rebuilt}"
    );
    let report = succeeds(hookledger(ledger, &data_cli, &["audit", "verify"]));
    assert!(report.starts_with("ok: "), "{report}");
    let proved: Value = serde_json::from_str(
        succeeds(hookledger(
            ledger,
            &data_cli,
            &["audit", "prove", "--org", ORG, "--head"],
        ))
        .trim(),
    )
    .unwrap();
    let printed = json!({"treeSize": proved["treeSize"], "rootHash": proved["rootHash"]});
    eventually("B's tree reaches the log's", || async {
        b.tree().await == printed
    })
    .await;
    assert_eq!(
        printed["treeSize"].as_u64().unwrap(),
        3 + served.len() as u64,
        "the log holds the key, endpoint, event and every attempt B serves"
    );
}
