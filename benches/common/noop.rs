//! The baseline of the HTTP bench: a no-op axum server on the record-attempt
//! route, in a process of its own (the bench's executable started again with
//! [`ANSWER`] set). It reads and parses the body as JSON and answers a
//! prepared body with the real answer's headers, on the runtime `hookledger`
//! builds (tokio's default multi-thread one): HTTP and JSON, and nothing else.
//! It answers a `GET` of one webhook event the same way (the prepared body,
//! nothing read), the baseline of the scale bench's reads, and any other
//! request too (the queries bench's lists).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::Value;

use super::served::process_cpu;

/// The route both servers answer.
pub const ROUTE: &str = "/v1/outbound-webhook-deliveries/{id}/attempts";
/// The read the scale bench compares: one webhook event's snapshot, answered
/// with the same prepared body.
pub const READ_ROUTE: &str = "/v1/outbound-webhook-events/{id}";
/// Set in the child: the file holding the answer it sends.
const ANSWER: &str = "HOOKLEDGER_BENCH_NOOP_ANSWER";
/// Set in the child of [`Noop::start_durable`]: the directory of its log.
const DURABLE: &str = "HOOKLEDGER_BENCH_NOOP_DURABLE";
/// The durable no-op's log: written zeros that its batches go into, from
/// the start again when they reach the end (a baseline, not a log).
const LOG_BYTES: u64 = 64 << 20;

/// The running no-op server.
#[derive(Debug)]
pub struct Noop {
    child: Child,
    pub addr: SocketAddr,
}

impl Noop {
    /// Starts the child, answering every request with the bytes of `answer`.
    pub fn start(answer: &Path) -> Noop {
        Self::spawn(answer, None)
    }

    /// [`Noop::start`], but each `POST` is answered only once its body is
    /// written to a file in `dir` and `fdatasync`ed, by a group commit of
    /// every body that arrived meanwhile, on a thread of its own: the least a
    /// server must do to acknowledge durably, the floor under record-attempt
    /// on the same disk.
    pub fn start_durable(answer: &Path, dir: &Path) -> Noop {
        Self::spawn(answer, Some(dir))
    }

    fn spawn(answer: &Path, durable: Option<&Path>) -> Noop {
        let mut command = Command::new(std::env::current_exe().expect("this executable"));
        if let Some(dir) = durable {
            command.env(DURABLE, dir);
        }
        let mut child = command
            .env(ANSWER, answer)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the no-op server starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the no-op server's address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the no-op server said {line:?}"));
        Noop { child, addr }
    }

    /// CPU seconds the server has used so far.
    pub fn cpu(&self) -> f64 {
        process_cpu(self.child.id())
    }
}

impl Drop for Noop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the child, serves until killed and returns true; elsewhere returns false
/// at once. The bench's `main` calls it first.
pub fn serve_if_child() -> bool {
    let Some(answer) = std::env::var_os(ANSWER) else {
        return false;
    };
    let answer = Bytes::from(std::fs::read(answer).expect("the answer file"));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let read = answer.clone();
        let commits = std::env::var_os(DURABLE).map(|dir| group_commit(Path::new(&dir)));
        let handler = move |UrlPath(_id): UrlPath<String>, body: Bytes| {
            let answer = answer.clone();
            let commits = commits.clone();
            async move {
                let response = reply(&body, answer);
                if let Some(commits) = commits {
                    let (done, synced) = tokio::sync::oneshot::channel();
                    commits.send((body, done)).expect("the group commit runs");
                    synced.await.expect("the group commit answers");
                }
                response
            }
        };
        let other = read.clone();
        let read = move |UrlPath(_id): UrlPath<String>| {
            let answer = read.clone();
            async move { with_headers(answer) }
        };
        let app = axum::Router::new()
            .route(ROUTE, post(handler))
            .route(READ_ROUTE, get(read))
            .fallback(move || {
                let answer = other.clone();
                async move { with_headers(answer) }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on {addr}").expect("stdout");
        stdout.flush().expect("stdout");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("serve");
    });
    true
}

fn reply(body: &[u8], answer: Bytes) -> Response {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => {}
        _ => return StatusCode::BAD_REQUEST.into_response(),
    }
    with_headers(answer)
}

fn with_headers(answer: Bytes) -> Response {
    let mut response = (StatusCode::OK, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, HeaderValue::from_static("\"1\""));
    headers.insert(
        "x-request-id",
        HeaderValue::from_static("req_01KBENCH00000000000000000000"),
    );
    response
}

type Commit = (Bytes, tokio::sync::oneshot::Sender<()>);

/// Starts the durable no-op's group commit: a thread that takes every body
/// waiting, writes them at once into written zeros, syncs, and answers them.
fn group_commit(dir: &Path) -> std::sync::mpsc::Sender<Commit> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("durable-noop.log");
    let file = std::fs::File::create(&path).expect("the durable no-op's log");
    for at in (0..LOG_BYTES).step_by(1 << 20) {
        file.write_all_at(&[0; 1 << 20], at).expect("zeros");
    }
    file.sync_all().expect("fsync");
    let (sender, bodies) = std::sync::mpsc::channel::<Commit>();
    std::thread::spawn(move || {
        let mut at = 0;
        while let Ok(first) = bodies.recv() {
            let batch: Vec<Commit> = std::iter::once(first).chain(bodies.try_iter()).collect();
            let bytes: Vec<u8> = batch.iter().flat_map(|(b, _)| b.iter().copied()).collect();
            if at + bytes.len() as u64 > LOG_BYTES {
                at = 0;
            }
            file.write_all_at(&bytes, at).expect("write");
            file.sync_data().expect("fdatasync");
            at += bytes.len() as u64;
            for (_, done) in batch {
                let _ = done.send(());
            }
        }
    });
    sender
}
