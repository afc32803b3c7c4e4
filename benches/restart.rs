//! Restart to ready: open the embedded log of 10 million events, load the
//! read-model snapshot, check it against the log, replay the tail written after
//! it, and stand ready (the model caught up with the head). The baseline is a
//! plain sequential read of every file in the data directory: what a restart that
//! looked at everything once would cost at the least.
//!
//! `cargo bench --bench restart`; `HOOKLEDGER_BENCH_EVENTS` sets the log's size
//! (default 10 million, the size the restart target is set at) and `HOOKLEDGER_BENCH_TAIL` the events
//! written after the snapshot (default 10 000).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::workload::{Shape, fill};
use common::{Target, env_u64, figure};
use hookledger::node::{Node, snapshot_file};
use hookledger::snapshot::Snapshot;
use hookledger::store::EventStore;
use hookledger::store::embedded::EmbeddedStore;

fn main() {
    common::machine("restart");
    let total = env_u64("HOOKLEDGER_BENCH_EVENTS", 10_000_000);
    let tail = env_u64("HOOKLEDGER_BENCH_TAIL", 10_000).min(total);
    let shape = Shape::for_log_events(total);
    let temp = tempfile::tempdir().expect("temp dir");
    // `HOOKLEDGER_BENCH_DIR` keeps the generated ledger there and reuses it.
    let dir = std::env::var_os("HOOKLEDGER_BENCH_DIR")
        .map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    let reuse = dir.join("log").exists() && snapshot_file(&dir).exists();
    let snapshot = snapshot_file(&dir);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let started = Instant::now();
    let head = runtime().block_on(async {
        let store = Arc::new(EmbeddedStore::open(&dir).expect("open"));
        if reuse {
            let head = store.head();
            store.close().await;
            return head;
        }
        let head = fill(&store, shape).await;
        println!(
            "generated {head} events ({} deliveries) in {:.1} s",
            shape.deliveries(),
            started.elapsed().as_secs_f64()
        );
        // The snapshot a server saved `tail` events before it stopped.
        let t = Instant::now();
        let until = head - tail;
        let mut state = Snapshot::default();
        while state.position() < until {
            let want = (until - state.position()).min(8192) as usize;
            for event in store
                .read_all(state.position() + 1, want)
                .await
                .expect("read")
            {
                state.apply(&event).expect("apply");
            }
        }
        state.save(&snapshot).expect("save snapshot");
        println!(
            "snapshot at position {until} written in {:.1} s ({} MB)",
            t.elapsed().as_secs_f64(),
            std::fs::metadata(&snapshot).map_or(0, |m| m.len()) / 1_000_000
        );
        store.close().await;
        head
    });
    let bytes = common::read_all_files(&dir);
    let t = Instant::now();
    let loaded = Snapshot::load(&snapshot).expect("snapshot loads");
    println!(
        "snapshot load alone: {:.3} s ({} MB)",
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&snapshot).map_or(0, |m| m.len()) / 1_000_000
    );
    let t = Instant::now();
    drop(loaded);
    println!("dropping it: {:.3} s", t.elapsed().as_secs_f64());
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let (mut plain, mut restart) = (0.0, 0.0);
    for round in 1..=rounds {
        let t = Instant::now();
        assert_eq!(common::read_all_files(&dir), bytes);
        let plain_secs = t.elapsed().as_secs_f64();
        let secs = runtime().block_on(async {
            // As `hookledger serve` starts: the store opens while the snapshot loads.
            let t = Instant::now();
            let mut store = None;
            let node = Node::open(
                async {
                    // The options `serve` opens with: claims are rebuilt too.
                    let options = hookledger::store::embedded::Options {
                        claims_of: Some(hookledger::ledger::store_claims_of()),
                        ..Default::default()
                    };
                    let opened = Arc::new(EmbeddedStore::open_with(&dir, options)?);
                    println!("  store open {:.3} s", t.elapsed().as_secs_f64());
                    store = Some(opened.clone());
                    Ok::<_, hookledger::store::Error>(opened as Arc<dyn EventStore>)
                },
                snapshot.clone(),
            )
            .await
            .expect("open");
            let store = store.expect("the store opened");
            let started = t.elapsed().as_secs_f64();
            node.ready().await.expect("ready");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "  snapshot loaded and checked at {started:.3} s, tail replayed by {secs:.3} s"
            );
            assert_eq!(node.projector.position(), head);
            assert!(node.projector.caught_up());
            store.close().await;
            secs
        });
        println!(
            "round {round}: plain read of {} MB {plain_secs:.3} s, restart to ready {secs:.3} s",
            bytes / 1_000_000
        );
        plain += plain_secs;
        restart += secs;
    }
    let rounds = rounds as f64;
    figure(
        &format!("restart to ready, {head} events, snapshot {tail} behind"),
        restart / rounds,
        "s",
        "plain sequential read of the data directory",
        plain / rounds,
        Target::AtMost(2.0),
    );
    common::done("restart");
}
