//! Recording attempts over HTTP on the PostgreSQL backend, measured in one run
//! beside two baselines on the same machine:
//!
//! - **no-op HTTP**: the same requests, with the same client and concurrency,
//!   to an axum route that answers at once: the cost of HTTP alone;
//! - **naive loop**: one `BEGIN; INSERT; COMMIT` per append, one after the
//!   other, against the same PostgreSQL server: what appending costs without
//!   group commit.
//!
//! The server is a throwaway cluster started here with production durability
//! (fsync on, synchronous commit), so every acknowledged attempt is on disk.
//! Prints a Markdown table for `BENCHMARKS.md`. `cargo bench --bench postgres`;
//! `HOOKLEDGER_BENCH_ATTEMPTS` and `HOOKLEDGER_BENCH_CONCURRENCY` resize it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use hookledger::api::{self, AppState};
use hookledger::node::Node;
use hookledger::projector::Config;
use hookledger::store::postgres::{self, PostgresStore};
use serde_json::{Value, json};

#[path = "../tests/support/postgres.rs"]
mod support_postgres;

const ORG: &str = "org_bench";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Throughput and latency of one run.
struct Measured {
    label: String,
    requests: usize,
    concurrency: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Measured {
    fn new(
        label: &str,
        concurrency: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort_unstable();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        Measured {
            label: label.to_owned(),
            requests: latencies.len(),
            concurrency,
            per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} |",
            self.label,
            self.requests,
            self.concurrency,
            self.per_second,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}

/// `total` POSTs from `concurrency` clients, round-robin over `paths`.
async fn load(
    label: &str,
    base: &str,
    token: &str,
    paths: &[String],
    concurrency: usize,
    total: usize,
) -> Measured {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let paths = Arc::new(paths.to_vec());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, paths) = (client.clone(), next.clone(), paths.clone());
            let (base, token) = (base.to_owned(), token.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let body = json!({"status": "failed", "responseStatusCode": 503,
                                      "lastError": format!("attempt {i}")});
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{base}{}", paths[i % paths.len()]))
                        .bearer_auth(&token)
                        .header("x-organization-id", ORG)
                        .json(&body)
                        .send()
                        .await
                        .expect("the server answers");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.bytes().await.expect("a body");
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    Measured::new(label, concurrency, started.elapsed(), latencies)
}

/// Serves a route that answers every POST at once with a small JSON body.
async fn noop_server() -> String {
    let app = Router::new().fallback(post(|| async { axum::Json(json!({"ok": true})) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// One transaction per append, one after the other, on one connection.
async fn naive_loop(url: &str, total: usize) -> Measured {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE naive_events (position bigserial PRIMARY KEY, stream text NOT NULL, \
             version bigint NOT NULL, data bytea NOT NULL, UNIQUE (stream, version))",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO naive_events (stream, version, data) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    for i in 0..total {
        let data = format!(r#"{{"status":"failed","lastError":"attempt {i}"}}"#).into_bytes();
        let stream = format!("delivery-{}", i % 64);
        let sent = Instant::now();
        let tx = client.transaction().await.unwrap();
        tx.execute(&insert, &[&stream, &((i / 64) as i64), &data])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        latencies.push(sent.elapsed());
    }
    Measured::new(
        "naive loop: one INSERT transaction per append",
        1,
        started.elapsed(),
        latencies,
    )
}

fn main() {
    let attempts = setting("HOOKLEDGER_BENCH_ATTEMPTS", 6000);
    let concurrency = setting("HOOKLEDGER_BENCH_CONCURRENCY", 64);
    let server = match support_postgres::Server::durable() {
        Ok(server) => server,
        Err(reason) => {
            eprintln!("SKIPPED benches/postgres: no PostgreSQL cluster could start: {reason}");
            return;
        }
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for db in ["bench", "naive"] {
            server.create(db).await.unwrap();
        }
        let store = Arc::new(
            PostgresStore::open(&server.url("bench"), postgres::Options::default())
                .await
                .unwrap(),
        );
        // A node keeps its read model in its own data directory, as `serve` does.
        let model_dir = tempfile::tempdir().unwrap();
        let node = Node::start(store.clone(), Config::in_dir(model_dir.path()))
            .await
            .expect("the node starts");
        node.ready().await.expect("the read model is ready");
        let key = node.ledger.issue_key(ORG).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api::serve(
            listener,
            AppState::new(node.clone()),
            std::future::pending(),
        ));

        // Arrange: one endpoint, 64 events, so 64 deliveries to record on.
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(&key.token)
                .header("x-organization-id", ORG)
                .json(&body)
                .send()
        };
        post(
            "/v1/outbound-webhook-endpoints",
            json!({"name": "r", "url": "https://r.example.com/hook"}),
        )
        .await
        .unwrap();
        let mut paths = Vec::new();
        for i in 0..64 {
            let event: Value = post(
                "/v1/outbound-webhook-events",
                json!({"eventType": "bench", "payload": {"i": i}}),
            )
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            let id = event["deliveries"][0]["id"].as_str().unwrap();
            paths.push(format!("/v1/outbound-webhook-deliveries/{id}/attempts"));
        }

        let noop = noop_server().await;
        // Warm up connections and caches on both servers.
        load("warm-up", &noop, &key.token, &paths, concurrency, 500).await;
        load("warm-up", &base, &key.token, &paths, concurrency, 500).await;

        let baseline = load(
            "no-op HTTP (baseline)",
            &noop,
            &key.token,
            &paths,
            concurrency,
            attempts * 4,
        )
        .await;
        let before = store.stats();
        let measured = load(
            "record attempt, --backend postgres",
            &base,
            &key.token,
            &paths,
            concurrency,
            attempts,
        )
        .await;
        let after = store.stats();
        let naive = naive_loop(&server.url("naive"), attempts.min(2000)).await;

        println!("| run | requests | concurrency | per second | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        for m in [&baseline, &measured, &naive] {
            println!("{}", m.row());
        }
        let batches = after.commits - before.commits;
        let appends = after.appends - before.appends;
        println!();
        println!(
            "record attempt on PostgreSQL: {:.1}x the naive loop; {:.1} appends per transaction on average ({appends} appends in {batches} transactions)",
            measured.per_second / naive.per_second,
            appends as f64 / batches.max(1) as f64
        );
    });
}
