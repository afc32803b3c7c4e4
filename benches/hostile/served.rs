//! The server of `benches/hostile.rs`: the built `hookledger serve` with
//! default settings on a fresh data directory (and, for PostgreSQL, a
//! throwaway cluster of its own), what it can be asked from outside (its
//! RSS, its head, a key), and a client for setting up each tenant.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support_postgres;

/// The server process and how to reach it.
pub struct Served {
    child: std::process::Child,
    pub base: String,
    args: Vec<String>,
    data: tempfile::TempDir,
    _postgres: Option<support_postgres::Server>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// `hookledger serve` on `backend`, with `serve_args` besides the defaults.
    pub fn start(backend: &str, serve_args: &[String]) -> Option<Served> {
        let data = tempfile::tempdir().expect("a temp dir");
        let mut args = vec!["--data".to_owned(), data.path().display().to_string()];
        let postgres = match backend {
            "embedded" => None,
            "postgres" => {
                let server = match support_postgres::Server::durable() {
                    Ok(server) => server,
                    Err(reason) => {
                        println!("SKIPPED postgres: no PostgreSQL cluster could start: {reason}");
                        return None;
                    }
                };
                let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                runtime
                    .block_on(server.create("hostile"))
                    .expect("a database");
                args.extend([
                    "--backend".to_owned(),
                    "postgres".to_owned(),
                    "--postgres-url".to_owned(),
                    server.url("hostile"),
                ]);
                Some(server)
            }
            other => panic!("no backend {other}"),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .arg("serve")
            .args(&args)
            .args(serve_args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts");
        Some(Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            args,
            data,
            _postgres: postgres,
        })
    }

    pub fn key(&self, org: &str) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_hookledger"))
            .args(["keys", "create", "--org", org])
            .args(&self.args)
            .output()
            .expect("keys create runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .expect("a key")
            .trim()
            .to_owned()
    }

    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    pub fn data(&self) -> &Path {
        self.data.path()
    }

    /// The ledger's head, as `/readyz` reports it.
    pub fn head(&self) -> u64 {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(address) else {
            return 0;
        };
        let _ = stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: h\r\n\r\n");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .and_then(|body| body["head"].as_u64())
            .unwrap_or(0)
    }
}

/// A client for one organization, for the setup.
pub struct Setup {
    pub http: reqwest::Client,
    pub base: String,
    pub org: String,
    pub key: String,
}

impl Setup {
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("x-organization-id", &self.org)
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("JSON")
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not become ready");
    }
}

pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
                }
            }
            Ok(m) => total += m.len(),
            Err(_) => {}
        }
    }
    total
}
