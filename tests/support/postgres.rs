//! A throwaway PostgreSQL cluster for tests, one per test binary, and a fresh
//! database per test on it.
//!
//! With `HOOKLEDGER_TEST_POSTGRES_URL` set, that server is used instead (its
//! user must be allowed to create databases). Otherwise the first test that asks
//! starts a cluster with `initdb` and `postgres` in a temporary directory on a
//! free port, as the `postgres` user when running as root (`initdb` refuses
//! root). The cluster is watched by a small shell that holds a pipe from this
//! process: when the test binary exits, however it exits, the pipe closes and
//! the shell stops the server and removes its directory, so no server outlives
//! the run.
//!
//! Where neither is possible, [`database`] says why and the caller skips, unless
//! `HOOKLEDGER_REQUIRE_POSTGRES=1` (as in CI), which makes that a failure.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running server we may create databases on.
#[derive(Debug)]
pub struct Server {
    /// A URL or libpq key/value string; its database is replaced per test.
    base: String,
    /// The watchdog shell; dropping its stdin stops the server.
    _watchdog: Option<Mutex<Child>>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// The server for this test binary, started on first use.
pub fn server() -> Result<&'static Server, String> {
    SERVER
        .get_or_init(|| start(false))
        .as_ref()
        .map_err(Clone::clone)
}

impl Server {
    /// A cluster of its own that syncs every commit to disk, as production
    /// would, for benchmarks; stopped when the returned value is dropped or
    /// the process exits. Ignores `HOOKLEDGER_TEST_POSTGRES_URL`.
    pub fn durable() -> Result<Server, String> {
        start_cluster(true, None)
    }

    /// A cluster of its own that also takes TLS connections, with the given
    /// PEM certificate and key; plain connections work too. Stopped when
    /// dropped. Ignores `HOOKLEDGER_TEST_POSTGRES_URL`.
    pub fn with_tls(cert_pem: &str, key_pem: &str) -> Result<Server, String> {
        start_cluster(false, Some((cert_pem, key_pem)))
    }

    /// The connection string of the server, for a URL of one's own.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The connection string for database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        with_dbname(&self.base, name)
    }

    /// Creates database `name`, waiting for a server that is still starting.
    pub async fn create(&self, name: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match create_database(&self.url("postgres"), name).await {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(watchdog) = &self._watchdog {
            let mut child = watchdog.lock().unwrap_or_else(|e| e.into_inner());
            // Closing stdin tells the watchdog to stop the server.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A URL (libpq key/value form) to a new, empty database, or `None` after
/// printing why PostgreSQL tests are skipped here. Panics instead of skipping
/// when `HOOKLEDGER_REQUIRE_POSTGRES=1`.
pub async fn database(test: &str) -> Option<String> {
    let server = match server() {
        Ok(server) => server,
        Err(reason) => {
            skip(test, &reason);
            return None;
        }
    };
    let name = format!(
        "hl_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let admin = with_dbname(&server.base, "postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match create_database(&admin, &name).await {
            Ok(()) => return Some(with_dbname(&server.base, &name)),
            Err(e) if Instant::now() < deadline => {
                // The server may still be starting; CREATE DATABASE may race.
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot create a test database: {e}"),
        }
    }
}

/// The connection string of the server, for child processes that create
/// their own databases on it.
pub fn server_url() -> Option<String> {
    server().ok().map(|s| s.base.clone())
}

/// Whether PostgreSQL tests must run rather than skip.
pub fn required() -> bool {
    std::env::var("HOOKLEDGER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

pub fn skip(test: &str, reason: &str) {
    if required() {
        panic!(
            "{test}: PostgreSQL is required (HOOKLEDGER_REQUIRE_POSTGRES=1) but unavailable: {reason}"
        );
    }
    eprintln!(
        "SKIPPED {test}: no PostgreSQL: {reason} (set HOOKLEDGER_TEST_POSTGRES_URL, or put initdb and postgres on PATH)"
    );
}

async fn create_database(admin: &str, name: &str) -> Result<(), String> {
    let describe = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    };
    let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
        .await
        .map_err(describe)?;
    let driver = tokio::spawn(connection);
    let result = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(describe);
    drop(client);
    let _ = driver.await;
    result
}

fn start(durable: bool) -> Result<Server, String> {
    if let Ok(url) = std::env::var("HOOKLEDGER_TEST_POSTGRES_URL")
        && !url.trim().is_empty()
    {
        return Ok(Server {
            base: url,
            _watchdog: None,
        });
    }
    start_cluster(durable, None)
}

fn start_cluster(durable: bool, tls: Option<(&str, &str)>) -> Result<Server, String> {
    let bin = find_binaries()?;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let dir = tempfile::Builder::new()
        .prefix("hookledger-pg-")
        .tempdir()
        .map_err(|e| format!("no temp dir: {e}"))?
        .keep();
    let mut settings = if durable {
        "-c max_connections=300".to_owned()
    } else {
        "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            .to_owned()
    };
    if let Some((cert, key)) = tls {
        let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_file, cert).map_err(|e| format!("writing the certificate: {e}"))?;
        std::fs::write(&key_file, key).map_err(|e| format!("writing the key: {e}"))?;
        // The server refuses a key file others can read.
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| format!("{e}"))?;
        settings.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_file.display(),
            key_file.display()
        ));
    }
    if root {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err("cannot give the cluster directory to the postgres user".into());
        }
    }
    let data = dir.join("data");
    let as_postgres = |program: &Path| {
        if root {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    };
    let output = as_postgres(&bin.join("initdb"))
        .args([
            "-U",
            "hookledger",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let port = free_port()?;
    // The watchdog: starts the server, waits for its stdin to close (this
    // process exiting), then stops the server and removes the directory.
    // Tests trade durability for speed; a benchmark keeps the defaults.
    let script = r#"
        "$1" -D "$2" -p "$3" -k "$4" -c listen_addresses=127.0.0.1 \
            -c shared_buffers=64MB $5 >"$4/server.log" 2>&1 &
        pg=$!
        read -r _ignored
        kill -INT "$pg" 2>/dev/null
        wait "$pg"
        rm -rf "$4"
    "#;
    let mut watchdog = as_postgres(Path::new("sh"))
        .args(["-c", script, "watchdog"])
        .arg(bin.join("postgres"))
        .arg(&data)
        .arg(port.to_string())
        .arg(&dir)
        .arg(&settings)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = watchdog.try_wait() {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres exited ({status}): {log}"));
        }
        if Instant::now() > deadline {
            let _ = watchdog.stdin.as_mut().map(|s| s.write_all(b"\n"));
            return Err("postgres did not start listening within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Server {
        base: format!("host=127.0.0.1 port={port} user=hookledger"),
        _watchdog: Some(Mutex::new(watchdog)),
    })
}

fn find_binaries() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    candidates.push("/usr/local/bin".into());
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = versions.flatten().map(|v| v.path().join("bin")).collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or_else(|| "initdb and postgres are not on PATH".to_owned())
}

fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `url` pointed at database `name`: a URL's path replaced, or a key/value
/// string's `dbname` set.
fn with_dbname(url: &str, name: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (rest, query) = match rest.split_once('?') {
                Some((r, q)) => (r, format!("?{q}")),
                None => (rest, String::new()),
            };
            let authority = rest.split('/').next().unwrap_or(rest);
            return format!("{scheme}{authority}/{name}{query}");
        }
    }
    let mut parts: Vec<&str> = url
        .split_whitespace()
        .filter(|kv| !kv.starts_with("dbname="))
        .collect();
    let dbname = format!("dbname={name}");
    parts.push(&dbname);
    parts.join(" ")
}
