//! Queries: the first page of each attempt filter and of the retry queue, on
//! the built `hookledger` binary with its default settings, over a ledger of
//! 10 million attempts (the `Mix` of `common/mix.rs`: one organization, 50
//! endpoints, deliveries delivered, retried and failed in realistic shares),
//! with the read model at least ten times its cache.
//!
//! For each query, and for two baselines measured in the same run (the plain
//! `GET` of a delivery drawn at random, and the no-op server answering the
//! bytes of the unfiltered first page):
//!
//! - **cold**: in each of `HOOKLEDGER_BENCH_COLD_ROUNDS` rounds the server is
//!   stopped, the model file and the log's segments are dropped from the
//!   page cache (`posix_fadvise(DONTNEED)`), the server started again (its
//!   own cache empty), and every query sent once, on a fresh connection from
//!   this process, in an order that turns each round; p50 and p99 over the
//!   rounds;
//! - **warm**: wrk in its own process, `HOOKLEDGER_BENCH_CONNECTIONS` keep-alive
//!   connections (default 1), one second to warm up; then the bench's own
//!   load client (`common/client.rs`, a process of its own that keeps every
//!   latency) for `HOOKLEDGER_BENCH_SECS`, then wrk for as long; p50/p99/p99.9
//!   of each. Two generators because on this machine wrk's tail has run far
//!   above what the server and our client see (BENCHMARKS, "Two load
//!   generators"); the client goes first, in the seconds right after the
//!   server's start that the first load gets.
//!
//! The ledger is written by the bench straight into the embedded log and
//! the model built with `hookledger projections rebuild`
//! (`common/mix_ledger.rs`, which the proofs bench shares), then a key made
//! with `hookledger keys create`. The model's and the log's bytes per
//! attempt are printed.
//!
//! `cargo bench --bench queries`. Knobs: `HOOKLEDGER_BENCH_QUERY_ATTEMPTS`
//! (default 10 000 000; 200 000 is a quick try), `HOOKLEDGER_BENCH_SECS`,
//! `HOOKLEDGER_BENCH_COLD_ROUNDS` (default 30), `HOOKLEDGER_BENCH_DIR` (where
//! the temporary ledger goes; deleted at the end), `HOOKLEDGER_BENCH_QUERY_DATA`
//! (a directory to write the ledger to and keep, or to reuse if a run of this
//! bench or of the proofs bench already built it there),
//! `HOOKLEDGER_BENCH_ONLY=build` (build the ledger and stop).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::client;
use common::mix::{ENDPOINTS, Mix, RETRY_FROM, RETRY_SPAN, mix64};
use common::mix_ledger::{self, Ledger};
use common::noop::Noop;
use common::served::{self, Served};
use common::tables::{report_tables, table_sizes};
use common::wrk::{self, Load, Pick, Requests};
use common::{Target, env_u64, figure, num, percentile_ms, phase};
use projections::Timestamp;
use serde_json::Value;

/// wrk's keep-alive connections by default: one client, so that the latency
/// is a page's own and not a queue's (`HOOKLEDGER_BENCH_CONNECTIONS`).
const CONNECTIONS: u64 = 1;
/// Ids drawn at random for the filters that name one.
const SAMPLE: u64 = 5_000;
const TARGET_MS: f64 = 5.0;
const ATTEMPTS: &str = "/v1/outbound-webhook-attempts";
const DELIVERIES: &str = "/v1/outbound-webhook-deliveries";
/// One thing measured: a name and the request paths it draws from.
struct Query {
    name: &'static str,
    paths: Vec<String>,
}

fn main() {
    if common::noop::serve_if_child() || common::client::run_if_child() {
        return;
    }
    common::machine("queries");
    let mix = Mix::with_attempts(env_u64("HOOKLEDGER_BENCH_QUERY_ATTEMPTS", 10_000_000));
    let binary = served::binary();
    let work = tempfile::Builder::new()
        .prefix("hookledger-queries-")
        .tempdir_in(
            std::env::var_os("HOOKLEDGER_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        )
        .expect("temp dir");
    let ledger = Ledger::built(&binary, work.path(), mix);
    if mix_ledger::build_only() {
        return;
    }
    let wrk_bin = wrk::require();
    let (data, mix) = (ledger.data.clone(), ledger.mix);
    let org = mix.org();
    let attempts = mix.attempts();
    println!(
        "binary: {}; {} webhook events, {} deliveries, {attempts} attempts, {ENDPOINTS} endpoints",
        binary.display(),
        mix.events,
        mix.deliveries()
    );
    let token = served::create_key(&binary, &data, &org);

    let model = ledger.model();
    let model_bytes = ledger.model_bytes();
    let log_bytes = ledger.log_bytes();
    println!(
        "read model {} MB: {:.0} bytes per attempt ({:.0} per delivery); log {} MB: {:.0} bytes per attempt",
        model_bytes / 1_000_000,
        model_bytes as f64 / attempts as f64,
        model_bytes as f64 / mix.deliveries() as f64,
        log_bytes / 1_000_000,
        log_bytes as f64 / attempts as f64
    );
    let cache = ledger.cache();
    let cache_arg = cache.to_string();
    let args = ["--cache-size", cache_arg.as_str()];
    println!(
        "--cache-size {cache}: the model is {:.1} times the cache",
        model_bytes as f64 / cache as f64
    );

    let served = Served::open(&binary, &data, &org, &token, &args);
    println!("load average before the loads: {}", common::loadavg());
    let queries = queries(&served, mix);
    let sample = check(&served, &queries);

    let bench = Bench {
        wrk: wrk_bin,
        work: work.path().to_owned(),
        length: phase(),
        headers: served.headers(),
        connections: env_u64("HOOKLEDGER_BENCH_CONNECTIONS", CONNECTIONS) as usize,
    };
    // Cold first: every round starts the server on a dropped page cache.
    served.stop();
    let rounds = env_u64("HOOKLEDGER_BENCH_COLD_ROUNDS", 30) as usize;
    let mut cold: Vec<Vec<u32>> = vec![Vec::new(); queries.len()];
    let mut seed = 1u64;
    for round in 0..rounds {
        drop_from_page_cache(&model);
        for segment in ledger.segments() {
            drop_from_page_cache(&segment);
        }
        let served = Served::open(&binary, &data, &org, &token, &args);
        for k in 0..queries.len() {
            let q = (k + round) % queries.len();
            seed = mix64(seed);
            let path = &queries[q].paths[(seed % queries[q].paths.len() as u64) as usize];
            cold[q].push(bench.once(served.addr, path));
        }
        served.stop();
    }
    for samples in &mut cold {
        samples.sort_unstable();
    }

    // Warm: the server's cache and the page cache as the load leaves them.
    let served = Served::open(&binary, &data, &org, &token, &args);
    let (warm, ours): (Vec<Load>, Vec<Load>) = queries
        .iter()
        .map(|q| bench.load(served.addr, &q.paths))
        .unzip();
    let (rss, peak) = served.rss();
    served.stop();
    let tables = table_sizes(&model);

    // The no-op, answering the unfiltered page's bytes.
    let answer = work.path().join("page.json");
    std::fs::write(&answer, &sample).expect("answer file");
    let noop = Noop::start(&answer);
    let (noop_warm, noop_ours) = bench.load(noop.addr, &[ATTEMPTS.to_owned()]);
    let mut noop_cold: Vec<u32> = (0..rounds.max(100))
        .map(|_| bench.once(noop.addr, ATTEMPTS))
        .collect();
    noop_cold.sort_unstable();
    drop(noop);

    report(&queries, &cold, &warm, &noop_cold, &noop_warm);
    report_ours(&queries, &ours, &noop_ours);
    println!(
        "cold: {rounds} rounds, one request of each a round on a fresh connection; warm: our client, then wrk, {} connections",
        bench.connections
    );
    println!(
        "server RSS after the warm loads: {} MiB (peak {} MiB)",
        rss >> 20,
        peak >> 20
    );
    figure(
        "read model on disk per attempt",
        model_bytes as f64 / attempts as f64,
        "bytes/attempt",
        "the log's bytes per attempt",
        log_bytes as f64 / attempts as f64,
        Target::None,
    );
    report_tables(&tables, attempts);
    ledger.finish();
    common::done("queries");
}

/// The queries measured, the plain delivery `GET` (a baseline) last.
fn queries(served: &Served, mix: Mix) -> Vec<Query> {
    let one = |name, path: String| Query {
        name,
        paths: vec![path],
    };
    let endpoints = |suffix: &str| -> Vec<String> {
        (0..ENDPOINTS)
            .map(|i| format!("{ATTEMPTS}?endpointId={}{suffix}", mix.endpoint(i)))
            .collect()
    };
    let events = draw(mix.events)
        .map(|w| format!("{ATTEMPTS}?eventId={}", mix.event(w)))
        .collect();
    let deliveries = || draw(mix.deliveries()).map(|d| mix.delivery(d));
    // A recent window: the last minute of attempts recorded.
    let newest = first_page(served, ATTEMPTS)["data"][0]["recordedAt"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .expect("the newest attempt's recordedAt");
    let recent = Timestamp::from_micros(newest.micros() - 60_000_000);
    let middle = Timestamp::from_micros(RETRY_FROM + RETRY_SPAN / 2);
    vec![
        one("none", ATTEMPTS.to_owned()),
        Query {
            name: "endpointId",
            paths: endpoints(""),
        },
        Query {
            name: "eventId",
            paths: events,
        },
        Query {
            name: "deliveryId",
            paths: deliveries()
                .map(|id| format!("{ATTEMPTS}?deliveryId={id}"))
                .collect(),
        },
        one("status=failed", format!("{ATTEMPTS}?status=failed")),
        one(
            "statusCodeClass=5xx",
            format!("{ATTEMPTS}?statusCodeClass=5xx"),
        ),
        one(
            "responseStatusCode=503",
            format!("{ATTEMPTS}?responseStatusCode=503"),
        ),
        one(
            "recordedAfter (last minute)",
            format!("{ATTEMPTS}?recordedAfter={recent}"),
        ),
        Query {
            name: "endpointId+status=failed",
            paths: endpoints("&status=failed"),
        },
        one(
            "retry queue, nextRetryBefore mid-range",
            format!("{DELIVERIES}?status=retry_scheduled&nextRetryBefore={middle}"),
        ),
        Query {
            name: "baseline: GET a delivery",
            paths: deliveries()
                .map(|id| format!("{DELIVERIES}/{id}"))
                .collect(),
        },
    ]
}

/// Sends each query once and prints what its first page holds; returns the
/// unfiltered page's bytes, which the no-op answers.
fn check(served: &Served, queries: &[Query]) -> String {
    println!("\nfirst pages (one path of each):");
    for q in queries {
        let page = first_page(served, &q.paths[0]);
        let items = page["data"].as_array().map_or(1, Vec::len);
        println!(
            "  {:<40} {items} items{}",
            q.name,
            if page["nextCursor"].is_string() {
                ", more after"
            } else {
                ""
            }
        );
    }
    let (status, body) = served::http(served.addr, "GET", ATTEMPTS, &served.headers(), "")
        .expect("the server answers");
    assert_eq!(status, 200);
    println!("the unfiltered page is {} bytes", body.len());
    body
}

fn first_page(served: &Served, path: &str) -> Value {
    let (status, body) =
        served::http(served.addr, "GET", path, &served.headers(), "").expect("the server answers");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("a JSON answer")
}

struct Bench {
    wrk: PathBuf,
    work: PathBuf,
    length: Duration,
    headers: Vec<(&'static str, String)>,
    connections: usize,
}

impl Bench {
    /// One `GET` on a fresh connection; microseconds to the whole answer.
    fn once(&self, addr: SocketAddr, path: &str) -> u32 {
        let t = Instant::now();
        let (status, body) =
            served::http(addr, "GET", path, &self.headers, "").expect("the server answers");
        let micros = t.elapsed().as_micros();
        assert_eq!(status, 200, "GET {path}: {body}");
        u32::try_from(micros).unwrap_or(u32::MAX)
    }

    /// A second of wrk to warm up, then the measured loads: our client's,
    /// then wrk's.
    fn load(&self, addr: SocketAddr, paths: &[String]) -> (Load, Load) {
        let requests = Requests {
            method: "GET",
            paths: paths.to_vec(),
            pick: Pick::Random,
            headers: self.headers.clone(),
            body: String::new(),
        };
        let run = |length| {
            let load = wrk::run(
                &self.wrk,
                &self.work,
                addr,
                &requests,
                self.connections,
                length,
            );
            assert!(load.requests > 0, "wrk sent nothing");
            assert_eq!(load.bad_status, 0, "answers other than 2xx");
            assert_eq!(load.socket_errors, 0, "socket errors or timeouts");
            load
        };
        run(Duration::from_secs(1));
        let ours = client::run(&self.work, addr, &requests, self.connections, self.length);
        assert!(ours.requests > 0, "our client sent nothing");
        assert_eq!(ours.bad_status, 0, "answers other than 2xx to our client");
        (run(self.length), ours)
    }
}

fn report(
    queries: &[Query],
    cold: &[Vec<u32>],
    warm: &[Load],
    noop_cold: &[u32],
    noop_warm: &Load,
) {
    let base = queries.len() - 1;
    let (base_cold, base_warm) = (
        percentile_ms(&cold[base], 99.0),
        warm[base].percentile_ms(99.0),
    );
    println!(
        "\n{:<40} | {:>17} | {:>26} | {:>9} | {:>13} | {:>13}",
        "query",
        "cold p50/p99 ms",
        "warm p50/p99/p99.9 ms",
        "warm /s",
        "p99 x GET c/w",
        "p99 x no-op c/w"
    );
    let noop_c = percentile_ms(noop_cold, 99.0);
    let noop_w = noop_warm.percentile_ms(99.0);
    let row = |name: &str, cold: &[u32], warm: &Load| {
        let (c99, w99) = (percentile_ms(cold, 99.0), warm.percentile_ms(99.0));
        println!(
            "{name:<40} | {:>7} / {:>7} | {:>7} / {:>7} / {:>7} | {:>9.0} | {:>5.1} / {:>5.1} | {:>5.1} / {:>5.1}",
            num(percentile_ms(cold, 50.0)),
            num(c99),
            num(warm.percentile_ms(50.0)),
            num(w99),
            num(warm.percentile_ms(99.9)),
            warm.rate(),
            c99 / base_cold,
            w99 / base_warm,
            c99 / noop_c,
            w99 / noop_w,
        );
    };
    for (i, q) in queries.iter().enumerate() {
        row(q.name, &cold[i], &warm[i]);
    }
    row("baseline: no-op, the unfiltered page", noop_cold, noop_warm);
    for (i, q) in queries.iter().enumerate().take(base) {
        figure(
            &format!("first page, {}, cold, p99", q.name),
            percentile_ms(&cold[i], 99.0),
            "ms",
            "GET a delivery, cold, p99",
            base_cold,
            Target::AtMost(TARGET_MS),
        );
        figure(
            &format!("first page, {}, warm, p99", q.name),
            warm[i].percentile_ms(99.0),
            "ms",
            "GET a delivery, warm, p99",
            base_warm,
            Target::AtMost(TARGET_MS),
        );
    }
}

/// The warm figures of the bench's own client, with the target on its p99.
fn report_ours(queries: &[Query], ours: &[Load], noop: &Load) {
    println!("\nwarm, the bench's own client (the same connections and paths, before wrk):");
    println!("{:<40} | {:>26} | {:>9}", "query", "p50/p99/p99.9 ms", "/s");
    let row = |name: &str, load: &Load| {
        println!(
            "{name:<40} | {:>7} / {:>7} / {:>7} | {:>9.0}",
            num(load.percentile_ms(50.0)),
            num(load.percentile_ms(99.0)),
            num(load.percentile_ms(99.9)),
            load.rate(),
        );
    };
    for (q, load) in queries.iter().zip(ours) {
        row(q.name, load);
    }
    row("baseline: no-op, the unfiltered page", noop);
    let base = ours[queries.len() - 1].percentile_ms(99.0);
    for (q, load) in queries.iter().zip(ours).take(queries.len() - 1) {
        figure(
            &format!("first page, {}, warm under our client, p99", q.name),
            load.percentile_ms(99.0),
            "ms",
            "GET a delivery, warm under our client, p99",
            base,
            Target::AtMost(TARGET_MS),
        );
    }
}

/// `SAMPLE` numbers below `n`, spread by a fixed hash.
fn draw(n: u64) -> impl Iterator<Item = u64> {
    (0..SAMPLE.min(n)).map(move |i| mix64(i ^ 0xd4a3) % n)
}

/// Asks the kernel to drop the file's clean pages from the page cache.
fn drop_from_page_cache(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = std::fs::File::open(path).expect("a file to drop");
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).expect("posix_fadvise");
}
