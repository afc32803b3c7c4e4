//! What keeping the Merkle trees costs the fold: the read model's workload
//! (`Shape::scale`: 1 KiB payloads, 2 endpoints, 3 attempts per delivery)
//! folded into a model on disk (redb, the server's) and written out, with the
//! trees kept (`model::Options::merkle_trees`, as the server always does)
//! against the same fold without them, in alternating rounds. Each leaf
//! costs two tree appends (its organization's tree and the ledger's), each a
//! SHA-256 per completed node and the nodes' rows.
//!
//! The fold is the part of recording an attempt the trees touch (the HTTP
//! request, the decision and the fsync'd append are the same with or without
//! them), so its cost bounds theirs on record-attempt throughput. Making the
//! events is timed alone and taken out of both sides.
//!
//! On this shared machine the wall time of a round swings with the other
//! work on it, so the bench also counts the process's CPU seconds (every
//! thread's: the fold's and the flusher's) on each side, which the other
//! work moves far less.
//!
//! `cargo bench --bench trees`; `HOOKLEDGER_BENCH_TREE_EVENTS` sets the
//! events folded (default 1 000 000), `HOOKLEDGER_BENCH_ROUNDS` the rounds,
//! `HOOKLEDGER_BENCH_ONLY=with` (or `without`) folds one side alone (for a
//! profile of each).

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::workload::{Shape, each_recorded};
use common::{Target, cpu_seconds, env_u64, figure};
use hookledger::kv::RedbKv;
use hookledger::model::{self, Chain, Decoded, Model};
use projections::Settings;

const BATCH: usize = 4096;

fn main() {
    common::machine("trees");
    let shape = Shape::scale(env_u64("HOOKLEDGER_BENCH_TREE_EVENTS", 1_000_000));
    let events = shape.log_events();
    let rounds = env_u64("HOOKLEDGER_BENCH_ROUNDS", 2);
    let (mut making, mut with, mut without) = (0.0, 0.0, 0.0);
    // CPU seconds of the fold on each side, the events' making taken out.
    let mut cpu = [0.0f64; 2];
    let mut sizes = [0u64; 2];
    for round in 1..=rounds {
        let t = Instant::now();
        let cpu_before = cpu_seconds();
        let mut n = 0u64;
        each_recorded(shape, |recorded| {
            n += 1;
            std::hint::black_box(&recorded);
        });
        let make = t.elapsed().as_secs_f64();
        let make_cpu = cpu_seconds() - cpu_before;
        assert_eq!(n, events);
        // Alternate which side goes first.
        let mut sides = if round % 2 == 1 {
            vec![true, false]
        } else {
            vec![false, true]
        };
        match std::env::var("HOOKLEDGER_BENCH_ONLY").as_deref() {
            Ok("with") => sides.retain(|t| *t),
            Ok("without") => sides.retain(|t| !*t),
            _ => {}
        }
        for trees in sides {
            let cpu_before = cpu_seconds();
            let (secs, bytes) = fold(shape, trees);
            let secs = secs - make;
            let used = cpu_seconds() - cpu_before - make_cpu;
            cpu[usize::from(trees)] += used;
            sizes[usize::from(trees)] = bytes;
            println!(
                "round {round}: {} trees: {secs:.3} s of folding ({:.0} events/s), {:.2} us of CPU an event, making the events {make:.3} s, model file {} MB, load average {}",
                if trees { "with" } else { "without" },
                events as f64 / secs,
                used * 1e6 / events as f64,
                bytes / 1_000_000,
                common::loadavg(),
            );
            if trees {
                with += events as f64 / secs;
            } else {
                without += events as f64 / secs;
            }
        }
        making += make;
    }
    let rounds = rounds as f64;
    println!(
        "making the events alone: {:.0} events/s",
        events as f64 * rounds / making
    );
    figure(
        &format!("fold and write out of {events} events, with the Merkle trees"),
        with / rounds,
        "events/s",
        "the same fold without the trees",
        without / rounds,
        Target::RatioAtLeast(0.95),
    );
    figure(
        "events folded and written out a CPU second, with the Merkle trees",
        events as f64 * rounds / cpu[1],
        "events/s",
        "the same fold without the trees",
        events as f64 * rounds / cpu[0],
        Target::RatioAtLeast(0.95),
    );
    figure(
        "the model file with the Merkle trees",
        sizes[1] as f64 / 1e6,
        "MB",
        "without them",
        sizes[0] as f64 / 1e6,
        Target::None,
    );
    common::done("trees");
}

/// Seconds to fold `shape` into a fresh model on disk and close it, and the
/// model file's size then.
fn fold(shape: Shape, trees: bool) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let kv = Arc::new(
        RedbKv::open(
            &dir.path().join("model.redb"),
            &model::tables::ALL,
            64 << 20,
        )
        .expect("redb"),
    );
    let options = model::Options {
        merkle_trees: trees,
        ..model::Options::bulk(Settings::default(), model::Memory::of(192 << 20).overlay)
    };
    let model = Model::start(kv, Chain::default(), None, options).expect("model");
    let t = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    each_recorded(shape, |recorded| {
        let hash = position_hash(recorded.position);
        batch.push(Decoded { recorded, hash });
        if batch.len() == BATCH {
            model.apply(&batch).expect("fold");
            batch.clear();
        }
    });
    model.apply(&batch).expect("fold");
    model.close().expect("close");
    let secs = t.elapsed().as_secs_f64();
    drop(model);
    let bytes = std::fs::metadata(dir.path().join("model.redb")).map_or(0, |m| m.len());
    (secs, bytes)
}

/// A distinct stand-in for each event's chain hash.
fn position_hash(position: u64) -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..8].copy_from_slice(&position.to_be_bytes());
    hash
}
