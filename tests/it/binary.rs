//! Driving the real `hookledger` binary: one-shot commands, a `serve` child process
//! that can be stopped with SIGTERM or killed with SIGKILL, and an HTTP client for
//! it. The server's stderr (its logs) goes to a file beside the data directory, so
//! tests can read and grep what it logged across restarts.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `hookledger` on `data` and returns its output.
pub fn hookledger(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookledger"))
        .args(args)
        .env("HOOKLEDGER_DATA", data)
        .env("HOOKLEDGER_LOG_FORMAT", "json")
        .output()
        .expect("the binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
pub fn succeeds(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Issues a key with `keys create` and returns it (the last line of stdout).
pub fn create_key(data: &Path, org: &str) -> String {
    let out = succeeds(hookledger(data, &["keys", "create", "--org", org]));
    out.lines().last().expect("a key line").trim().to_owned()
}

/// The key id (`key_<ulid>`) of a token `hlk_<ulid>_<secret>`.
pub fn key_id(token: &str) -> String {
    let ulid = token
        .trim_start_matches("hlk_")
        .split('_')
        .next()
        .expect("a ulid");
    format!("key_{ulid}")
}

/// A `hookledger serve` child process on a free port.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub base: String,
    pub addr: std::net::SocketAddr,
    /// Where its stderr goes; appended to across restarts on the same data.
    pub log: PathBuf,
}

impl Server {
    /// Starts `serve` on `data` and waits until `/readyz` answers 200.
    pub async fn start(data: &Path) -> Server {
        Self::start_with(data, &[]).await
    }

    /// [`Server::start`] with extra `serve` arguments.
    pub async fn start_with(data: &Path, args: &[&str]) -> Server {
        let server = Self::spawn(data, args, &[]);
        server.wait_ready().await
    }

    /// Starts `serve` without waiting, with extra arguments and environment.
    pub fn spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let addr = free_port();
        let log = log_path(data);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the log file opens");
        let child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["serve", "--listen", &addr.to_string()])
            .args(args)
            .env("HOOKLEDGER_DATA", data)
            .env("HOOKLEDGER_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("serve starts");
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            log,
        }
    }

    /// Waits until `/readyz` answers 200; panics with the log if the process exits.
    pub async fn wait_ready(mut self) -> Server {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "serve exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the server did not become ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Everything the server logged so far (on this data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for a clean exit; returns the server's whole log.
    pub fn stop(mut self) -> String {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "serve exited with {status:?} after SIGTERM:\n{}",
            self.log()
        );
        self.log()
    }

    /// SIGKILL: the process dies wherever it is, with no chance to clean up.
    pub fn kill(mut self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "serve survived SIGKILL: {status:?}");
    }
}

impl Server {
    /// Waits up to a minute for the process to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not exit:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file a server on `data` logs to.
pub fn log_path(data: &Path) -> PathBuf {
    let mut name = data.file_name().expect("a named data dir").to_owned();
    name.push(".serve.log");
    data.with_file_name(name)
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The JSON log lines whose message is `message`.
pub fn log_lines(log: &str, message: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .collect()
}

/// An HTTP client acting for one organization with one key.
#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub org: String,
    pub key: String,
}

impl Client {
    pub fn new(server: &Server, org: &str, key: &str) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: server.base.clone(),
            org: org.to_owned(),
            key: key.to_owned(),
        }
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("x-organization-id", &self.org)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// An endpoint for every event type and one event fanned out to it: the id of
    /// the one delivery, ready for attempts.
    pub async fn one_delivery(&self) -> String {
        self.post(
            "/v1/outbound-webhook-endpoints",
            serde_json::json!({"name": "all", "url": "https://all.example.com/"}),
        )
        .await;
        let event = self
            .post(
                "/v1/outbound-webhook-events",
                serde_json::json!({"eventType": "x", "payload": {}}),
            )
            .await;
        event["deliveries"][0]["id"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, body) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&status), "POST {path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Every item of a list, following `nextCursor` to the end.
    pub async fn all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let page = match &cursor {
                Some(c) => self.get(&format!("{path}{sep}limit=250&cursor={c}")).await,
                None => self.get(&format!("{path}{sep}limit=250")).await,
            };
            items.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }
}

/// Every file below `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Copies the data directory `from` (log and snapshots, not the lock or socket) to `to`.
pub fn copy_data(from: &Path, to: &Path) {
    for file in walk(from) {
        let relative = file.strip_prefix(from).unwrap();
        if relative.starts_with("LOCK") || relative.starts_with("admin.sock") {
            continue;
        }
        let target = to.join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
}

/// A small seeded generator (SplitMix64): the random moments of a test can be
/// replayed from the seed it prints.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The seed from `var` if set, else one from the clock.
    pub fn seeded_from_env(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        (Rng(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range`.
    pub fn between(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }
}

/// Writes `text` to `target/reliability/NAME.txt`, where `.ci/run` prints the
/// figures of the last run from.
pub fn record_figures(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{text}\n"));
}
