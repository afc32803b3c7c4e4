//! The attacker of `benches/hostile.rs`: one tenant sending the inputs of
//! every finding of "Hostile tenants and hostile clients" at once, each at a
//! paced rate, for the plan's length (and the victim's warm-up):
//!
//! - **methods**: pipelined requests with a unique 200-character method each,
//!   1 000 a second, and a `/metrics` scrape every 5 s (its size reported,
//!   and the most requests it saw waiting for their turn);
//! - **NUL source keys**: events whose `sourceKey` holds a NUL, 20 a second;
//! - **huge lists**: the events, deliveries and flood history lists at
//!   `?limit=250`, 5 a second, over events fanned out as wide as allowed;
//! - **non-reading clients**: 64 connections that ask for such a list and
//!   never read the answer;
//! - **eventTypes bloat**: endpoints with 130 000 event types (1 MiB), and
//!   endpoints at the limits (100 types of 256 characters) until the
//!   organization is full, 5 a second each, and a patch of event types 5 a
//!   second;
//! - **big fan-out**: events to the widest fan-out allowed (256 endpoints
//!   with 200-character names and 1 800-character URLs), 2 a second, and
//!   attempts on their deliveries (each answer holds every delivery), 10 a
//!   second;
//! - **attempt flood**: attempts on one delivery (of its own event), 200 a
//!   second.
//!
//! Their names for `HOOKLEDGER_BENCH_ATTACKS`: `methods`, `nul`, `lists`,
//! `non-reading`, `bloat`, `full-endpoints`, `patch`, `fan-out`,
//! `fan-out-attempts`, `flood`. It reports, per attack, how many answers of
//! each status it got.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::Plan;

/// Answers by status, per attack.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<&'static str, BTreeMap<String, u64>>>);

impl Tally {
    async fn count(&self, attack: &'static str, status: impl Into<String>) {
        *self
            .0
            .lock()
            .await
            .entry(attack)
            .or_default()
            .entry(status.into())
            .or_default() += 1;
    }
}

struct Attack {
    plan: Plan,
    http: reqwest::Client,
    tally: Tally,
    stop_at: Instant,
    metrics_bytes: AtomicU64,
    most_waiting: AtomicU64,
}

impl Attack {
    /// Whether the plan runs the attack `name` (all when it names none).
    fn wants(&self, name: &str) -> bool {
        self.plan.attacks.is_empty() || self.plan.attacks.iter().any(|a| a == name)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.plan.base)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.plan.key)
            .header("x-organization-id", &self.plan.org)
    }

    /// Sends, reads the whole answer, and counts its status under `attack`.
    async fn send(&self, attack: &'static str, request: reqwest::RequestBuilder) -> Option<Value> {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16().to_string();
                let body = response.bytes().await.ok();
                self.tally.count(attack, status).await;
                body.and_then(|b| serde_json::from_slice(&b).ok())
            }
            Err(e) if e.is_timeout() => {
                self.tally.count(attack, "timeout").await;
                None
            }
            Err(_) => {
                self.tally.count(attack, "connection error").await;
                None
            }
        }
    }

    /// Runs `step` every `period` until the end; a slow step delays the next.
    async fn paced(self: Arc<Self>, period: Duration, step: Step) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0;
        while Instant::now() < self.stop_at {
            ticks.tick().await;
            step(self.clone(), n).await;
            n += 1;
        }
    }
}

pub async fn run(plan: &Plan) -> Value {
    let attack = Arc::new(Attack {
        plan: plan.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client"),
        tally: Tally::default(),
        // The victim warms up for two seconds after the attacker starts.
        stop_at: Instant::now() + Duration::from_secs(plan.seconds + 4),
        metrics_bytes: AtomicU64::new(0),
        most_waiting: AtomicU64::new(0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let every = Duration::from_millis;
    let paced: [(&str, Duration, Step); 10] = [
        ("methods", Duration::from_secs(5), |a, n| {
            Box::pin(scrape_metrics(a, n))
        }),
        ("nul", every(50), |a, n| Box::pin(nul_source_key(a, n))),
        ("lists", every(200), |a, n| Box::pin(huge_list(a, n))),
        ("bloat", every(200), |a, n| Box::pin(bloated_endpoint(a, n))),
        ("full-endpoints", every(200), |a, n| {
            Box::pin(endpoint_at_the_limits(a, n))
        }),
        ("patch", every(200), |a, n| {
            Box::pin(patch_event_types(a, n))
        }),
        ("fan-out", every(500), |a, n| Box::pin(wide_event(a, n))),
        ("fan-out-attempts", every(100), |a, n| {
            Box::pin(wide_attempt(a, n))
        }),
        ("flood", every(10), |a, n| Box::pin(flood_attempt(a, n))),
        ("flood", every(10), |a, n| Box::pin(flood_attempt(a, n))),
    ];
    for (name, period, step) in paced {
        if attack.wants(name) {
            tasks.spawn(attack.clone().paced(period, step));
        }
    }
    if attack.wants("methods") {
        tasks.spawn(methods(attack.clone()));
    }
    if attack.wants("non-reading") {
        tasks.spawn(non_reading(attack.clone(), 64));
    }
    while tasks.join_next().await.is_some() {}
    let tally = attack.tally.0.lock().await.clone();
    json!({
        "answers": tally,
        "largest_metrics_scrape_bytes": attack.metrics_bytes.load(Ordering::Relaxed),
        "most_requests_waiting_at_a_scrape": attack.most_waiting.load(Ordering::Relaxed),
    })
}

/// One request of a paced attack: the `n`th.
type Step = fn(Arc<Attack>, u64) -> Pin<Box<dyn Future<Output = ()> + Send>>;

async fn scrape_metrics(a: Arc<Attack>, _: u64) {
    if let Ok(response) = a.http.get(a.url("/metrics")).send().await
        && let Ok(bytes) = response.bytes().await
    {
        a.metrics_bytes
            .fetch_max(bytes.len() as u64, Ordering::Relaxed);
        let waiting = String::from_utf8_lossy(&bytes)
            .lines()
            .find_map(|l| l.strip_prefix("hookledger_requests_waiting "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        a.most_waiting.fetch_max(waiting, Ordering::Relaxed);
        a.tally.count("metrics scrape", "200").await;
    }
}

async fn nul_source_key(a: Arc<Attack>, n: u64) {
    let body = json!({"eventType": "nul", "sourceKey": format!("k\u{0}{n}"), "payload": {}});
    let request = a
        .request(Method::POST, "/v1/outbound-webhook-events")
        .json(&body);
    a.send("NUL source keys", request).await;
}

async fn huge_list(a: Arc<Attack>, n: u64) {
    let flood = a.plan.flood.clone().unwrap_or_default();
    let path = match n % 3 {
        0 => "/v1/outbound-webhook-events?limit=250".to_owned(),
        1 => "/v1/outbound-webhook-deliveries?limit=250".to_owned(),
        _ => format!("/v1/outbound-webhook-deliveries/{flood}/attempts?limit=250"),
    };
    a.send("huge lists", a.request(Method::GET, &path)).await;
}

/// An endpoint with 130 000 event types: the body that once took 200
/// endpoints to 924 MB of RSS.
async fn bloated_endpoint(a: Arc<Attack>, _: u64) {
    static BODY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let types: Vec<String> = (0..130_000).map(|i| format!("{i:05x}")).collect();
        serde_json::to_vec(&json!({
            "name": "bloat",
            "url": "https://bloat.example.com/",
            "eventTypes": types,
        }))
        .expect("JSON")
    });
    let request = a
        .request(Method::POST, "/v1/outbound-webhook-endpoints")
        .header("content-type", "application/json")
        .body(BODY.clone());
    a.send("eventTypes bloat (130 000 types)", request).await;
}

/// An endpoint as large as the limits allow: 100 event types of 250 characters.
async fn endpoint_at_the_limits(a: Arc<Attack>, n: u64) {
    let types: Vec<String> = (0..100)
        .map(|i| format!("{n}.{i}.{}", "t".repeat(240)))
        .collect();
    let body = json!({"name": format!("full {n}"), "url": "https://full.example.com/", "eventTypes": types});
    let request = a
        .request(Method::POST, "/v1/outbound-webhook-endpoints")
        .json(&body);
    a.send("endpoints at the limits", request).await;
}

/// The newest endpoint's 100 event types, swapped for another 100.
async fn patch_event_types(a: Arc<Attack>, n: u64) {
    let list = a
        .send(
            "patch eventTypes",
            a.request(Method::GET, "/v1/outbound-webhook-endpoints?limit=1"),
        )
        .await;
    let Some(id) = list.and_then(|l| l["data"][0]["id"].as_str().map(str::to_owned)) else {
        return;
    };
    let types: Vec<String> = (0..100).map(|i| format!("p{}.{i}", n % 2)).collect();
    let request = a
        .request(
            Method::PATCH,
            &format!("/v1/outbound-webhook-endpoints/{id}"),
        )
        .json(&json!({"eventTypes": types}));
    a.send("patch eventTypes", request).await;
}

async fn wide_event(a: Arc<Attack>, n: u64) {
    let body = json!({"eventType": "wide", "payload": {"n": n, "blob": "b".repeat(20_000)}});
    let request = a
        .request(Method::POST, "/v1/outbound-webhook-events")
        .json(&body);
    a.send("big fan-out events", request).await;
}

/// An attempt on a delivery of a wide event: its answer holds every delivery.
async fn wide_attempt(a: Arc<Attack>, n: u64) {
    let d = &a.plan.deliveries[n as usize % a.plan.deliveries.len()];
    let path = format!("/v1/outbound-webhook-deliveries/{d}/attempts");
    let body = json!({"status": "failed", "lastError": "x".repeat(2000)});
    a.send(
        "big fan-out attempts",
        a.request(Method::POST, &path).json(&body),
    )
    .await;
}

async fn flood_attempt(a: Arc<Attack>, _: u64) {
    let flood = a.plan.flood.clone().unwrap_or_default();
    let path = format!("/v1/outbound-webhook-deliveries/{flood}/attempts");
    let request = a
        .request(Method::POST, &path)
        .json(&json!({"status": "failed"}));
    a.send("attempt flood", request).await;
}

/// Pipelined requests, each with a method never seen before, 100 every 100 ms
/// on one connection; answers are read and dropped.
async fn methods(attack: Arc<Attack>) {
    let address = attack.plan.base.trim_start_matches("http://").to_owned();
    let mut n: u64 = 0;
    while Instant::now() < attack.stop_at {
        let Ok(stream) = TcpStream::connect(&address).await else {
            attack.tally.count("methods", "connection error").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut reader, mut writer) = stream.into_split();
        let drain = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut buf).await, Ok(k) if k > 0) {}
        });
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < attack.stop_at {
            ticks.tick().await;
            let mut batch = Vec::with_capacity(100 * 240);
            for _ in 0..100 {
                batch.extend_from_slice(
                    format!("M{n:0199} /healthz HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes(),
                );
                n += 1;
            }
            if writer.write_all(&batch).await.is_err() {
                attack.tally.count("methods", "connection closed").await;
                break;
            }
            attack.tally.count("methods", "batch of 100 sent").await;
        }
        drain.abort();
    }
}

/// `count` connections that each ask for a page of the widest events and
/// never read a byte of the answer, held to the end.
async fn non_reading(attack: Arc<Attack>, count: usize) {
    let address = attack.plan.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "GET /v1/outbound-webhook-events?limit=250 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {}\r\nx-organization-id: {}\r\n\r\n",
        attack.plan.key, attack.plan.org
    );
    let mut held = Vec::new();
    for _ in 0..count {
        match TcpStream::connect(&address).await {
            Ok(mut stream) => {
                if stream.write_all(request.as_bytes()).await.is_ok() {
                    attack.tally.count("non-reading clients", "held").await;
                    held.push(stream);
                }
            }
            Err(_) => {
                attack
                    .tally
                    .count("non-reading clients", "connection error")
                    .await
            }
        }
    }
    let left = attack.stop_at.saturating_duration_since(Instant::now());
    tokio::time::sleep(left).await;
    drop(held);
}
