//! HTTP record-attempt, measured on what users run: the built `hookledger serve`
//! binary as a child process with its default settings (JSON request log on a
//! drained pipe, a fresh data directory), loaded from a separate process by wrk
//! (`-t1 -c32`, requests formatted once in wrk's `init`) posting attempts to
//! deliveries picked at random among 256. The baseline is a no-op axum handler
//! of the same shape in its own process under the same wrk in the same run: it
//! parses the same body and answers a prepared body the size of the real answer,
//! with no storage and no log.
//!
//! Each round starts a fresh server (so every round measures the same ledger),
//! warms each side up for a second, then measures both; the sides alternate.
//! Besides attempts/s, p50/p99/p99.9 and the ratio to the no-op, it prints the
//! appends per fsync (from the server's `/metrics`), the CPU per request of each
//! server and of wrk, the request log's lines and bytes, and the CPU of each of
//! the server's threads.
//!
//! `cargo bench --bench http`; `HOOKLEDGER_BENCH_SECS` sets each phase's length,
//! `HOOKLEDGER_BENCH_ROUNDS` the rounds, `HOOKLEDGER_BENCH_ONLY=real` (or
//! `noop`) loads one side only and prints the server's pid, for profiling it,
//! `HOOKLEDGER_BENCH_BINARY` runs another build of `hookledger` instead, and
//! `HOOKLEDGER_BENCH_PICK=cycle` sends attempts to the deliveries in turn
//! instead of at random, so that no two in flight share a delivery.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::served::{Served, parse_stat, thread_cpu};
use common::wrk::{self, Load, Pick, Requests, Runs};
use common::{Target, env_u64, figure, phase};

const CONNECTIONS: usize = 32;
const ENDPOINTS: usize = 4;
/// Webhook events; each fans out to the four endpoints: 256 deliveries.
const EVENTS: usize = 64;
const ORG: &str = "org_bench";
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;
const ROUTE: &str = "/v1/outbound-webhook-deliveries/{id}/attempts";
/// Set in the no-op child: the file holding the answer it sends.
const NOOP_ANSWER: &str = "HOOKLEDGER_BENCH_NOOP_ANSWER";

fn main() {
    if let Some(answer) = std::env::var_os(NOOP_ANSWER) {
        noop::serve(Path::new(&answer));
        return;
    }
    common::machine("http");
    let wrk = wrk::require();
    let length = phase();
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let only = std::env::var("HOOKLEDGER_BENCH_ONLY").unwrap_or_default();
    let work = tempfile::tempdir().expect("temp dir");

    // One real answer, to size the no-op's.
    let sample = Served::start(ORG, ENDPOINTS, EVENTS);
    let answer = sample.post_raw(&attempt_path(&sample.deliveries[0]), BODY);
    sample.stop();
    let answer_file = work.path().join("answer.json");
    std::fs::write(&answer_file, &answer).expect("answer file");
    let noop = (only != "real").then(|| Noop::start(&answer_file));
    println!(
        "binary: {}\ndeliveries picked: {:?}\nanswer body: {} bytes; {CONNECTIONS} connections over {} deliveries, {}s per phase, {rounds} rounds",
        common::served::binary().display(),
        requests_for(&[], "").pick,
        answer.len(),
        ENDPOINTS * EVENTS,
        length.as_secs()
    );
    let raw_syncs = fsync_rate(work.path());

    let (mut real_all, mut noop_all) = (Runs::default(), Runs::default());
    let (mut real_cpu, mut noop_cpu, mut wrk_real_cpu, mut wrk_noop_cpu) = (0.0, 0.0, 0.0, 0.0);
    let (mut appends, mut fsyncs) = (0.0, 0.0);
    let (mut log_lines, mut log_bytes) = (0, 0);
    let mut threads = Vec::new();
    for round in 1..=rounds {
        let mut sides = vec![Side::Noop, Side::Real];
        if round % 2 == 0 {
            sides.reverse();
        }
        for side in sides {
            match (side, &noop) {
                (Side::Noop, Some(noop)) => {
                    let requests = requests_for(&fake_paths(), "");
                    wrk::run(
                        &wrk,
                        work.path(),
                        noop.addr,
                        &requests,
                        CONNECTIONS,
                        Duration::from_secs(1),
                    );
                    let cpu = noop.cpu();
                    let load =
                        wrk::run(&wrk, work.path(), noop.addr, &requests, CONNECTIONS, length);
                    let cpu = noop.cpu() - cpu;
                    check(&load, "no-op");
                    println!(
                        "round {round}: no-op {:.0} req/s, p99 {:.2} ms, server {:.1} us CPU/req, wrk {:.1} us CPU/req",
                        load.rate(),
                        load.percentile_ms(99.0),
                        cpu * 1e6 / load.requests as f64,
                        load.wrk_cpu * 1e6 / load.requests as f64
                    );
                    noop_cpu += cpu;
                    wrk_noop_cpu += load.wrk_cpu;
                    noop_all.0.push(load);
                }
                (Side::Real, _) if only != "noop" => {
                    let served = Served::start(ORG, ENDPOINTS, EVENTS);
                    if only == "real" {
                        println!("round {round}: hookledger serve is pid {}", served.pid());
                    }
                    let paths: Vec<String> =
                        served.deliveries.iter().map(|d| attempt_path(d)).collect();
                    let requests = requests_for(&paths, &served.token);
                    wrk::run(
                        &wrk,
                        work.path(),
                        served.addr,
                        &requests,
                        CONNECTIONS,
                        Duration::from_secs(1),
                    );
                    let before = Snapshot::of(&served);
                    let load = wrk::run(
                        &wrk,
                        work.path(),
                        served.addr,
                        &requests,
                        CONNECTIONS,
                        length,
                    );
                    let after = Snapshot::of(&served);
                    check(&load, "hookledger");
                    let cpu = after.cpu - before.cpu;
                    let round_appends = after.appends - before.appends;
                    let round_fsyncs = after.fsyncs - before.fsyncs;
                    println!(
                        "round {round}: hookledger {:.0} attempts/s, p99 {:.2} ms, server {:.1} us CPU/req ({:.2} cores), wrk {:.1} us CPU/req, {:.1} appends per fsync, {:.2} log lines and {:.0} log bytes per request",
                        load.rate(),
                        load.percentile_ms(99.0),
                        cpu * 1e6 / load.requests as f64,
                        cpu / load.seconds,
                        load.wrk_cpu * 1e6 / load.requests as f64,
                        round_appends / round_fsyncs.max(1.0),
                        (after.log_lines - before.log_lines) as f64 / load.requests as f64,
                        (after.log_bytes - before.log_bytes) as f64 / load.requests as f64,
                    );
                    threads = thread_use(&before, &after, load.seconds);
                    real_cpu += cpu;
                    wrk_real_cpu += load.wrk_cpu;
                    appends += round_appends;
                    fsyncs += round_fsyncs;
                    log_lines += after.log_lines - before.log_lines;
                    log_bytes += after.log_bytes - before.log_bytes;
                    real_all.0.push(load);
                    served.stop();
                }
                _ => {}
            }
        }
    }
    if only == "noop" || only == "real" {
        common::done("http");
        return;
    }

    println!("threads of the last round's server, share of one core during the measured phase:");
    for line in threads {
        println!("  {line}");
    }
    figure(
        "HTTP durable record-attempt, binary under wrk",
        real_all.rate(),
        "attempts/s",
        "no-op axum handler in its own process, same wrk",
        noop_all.rate(),
        Target::RatioAtLeast(0.5),
    );
    for p in wrk::PERCENTILES {
        let target = if p == 99.0 {
            Target::AtMost(3.0)
        } else {
            Target::None
        };
        figure(
            &format!("HTTP record-attempt p{p}"),
            real_all.percentile_ms(p),
            "ms",
            &format!("no-op p{p}"),
            noop_all.percentile_ms(p),
            target,
        );
    }
    let per_request = |cpu: f64, runs: &Runs| cpu * 1e6 / runs.requests() as f64;
    figure(
        "HTTP server CPU per attempt",
        per_request(real_cpu, &real_all),
        "us",
        "no-op server CPU per request",
        per_request(noop_cpu, &noop_all),
        Target::None,
    );
    figure(
        "wrk CPU per attempt",
        per_request(wrk_real_cpu, &real_all),
        "us",
        "wrk CPU per no-op request",
        per_request(wrk_noop_cpu, &noop_all),
        Target::None,
    );
    // Each connection waits for its attempt's fsync before it sends the next,
    // so at most 32 attempts can share one.
    figure(
        "HTTP appends per fsync",
        appends / fsyncs.max(1.0),
        "appends",
        "connections",
        CONNECTIONS as f64,
        Target::None,
    );
    figure(
        "HTTP durable record-attempt vs the disk",
        real_all.rate(),
        "attempts/s",
        "32 connections x raw fdatasyncs/s (each connection waits one sync)",
        (raw_syncs + fsync_rate(work.path())) / 2.0 * CONNECTIONS as f64,
        Target::None,
    );
    println!(
        "request log: {:.2} lines and {:.0} bytes per attempt",
        log_lines as f64 / real_all.requests() as f64,
        log_bytes as f64 / real_all.requests() as f64
    );
    common::done("http");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Noop,
    Real,
}

fn attempt_path(delivery: &str) -> String {
    ROUTE.replace("{id}", delivery)
}

/// The same number of paths, for the no-op: it reads no id.
fn fake_paths() -> Vec<String> {
    (0..ENDPOINTS * EVENTS)
        .map(|n| attempt_path(&format!("dlv_{n:026}")))
        .collect()
}

fn requests_for(paths: &[String], token: &str) -> Requests {
    let pick = match std::env::var("HOOKLEDGER_BENCH_PICK").as_deref() {
        Ok("cycle") => Pick::Cycle,
        _ => Pick::Random,
    };
    Requests {
        paths: paths.to_vec(),
        pick,
        headers: vec![
            ("authorization", format!("Bearer {token}")),
            ("x-organization-id", ORG.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        body: BODY.to_owned(),
    }
}

fn check(load: &Load, side: &str) {
    assert!(load.requests > 0, "{side}: wrk sent nothing");
    assert_eq!(load.bad_status, 0, "{side}: answers other than 2xx");
    assert_eq!(load.socket_errors, 0, "{side}: socket errors or timeouts");
}

/// What the real server had done at one moment.
struct Snapshot {
    cpu: f64,
    appends: f64,
    fsyncs: f64,
    log_lines: u64,
    log_bytes: u64,
    threads: std::collections::BTreeMap<u32, (String, f64)>,
}

impl Snapshot {
    fn of(served: &Served) -> Snapshot {
        let threads = thread_cpu(served.pid());
        let log = served.log();
        Snapshot {
            cpu: process_cpu(served.pid()),
            appends: served.metric("hookledger_store_appends"),
            fsyncs: served.metric("hookledger_store_fsyncs"),
            log_lines: log.lines,
            log_bytes: log.bytes,
            threads,
        }
    }
}

/// Each thread's share of one core between two snapshots, busiest first.
fn thread_use(before: &Snapshot, after: &Snapshot, seconds: f64) -> Vec<String> {
    let mut used: Vec<(f64, u32, String)> = after
        .threads
        .iter()
        .map(|(tid, (name, cpu))| {
            let was = before.threads.get(tid).map_or(0.0, |(_, c)| *c);
            ((cpu - was) / seconds, *tid, name.clone())
        })
        .collect();
    used.sort_by(|a, b| b.0.total_cmp(&a.0));
    let main = after.threads.keys().next().copied();
    used.iter()
        .map(|(share, tid, name)| {
            let role = if Some(*tid) == main { " (main)" } else { "" };
            format!("{tid} {name}{role}: {:.1}%", share * 100.0)
        })
        .collect()
}

fn process_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, cpu)| cpu)
}

/// fdatasyncs/s of a raw loop of 256-byte writes in `dir`, for two seconds.
fn fsync_rate(dir: &Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join("raw-fsync.bin");
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

/// The no-op server as a child process: this bench's own executable, started
/// again with [`NOOP_ANSWER`] set.
struct Noop {
    child: Child,
    addr: SocketAddr,
}

impl Noop {
    fn start(answer: &Path) -> Noop {
        let mut child = Command::new(std::env::current_exe().expect("this executable"))
            .env(NOOP_ANSWER, answer)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the no-op server starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the no-op server's address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the no-op server said {line:?}"));
        Noop { child, addr }
    }

    fn cpu(&self) -> f64 {
        process_cpu(self.child.id())
    }
}

impl Drop for Noop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod noop {
    //! The baseline: the record-attempt route on axum, reading and parsing the
    //! body and answering a prepared body with the real answer's headers, on
    //! the runtime `hookledger` builds (tokio's default multi-thread one).

    use std::io::Write;
    use std::path::Path;

    use axum::body::Bytes;
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::serve::ListenerExt;
    use serde_json::Value;

    pub fn serve(answer: &Path) {
        let answer = Bytes::from(std::fs::read(answer).expect("the answer file"));
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let handler = move |UrlPath(_id): UrlPath<String>, body: Bytes| {
                let answer = answer.clone();
                async move { reply(&body, answer) }
            };
            let app = axum::Router::new().route(super::ROUTE, post(handler));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            let mut stdout = std::io::stdout();
            writeln!(stdout, "listening on {addr}").expect("stdout");
            stdout.flush().expect("stdout");
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).await.expect("serve");
        });
    }

    fn reply(body: &[u8], answer: Bytes) -> Response {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) if value.is_object() => {}
            _ => return StatusCode::BAD_REQUEST.into_response(),
        }
        let mut response = (StatusCode::OK, answer).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::ETAG, HeaderValue::from_static("\"1\""));
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("req_01KBENCH00000000000000000000"),
        );
        response
    }
}
