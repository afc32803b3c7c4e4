//! Restart to ready: open the embedded log of 10 million events, load the
//! read-model snapshot, check it against the log, replay the tail written after
//! it, and stand ready (the model caught up with the head). The baseline is a
//! plain sequential read of every file in the data directory: what a restart that
//! looked at everything once would cost at the least.
//!
//! `cargo bench --bench restart`; `HOOKLEDGER_BENCH_EVENTS` sets the log's size
//! (default 10 million, the figure) and `HOOKLEDGER_BENCH_TAIL` the events
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
    let dir = tempfile::tempdir().expect("temp dir");
    let snapshot = snapshot_file(dir.path());
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let started = Instant::now();
    let head = runtime().block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
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
    let bytes = common::read_all_files(dir.path());
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let (mut plain, mut restart) = (0.0, 0.0);
    for round in 1..=rounds {
        let t = Instant::now();
        assert_eq!(common::read_all_files(dir.path()), bytes);
        let plain_secs = t.elapsed().as_secs_f64();
        let secs = runtime().block_on(async {
            let t = Instant::now();
            let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
            let node = Node::start(store.clone(), Some(snapshot.clone())).await;
            node.ready().await.expect("ready");
            let secs = t.elapsed().as_secs_f64();
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
