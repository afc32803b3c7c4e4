//! Tree heads and proofs on the built binary: p99 latency of
//! `GET /v1/ledger/proofs/inclusion` and `/consistency` over loopback, one
//! request per connection from this process, against the same server's
//! plain read of a delivery (`GET /v1/outbound-webhook-deliveries/{id}`) and
//! its no-op `/healthz`, requests of the four kinds interleaved so that each
//! sees the same machine. Also the rebuild rate of the log with the trees
//! built (`projections rebuild` on it, as the rebuild bench runs it).
//!
//! The ledger is the restart bench's mix (`Shape::for_log_events`, 8
//! organizations, so one organization's tree holds an eighth of the events);
//! the proofs are the caller's organization's, for random sequence numbers
//! and sizes up to its tree's.
//!
//! `cargo bench --bench proofs`; `HOOKLEDGER_BENCH_PROOF_EVENTS` sets the
//! log's size (default 10 000 000), `HOOKLEDGER_BENCH_PROOF_REQUESTS` the
//! requests of each kind per round (default 2 000).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::served::{self, Served, http};
use common::workload::{Shape, fill};
use common::{Target, env_u64, figure, percentile_ms};
use hookledger::store::embedded::EmbeddedStore;

fn main() {
    common::machine("proofs");
    let total = env_u64("HOOKLEDGER_BENCH_PROOF_EVENTS", 10_000_000);
    let per_round = env_u64("HOOKLEDGER_BENCH_PROOF_REQUESTS", 2_000);
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let shape = Shape::for_log_events(total);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let head = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(&data).expect("open"));
        let head = fill(&store, shape).await;
        store.close().await;
        head
    });
    println!(
        "generated {head} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let binary = served::binary();
    let out = served::command(&binary, &data)
        .args(["projections", "rebuild"])
        .output()
        .expect("projections rebuild runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rebuild: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rebuilt "))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no rebuild line in: {stdout}"));
    figure(
        &format!("rebuild of {head} events with the Merkle trees"),
        rate,
        "events/s",
        "the target",
        2e6,
        Target::AtLeast(2e6),
    );

    let (org, delivery) = shape.delivery(0);
    let token = served::create_key(&binary, &data, &org);
    let server = Served::open(&binary, &data, &org, &token, &[]);
    let headers = server.headers();
    let get = |path: &str| -> (u32, String) {
        let t = Instant::now();
        let (status, body) = http(server.addr, "GET", path, &headers, "").expect("answered");
        let micros = t.elapsed().as_micros() as u32;
        assert_eq!(status, 200, "{path}: {body}");
        (micros, body)
    };
    let (_, body) = get("/v1/ledger/tree-head");
    let tree: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let size = tree["treeSize"].as_u64().expect("treeSize");
    println!(
        "{org}'s tree holds {size} of the ledger's {} events",
        head + 1
    );

    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        1 + seed % below
    };
    let kinds = ["healthz", "plain read", "inclusion", "consistency"];
    let mut samples: [Vec<u32>; 4] = Default::default();
    for round in 1..=rounds {
        for _ in 0..per_round {
            let m = random(size);
            let sequence = random(m);
            let from = random(size);
            let paths = [
                "/healthz".to_owned(),
                format!("/v1/outbound-webhook-deliveries/{delivery}"),
                format!("/v1/ledger/proofs/inclusion?sequence={sequence}&treeSize={m}"),
                format!("/v1/ledger/proofs/consistency?from={from}&to={size}"),
            ];
            for (kind, path) in paths.iter().enumerate() {
                samples[kind].push(get(path).0);
            }
        }
        println!(
            "round {round}: {per_round} requests of each kind; load {}",
            common::loadavg()
        );
    }
    let mut p99 = [0.0; 4];
    for (kind, times) in samples.iter_mut().enumerate() {
        times.sort_unstable();
        p99[kind] = percentile_ms(times, 99.0);
        println!(
            "{}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            kinds[kind],
            percentile_ms(times, 50.0),
            p99[kind],
            percentile_ms(times, 100.0)
        );
    }
    for kind in [2, 3] {
        figure(
            &format!(
                "{} proof p99 at {} events ({size} in the tree)",
                kinds[kind],
                head + 1
            ),
            p99[kind],
            "ms",
            "a plain read of a delivery, p99",
            p99[1],
            Target::AtMost(2.0),
        );
    }
    figure(
        "plain read p99",
        p99[1],
        "ms",
        "the no-op /healthz, p99",
        p99[0],
        Target::None,
    );
    server.stop();
    common::done("proofs");
}
