//! Load from a separate process: wrk (Debian's package `wrk`) with one thread
//! and a fixed number of keep-alive connections, posting prepared requests to
//! randomly chosen paths. The requests are formatted once in wrk's `init`, so
//! wrk's own cost per request is small and the same for every server it loads.
//!
//! wrk's `done` hook writes the run's summary and latency percentiles to a file.
//! (wrk 4.1, Debian's, cannot hand a script its histogram, so rounds are
//! combined by averaging their percentiles.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What every request of a load carries.
#[derive(Debug, Clone)]
pub struct Requests {
    /// `POST`, or `GET` (sent without a body).
    pub method: &'static str,
    /// Request paths; each request picks one of them.
    pub paths: Vec<String>,
    pub pick: Pick,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// How each request picks its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// At random (a fixed seed).
    Random,
    /// The next one, round and round: requests in flight together never
    /// share a path while there are more paths than connections.
    Cycle,
}

/// One wrk run.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub requests: u64,
    pub seconds: f64,
    /// Requests answered with a status other than 2xx or 3xx.
    pub bad_status: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    /// Latency percentiles in milliseconds: (percentile, latency).
    pub percentiles: Vec<(f64, f64)>,
    /// CPU seconds the load generator itself used (wrk, or the bench's own client).
    pub wrk_cpu: f64,
}

/// The latency percentiles a run reports.
pub const PERCENTILES: [f64; 3] = [50.0, 99.0, 99.9];

impl Load {
    /// A summary as wrk's `done` hook writes it (`requests`, `duration_us`,
    /// `status_errors`, `socket_errors`, then `pN` in microseconds), with
    /// the CPU the generator used.
    pub fn parse(text: &str, cpu: f64) -> Load {
        let mut load = Load {
            wrk_cpu: cpu,
            ..Load::default()
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let value: f64 = value.parse().expect("a number");
            match key {
                "requests" => load.requests = value as u64,
                "duration_us" => load.seconds = value / 1e6,
                "status_errors" => load.bad_status = value as u64,
                "socket_errors" => load.socket_errors = value as u64,
                percentile => {
                    let p = percentile
                        .trim_start_matches('p')
                        .parse()
                        .expect("a percentile");
                    load.percentiles.push((p, value / 1000.0));
                }
            }
        }
        load
    }

    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The `p`th percentile latency (one of [`PERCENTILES`]), in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.percentiles
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(f64::NAN, |(_, ms)| *ms)
    }
}

/// Several runs of one side taken together: requests over time, and each
/// percentile averaged over the runs.
#[derive(Debug, Clone, Default)]
pub struct Runs(pub Vec<Load>);

impl Runs {
    pub fn requests(&self) -> u64 {
        self.0.iter().map(|l| l.requests).sum()
    }

    pub fn rate(&self) -> f64 {
        self.requests() as f64 / self.0.iter().map(|l| l.seconds).sum::<f64>()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.0.iter().map(|l| l.percentile_ms(p)).sum::<f64>() / self.0.len() as f64
    }
}

/// The `wrk` on the PATH; when it is missing, installs Debian's package (this
/// needs root), else stops with what to install.
pub fn require() -> PathBuf {
    if let Some(found) = which("wrk") {
        return found;
    }
    if which("apt-get").is_some() {
        println!("wrk is not installed: apt-get install -y wrk");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .status();
        if let Some(found) = which("wrk").filter(|_| status.is_ok()) {
            return found;
        }
    }
    panic!("this bench drives the server with wrk: install it (Debian: `apt-get install wrk`)");
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs wrk against `addr` for `length` with `connections` connections.
pub fn run(
    wrk: &Path,
    work: &Path,
    addr: SocketAddr,
    requests: &Requests,
    connections: usize,
    length: Duration,
) -> Load {
    let script = work.join("attempts.lua");
    let histogram = work.join("latency.txt");
    std::fs::write(&script, lua(requests, &histogram)).expect("wrk script");
    let _ = std::fs::remove_file(&histogram);
    let cpu_before = children_cpu();
    let out = Command::new(wrk)
        .args(["-t1", &format!("-c{connections}")])
        .arg(format!("-d{}s", length.as_secs().max(1)))
        .args(["--timeout", "10s", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .output()
        .expect("wrk runs");
    let wrk_cpu = children_cpu() - cpu_before;
    assert!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&histogram).expect("wrk's done hook wrote its latencies");
    Load::parse(&text, wrk_cpu)
}

/// CPU seconds of this process's children that have ended (`cutime` + `cstime`).
pub fn children_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // cutime and cstime are fields 16 and 17 of the whole line: 14 and 15 here.
    (ticks(14).unwrap_or(0.0) + ticks(15).unwrap_or(0.0)) / 100.0
}

/// The wrk script: requests made in `init`, one picked per send,
/// and the summary and histogram written to `out` when wrk is done.
fn lua(requests: &Requests, out: &Path) -> String {
    let quote = |s: &str| format!("{s:?}");
    let paths: Vec<String> = requests.paths.iter().map(|p| quote(p)).collect();
    let headers: Vec<String> = requests
        .headers
        .iter()
        .map(|(name, value)| format!("[{}] = {}", quote(name), quote(value)))
        .collect();
    format!(
        r#"-- Written by the HTTP bench (benches/common/wrk.rs).
local paths = {{ {paths} }}
local headers = {{ {headers} }}
local body = {body}
local prepared = {{}}

function init(args)
  for i, path in ipairs(paths) do
    prepared[i] = wrk.format({method}, path, headers, body)
  end
  math.randomseed(20261127)
end

local next = 0
function request()
  {pick}
end

function done(summary, latency, requests)
  local out = assert(io.open({out}, "w"))
  local e = summary.errors
  out:write(string.format("requests %d\nduration_us %d\nstatus_errors %d\nsocket_errors %d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout))
  for _, p in ipairs({{ {percentiles} }}) do
    out:write(string.format("p%s %d\n", p, latency:percentile(p)))
  end
  out:close()
end
"#,
        paths = paths.join(", "),
        headers = headers.join(", "),
        method = quote(requests.method),
        body = if requests.body.is_empty() {
            "nil".to_owned()
        } else {
            quote(&requests.body)
        },
        out = quote(&out.display().to_string()),
        percentiles = PERCENTILES.map(|p| p.to_string()).join(", "),
        pick = match requests.pick {
            Pick::Random => "return prepared[math.random(#prepared)]",
            Pick::Cycle => "next = next % #prepared + 1\n  return prepared[next]",
        },
    )
}
