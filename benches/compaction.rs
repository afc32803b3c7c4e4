//! Compaction: how fast `remove_contents` rewrites the embedded log's
//! segments without the erased bodies, in MB/s of segment read, against a
//! plain copy of the same segment files (read, write, fsync) in the same run,
//! measured before and after it.
//!
//! The ledger is the benches' usual mix with payloads (schema-2 events, each
//! body beside its record); one body in ten is erased, spread over the whole
//! log, so every segment is rewritten. `HOOKLEDGER_BENCH_LOG_EVENTS` sets the
//! ledger's size (default 300 000 log events), `HOOKLEDGER_BENCH_FILLER` the
//! bytes of filler per payload (default 1024).
//!
//! `cargo bench --bench compaction`

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use common::workload::{Shape, fill};
use common::{Target, env_u64, figure};
use hookledger::store::EventStore;
use hookledger::store::embedded::EmbeddedStore;

const MB: f64 = 1e6;

/// The segment files of the log in `dir`, by name.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory")
        .map(|e| e.expect("a log entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// MB/s of a plain copy of `files` into `into`: streamed in 1 MiB reads and
/// writes, each copy synced, as a compaction does.
fn copy_rate(files: &[PathBuf], into: &Path) -> f64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let started = Instant::now();
    for (i, file) in files.iter().enumerate() {
        let mut from = std::fs::File::open(file).expect("a segment");
        let mut to = std::fs::File::create(into.join(format!("{i}.copy"))).expect("a copy");
        loop {
            let n = from.read(&mut buf).expect("reading a segment");
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).expect("writing a copy");
            bytes += n as u64;
        }
        to.sync_data().expect("syncing a copy");
    }
    let rate = bytes as f64 / MB / started.elapsed().as_secs_f64();
    for i in 0..files.len() {
        let _ = std::fs::remove_file(into.join(format!("{i}.copy")));
    }
    rate
}

fn main() {
    common::machine("compaction");
    let log_events = env_u64("HOOKLEDGER_BENCH_LOG_EVENTS", 300_000);
    let filler = env_u64("HOOKLEDGER_BENCH_FILLER", 1024) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let copies = tempfile::tempdir_in(dir.path()).expect("copy dir");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("store"));
        let shape = Shape {
            filler,
            ..Shape::for_log_events(log_events)
        };
        let head = fill(&store, shape).await;
        // One body in ten, over the whole log.
        let mut holding = Vec::new();
        let mut from = 1;
        while from <= head {
            let events = store.read_all(from, 4096).await.expect("read");
            from += events.len() as u64;
            holding.extend(events.iter().filter(|e| !e.content.is_empty()).map(|e| e.position));
        }
        let erase: Vec<u64> = holding.iter().copied().step_by(10).collect();
        let files = segments(dir.path());
        let bytes: u64 = files.iter().map(|f| f.metadata().expect("size").len()).sum();
        println!(
            "log: {head} events, {} bodies, {} segment files, {:.1} MB; erasing {} bodies",
            holding.len(),
            files.len(),
            bytes as f64 / MB,
            erase.len()
        );

        let copy_before = copy_rate(&files, copies.path());
        let started = Instant::now();
        let removed = store.remove_contents(&erase).await.expect("compaction");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(removed, erase.len() as u64);
        let stats = store.compaction_stats();
        let copy_after = copy_rate(&segments(dir.path()), copies.path());
        let rate = stats.bytes_read as f64 / MB / elapsed;
        println!(
            "compaction: {} segments, {:.1} MB read, {:.1} MB written, {elapsed:.2} s; copies {copy_before:.1} and {copy_after:.1} MB/s",
            stats.segments,
            stats.bytes_read as f64 / MB,
            stats.bytes_written as f64 / MB,
        );
        figure(
            "compaction rate (segment MB read per s)",
            rate,
            "MB/s",
            "plain copy of the same segments (read + write + fsync), mean of before and after",
            (copy_before + copy_after) / 2.0,
            Target::None,
        );
        store.close().await;
    });
    common::done("compaction");
}
