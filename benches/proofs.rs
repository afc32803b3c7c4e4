//! Tree heads and proofs on the built binary: p99 latency of
//! `GET /v1/ledger/proofs/inclusion` and `/consistency` over loopback, one
//! request per connection from this process, against the same server's
//! plain read of a delivery (`GET /v1/outbound-webhook-deliveries/{id}`) and
//! its no-op `/healthz`, requests of the four kinds interleaved so that each
//! sees the same machine. The routes prove in the caller organization's tree
//! only; the ledger's tree (every event, in position order) is proved from
//! the same model opened in this process once the server has stopped, through
//! the same `View` calls, beside the organization's tree and a plain read of a
//! delivery there.
//!
//! Two ledgers:
//! - by default the restart bench's mix (`Shape::for_log_events`, 8
//!   organizations, so one organization's tree holds an eighth of the
//!   events), written and rebuilt here, with the rebuild's rate as a figure;
//!   the plain read is of one delivery;
//! - with `HOOKLEDGER_BENCH_PROOF_LEDGER=mix`, the queries bench's ledger
//!   (`common/mix_ledger.rs`: one organization, so its tree is nearly the
//!   ledger's; `HOOKLEDGER_BENCH_QUERY_ATTEMPTS` attempts, kept and reused at
//!   `HOOKLEDGER_BENCH_QUERY_DATA`), served with a cache at most a tenth of
//!   the model, as the queries bench serves it; plain reads of deliveries
//!   drawn at random.
//!
//! The proofs are for random leaves and sizes up to the tree's.
//!
//! `cargo bench --bench proofs`; `HOOKLEDGER_BENCH_PROOF_EVENTS` sets the
//! default ledger's size (default 10 000 000), `HOOKLEDGER_BENCH_PROOF_REQUESTS`
//! the requests of each kind per round (default 2 000).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::mix::{Mix, mix64};
use common::mix_ledger::{self, Ledger};
use common::served::{self, Served, http};
use common::workload::{Shape, fill};
use common::{Target, env_u64, figure, percentile_ms};
use hookledger::model::{self, Model, Options, Tree};
use hookledger::store::embedded::EmbeddedStore;

/// Deliveries drawn at random for the plain read, on the `Mix` ledger.
const SAMPLE: u64 = 5_000;

/// The ledger measured: where it is, whose tree, and the deliveries read as
/// the baseline.
struct Measured {
    data: PathBuf,
    org: String,
    deliveries: Vec<String>,
    /// The server's `--cache-size`; `None`: its default.
    cache: Option<u64>,
    /// The Mix ledger, deleted at the end unless it is kept.
    ledger: Option<Ledger>,
}

fn main() {
    common::machine("proofs");
    let per_round = env_u64("HOOKLEDGER_BENCH_PROOF_REQUESTS", 2_000);
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let binary = served::binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let measured = if std::env::var("HOOKLEDGER_BENCH_PROOF_LEDGER").is_ok_and(|v| v == "mix") {
        let mix = Mix::with_attempts(env_u64("HOOKLEDGER_BENCH_QUERY_ATTEMPTS", 10_000_000));
        let ledger = Ledger::built(&binary, dir.path(), mix);
        let mix = ledger.mix;
        Measured {
            data: ledger.data.clone(),
            org: mix.org(),
            deliveries: (0..SAMPLE.min(mix.deliveries()))
                .map(|i| mix.delivery(mix64(i ^ 0xd4a3) % mix.deliveries()))
                .collect(),
            cache: Some(ledger.cache()),
            ledger: Some(ledger),
        }
    } else {
        shape_ledger(&binary, dir.path())
    };
    if mix_ledger::build_only() {
        return;
    }
    let data = &measured.data;
    let org = &measured.org;
    let token = served::create_key(&binary, data, org);
    let cache_arg = measured.cache.map(|c| c.to_string());
    let args: Vec<&str> = cache_arg
        .iter()
        .flat_map(|c| ["--cache-size", c.as_str()])
        .collect();
    let model_bytes = std::fs::metadata(hookledger::model::file_in(data)).map_or(0, |m| m.len());
    println!(
        "read model {} MB; server args {args:?}",
        model_bytes / 1_000_000
    );
    let server = Served::open(&binary, data, org, &token, &args);
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
    println!("{org}'s tree holds {size} events");

    let mut random = xorshift(0x2545_f491_4f6c_dd1d);
    let kinds = ["healthz", "plain read", "inclusion", "consistency"];
    let mut samples: [Vec<u32>; 4] = Default::default();
    for round in 1..=rounds {
        for _ in 0..per_round {
            let m = random(size);
            let sequence = random(m);
            let from = random(size);
            let delivery =
                &measured.deliveries[random(measured.deliveries.len() as u64) as usize - 1];
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
    server.stop();
    let p99 = summary("over HTTP", &kinds, &mut samples, 1e3);
    for kind in [2, 3] {
        figure(
            &format!(
                "{} proof p99 over HTTP, the organization's tree ({size} leaves)",
                kinds[kind]
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

    in_process(&measured, per_round * rounds);
    if let Some(ledger) = measured.ledger {
        ledger.finish();
    }
    common::done("proofs");
}

/// The restart bench's mix of `HOOKLEDGER_BENCH_PROOF_EVENTS` log events,
/// written under `dir` and rebuilt, with the rebuild's rate as a figure.
fn shape_ledger(binary: &Path, dir: &Path) -> Measured {
    let total = env_u64("HOOKLEDGER_BENCH_PROOF_EVENTS", 10_000_000);
    let shape = Shape::for_log_events(total);
    let data = dir.join("data");
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
    let out = served::command(binary, &data)
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
    Measured {
        data,
        org,
        deliveries: vec![delivery],
        cache: None,
        ledger: None,
    }
}

/// The proofs of the ledger's tree, which no route serves (a tenant sees its
/// own tree only), and those of the organization's beside them: read from the
/// model itself, opened in this process as the server opens it (the same
/// cache), through the same `View` calls as the routes, with a plain read of
/// a delivery through that view as the baseline, the kinds interleaved.
fn in_process(measured: &Measured, requests: u64) {
    let cache = measured.cache.unwrap_or(256 << 20) as usize;
    // The server's split of `--cache-size`: a quarter to the log's index,
    // three quarters of the rest to the model's pages.
    let memory = model::Memory::of(cache - cache / 4);
    let stored =
        model::open(&model::file_in(&measured.data), memory.page_cache).expect("the model opens");
    let live = Model::start(stored.kv, stored.tip, stored.log_id, Options::default())
        .expect("the model starts");
    let view = live.view();
    let org = Tree::Org(&measured.org);
    let sizes = [
        view.tree(&org).expect("the organization's tree").size,
        view.tree(&Tree::Ledger).expect("the ledger's tree").size,
    ];
    println!(
        "\nin this process: the organization's tree holds {}, the ledger's {}",
        sizes[0], sizes[1]
    );
    let kinds = [
        "plain read",
        "org inclusion",
        "org consistency",
        "ledger inclusion",
        "ledger consistency",
    ];
    let mut samples: [Vec<u32>; 5] = Default::default();
    let mut random = xorshift(0x9e37_79b9_7f4a_7c15);
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_nanos() as u32
    };
    for _ in 0..requests {
        let delivery = &measured.deliveries[random(measured.deliveries.len() as u64) as usize - 1];
        samples[0].push(time(&mut || {
            let found = view.delivery(&measured.org, delivery).expect("read");
            assert!(found.is_some(), "delivery {delivery} not found");
        }));
        for (t, tree) in [&org, &Tree::Ledger].into_iter().enumerate() {
            let size = sizes[t];
            let (m, from) = (random(size), random(size));
            let index = random(m) - 1;
            samples[1 + 2 * t].push(time(&mut || {
                let (_, path) = view.leaf_and_path(tree, index, m).expect("inclusion");
                std::hint::black_box(path);
            }));
            samples[2 + 2 * t].push(time(&mut || {
                let proof = view
                    .consistency_proof(tree, from, size)
                    .expect("consistency");
                std::hint::black_box(proof);
            }));
        }
    }
    drop(view);
    live.close().expect("the model closes");
    let p99 = summary("in this process", &kinds, &mut samples, 1e6);
    for kind in 1..kinds.len() {
        figure(
            &format!(
                "{} proof p99 in process ({} leaves)",
                kinds[kind],
                sizes[(kind - 1) / 2]
            ),
            p99[kind],
            "ms",
            "a plain read of a delivery in process, p99",
            p99[0],
            Target::AtMost(2.0),
        );
    }
}

/// Sorts each kind's samples (`per_ms` of them to a millisecond), prints
/// p50, p99 and the worst, and returns the p99s in milliseconds.
fn summary<const N: usize>(
    what: &str,
    kinds: &[&str; N],
    samples: &mut [Vec<u32>; N],
    per_ms: f64,
) -> [f64; N] {
    let mut p99 = [0.0; N];
    for (kind, times) in samples.iter_mut().enumerate() {
        times.sort_unstable();
        // `percentile_ms` reads microseconds.
        let at = |p| percentile_ms(times, p) * 1e3 / per_ms;
        p99[kind] = at(99.0);
        println!(
            "{what}, {}: p50 {:.4} ms, p99 {:.4} ms, max {:.4} ms",
            kinds[kind],
            at(50.0),
            p99[kind],
            at(100.0)
        );
    }
    p99
}

/// Numbers from 1 to `below`, from a fixed xorshift sequence.
fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        1 + seed % below
    }
}
