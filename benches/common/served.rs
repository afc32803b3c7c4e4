//! The built `hookledger` binary run as users run it: `hookledger serve` as a
//! child process on a fresh data directory with its default settings (the
//! listening port aside), its log on a pipe that a thread drains, a key made
//! with `hookledger keys create`, and endpoints and webhook events created over
//! HTTP. Also what a bench reads off the running process: its `/metrics`, and
//! the CPU each of its threads has used.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary `cargo bench` built with the bench profile, as `cargo build
/// --release` builds it, unless `HOOKLEDGER_BENCH_BINARY` names another (an
/// older build, to compare the two on the same machine).
pub fn binary() -> PathBuf {
    std::env::var_os("HOOKLEDGER_BENCH_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_hookledger")),
        PathBuf::from,
    )
}

/// A running `hookledger serve`.
#[derive(Debug)]
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub token: String,
    pub org: String,
    /// Every delivery the setup created.
    pub deliveries: Vec<String>,
    log: Arc<Mutex<LogTally>>,
    _dir: Option<tempfile::TempDir>,
}

/// What the server has written to its log so far.
#[derive(Debug, Default, Clone)]
pub struct LogTally {
    pub lines: u64,
    pub bytes: u64,
    /// The last few lines, for a failure message.
    pub tail: Vec<String>,
}

impl Served {
    /// `binary`, on a fresh data directory with a key for `org`: `serve` on a free
    /// loopback port, then `endpoints` endpoints and `events` webhook events
    /// (each fans out to every endpoint) created through the API.
    pub fn start(binary: &Path, org: &str, endpoints: usize, events: usize) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let token = create_key(binary, &data, org);
        let mut served = Served::open(binary, &data, org, &token, &[]);
        served._dir = Some(dir);
        served.deliveries = served.create_deliveries(endpoints, events);
        served
    }

    /// `binary serve` on the existing data directory `data` (with `args` added
    /// to its defaults), once it answers `/readyz`: its read model has caught
    /// up with the log.
    pub fn open(binary: &Path, data: &Path, org: &str, token: &str, args: &[&str]) -> Served {
        let addr = free_port();
        let mut child = command(binary, data)
            .args(["serve", "--listen", &addr.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hookledger serve starts");
        let log = Arc::new(Mutex::new(LogTally::default()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tally = log.clone();
        std::thread::spawn(move || drain(stderr, &tally));
        let mut served = Served {
            child,
            addr,
            token: token.to_owned(),
            org: org.to_owned(),
            deliveries: Vec::new(),
            log,
            _dir: None,
        };
        served.wait_ready();
        served
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> LogTally {
        self.log.lock().expect("log tally").clone()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Ok((200, _)) = http(self.addr, "GET", "/readyz", &[], "") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "serve exited with {status}:\n{}",
                    self.log().tail.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "serve did not become ready:\n{}",
                self.log().tail.join("\n")
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn create_deliveries(&self, endpoints: usize, events: usize) -> Vec<String> {
        const NAMES: [&str; 4] = ["billing", "fulfilment", "crm", "analytics"];
        for n in 0..endpoints {
            let name = NAMES[n % NAMES.len()];
            let body = json!({
                "name": format!("{name} webhook {n}"),
                "url": format!("https://hooks.example.com/v2/{name}/{n}"),
                "eventTypes": [],
            });
            self.post("/v1/outbound-webhook-endpoints", &body);
        }
        let mut deliveries = Vec::new();
        for n in 0..events {
            let body = json!({
                "eventType": "invoice.paid",
                "payload": {"invoiceId": format!("inv_{n:08}"), "amount": 1200, "currency": "EUR"},
            });
            let event = self.post("/v1/outbound-webhook-events", &body);
            for delivery in event["deliveries"].as_array().expect("deliveries") {
                deliveries.push(delivery["id"].as_str().expect("delivery id").to_owned());
            }
        }
        deliveries
    }

    /// The headers every API call carries.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("authorization", format!("Bearer {}", self.token)),
            ("x-organization-id", self.org.clone()),
            ("content-type", "application/json".into()),
        ]
    }

    /// POSTs `body` and returns the answer, which must be a 2xx.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let answer = self.post_raw(path, &body.to_string());
        serde_json::from_str(&answer).expect("a JSON answer")
    }

    /// POSTs `body` as is and returns the answer's bytes, which must be a 2xx.
    pub fn post_raw(&self, path: &str, body: &str) -> String {
        let (status, answer) =
            http(self.addr, "POST", path, &self.headers(), body).expect("the server answers");
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }

    /// A number from `/metrics` (the first sample of `name`), 0 if absent.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = http(self.addr, "GET", "/metrics", &[], "").expect("metrics");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it.
    pub fn stop(self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills the server as a crash would (SIGKILL) and waits for it.
    pub fn kill(self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }

    fn signal(mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let _ = self.child.wait();
    }

    /// The server's resident set now and at its peak (`VmRSS`, `VmHWM`), in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `binary` on `data`, with none of the caller's `RUST_LOG` or
/// `HOOKLEDGER_*` settings: the defaults a new user gets.
pub fn command(binary: &Path, data: &Path) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name == "RUST_LOG" || name.starts_with("HOOKLEDGER_") {
            command.env_remove(name);
        }
    }
    command.arg("--data").arg(data);
    command
}

/// `hookledger keys create --org org` on `data`; the key's token.
pub fn create_key(binary: &Path, data: &Path, org: &str) -> String {
    let out = command(binary, data)
        .args(["keys", "create", "--org", org])
        .output()
        .expect("hookledger keys create runs");
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("a key line")
        .trim()
        .to_owned()
}

fn drain(stderr: impl std::io::Read, tally: &Mutex<LogTally>) {
    let mut reader = BufReader::with_capacity(1 << 16, stderr);
    let mut line = String::new();
    while let Ok(n) = reader.read_line(&mut line) {
        if n == 0 {
            return;
        }
        let mut tally = tally.lock().expect("log tally");
        tally.lines += 1;
        tally.bytes += n as u64;
        if tally.tail.len() == 20 {
            tally.tail.remove(0);
        }
        tally.tail.push(line.trim_end().to_owned());
        drop(tally);
        line.clear();
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// One HTTP/1.1 request on its own connection; the status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// CPU seconds (user + system) each thread of process `pid` has used, by
/// thread id, with the thread's name.
pub fn thread_cpu(pid: u32) -> BTreeMap<u32, (String, f64)> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some(cpu) = parse_stat(&stat) {
            threads.insert(tid, cpu);
        }
    }
    threads
}

/// CPU seconds (user + system) process `pid` has used so far.
pub fn process_cpu(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, cpu)| cpu)
}

/// The name and the user + system CPU seconds in a `/proc/.../stat` line.
pub fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((name, (ticks(11)? + ticks(12)?) / 100.0))
}

/// What a running server had done at one moment.
#[derive(Debug)]
pub struct Reading {
    /// CPU seconds the process has used.
    pub cpu: f64,
    /// `hookledger_store_appends` and `hookledger_store_fsyncs` of `/metrics`.
    pub appends: f64,
    pub fsyncs: f64,
    /// Group commits that took longer than 3 ms
    /// (`hookledger_store_commit_duration_seconds`): each held every append it covered.
    pub slow_commits: f64,
    /// Seconds record-attempts waited for the store and then for the read
    /// model (`hookledger_append_store_wait_seconds`,
    /// `hookledger_append_model_wait_seconds`), and how many writes waited.
    pub store_wait: f64,
    pub model_wait: f64,
    pub waits: f64,
    pub log_lines: u64,
    pub log_bytes: u64,
    /// Each thread's name and CPU seconds, by thread id.
    pub threads: BTreeMap<u32, (String, f64)>,
}

impl Reading {
    pub fn of(served: &Served) -> Reading {
        let threads = thread_cpu(served.pid());
        let log = served.log();
        Reading {
            cpu: process_cpu(served.pid()),
            appends: served.metric("hookledger_store_appends"),
            fsyncs: served.metric("hookledger_store_fsyncs"),
            slow_commits: served.metric("hookledger_store_commit_duration_seconds_count")
                - served.metric("hookledger_store_commit_duration_seconds_bucket{le=\"0.003\"}"),
            store_wait: served
                .metric("hookledger_append_store_wait_seconds_sum{command=\"record_attempt\"}"),
            model_wait: served
                .metric("hookledger_append_model_wait_seconds_sum{command=\"record_attempt\"}"),
            waits: served
                .metric("hookledger_append_model_wait_seconds_count{command=\"record_attempt\"}"),
            log_lines: log.lines,
            log_bytes: log.bytes,
            threads,
        }
    }

    /// Each thread's share of one core from this reading to `later`, busiest
    /// first. The lowest thread id is the main thread's (it equals the pid).
    pub fn thread_use(&self, later: &Reading, seconds: f64) -> Vec<String> {
        let main = later.threads.keys().next().copied();
        let mut used: Vec<(f64, String)> = later
            .threads
            .iter()
            .map(|(tid, (name, cpu))| {
                let was = self.threads.get(tid).map_or(0.0, |(_, c)| *c);
                let role = if Some(*tid) == main { " (main)" } else { "" };
                ((cpu - was) / seconds, format!("{tid} {name}{role}"))
            })
            .collect();
        used.sort_by(|a, b| b.0.total_cmp(&a.0));
        used.iter()
            .map(|(share, thread)| format!("{thread}: {:.1}%", share * 100.0))
            .collect()
    }
}
