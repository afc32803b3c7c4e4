//! The change feed, measured on the built `hookledger serve` binary with its
//! default settings, driven over loopback from this separate process.
//!
//! - **Delivery latency**: one Server-Sent Events client follows the
//!   organization's feed (a raw HTTP/1.0 connection, so the stream arrives
//!   unframed) while attempts are recorded one at a time, a few milliseconds
//!   apart; each event's latency is from its append's 2xx arriving here to
//!   the stream bringing its `id`. The baseline is a plain read in the same
//!   run: the round trip of `GET` of the delivery, on a fresh connection as
//!   each attempt is. Target: p99 at most 10 ms.
//! - **Idle subscribers**: record-attempt throughput under wrk (`-t1 -c32`,
//!   the body of `benches/http.rs`) with no feed subscriber, then with 100
//!   event streams open in ten other organizations (ten each), which get
//!   nothing but heartbeats, phases alternating on one server, and the
//!   server's CPU per attempt in each. Target: at most 5% slower.
//!
//! `cargo bench --bench feed`. Knobs: `HOOKLEDGER_BENCH_FEED_EVENTS` (attempts
//! timed for latency, default 500), `HOOKLEDGER_BENCH_SECS` (each throughput
//! phase), `HOOKLEDGER_BENCH_ROUNDS` (pairs of phases, default 2),
//! `HOOKLEDGER_BENCH_BINARY` (another build), `HOOKLEDGER_BENCH_FEED_DATA`
//! (a data directory to serve instead of a new one, kept: the queries bench's
//! ledger of 10 million attempts, say; the feed followed is still that of
//! an organization of the bench's own) and `HOOKLEDGER_BENCH_CACHE_SIZE`
//! (the server's `--cache-size`, to hold a large model far over its cache).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::served::{Served, create_key, http, process_cpu};
use common::wrk::{self, Pick, Requests, Runs};
use common::{Target, env_u64, figure, percentile_ms, phase};
use serde_json::json;

const ORG: &str = "org_bench";
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;
const SUBSCRIBERS: usize = 100;
const SUBSCRIBER_ORGS: usize = 10;

fn main() {
    common::machine("feed");
    let binary = common::served::binary();
    println!("binary: {}", binary.display());
    let dir = tempfile::tempdir().expect("temp dir");
    let data = std::env::var_os("HOOKLEDGER_BENCH_FEED_DATA")
        .map_or_else(|| dir.path().join("data"), std::path::PathBuf::from);
    let args: Vec<String> = std::env::var("HOOKLEDGER_BENCH_CACHE_SIZE")
        .map(|size| vec!["--cache-size".to_owned(), size])
        .unwrap_or_default();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!("data: {}; serve arguments: {args:?}", data.display());
    let token = create_key(&binary, &data, ORG);
    let served = Served::open(&binary, &data, ORG, &token, &args);
    let deliveries = setup(&served);
    latency(&served, &deliveries[0]);
    idle_subscribers(&binary, &data, &served, &deliveries);
    served.stop();
    common::done("feed");
}

/// Four endpoints and 64 events: 256 deliveries.
fn setup(served: &Served) -> Vec<String> {
    for n in 0..4 {
        served.post(
            "/v1/outbound-webhook-endpoints",
            &json!({"name": format!("receiver {n}"), "url": format!("https://hooks.example.com/{n}")}),
        );
    }
    let mut deliveries = Vec::new();
    for n in 0..64 {
        let event = served.post(
            "/v1/outbound-webhook-events",
            &json!({"eventType": "invoice.paid", "payload": {"invoiceId": format!("inv_{n:08}")}}),
        );
        for d in event["deliveries"].as_array().expect("deliveries") {
            deliveries.push(d["id"].as_str().expect("an id").to_owned());
        }
    }
    deliveries
}

fn attempt_path(delivery: &str) -> String {
    format!("/v1/outbound-webhook-deliveries/{delivery}/attempts")
}

/// Opens an event stream of `org`'s feed after `after` over HTTP/1.0.
fn subscribe(addr: SocketAddr, org: &str, token: &str, after: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /v1/ledger/feed?after={after} HTTP/1.0\r\naccept: text/event-stream\r\n\
         authorization: Bearer {token}\r\nx-organization-id: {org}\r\n\r\n"
    )
    .expect("send");
    stream
}

/// The organization's last sequence, from a page of its feed.
fn last_sequence(served: &Served) -> u64 {
    let mut after = 0;
    loop {
        let (status, body) = http(
            served.addr,
            "GET",
            &format!("/v1/ledger/feed?after={after}&limit=250"),
            &served.headers(),
            "",
        )
        .expect("the feed answers");
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let next = page["nextAfter"].as_u64().expect("nextAfter");
        if next == after {
            return after;
        }
        after = next;
    }
}

fn latency(served: &Served, delivery: &str) {
    let events = env_u64("HOOKLEDGER_BENCH_FEED_EVENTS", 500) as usize;
    let first = last_sequence(served) + 1;
    let mut stream = subscribe(served.addr, ORG, &served.token, first - 1);
    let (arrived, arrivals) = mpsc::channel::<(u64, Instant)>();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < events {
            let n = stream.read(&mut buf).expect("the stream reads");
            assert!(n > 0, "the stream ended");
            let at = Instant::now();
            seen.extend_from_slice(&buf[..n]);
            // Every complete `id: N` line in what arrived so far.
            while let Some(start) = find(&seen, b"\nid: ") {
                let rest = &seen[start + 5..];
                let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                    break;
                };
                let id: u64 = std::str::from_utf8(&rest[..end])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("an id");
                arrived.send((id, at)).expect("the bench listens");
                got += 1;
                seen.drain(..start + 5 + end);
            }
        }
    });
    let headers = served.headers();
    let mut acknowledged = Vec::with_capacity(events);
    let mut reads = Vec::with_capacity(events);
    for _ in 0..events {
        let (status, body) =
            http(served.addr, "POST", &attempt_path(delivery), &headers, BODY).expect("answers");
        assert_eq!(status, 200, "{body}");
        acknowledged.push(Instant::now());
        let started = Instant::now();
        let (status, _) = http(
            served.addr,
            "GET",
            &format!("/v1/outbound-webhook-deliveries/{delivery}"),
            &headers,
            "",
        )
        .expect("answers");
        assert_eq!(status, 200);
        reads.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(2));
    }
    reader.join().expect("the reader");
    let mut latencies: Vec<u32> = arrivals
        .try_iter()
        .map(|(id, at)| {
            let i = usize::try_from(id - first).expect("an index");
            micros(at.saturating_duration_since(acknowledged[i]))
        })
        .collect();
    assert_eq!(latencies.len(), events, "every event arrived once");
    latencies.sort_unstable();
    let mut reads: Vec<u32> = reads.into_iter().map(micros).collect();
    reads.sort_unstable();
    for p in [50.0, 99.0] {
        figure(
            &format!("feed delivery latency p{p} (2xx of the append to the SSE client)"),
            percentile_ms(&latencies, p),
            "ms",
            &format!("plain delivery GET round trip p{p}"),
            percentile_ms(&reads, p),
            if p == 99.0 {
                Target::AtMost(10.0)
            } else {
                Target::None
            },
        );
    }
    println!(
        "feed latency: {events} events, max {} ms, load average {}",
        latencies.last().map_or(0.0, |m| *m as f64 / 1000.0),
        common::loadavg()
    );
}

fn idle_subscribers(binary: &Path, data: &Path, served: &Served, deliveries: &[String]) {
    let wrk = wrk::require();
    let work = tempfile::tempdir().expect("temp dir");
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let length = phase();
    let requests = Requests {
        method: "POST",
        paths: deliveries.iter().map(|d| attempt_path(d)).collect(),
        pick: Pick::Random,
        headers: served.headers(),
        body: BODY.to_owned(),
    };
    let tokens: Vec<(String, String)> = (0..SUBSCRIBER_ORGS)
        .map(|o| {
            let org = format!("org_idle_{o}");
            let token = create_key(binary, data, &org);
            (org, token)
        })
        .collect();
    // Warm up.
    wrk::run(
        &wrk,
        work.path(),
        served.addr,
        &requests,
        32,
        Duration::from_secs(1),
    );
    let (mut without, mut with) = (Runs(Vec::new()), Runs(Vec::new()));
    // The server's CPU seconds over each side's phases: less swayed than
    // throughput by what else the machine runs.
    let (mut cpu_without, mut cpu_with) = (0.0, 0.0);
    let measure = |cpu: &mut f64| {
        let before = process_cpu(served.pid());
        let load = wrk::run(&wrk, work.path(), served.addr, &requests, 32, length);
        *cpu += process_cpu(served.pid()) - before;
        load
    };
    for round in 1..=rounds {
        let load = measure(&mut cpu_without);
        println!(
            "round {round}: no subscribers: {:.0} attempts/s",
            load.rate()
        );
        without.0.push(load);
        let streams: Vec<TcpStream> = (0..SUBSCRIBERS)
            .map(|i| {
                let (org, token) = &tokens[i % SUBSCRIBER_ORGS];
                subscribe(served.addr, org, token, 0)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let open = served.metric("hookledger_feed_connections");
        assert_eq!(open as usize, SUBSCRIBERS, "every subscriber is open");
        let load = measure(&mut cpu_with);
        println!(
            "round {round}: {SUBSCRIBERS} idle subscribers: {:.0} attempts/s",
            load.rate()
        );
        with.0.push(load);
        drop(streams);
        std::thread::sleep(Duration::from_millis(500));
    }
    figure(
        &format!("record-attempt with {SUBSCRIBERS} idle feed subscribers"),
        with.rate(),
        "attempts/s",
        "record-attempt without subscribers",
        without.rate(),
        Target::RatioAtLeast(0.95),
    );
    let per_attempt = |cpu: f64, runs: &Runs| cpu / runs.requests() as f64 * 1e6;
    figure(
        &format!("server CPU per attempt with {SUBSCRIBERS} idle feed subscribers"),
        per_attempt(cpu_with, &with),
        "us",
        "server CPU per attempt without subscribers",
        per_attempt(cpu_without, &without),
        Target::None,
    );
    println!(
        "p99 with {SUBSCRIBERS} subscribers {:.2} ms, without {:.2} ms",
        with.percentile_ms(99.0),
        without.percentile_ms(99.0)
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}
