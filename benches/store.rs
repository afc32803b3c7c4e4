//! Store appends with 1, 16 and 256 concurrent writers against the disk's own
//! limit: one 256-byte write plus `fdatasync` per append, in a loop, in the same
//! directory. Group commit is what lets many writers beat that limit; the figures
//! say by how much, and how many fsyncs each append cost.
//!
//! `cargo bench --bench store`; `HOOKLEDGER_BENCH_SECS` sets each phase's length.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Target, figure, phase};
use hookledger::store::embedded::EmbeddedStore;
use hookledger::store::{EventStore, ExpectedVersion, NewEvent};

/// Appends/s of one writer doing a 256-byte positioned write and an fdatasync,
/// in a fresh file that grows with each write or, if `allocated`, inside one
/// of zeros written ahead (as the store keeps its active segment).
fn raw_fsync_rate(dir: &std::path::Path, length: Duration, allocated: bool) -> f64 {
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let file = std::fs::File::create(&path).expect("raw file");
    if allocated {
        // Written zeros, as the store allocates: not just fallocate'd blocks.
        let zeros = vec![0u8; 1 << 20];
        for i in 0..64 {
            file.write_all_at(&zeros, i << 20).expect("zeros");
        }
        file.sync_all().expect("fsync");
    }
    let record = [0x5a_u8; 256];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < length {
        file.write_all_at(&record, n * 256).expect("write");
        file.sync_data().expect("fdatasync");
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// An event whose stored data is 256 bytes of canonical JSON.
fn event(writer: usize) -> NewEvent {
    let prefix = format!(r#"{{"writer":{writer},"pad":""#);
    let pad = "x".repeat(256 - prefix.len() - 2);
    NewEvent {
        event_type: "BenchAppended".into(),
        schema_version: 1,
        data: format!("{prefix}{pad}\"}}").into_bytes(),
        metadata: b"{}".to_vec(),
        content: Vec::new(),
    }
}

struct Run {
    appends_per_sec: f64,
    fsyncs_per_append: f64,
}

fn store_rate(writers: usize, length: Duration) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open"));
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        // Warm up: one append to create the segment.
        store
            .append("warmup", ExpectedVersion::Any, vec![event(0)])
            .await
            .expect("append");
        let before = store.stats();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let stream = format!("delivery-bench-{w}");
                while !stop.load(Ordering::Relaxed) {
                    store
                        .append(&stream, ExpectedVersion::Any, vec![event(w)])
                        .await
                        .expect("append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(length).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("writer task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let after = store.stats();
        let appends = after.appends - before.appends;
        assert_eq!(appends, count.load(Ordering::Relaxed));
        store.close().await;
        Run {
            appends_per_sec: appends as f64 / elapsed,
            fsyncs_per_append: (after.fsyncs - before.fsyncs) as f64 / appends as f64,
        }
    })
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects writer counts.
    let filter: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    common::machine("store");
    let length = phase();
    let dir = tempfile::tempdir().expect("temp dir");
    for writers in [1usize, 16, 256] {
        if !filter.is_empty() && !filter.contains(&writers) {
            continue;
        }
        // The disk is shared and its speed drifts: measure it on both sides.
        let before = raw_fsync_rate(dir.path(), length / 2, false);
        let run = store_rate(writers, length);
        let raw = (before + raw_fsync_rate(dir.path(), length / 2, false)) / 2.0;
        let target = if writers == 256 {
            Target::RatioAtLeast(20.0)
        } else {
            Target::None
        };
        figure(
            &format!("store appends, {writers} writers"),
            run.appends_per_sec,
            "appends/s",
            "one 256-byte write + fdatasync per append",
            raw,
            target,
        );
        println!(
            "figure: store fsyncs per append, {writers} writers = {:.4} | baseline raw loop = 1.0000 | ratio {:.4}",
            run.fsyncs_per_append, run.fsyncs_per_append
        );
        if writers == 1 {
            // The stricter baseline: the raw loop with the store's own trick.
            let allocated = raw_fsync_rate(dir.path(), length / 2, true);
            figure(
                "store appends, 1 writer, against an allocated file",
                run.appends_per_sec,
                "appends/s",
                "one 256-byte write + fdatasync per append inside zeros written ahead",
                allocated,
                Target::None,
            );
        }
    }
    common::done("store");
}
