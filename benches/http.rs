//! HTTP record-attempt: the real server in-process on a temp data directory,
//! `POST /v1/outbound-webhook-deliveries/{id}/attempts` spread over 256
//! deliveries from 32 keep-alive connections, against a no-op axum handler of the
//! same shape in the same run: it parses the same body and answers a body of the
//! same size, with no storage. Both get the same client: one thread, 32 hyper
//! HTTP/1.1 connections, like `wrk -t1 -c32`.
//!
//! `cargo bench --bench http`; `HOOKLEDGER_BENCH_SECS` sets each phase's length
//! and `HOOKLEDGER_BENCH_ROUNDS` how many times each side runs (alternating).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Target, env_u64, figure, percentile_ms, phase};
use hookledger::api::{self, AppState};
use hookledger::ledger::{Context, new_id};
use hookledger::node::{Node, snapshot_file};
use hookledger::store::embedded::EmbeddedStore;
use http_body_util::{BodyExt, Full};
use projections::Command;
use serde_json::{Value, json};

const CONNECTIONS: usize = 32;
const DELIVERIES: usize = 256;
const ORG: &str = "org_bench";
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;

/// What the load generator aims at.
#[derive(Clone)]
struct Target_ {
    address: SocketAddr,
    token: String,
    deliveries: Arc<Vec<String>>,
}

struct Run {
    requests_per_sec: f64,
    latencies_micros: Vec<u32>,
    /// CPU the whole process (server and client) used per request.
    cpu_micros_per_request: f64,
    /// Cores busy on average during the load.
    cores: f64,
}

/// One client thread, 32 connections, `length` of load after a warm-up second.
fn load(target: &Target_, length: Duration) -> Run {
    let target = target.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        runtime.block_on(async move {
            let warm_until = Instant::now() + Duration::from_secs(1);
            let cpu_at = Arc::new(std::sync::Mutex::new(0.0));
            let cpu_mark = cpu_at.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(warm_until.into()).await;
                *cpu_mark.lock().expect("cpu mark") = common::cpu_seconds();
            });
            let stop_at = warm_until + length;
            let mut tasks = Vec::new();
            for c in 0..CONNECTIONS {
                let target = target.clone();
                tasks.push(tokio::spawn(async move {
                    connection(c, &target, warm_until, stop_at).await
                }));
            }
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.expect("connection task"));
            }
            let cpu = common::cpu_seconds() - *cpu_at.lock().expect("cpu mark");
            latencies.sort_unstable();
            Run {
                requests_per_sec: latencies.len() as f64 / length.as_secs_f64(),
                cpu_micros_per_request: cpu * 1e6 / latencies.len().max(1) as f64,
                cores: cpu / length.as_secs_f64(),
                latencies_micros: latencies,
            }
        })
    })
    .join()
    .expect("client thread")
}

async fn connection(c: usize, target: &Target_, warm_until: Instant, stop_at: Instant) -> Vec<u32> {
    let stream = tokio::net::TcpStream::connect(target.address)
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let body = Bytes::from_static(BODY.as_bytes());
    let authorization = HeaderValue::from_str(&format!("Bearer {}", target.token)).expect("header");
    let mut latencies = Vec::new();
    let mut i = 0;
    loop {
        let started = Instant::now();
        if started >= stop_at {
            return latencies;
        }
        let delivery = &target.deliveries[(c + CONNECTIONS * i) % target.deliveries.len()];
        i += 1;
        let request = hyper::Request::post(format!(
            "/v1/outbound-webhook-deliveries/{delivery}/attempts"
        ))
        .header(header::HOST, "127.0.0.1")
        .header(header::AUTHORIZATION, authorization.clone())
        .header("x-organization-id", ORG)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        if started >= warm_until {
            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// The real server: a fresh data directory, one organization with a key, four
/// endpoints and 64 webhook events fanned out to 256 deliveries.
async fn real_server(dir: &std::path::Path) -> (Target_, Node, Arc<EmbeddedStore>) {
    let store = Arc::new(EmbeddedStore::open(dir).expect("open store"));
    let node = Node::start(store.clone(), Some(snapshot_file(dir))).await;
    node.ready().await.expect("ready");
    let key = node.ledger.issue_key(ORG).await.expect("key");
    let ctx = Context {
        organization_id: ORG.into(),
        key_id: Some(key.key_id.clone()),
        ..Context::default()
    };
    for name in ["billing", "fulfilment", "crm", "analytics"] {
        let command = Command::CreateEndpoint {
            endpoint_id: new_id("ep"),
            organization_id: ORG.into(),
            name: format!("{name} webhook"),
            url: format!("https://hooks.example.com/v2/{name}"),
            event_types: vec![],
            enabled: true,
        };
        node.ledger
            .execute(command, &ctx, None)
            .await
            .expect("endpoint");
    }
    for n in 0..DELIVERIES / 4 {
        let command = Command::AcceptEvent {
            event_id: new_id("evt"),
            organization_id: ORG.into(),
            event_type: "invoice.paid".into(),
            source_key: None,
            payload: projections::JsonObject::from_value(
                &json!({"invoiceId": format!("inv_{n:08}"), "amount": 1200, "currency": "EUR"}),
            )
            .expect("an object"),
        };
        node.ledger
            .execute(command, &ctx, None)
            .await
            .expect("event");
    }
    let deliveries: Vec<String> = node
        .projector
        .read()
        .model
        .tenant(ORG)
        .expect("tenant")
        .deliveries
        .keys()
        .map(|id| id.as_str().to_owned())
        .collect();
    assert_eq!(deliveries.len(), DELIVERIES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(api::serve(
        listener,
        AppState::new(node.clone()),
        std::future::pending(),
    ));
    let target = Target_ {
        address,
        token: key.token,
        deliveries: Arc::new(deliveries),
    };
    (target, node, store)
}

/// The no-op server: the same route and extractors' work on the body (read it,
/// parse the JSON), and a prepared answer of the real answer's size.
async fn noop_server(answer: Bytes) -> SocketAddr {
    let handler = move |Path(_id): Path<String>, body: Bytes| {
        let answer = answer.clone();
        async move {
            let value: Value = match serde_json::from_slice(&body) {
                Ok(value) => value,
                Err(_) => return StatusCode::BAD_REQUEST.into_response(),
            };
            if !value.is_object() {
                return StatusCode::BAD_REQUEST.into_response();
            }
            let mut response: Response = (StatusCode::OK, answer).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::ETAG, HeaderValue::from_static("\"1\""));
            response
        }
    };
    let app = axum::Router::new().route(
        "/v1/outbound-webhook-deliveries/{id}/attempts",
        post(handler),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// fdatasyncs/s of a raw loop of 256-byte writes in `dir`, for two seconds.
fn fsync_rate(dir: &std::path::Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join(format!("raw-{}.bin", std::process::id()));
    let file = std::fs::File::create(&path).expect("raw file");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        file.write_all_at(&[0x5a; 256], n * 256).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    println!("raw 256-byte write + fdatasync loop: {rate:.0}/s");
    rate
}

/// One real answer's body, to size the no-op's.
async fn sample_answer(target: &Target_) -> Bytes {
    let client = reqwest::Client::new();
    let response = client
        .post(format!(
            "http://{}/v1/outbound-webhook-deliveries/{}/attempts",
            target.address, target.deliveries[0]
        ))
        .bearer_auth(&target.token)
        .header("x-organization-id", ORG)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .expect("sample attempt");
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("sample body")
}

fn main() {
    common::machine("http");
    let length = phase();
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let (real, _node, store) = server.block_on(real_server(dir.path()));
    let answer = server.block_on(sample_answer(&real));
    let noop = Target_ {
        address: server.block_on(noop_server(answer.clone())),
        ..real.clone()
    };
    println!(
        "answer body: {} bytes; {CONNECTIONS} connections over {DELIVERIES} deliveries, {}s per phase",
        answer.len(),
        length.as_secs()
    );
    let (mut noop_rate, mut real_rate) = (0.0, 0.0);
    let (mut noop_lat, mut real_lat) = (Vec::new(), Vec::new());
    let mut fsync_rate = fsync_rate(dir.path());
    let (mut appends, mut fsyncs) = (0, 0);
    // `HOOKLEDGER_BENCH_ONLY=real` (or `noop`) loads one side only, for profiling.
    let only = std::env::var("HOOKLEDGER_BENCH_ONLY").unwrap_or_default();
    let only_real = only == "real";
    for round in 1..=rounds {
        let n = if only_real {
            Run {
                requests_per_sec: f64::NAN,
                latencies_micros: vec![0],
                cpu_micros_per_request: f64::NAN,
                cores: f64::NAN,
            }
        } else {
            load(&noop, length)
        };
        let before = store.stats();
        if only == "noop" {
            println!("round {round}: no-op {:.0} req/s", n.requests_per_sec);
            continue;
        }
        let r = load(&real, length);
        let after = store.stats();
        appends += after.appends - before.appends;
        fsyncs += after.fsyncs - before.fsyncs;
        let per_sync =
            (after.appends - before.appends) as f64 / (after.fsyncs - before.fsyncs).max(1) as f64;
        println!(
            "round {round}: no-op {:.0} req/s (p99 {:.2} ms, {:.1} us CPU/req, {:.2} cores), real {:.0} attempts/s (p99 {:.2} ms, {:.1} us CPU/req, {:.2} cores, {per_sync:.1} appends per fsync)",
            n.requests_per_sec,
            percentile_ms(&n.latencies_micros, 99.0),
            n.cpu_micros_per_request,
            n.cores,
            r.requests_per_sec,
            percentile_ms(&r.latencies_micros, 99.0),
            r.cpu_micros_per_request,
            r.cores,
        );
        noop_rate += n.requests_per_sec;
        real_rate += r.requests_per_sec;
        noop_lat.extend(n.latencies_micros);
        real_lat.extend(r.latencies_micros);
    }
    noop_lat.sort_unstable();
    real_lat.sort_unstable();
    let rounds = rounds as f64;
    figure(
        "HTTP durable record-attempt",
        real_rate / rounds,
        "attempts/s",
        "no-op axum handler, same body and answer size",
        noop_rate / rounds,
        Target::RatioAtLeast(0.5),
    );
    for p in [50.0, 99.0, 99.9] {
        let target = if p == 99.0 {
            Target::AtMost(5.0)
        } else {
            Target::None
        };
        figure(
            &format!("HTTP record-attempt p{p}"),
            percentile_ms(&real_lat, p),
            "ms",
            &format!("no-op p{p}"),
            percentile_ms(&noop_lat, p),
            target,
        );
    }
    fsync_rate = (fsync_rate + self::fsync_rate(dir.path())) / 2.0;
    // Each connection waits for its attempt's fsync before it sends the next,
    // so the disk's sync latency bounds the rate: at most 32 attempts per sync.
    figure(
        "HTTP appends per fsync",
        appends as f64 / fsyncs.max(1) as f64,
        "appends",
        "connections",
        CONNECTIONS as f64,
        Target::None,
    );
    figure(
        "HTTP durable record-attempt vs the disk",
        real_rate / rounds,
        "attempts/s",
        "32 connections x raw fdatasyncs/s (each connection waits one sync)",
        fsync_rate * CONNECTIONS as f64,
        Target::None,
    );
    common::done("http");
}
