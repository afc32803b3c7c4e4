//! Rebuild: events per second of `hookledger projections rebuild`, the built
//! binary as an operator runs it, replaying the embedded log from position 1
//! through the projections into a fresh read model on disk and swapping it
//! in; against a plain sequential read of the same segment files.
//!
//! The ledger is the read model's workload (`Shape::scale`: 1 KiB payloads, 2
//! endpoints, 3 attempts per delivery, each delivery's attempts close together
//! in the log as retries are); `HOOKLEDGER_BENCH_MIX=rounds` replays the older
//! mix instead (4 endpoints, attempts in rounds over every delivery, so each
//! delivery's rows are touched again long after they were written out).
//!
//! `cargo bench --bench rebuild`; `HOOKLEDGER_BENCH_REBUILD_EVENTS` sets the log's
//! size (default 2 million events);
//! `HOOKLEDGER_BENCH_DIR` keeps the generated log in that directory and reuses it
//! on the next run (for profiling the replay alone);
//! `HOOKLEDGER_BENCH_AGAINST` names another `hookledger` executable whose
//! rebuild of the same log runs in the same rounds, each round alternating
//! which goes first (a build with the Merkle trees switched off, say), and
//! prints this build's rate against it. Each build's model is measured after
//! its first rebuild: the file, and each table's pages per attempt.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use common::tables::{report_tables, table_sizes};
use common::workload::{Shape, fill};
use common::{Target, env_u64, figure};
use hookledger::store::EventStore;
use hookledger::store::embedded::EmbeddedStore;

fn main() {
    common::machine("rebuild");
    let total = env_u64("HOOKLEDGER_BENCH_REBUILD_EVENTS", 2_000_000);
    // `HOOKLEDGER_BENCH_MIX=rounds`: the older mix, attempts in rounds over
    // every delivery (no two attempts of a delivery close together in the log).
    let shape = match std::env::var("HOOKLEDGER_BENCH_MIX").as_deref() {
        Ok("rounds") => Shape::for_log_events(total),
        _ => Shape::scale(total),
    };
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
    let against = std::env::var_os("HOOKLEDGER_BENCH_AGAINST").map(std::path::PathBuf::from);
    let ours = std::path::PathBuf::from(env!("CARGO_BIN_EXE_hookledger"));
    let (mut plain, mut rebuild, mut command, mut other) = (0.0, 0.0, 0.0, 0.0);
    for round in 1..=rounds {
        let t = Instant::now();
        let read = common::read_all_files(&log);
        let plain_secs = t.elapsed().as_secs_f64();
        assert_eq!(read, bytes);
        let mut sides = vec![(true, &ours)];
        if let Some(against) = &against {
            sides.push((false, against));
            if round % 2 == 0 {
                sides.reverse();
            }
        }
        for (this, binary) in sides {
            let (replay_secs, wall) = rebuild_with(binary, &dir, head);
            let side = if this { "this build:" } else { "against:" };
            println!(
                "round {round}: {side} plain read {plain_secs:.3} s ({:.0} MB/s), replay {replay_secs:.3} s ({:.0} events/s), the whole command {wall:.3} s",
                bytes as f64 / plain_secs / 1e6,
                head as f64 / replay_secs,
            );
            // What each build's model takes, from the file it just left.
            if round == 1 {
                let model = hookledger::model::dir_in(&dir).join("readmodel.redb");
                let file = std::fs::metadata(&model).map_or(0, |m| m.len());
                println!(
                    "{side} the read model: {} MB, {:.0} bytes per attempt",
                    file / 1_000_000,
                    file as f64 / shape.attempts as f64
                );
                report_tables(&table_sizes(&model), shape.attempts);
            }
            if this {
                rebuild += head as f64 / replay_secs;
                command += head as f64 / wall;
            } else {
                other += head as f64 / replay_secs;
            }
        }
        plain += head as f64 / plain_secs;
    }
    let model = dir_bytes(&hookledger::model::dir_in(&dir));
    println!(
        "the read model: {} MB on disk, {:.0} bytes per delivery",
        model / 1_000_000,
        model as f64 / shape.deliveries() as f64
    );
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
        "rebuild rate (the replay of projections rebuild)",
        rebuild / rounds,
        "events/s",
        "the target",
        2e6,
        Target::AtLeast(2e6),
    );
    figure(
        "projections rebuild, the whole command (open, replay, write out, swap)",
        command / rounds,
        "events/s",
        "plain sequential read",
        plain / rounds,
        Target::None,
    );
    if let Some(against) = &against {
        figure(
            "rebuild rate, this build",
            rebuild / rounds,
            "events/s",
            &format!("the same log rebuilt by {}", against.display()),
            other / rounds,
            Target::None,
        );
    }
    common::done("rebuild");
}

/// Runs `binary`'s `projections rebuild` of the ledger in `dir`: the seconds
/// its replay took, as it prints them, and the whole command's.
fn rebuild_with(binary: &std::path::Path, dir: &std::path::Path, head: u64) -> (f64, f64) {
    let t = Instant::now();
    let out = Command::new(binary)
        .args(["projections", "rebuild"])
        .env("HOOKLEDGER_DATA", dir)
        .env("HOOKLEDGER_LOG_FORMAT", "json")
        .output()
        .expect("projections rebuild runs");
    let wall = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rebuild failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "rebuilt N events in X s (R events/s)"
    let replay_secs: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rebuilt "))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no rebuild line in: {stdout}"));
    assert!(
        stdout.contains(&format!("rebuilt {head} events")),
        "{stdout}"
    );
    (replay_secs, wall)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name() == "readmodel.redb")
                .map(|e| e.metadata().map_or(0, |m| m.len()))
                .sum()
        })
        .unwrap_or(0)
}
