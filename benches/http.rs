//! HTTP record-attempt, measured on what users run: the built `hookledger serve`
//! binary as a child process with its default settings (JSON request log on a
//! drained pipe, a fresh data directory), loaded from a separate process by wrk
//! (`-t1 -c32`, requests formatted once in wrk's `init`) posting attempts to
//! deliveries picked at random among 256. The baseline is a no-op axum handler
//! of the same shape in its own process under the same wrk in the same run: it
//! parses the same body and answers a prepared body the size of the real answer,
//! with no storage and no log. A second baseline, the durable no-op, is the
//! same handler answering only once the body is written and `fdatasync`ed by
//! a group commit on a thread of its own (`Noop::start_durable`): the least
//! any server must do to acknowledge durably on this disk, so the floor under
//! record-attempt's throughput and latency, the p99 above all.
//!
//! Each round starts a fresh server (so every round measures the same ledger),
//! warms each side up for a second, then measures each; the order of the sides
//! turns from round to round. Besides attempts/s, p50/p99/p99.9 and the ratio
//! to the no-op, it prints the appends per fsync (from the server's
//! `/metrics`), the CPU per request of each server and of wrk, the request
//! log's lines and bytes, and the CPU of each of the server's threads.
//!
//! Every phase is also loaded by the bench's own client in a process of its
//! own (`common::client`: one thread, the same connections and requests, every
//! latency kept), right after wrk's, on the same server: two generators, two
//! sets of figures, so a tail that only one of them sees shows as such.
//!
//! `cargo bench --bench http`. Knobs: `HOOKLEDGER_BENCH_LOAD=wrk` (wrk only), `HOOKLEDGER_BENCH_SECS` (each phase's
//! length), `HOOKLEDGER_BENCH_ROUNDS`, `HOOKLEDGER_BENCH_ONLY=real` (or `noop`:
//! load one side only, printing the server's pid, for profiling),
//! `HOOKLEDGER_BENCH_BINARY` (measure another build instead),
//! `HOOKLEDGER_BENCH_BEFORE` (also measure an older build as a third side, for
//! a before/after ratio from one run) and `HOOKLEDGER_BENCH_PICK=cycle`
//! (deliveries in turn instead of at random: no two attempts in flight share a
//! delivery).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client;
use common::noop::{self, Noop};
use common::served::{Reading, Served};
use common::wrk::{self, Load, Pick, Requests, Runs};
use common::{Target, env_u64, figure, phase};

const CONNECTIONS: usize = 32;
const ENDPOINTS: usize = 4;
/// Webhook events; each fans out to the four endpoints: 256 deliveries.
const EVENTS: usize = 64;
const ORG: &str = "org_bench";
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;
const ROUTE: &str = noop::ROUTE;

fn main() {
    if noop::serve_if_child() || client::run_if_child() {
        return;
    }
    common::machine("http");
    let bench = Bench {
        wrk: wrk::require(),
        work: tempfile::tempdir().expect("temp dir"),
        length: phase(),
        pick: match std::env::var("HOOKLEDGER_BENCH_PICK").as_deref() {
            Ok("cycle") => Pick::Cycle,
            _ => Pick::Random,
        },
        ours: std::env::var("HOOKLEDGER_BENCH_LOAD").as_deref() != Ok("wrk"),
    };
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let only = std::env::var("HOOKLEDGER_BENCH_ONLY").unwrap_or_default();
    let current = common::served::binary();

    // One real answer, to size the no-op's.
    let sample = Served::start(&current, ORG, ENDPOINTS, EVENTS);
    let answer = sample.post_raw(&attempt_path(&sample.deliveries[0]), BODY);
    sample.stop();
    let answer_file = bench.work.path().join("answer.json");
    std::fs::write(&answer_file, &answer).expect("answer file");

    let mut sides = Vec::new();
    if only != "real" {
        sides.push(Side::new("no-op", Kind::Noop(Noop::start(&answer_file))));
        sides.push(Side::new(
            "durable no-op",
            Kind::Noop(Noop::start_durable(&answer_file, bench.work.path())),
        ));
    }
    if only != "noop" {
        sides.push(Side::new("hookledger", Kind::Binary(current.clone())));
        if let Some(before) = std::env::var_os("HOOKLEDGER_BENCH_BEFORE") {
            sides.push(Side::new("before", Kind::Binary(PathBuf::from(before))));
        }
    }
    println!("binary: {}", current.display());
    for side in &sides {
        if let (Kind::Binary(path), "before") = (&side.kind, side.name) {
            println!("before: {}", path.display());
        }
    }
    println!(
        "deliveries picked: {:?}; answer body: {} bytes; {CONNECTIONS} connections over {} deliveries, {}s per phase, {rounds} rounds",
        bench.pick,
        answer.len(),
        ENDPOINTS * EVENTS,
        bench.length.as_secs()
    );
    let raw_syncs = fsync_rate(bench.work.path());

    for round in 1..=rounds {
        let turn = (round as usize - 1) % sides.len();
        for i in 0..sides.len() {
            let count = sides.len();
            let side = &mut sides[(i + turn) % count];
            let line = bench.measure(side, only == "real");
            println!("round {round}: {line}");
        }
    }
    if only == "noop" || only == "real" {
        common::done("http");
        return;
    }
    bench.report(&sides, raw_syncs);
    common::done("http");
}

/// What every side's load shares.
struct Bench {
    wrk: PathBuf,
    work: tempfile::TempDir,
    length: Duration,
    pick: Pick,
    /// Load each phase with the bench's own client too.
    ours: bool,
}

/// One server the bench loads, and what it measured of it so far.
struct Side {
    name: &'static str,
    kind: Kind,
    runs: Runs,
    /// The same phases loaded by the bench's own client.
    ours: Runs,
    /// CPU seconds the server used during the measured phases.
    cpu: f64,
    wrk_cpu: f64,
    appends: f64,
    fsyncs: f64,
    log_lines: u64,
    log_bytes: u64,
    /// The last round's share of a core, per thread, busiest first.
    threads: Vec<String>,
}

enum Kind {
    Noop(Noop),
    /// A `hookledger` executable, started afresh each round.
    Binary(PathBuf),
}

impl Side {
    fn new(name: &'static str, kind: Kind) -> Side {
        Side {
            name,
            kind,
            runs: Runs::default(),
            ours: Runs::default(),
            cpu: 0.0,
            wrk_cpu: 0.0,
            appends: 0.0,
            fsyncs: 0.0,
            log_lines: 0,
            log_bytes: 0,
            threads: Vec::new(),
        }
    }

    fn per_request(&self, total: f64) -> f64 {
        total * 1e6 / self.runs.requests() as f64
    }
}

impl Bench {
    fn load(&self, addr: SocketAddr, requests: &Requests, length: Duration) -> Load {
        wrk::run(
            &self.wrk,
            self.work.path(),
            addr,
            requests,
            CONNECTIONS,
            length,
        )
    }

    /// The bench's own client for one phase, if it is on: the line's tail.
    fn load_ours(&self, side: &mut Side, addr: SocketAddr, requests: &Requests) -> String {
        if !self.ours {
            return String::new();
        }
        let load = client::run(self.work.path(), addr, requests, CONNECTIONS, self.length);
        check(&load, side.name);
        let tail = format!(
            "; own client {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
            load.rate(),
            load.percentile_ms(50.0),
            load.percentile_ms(99.0),
            load.percentile_ms(99.9)
        );
        side.ours.0.push(load);
        tail
    }

    /// A second of warm-up, then one measured phase; returns the round's line.
    fn measure(&self, side: &mut Side, print_pid: bool) -> String {
        let warm_up = Duration::from_secs(1);
        match &side.kind {
            Kind::Noop(noop) => {
                let requests = self.requests(&fake_paths(), "");
                self.load(noop.addr, &requests, warm_up);
                let cpu = noop.cpu();
                let load = self.load(noop.addr, &requests, self.length);
                let cpu = noop.cpu() - cpu;
                check(&load, side.name);
                side.cpu += cpu;
                side.wrk_cpu += load.wrk_cpu;
                let line = format!(
                    "{} {:.0} req/s, p99 {:.2} ms, server {:.1} us CPU/req, wrk {:.1} us CPU/req",
                    side.name,
                    load.rate(),
                    load.percentile_ms(99.0),
                    cpu * 1e6 / load.requests as f64,
                    load.wrk_cpu * 1e6 / load.requests as f64
                );
                side.runs.0.push(load);
                let addr = noop.addr;
                line + &self.load_ours(side, addr, &requests)
            }
            Kind::Binary(binary) => {
                let served = Served::start(binary, ORG, ENDPOINTS, EVENTS);
                if print_pid {
                    println!("{} serve is pid {}", side.name, served.pid());
                }
                let paths: Vec<String> =
                    served.deliveries.iter().map(|d| attempt_path(d)).collect();
                let requests = self.requests(&paths, &served.token);
                self.load(served.addr, &requests, warm_up);
                let before = Reading::of(&served);
                let load = self.load(served.addr, &requests, self.length);
                let after = Reading::of(&served);
                check(&load, side.name);
                let n = load.requests as f64;
                let cpu = after.cpu - before.cpu;
                let (appends, fsyncs) =
                    (after.appends - before.appends, after.fsyncs - before.fsyncs);
                let slow_commits = after.slow_commits - before.slow_commits;
                let waits = (after.waits - before.waits).max(1.0);
                let (store_wait, model_wait) = (
                    (after.store_wait - before.store_wait) / waits * 1000.0,
                    (after.model_wait - before.model_wait) / waits * 1000.0,
                );
                let (lines, bytes) = (
                    after.log_lines - before.log_lines,
                    after.log_bytes - before.log_bytes,
                );
                let line = format!(
                    "{} {:.0} attempts/s, p99 {:.2} ms, server {:.1} us CPU/req ({:.2} cores), wrk {:.1} us CPU/req, {:.1} appends per fsync, {:.1} commits/s over 3 ms, mean wait {:.2} ms for the store and {:.2} ms for the model, {:.2} log lines and {:.0} log bytes per request",
                    side.name,
                    load.rate(),
                    load.percentile_ms(99.0),
                    cpu * 1e6 / n,
                    cpu / load.seconds,
                    load.wrk_cpu * 1e6 / n,
                    appends / fsyncs.max(1.0),
                    slow_commits / load.seconds,
                    store_wait,
                    model_wait,
                    lines as f64 / n,
                    bytes as f64 / n,
                );
                side.cpu += cpu;
                side.wrk_cpu += load.wrk_cpu;
                side.appends += appends;
                side.fsyncs += fsyncs;
                side.log_lines += lines;
                side.log_bytes += bytes;
                side.threads = before.thread_use(&after, load.seconds);
                side.runs.0.push(load);
                let line = line + &self.load_ours(side, served.addr, &requests);
                served.stop();
                line
            }
        }
    }

    fn requests(&self, paths: &[String], token: &str) -> Requests {
        Requests {
            method: "POST",
            paths: paths.to_vec(),
            pick: self.pick,
            headers: vec![
                ("authorization", format!("Bearer {token}")),
                ("x-organization-id", ORG.to_owned()),
                ("content-type", "application/json".to_owned()),
            ],
            body: BODY.to_owned(),
        }
    }

    /// The figures of the whole run.
    fn report(&self, sides: &[Side], raw_syncs: f64) {
        let side = |name: &str| sides.iter().find(|s| s.name == name);
        let (Some(noop), Some(real)) = (side("no-op"), side("hookledger")) else {
            return;
        };
        println!(
            "threads of the last round's server, share of one core during the measured phase:"
        );
        for line in &real.threads {
            println!("  {line}");
        }
        figure(
            "HTTP durable record-attempt, binary under wrk",
            real.runs.rate(),
            "attempts/s",
            "no-op axum handler in its own process, same wrk",
            noop.runs.rate(),
            Target::RatioAtLeast(0.5),
        );
        if let Some(durable) = side("durable no-op") {
            figure(
                "durable no-op (each answer after a group commit's fdatasync)",
                durable.runs.rate(),
                "req/s",
                "no-op",
                noop.runs.rate(),
                Target::None,
            );
            figure(
                "HTTP durable record-attempt against the durable no-op",
                real.runs.rate(),
                "attempts/s",
                "durable no-op",
                durable.runs.rate(),
                Target::None,
            );
            for p in [50.0, 99.0] {
                figure(
                    &format!("HTTP record-attempt p{p} against the durable no-op"),
                    real.runs.percentile_ms(p),
                    "ms",
                    &format!("durable no-op p{p}"),
                    durable.runs.percentile_ms(p),
                    Target::None,
                );
            }
        }
        latency_figures(&real.runs, &noop.runs, "");
        figure(
            "HTTP server CPU per attempt",
            real.per_request(real.cpu),
            "us",
            "no-op server CPU per request",
            noop.per_request(noop.cpu),
            Target::None,
        );
        figure(
            "wrk CPU per attempt",
            real.per_request(real.wrk_cpu),
            "us",
            "wrk CPU per no-op request",
            noop.per_request(noop.wrk_cpu),
            Target::None,
        );
        // Each connection waits for its attempt's fsync before it sends the
        // next, so at most 32 attempts can share one.
        figure(
            "HTTP appends per fsync",
            real.appends / real.fsyncs.max(1.0),
            "appends",
            "connections",
            CONNECTIONS as f64,
            Target::None,
        );
        figure(
            "HTTP durable record-attempt vs the disk",
            real.runs.rate(),
            "attempts/s",
            "32 connections x raw fdatasyncs/s (each connection waits one sync)",
            (raw_syncs + fsync_rate(self.work.path())) / 2.0 * CONNECTIONS as f64,
            Target::None,
        );
        if !real.ours.0.is_empty() && !noop.ours.0.is_empty() {
            figure(
                "HTTP durable record-attempt, binary under the bench's own client",
                real.ours.rate(),
                "attempts/s",
                "no-op, the same client",
                noop.ours.rate(),
                Target::RatioAtLeast(0.5),
            );
            latency_figures(&real.ours, &noop.ours, ", the bench's own client");
            if let Some(durable) = side("durable no-op").filter(|d| !d.ours.0.is_empty()) {
                figure(
                    "HTTP record-attempt p99 against the durable no-op, the bench's own client",
                    real.ours.percentile_ms(99.0),
                    "ms",
                    "durable no-op p99, the same client",
                    durable.ours.percentile_ms(99.0),
                    Target::None,
                );
            }
            figure(
                "HTTP record-attempt p99, wrk against the bench's own client",
                real.runs.percentile_ms(99.0),
                "ms",
                "the bench's own client, same server, the phase after",
                real.ours.percentile_ms(99.0),
                Target::None,
            );
        }
        println!(
            "request log: {:.2} lines and {:.0} bytes per attempt",
            real.log_lines as f64 / real.runs.requests() as f64,
            real.log_bytes as f64 / real.runs.requests() as f64
        );
        if let Some(before) = side("before") {
            figure(
                "HTTP durable record-attempt, this build",
                real.runs.rate(),
                "attempts/s",
                "the build before",
                before.runs.rate(),
                Target::None,
            );
            figure(
                "HTTP server CPU per attempt, this build",
                real.per_request(real.cpu),
                "us",
                "the build before",
                before.per_request(before.cpu),
                Target::None,
            );
            figure(
                "HTTP record-attempt p99, this build",
                real.runs.percentile_ms(99.0),
                "ms",
                "the build before",
                before.runs.percentile_ms(99.0),
                Target::None,
            );
            figure(
                "HTTP durable record-attempt, the build before",
                before.runs.rate(),
                "attempts/s",
                "no-op",
                noop.runs.rate(),
                Target::None,
            );
        }
    }
}

/// Record-attempt's p50, p99 (the target: 3 ms) and p99.9 against the
/// no-op's, as one generator measured them; `of` names the generator.
fn latency_figures(real: &Runs, noop: &Runs, of: &str) {
    let same = if of.is_empty() {
        ""
    } else {
        ", the same client"
    };
    for p in wrk::PERCENTILES {
        let target = if p == 99.0 {
            Target::AtMost(3.0)
        } else {
            Target::None
        };
        figure(
            &format!("HTTP record-attempt p{p}{of}"),
            real.percentile_ms(p),
            "ms",
            &format!("no-op p{p}{same}"),
            noop.percentile_ms(p),
            target,
        );
    }
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

fn check(load: &Load, side: &str) {
    assert!(load.requests > 0, "{side}: wrk sent nothing");
    assert_eq!(load.bad_status, 0, "{side}: answers other than 2xx");
    assert_eq!(load.socket_errors, 0, "{side}: socket errors or timeouts");
}

/// fdatasyncs/s of a raw loop of 256-byte writes in `dir`, for two seconds,
/// and how long each took: every attempt waits for one, and a slow one holds
/// every connection whose attempt it covers, so the tail of this loop is the
/// floor under the tail of record-attempt on the same disk in the same run.
fn fsync_rate(dir: &Path) -> f64 {
    use std::os::unix::fs::FileExt;
    let path = dir.join("raw-fsync.bin");
    let file = std::fs::File::create(&path).expect("raw file");
    let started = Instant::now();
    let mut took = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let n = took.len() as u64;
        file.write_all_at(&[0x5a; 256], n * 256).expect("write");
        let sync = Instant::now();
        file.sync_data().expect("fdatasync");
        took.push(sync.elapsed());
    }
    let rate = took.len() as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    took.sort_unstable();
    let at = |p: f64| {
        let i = ((took.len() as f64 * p / 100.0) as usize).min(took.len() - 1);
        took[i].as_secs_f64() * 1000.0
    };
    let slow = took.iter().filter(|t| t.as_micros() > 3_000).count();
    println!(
        "raw 256-byte write + fdatasync loop: {rate:.0}/s; each p50 {:.3} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms; {:.1}% over 3 ms",
        at(50.0),
        at(99.0),
        at(99.9),
        at(100.0),
        100.0 * slow as f64 / took.len() as f64
    );
    rate
}
