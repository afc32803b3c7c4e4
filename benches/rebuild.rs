//! Rebuild: events per second replayed from the embedded log through the
//! projections (the `projections rebuild` path: read, check, decode, fold, digest),
//! against a plain sequential read of the same segment files.
//!
//! `cargo bench --bench rebuild`; `HOOKLEDGER_BENCH_REBUILD_EVENTS` sets the log's
//! size (default 2 million events, the restart bench's mix);
//! `HOOKLEDGER_BENCH_DIR` keeps the generated log in that directory and reuses it
//! on the next run (for profiling the replay alone).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::workload::{Shape, fill};
use common::{Target, env_u64, figure};
use hookledger::snapshot::Snapshot;
use hookledger::store::EventStore;
use hookledger::store::embedded::EmbeddedStore;

fn main() {
    common::machine("rebuild");
    let total = env_u64("HOOKLEDGER_BENCH_REBUILD_EVENTS", 2_000_000);
    let shape = Shape::for_log_events(total);
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::var_os("HOOKLEDGER_BENCH_DIR")
        .map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    let reuse = dir.join("log").exists();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let head = runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(&dir).expect("open"));
        let head = if reuse {
            store.head()
        } else {
            fill(&store, shape).await
        };
        store.close().await;
        head
    });
    println!(
        "generated {head} events ({} deliveries) in {:.1} s",
        shape.deliveries(),
        started.elapsed().as_secs_f64()
    );
    let log = dir.join("log");
    // Warm the page cache so both sides read from memory.
    let bytes = common::read_all_files(&log);
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let (mut plain, mut rebuild, mut command) = (0.0, 0.0, 0.0);
    for round in 1..=rounds {
        let t = Instant::now();
        let read = common::read_all_files(&log);
        let plain_secs = t.elapsed().as_secs_f64();
        assert_eq!(read, bytes);
        let (rebuilt, secs, opened) = runtime.block_on(async {
            let t = Instant::now();
            let store: Arc<dyn EventStore> =
                Arc::new(EmbeddedStore::open_read_only(&dir).expect("open read-only"));
            let opened = t.elapsed().as_secs_f64();
            let cpu = common::cpu_seconds();
            let t = Instant::now();
            let rebuilt = hookledger::cli::projections::replay(
                store.as_ref(),
                Snapshot::default(),
                "rebuild",
            )
            .await
            .expect("replay");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "  replay kept {:.2} cores busy",
                (common::cpu_seconds() - cpu) / secs
            );
            (rebuilt, secs, opened)
        });
        assert_eq!(rebuilt.position(), head);
        let deliveries: usize = rebuilt
            .model
            .tenants
            .values()
            .map(|t| t.deliveries.len())
            .sum();
        assert_eq!(deliveries as u64, shape.deliveries());
        println!(
            "round {round}: plain read {:.3} s ({:.0} MB/s), read-only open {opened:.3} s, replay {secs:.3} s",
            plain_secs,
            bytes as f64 / plain_secs / 1e6
        );
        plain += head as f64 / plain_secs;
        rebuild += head as f64 / secs;
        command += head as f64 / (secs + opened);
    }
    let rounds = rounds as f64;
    figure(
        &format!("rebuild of {head} events"),
        rebuild / rounds,
        "events/s",
        &format!(
            "plain sequential read of the {} MB of segments",
            bytes / 1_000_000
        ),
        plain / rounds,
        Target::None,
    );
    figure(
        "rebuild rate (replay through the projections)",
        rebuild / rounds,
        "events/s",
        "the target",
        2e6,
        Target::AtLeast(2e6),
    );
    figure(
        "projections rebuild with the read-only open",
        command / rounds,
        "events/s",
        "plain sequential read",
        plain / rounds,
        Target::None,
    );
    common::done("rebuild");
}
