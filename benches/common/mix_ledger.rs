//! The `Mix` ledger on disk, built once and reused: the queries bench and the
//! proofs bench measure the same ledger, so at 10 million attempts (tens of
//! GB, many minutes to write and rebuild) it is written and rebuilt once.
//!
//! The log is written by the bench straight into the embedded log, then the
//! model built with the binary's `hookledger projections rebuild` (before any
//! key is made: `keys create` on a log with no model folds all of it into one,
//! and the rebuild would then write a second copy beside it). A marker file in
//! the data directory records the mix it holds, so a later run, of either
//! bench, reuses it as it is.
//!
//! `HOOKLEDGER_BENCH_QUERY_DATA` names the directory to keep it in; without
//! it the ledger goes in the bench's temporary directory and is deleted.
//! `HOOKLEDGER_BENCH_ONLY=build` builds it and stops, so that the build can
//! run at a low priority and the measurements at the normal one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::mix::Mix;
use super::served;
use super::workload::append_phased;
use hookledger::store::embedded::EmbeddedStore;

/// Bytes of disk an attempt takes, the log's and a rebuilt model's
/// (BENCHMARKS.md, "Queries across deliveries").
const DISK_PER_ATTEMPT: u64 = 4_100;
/// Disk left free for everything else on the machine.
const DISK_MARGIN: u64 = 6_000_000_000;
/// Written into a kept ledger's directory once its model is built; holds the
/// mix's webhook events.
const BUILT: &str = "queries-bench-built";
/// The largest read-model cache the benches give the server (its default).
const DEFAULT_CACHE: u64 = 256 << 20;

/// A built ledger: where it is, and what it holds.
#[derive(Debug)]
pub struct Ledger {
    pub data: PathBuf,
    pub mix: Mix,
    /// Whether it stays after the bench (`HOOKLEDGER_BENCH_QUERY_DATA`).
    pub kept: bool,
}

impl Ledger {
    /// The ledger of `mix` at `HOOKLEDGER_BENCH_QUERY_DATA`, or under `temp`;
    /// built unless a run built one there before, whose mix is then used.
    pub fn built(binary: &Path, temp: &Path, mix: Mix) -> Ledger {
        let kept = std::env::var_os("HOOKLEDGER_BENCH_QUERY_DATA").map(PathBuf::from);
        let data = kept.clone().unwrap_or_else(|| temp.join("ledger"));
        let marker = data.join(BUILT);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            let events = text
                .trim()
                .parse()
                .expect("the marker holds the mix's events");
            let mix = Mix { events, ..mix };
            println!(
                "reusing the ledger built at {}: {} webhook events, {} attempts",
                data.display(),
                mix.events,
                mix.attempts()
            );
            return Ledger {
                data,
                mix,
                kept: kept.is_some(),
            };
        }
        let leftover = std::fs::read_dir(&data).is_ok_and(|mut d| d.next().is_some());
        assert!(
            !leftover,
            "{} holds files but no built ledger (an interrupted build?): delete it first",
            data.display()
        );
        check_disk(&data, mix.attempts());
        let t = Instant::now();
        let head = generate(&data, mix);
        println!(
            "log written: {head} events in {:.1} s (load average {})",
            t.elapsed().as_secs_f64(),
            super::loadavg()
        );
        let t = Instant::now();
        let out = served::command(binary, &data)
            .args(["projections", "rebuild"])
            .output()
            .expect("projections rebuild runs");
        assert!(
            out.status.success(),
            "rebuild: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "projections rebuild: {:.1} s (load average {})",
            t.elapsed().as_secs_f64(),
            super::loadavg()
        );
        std::fs::write(&marker, mix.events.to_string()).expect("mark the ledger built");
        Ledger {
            data,
            mix,
            kept: kept.is_some(),
        }
    }

    pub fn model(&self) -> PathBuf {
        hookledger::model::file_in(&self.data)
    }

    pub fn model_bytes(&self) -> u64 {
        std::fs::metadata(self.model()).map_or(0, |m| m.len())
    }

    /// The server's `--cache-size`: its default, or a tenth of the model if
    /// that is smaller, so that the model is at least ten times its cache.
    pub fn cache(&self) -> u64 {
        DEFAULT_CACHE.min(self.model_bytes() / 10)
    }

    /// The log's segment files.
    pub fn segments(&self) -> Vec<PathBuf> {
        files(&self.data.join("log"))
    }

    pub fn log_bytes(&self) -> u64 {
        self.segments()
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    }

    /// Deletes the ledger unless it is kept.
    pub fn finish(self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.data);
        }
    }
}

/// Whether this run only builds the ledger (`HOOKLEDGER_BENCH_ONLY=build`).
pub fn build_only() -> bool {
    std::env::var("HOOKLEDGER_BENCH_ONLY").is_ok_and(|v| v == "build")
}

/// Stops before writing a ledger that the disk cannot hold beside a margin
/// for everything else on it.
fn check_disk(data: &Path, attempts: u64) {
    let dir = data
        .ancestors()
        .find(|p| p.exists())
        .expect("a directory that exists");
    let stat = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    let free = stat.blocks_available() * stat.fragment_size();
    let need = attempts * DISK_PER_ATTEMPT;
    assert!(
        need + DISK_MARGIN <= free,
        "{attempts} attempts take about {} GB of log and model, and {} has {} GB free \
         (keeping {} GB for others): lower HOOKLEDGER_BENCH_QUERY_ATTEMPTS, or write the \
         ledger elsewhere with HOOKLEDGER_BENCH_QUERY_DATA",
        need / 1_000_000_000,
        dir.display(),
        free / 1_000_000_000,
        DISK_MARGIN / 1_000_000_000
    );
}

/// Writes the ledger of `mix` into the embedded log at `data`.
fn generate(data: &Path, mix: Mix) -> u64 {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Arc::new(EmbeddedStore::open(data).expect("open the log"));
        let head = append_phased(&store, mix.log()).await;
        store.close().await;
        head
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}
