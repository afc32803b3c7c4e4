//! What every bench shares: the machine header, the figure lines (value, baseline
//! measured in the same run, ratio, target), env knobs and RSS readings.
//!
//! Figures are printed as one `figure:` line each so that a run's output can be
//! pasted into BENCHMARKS.md as is; nothing here decides whether a target is met
//! beyond comparing the measured ratio or value with its target (BENCHMARKS.md).

#![allow(dead_code)]

pub mod client;
pub mod mix;
pub mod mix_ledger;
pub mod noop;
pub mod served;
pub mod tables;
pub mod workload;
pub mod wrk;

/// The allocator the `hookledger` binary uses, so the benches measure what ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

/// The machine and its load, printed at the start and the end of every bench.
pub fn machine(bench: &str) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "== bench {bench}: nproc {nproc}, cpu {cpu}, load average {}",
        loadavg()
    );
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub fn done(bench: &str) {
    println!("== bench {bench} done: load average {}", loadavg());
}

/// Whether a figure must be above or below its target.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// The ratio to the baseline must be at least this.
    RatioAtLeast(f64),
    /// The value itself must be at least this.
    AtLeast(f64),
    /// The value itself must be at most this.
    AtMost(f64),
    None,
}

/// Prints one figure with its same-run baseline and the ratio value/baseline.
pub fn figure(
    name: &str,
    value: f64,
    unit: &str,
    baseline_name: &str,
    baseline: f64,
    target: Target,
) {
    let ratio = value / baseline;
    let verdict = match target {
        Target::RatioAtLeast(t) => format!("target ratio >= {t}: {}", met(ratio >= t)),
        Target::AtLeast(t) => format!("target >= {} {unit}: {}", num(t), met(value >= t)),
        Target::AtMost(t) => format!("target <= {} {unit}: {}", num(t), met(value <= t)),
        Target::None => "no target".into(),
    };
    println!(
        "figure: {name} = {} {unit} | baseline {baseline_name} = {} {unit} | ratio {ratio:.3} | {verdict}",
        num(value),
        num(baseline)
    );
}

fn met(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// A number with three significant digits or thousands kept whole.
pub fn num(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// A positive integer from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// Seconds each measured phase runs (`HOOKLEDGER_BENCH_SECS`, default 5).
pub fn phase() -> Duration {
    Duration::from_secs(env_u64("HOOKLEDGER_BENCH_SECS", 5))
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's resident set, in bytes.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads every file under `dir` front to back in 1 MiB chunks: the plain
/// sequential read a replay or a restart is compared with. Returns the bytes read.
pub fn read_all_files(dir: &std::path::Path) -> u64 {
    use std::io::Read;
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if let Ok(mut file) = std::fs::File::open(&path) {
            while let Ok(n) = file.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
    }
    std::hint::black_box(&buf);
    total
}

/// Latency percentile of sorted samples, in milliseconds.
pub fn percentile_ms(sorted_micros: &[u32], p: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_micros.len() as f64).ceil() as usize;
    sorted_micros[rank.clamp(1, sorted_micros.len()) - 1] as f64 / 1000.0
}
