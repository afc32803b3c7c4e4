//! Scale: the built `hookledger` binary, with its default settings, on ledgers
//! of 1, 4 and 16 million log events of the read model's workload
//! (`Shape::scale`: webhook events with 1 KiB payloads, each fanned out to 2
//! endpoints, 3 attempts per delivery: 7 log events per webhook event), loaded
//! over loopback by wrk in its own process. At each size:
//!
//! - **memory**: the server's resident set (`VmRSS`, and its peak `VmHWM`)
//!   after a phase of random event reads and a phase of attempts recorded on
//!   random deliveries, with the default `--cache-size`;
//! - **restart to ready**: SIGTERM, then the time from starting `serve` again to
//!   its first `200` from `/readyz` (the read model caught up with the log),
//!   against the same for the no-op server process (start to first answer);
//!   and the same after SIGKILL in the middle of writes;
//! - **disk**: the read model's bytes per delivery (and the log's, for scale).
//!
//! At the largest size, with the read model at least ten times the cache
//! (`--cache-size` is lowered to a tenth of the model's file when the default is
//! not that small already, and the run says so), and the model's pages dropped
//! from the operating system's page cache first (`posix_fadvise(DONTNEED)`):
//!
//! - **cold reads**: `GET` of webhook events drawn at random from the whole
//!   ledger, p99 against the no-op answering the same bytes;
//! - **HTTP durable record-attempt**: attempts on deliveries drawn at random from
//!   the whole ledger, against the no-op, as the HTTP bench measures it.
//!
//! The ledger is written by the bench straight into the embedded log (as fast
//! as the log takes appends), a key is made with `hookledger keys create`, and
//! the read model is built with `hookledger projections rebuild`, timed.
//!
//! `cargo bench --bench scale`. Knobs: `HOOKLEDGER_BENCH_SCALE_SIZES` (log
//! events, comma-separated, default `1000000,4000000,16000000`),
//! `HOOKLEDGER_BENCH_SECS` (each load phase), `HOOKLEDGER_BENCH_ROUNDS`
//! (restarts per size, default 3), `HOOKLEDGER_BENCH_DIR` (where the ledgers
//! are written; each is deleted once measured, unless `HOOKLEDGER_BENCH_KEEP`
//! is set, which keeps them for a profile or a look inside).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::noop::{self, Noop};
use common::served::{self, Served};
use common::workload::{ORGS, Shape, fill, org};
use common::wrk::{self, Load, Pick, Requests};
use common::{Target, env_u64, figure, num, phase};
use hookledger::store::embedded::EmbeddedStore;

const CONNECTIONS: usize = 32;
/// Ids drawn at random from the whole ledger for each load (wrk formats every
/// request up front, so not all of them).
const SAMPLE: u64 = 50_000;
const BODY: &str = r#"{"status":"retry_scheduled","responseStatusCode":503,"responseBody":{"error":"service unavailable","retryable":true},"lastError":"upstream answered 503 Service Unavailable","nextRetryAt":"2030-01-01T00:00:00Z"}"#;
const DEFAULT_CACHE: u64 = 256 << 20;

fn main() {
    if noop::serve_if_child() {
        return;
    }
    common::machine("scale");
    let sizes: Vec<u64> = std::env::var("HOOKLEDGER_BENCH_SCALE_SIZES")
        .unwrap_or_else(|_| "1000000,4000000,16000000".into())
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let bench = Bench {
        binary: served::binary(),
        wrk: wrk::require(),
        work: tempfile::Builder::new()
            .prefix("hookledger-scale-")
            .disable_cleanup(std::env::var_os("HOOKLEDGER_BENCH_KEEP").is_some())
            .tempdir_in(
                std::env::var_os("HOOKLEDGER_BENCH_DIR")
                    .map_or_else(std::env::temp_dir, PathBuf::from),
            )
            .expect("temp dir"),
        length: phase(),
        rounds: env_u64("HOOKLEDGER_BENCH_ROUNDS", 3),
    };
    println!(
        "binary: {}; sizes {sizes:?}; {CONNECTIONS} connections, {} s per load phase",
        bench.binary.display(),
        bench.length.as_secs()
    );
    let noop_start = bench.noop_start();
    let mut measured = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        measured.push(bench.size(size, last));
    }
    report(&measured, noop_start);
    common::done("scale");
}

struct Bench {
    binary: PathBuf,
    wrk: PathBuf,
    work: tempfile::TempDir,
    length: Duration,
    rounds: u64,
}

/// What one size measured.
struct Size {
    head: u64,
    deliveries: u64,
    rss: u64,
    peak: u64,
    restart: f64,
    restart_after_kill: f64,
    model_bytes: u64,
    log_bytes: u64,
}

impl Bench {
    /// Seconds from starting the no-op server process to its first answer.
    fn noop_start(&self) -> f64 {
        let answer = self.work.path().join("noop-start.json");
        std::fs::write(&answer, "{}").expect("answer file");
        let mut best = f64::MAX;
        for _ in 0..self.rounds {
            let t = Instant::now();
            let noop = Noop::start(&answer);
            wait_answering(noop.addr);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "no-op server process, start to first answer: {best:.3} s (best of {})",
            self.rounds
        );
        best
    }

    fn size(&self, size: u64, last: bool) -> Size {
        let shape = Shape::scale(size);
        let data = self.work.path().join(format!("ledger-{size}"));
        let org = org(0);

        // The ledger, written straight into the log.
        let t = Instant::now();
        let head = generate(&data, shape);
        println!(
            "\n== {head} log events: {} webhook events, {} deliveries; written in {:.1} s",
            shape.events,
            shape.deliveries(),
            t.elapsed().as_secs_f64()
        );
        let token = served::create_key(&self.binary, &data, &org);
        let t = Instant::now();
        let out = served::command(&self.binary, &data)
            .args(["projections", "rebuild"])
            .output()
            .expect("projections rebuild runs");
        assert!(
            out.status.success(),
            "rebuild: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rebuilt = t.elapsed().as_secs_f64();
        println!(
            "projections rebuild: {rebuilt:.1} s, {:.0} events/s for the whole command",
            head as f64 / rebuilt
        );

        // Memory, under reads and writes spread over the whole ledger.
        let served = Served::open(&self.binary, &data, &org, &token, &[]);
        let events = event_paths(shape);
        let attempts = attempt_paths(shape);
        let reads = self.load(&served, &requests("GET", &events, &token, ""));
        let writes = self.load(&served, &requests("POST", &attempts, &token, BODY));
        let (rss, peak) = served.rss();
        println!(
            "reads {:.0}/s (p99 {:.2} ms), attempts {:.0}/s (p99 {:.2} ms); RSS {} MiB, peak {} MiB",
            reads.rate(),
            reads.percentile_ms(99.0),
            writes.rate(),
            writes.percentile_ms(99.0),
            rss >> 20,
            peak >> 20
        );
        served.stop();

        // Restart to ready, after a clean stop.
        let mut restart = f64::MAX;
        for round in 1..=self.rounds {
            let t = Instant::now();
            let served = Served::open(&self.binary, &data, &org, &token, &[]);
            let secs = t.elapsed().as_secs_f64();
            println!("restart {round}: ready in {secs:.3} s");
            restart = restart.min(secs);
            served.stop();
        }
        // And after SIGKILL while attempts are being written.
        let served = Served::open(&self.binary, &data, &org, &token, &[]);
        let killer = self.kill_under_load(served, &attempts, &token);
        let t = Instant::now();
        let served = Served::open(&self.binary, &data, &org, &token, &[]);
        let restart_after_kill = t.elapsed().as_secs_f64();
        println!("restart after SIGKILL under load ({killer}): ready in {restart_after_kill:.3} s");

        let model_bytes = file_bytes(&hookledger::model::file_in(&data));
        let log_bytes = dir_bytes(&data.join("log"));
        println!(
            "read model {} MB ({:.0} bytes per delivery); log {} MB ({:.0} bytes per delivery)",
            model_bytes / 1_000_000,
            model_bytes as f64 / shape.deliveries() as f64,
            log_bytes / 1_000_000,
            log_bytes as f64 / shape.deliveries() as f64
        );
        if last {
            served.stop();
            self.model_larger_than_cache(&data, &org, &token, shape, model_bytes);
        } else {
            served.stop();
        }
        if std::env::var_os("HOOKLEDGER_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&data);
        }
        Size {
            head,
            deliveries: shape.deliveries(),
            rss,
            peak,
            restart,
            restart_after_kill,
            model_bytes,
            log_bytes,
        }
    }

    /// Records attempts for a second, then SIGKILLs the server while wrk is
    /// still sending. Returns what was acknowledged before the kill.
    fn kill_under_load(&self, served: Served, paths: &[String], token: &str) -> String {
        let requests = requests("POST", paths, token, BODY);
        let (wrk, work, addr) = (self.wrk.clone(), self.work.path().to_owned(), served.addr);
        // wrk sees its connections reset at the kill; what it reports is not used.
        let load = std::thread::spawn(move || {
            wrk::run(
                &wrk,
                &work,
                addr,
                &requests,
                CONNECTIONS,
                Duration::from_secs(3),
            )
        });
        std::thread::sleep(Duration::from_millis(1500));
        let appends = served.metric("hookledger_store_appends");
        served.kill();
        let _ = load.join();
        format!("{appends:.0} appends acknowledged so far")
    }

    /// Cold reads and durable attempts with the read model at least ten times
    /// the cache, its pages dropped from the page cache first.
    fn model_larger_than_cache(
        &self,
        data: &Path,
        org: &str,
        token: &str,
        shape: Shape,
        model_bytes: u64,
    ) {
        let cache = DEFAULT_CACHE.min(model_bytes / 10);
        let cache_arg = cache.to_string();
        let mut args = Vec::new();
        if cache < DEFAULT_CACHE {
            println!(
                "\nthe model ({} MB) is under ten times the default cache: --cache-size {cache} for these loads",
                model_bytes / 1_000_000
            );
            args = vec!["--cache-size", cache_arg.as_str()];
        } else {
            println!(
                "\nthe model ({} MB) is {:.1} times the default cache",
                model_bytes / 1_000_000,
                model_bytes as f64 / DEFAULT_CACHE as f64
            );
        }
        let events = event_paths(shape);
        let attempts = attempt_paths(shape);

        // Cold reads.
        let served = Served::open(&self.binary, data, org, token, &args);
        let sample = served_get(&served, &events[0]);
        drop_from_page_cache(&hookledger::model::file_in(data));
        let cold = self.load(&served, &requests("GET", &events, token, ""));
        let (rss, _) = served.rss();
        served.stop();
        let noop = self.noop_with(&sample, "event.json");
        let noop_reads = self.load_addr(noop.addr, &requests("GET", &events, "", ""));
        drop(noop);
        println!(
            "cold reads: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms (RSS after: {} MiB); no-op {:.0}/s, p99 {:.2} ms",
            cold.rate(),
            cold.percentile_ms(50.0),
            cold.percentile_ms(99.0),
            cold.percentile_ms(99.9),
            rss >> 20,
            noop_reads.rate(),
            noop_reads.percentile_ms(99.0)
        );
        figure(
            &format!(
                "cold GET of a random webhook event, p99, model {}x the cache",
                num(model_bytes as f64 / cache as f64)
            ),
            cold.percentile_ms(99.0),
            "ms",
            "no-op p99",
            noop_reads.percentile_ms(99.0),
            Target::AtMost(2.0),
        );

        // Durable attempts on random deliveries of the whole ledger.
        let served = Served::open(&self.binary, data, org, token, &args);
        let answer = served.post_raw(&attempts[0], BODY);
        drop_from_page_cache(&hookledger::model::file_in(data));
        let real = self.load(&served, &requests("POST", &attempts, token, BODY));
        served.stop();
        let noop = self.noop_with(&answer, "attempt.json");
        let noop_writes = self.load_addr(noop.addr, &requests("POST", &attempts, "", BODY));
        drop(noop);
        println!(
            "attempts: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms; no-op {:.0}/s, p99 {:.2} ms",
            real.rate(),
            real.percentile_ms(50.0),
            real.percentile_ms(99.0),
            noop_writes.rate(),
            noop_writes.percentile_ms(99.0)
        );
        figure(
            "HTTP durable record-attempt, random deliveries, model larger than the cache",
            real.rate(),
            "attempts/s",
            "no-op handler",
            noop_writes.rate(),
            Target::RatioAtLeast(0.5),
        );
        figure(
            "HTTP durable record-attempt p99, model larger than the cache",
            real.percentile_ms(99.0),
            "ms",
            "no-op p99",
            noop_writes.percentile_ms(99.0),
            Target::AtMost(3.0),
        );
    }

    fn noop_with(&self, answer: &str, name: &str) -> Noop {
        let file = self.work.path().join(name);
        std::fs::write(&file, answer).expect("answer file");
        Noop::start(&file)
    }

    fn load(&self, served: &Served, requests: &Requests) -> Load {
        self.load_addr(served.addr, requests)
    }

    fn load_addr(&self, addr: std::net::SocketAddr, requests: &Requests) -> Load {
        let load = wrk::run(
            &self.wrk,
            self.work.path(),
            addr,
            requests,
            CONNECTIONS,
            self.length,
        );
        assert!(load.requests > 0, "wrk sent nothing");
        assert_eq!(load.bad_status, 0, "answers other than 2xx");
        assert_eq!(load.socket_errors, 0, "socket errors or timeouts");
        load
    }
}

fn report(measured: &[Size], noop_start: f64) {
    println!();
    let Some(first) = measured.first() else {
        return;
    };
    for size in measured {
        figure(
            &format!(
                "RSS after reads and writes, {} log events, default cache",
                size.head
            ),
            (size.rss >> 20) as f64,
            "MiB",
            "the same at the smallest size",
            (first.rss >> 20) as f64,
            Target::AtMost(512.0),
        );
        figure(
            &format!("peak RSS, {} log events", size.head),
            (size.peak >> 20) as f64,
            "MiB",
            "the same at the smallest size",
            (first.peak >> 20) as f64,
            Target::AtMost(512.0),
        );
        figure(
            &format!("restart to ready after SIGTERM, {} log events", size.head),
            size.restart,
            "s",
            "no-op server process start to first answer",
            noop_start,
            Target::AtMost(1.0),
        );
        figure(
            &format!(
                "restart to ready after SIGKILL under load, {} log events",
                size.head
            ),
            size.restart_after_kill,
            "s",
            "no-op server process start to first answer",
            noop_start,
            Target::None,
        );
        figure(
            &format!("read model on disk, {} log events", size.head),
            size.model_bytes as f64 / size.deliveries as f64,
            "bytes/delivery",
            "the log's bytes per delivery",
            size.log_bytes as f64 / size.deliveries as f64,
            Target::None,
        );
    }
    if let Some(largest) = measured.last().filter(|_| measured.len() > 1) {
        println!(
            "RSS at {} over RSS at {}: {:.2} (target <= 1.5: {})",
            largest.head,
            first.head,
            largest.rss as f64 / first.rss as f64,
            met(largest.rss as f64 <= 1.5 * first.rss as f64)
        );
        println!(
            "restart at {} over restart at {}: {:.2} (target <= 1.2: {})",
            largest.head,
            first.head,
            largest.restart / first.restart,
            met(largest.restart <= 1.2 * first.restart)
        );
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// Writes the ledger of `shape` into the embedded log at `data`.
fn generate(data: &Path, shape: Shape) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(data).expect("open the log"));
        let head = fill(&store, shape).await;
        store.close().await;
        head
    })
}

/// Paths of webhook events of the key's organization, drawn at random.
fn event_paths(shape: Shape) -> Vec<String> {
    let per_org = shape.events / ORGS;
    draw(per_org)
        .map(|n| {
            let (_, id) = shape.event(n * ORGS);
            noop::READ_ROUTE.replace("{id}", &id)
        })
        .collect()
}

/// Attempt paths of deliveries of the key's organization, drawn at random.
fn attempt_paths(shape: Shape) -> Vec<String> {
    let per_org = shape.events / ORGS;
    draw(per_org * shape.endpoints)
        .map(|n| {
            // Delivery d belongs to webhook event d / endpoints, of organization
            // that event's number modulo ORGS.
            let (w, i) = (n / shape.endpoints * ORGS, n % shape.endpoints);
            let (_, id) = shape.delivery(w * shape.endpoints + i);
            noop::ROUTE.replace("{id}", &id)
        })
        .collect()
}

/// `SAMPLE` numbers below `n`, spread at random (a fixed seed).
fn draw(n: u64) -> impl Iterator<Item = u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..SAMPLE.min(n)).map(move |_| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    })
}

fn requests(method: &'static str, paths: &[String], token: &str, body: &str) -> Requests {
    Requests {
        method,
        paths: paths.to_vec(),
        pick: Pick::Random,
        headers: vec![
            ("authorization", format!("Bearer {token}")),
            ("x-organization-id", org(0)),
            ("content-type", "application/json".to_owned()),
        ],
        body: body.to_owned(),
    }
}

fn served_get(served: &Served, path: &str) -> String {
    let (status, body) =
        served::http(served.addr, "GET", path, &served.headers(), "").expect("the server answers");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Waits until something answers HTTP at `addr`.
fn wait_answering(addr: std::net::SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while served::http(addr, "GET", "/", &[], "").is_err() {
        assert!(Instant::now() < deadline, "nothing answers at {addr}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asks the kernel to drop the file's clean pages from the page cache.
fn drop_from_page_cache(path: &Path) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    let file = std::fs::File::open(path).expect("the model file");
    posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).expect("posix_fadvise");
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}
