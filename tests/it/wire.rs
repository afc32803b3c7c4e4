//! What hostile clients do on the wire, against the real binary over raw TCP:
//! made-up methods and paths that must not grow `/metrics`; requests hyper
//! cannot parse, which must still get problem+json; `Host` and
//! `Expect: 100-continue` rules; keep-alive connections that must survive a
//! refused POST; a client that never reads its answers; and budgets for
//! requests with unknown keys and ids.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::binary::{Client, Server, create_key, record_figures};
use crate::raw::{RawReply, connect, parse, send_bytes};

const ORG: &str = "org_wire";

/// A server on fresh data with a key.
struct Target {
    _dir: tempfile::TempDir,
    server: Server,
    runtime: tokio::runtime::Runtime,
    key: String,
}

impl Target {
    fn start(args: &[&str]) -> Target {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = create_key(&data, ORG);
        let server = runtime.block_on(Server::start_with(&data, args));
        Target {
            _dir: dir,
            server,
            runtime,
            key,
        }
    }

    /// [`Target::start`] on a fresh PostgreSQL database, or `None` (having
    /// said why) where PostgreSQL cannot run.
    fn start_on_postgres(test: &str, args: &[&str]) -> Option<Target> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let url = runtime.block_on(crate::support_postgres::database(test))?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let backend = ["--backend", "postgres", "--postgres-url", &url];
        let created = crate::binary::hookledger(
            &data,
            &[&backend[..], &["keys", "create", "--org", ORG]].concat(),
        );
        let key = crate::binary::succeeds(created)
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_owned();
        let server = runtime.block_on(Server::start_with(&data, &[&backend[..], args].concat()));
        Some(Target {
            _dir: dir,
            server,
            runtime,
            key,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    fn client(&self) -> Client {
        Client::new(&self.server, ORG, &self.key)
    }

    fn metrics(&self) -> String {
        let reply = send_bytes(
            self.addr(),
            b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(reply.status, 200);
        String::from_utf8(reply.body).unwrap()
    }
}

#[track_caller]
fn assert_problem(reply: &RawReply, status: u16) -> Value {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/problem+json"),
        "a {status} must be problem+json: {reply:?}"
    );
    let body: Value = serde_json::from_slice(&reply.body).expect("a JSON problem");
    assert_eq!(body["status"], status);
    body
}

/// Reads one response off a keep-alive connection (a `content-length` body).
fn read_one(stream: &mut TcpStream) -> std::io::Result<RawReply> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        bytes.push(byte[0]);
    }
    let head = parse(&bytes).map_err(std::io::Error::other)?;
    let length: usize = head
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(RawReply { body, ..head })
}

#[test]
fn made_up_methods_and_paths_do_not_grow_metrics() {
    let target = Target::start(&[]);
    let before = target.metrics().len();
    // Pipelined on one connection, each with its own 200-byte method or path.
    let mut requests = Vec::new();
    for i in 0..1500 {
        let unique = format!("{i:0>200}");
        requests.extend_from_slice(
            format!("M{unique} /healthz HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes(),
        );
        requests.extend_from_slice(format!("GET /{unique} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes());
    }
    requests.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut stream = connect(target.addr());
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&requests))
    };
    let mut answers = Vec::new();
    stream.read_to_end(&mut answers).unwrap();
    writer.join().unwrap().unwrap();
    let answered = answers
        .windows(9)
        .filter(|w| w.starts_with(b"HTTP/1.1 "))
        .count();
    assert_eq!(answered, 3001, "every request was answered");
    let after = target.metrics();
    // A few new series (method "other", route "unmatched", 404 and 405) at most.
    assert!(
        after.len() < before + 16 * 1024,
        "/metrics grew from {before} to {} bytes",
        after.len()
    );
    assert!(after.contains("method=\"other\""), "{after}");
    record_figures(
        "metrics_cardinality",
        &format!(
            "3 000 requests with unique methods and paths: /metrics {before} -> {} bytes",
            after.len()
        ),
    );
    assert!(
        !after.contains("0000000000"),
        "a made-up name became a label"
    );
}

#[test]
fn requests_hyper_cannot_parse_get_a_problem() {
    let target = Target::start(&[]);
    let addr = target.addr();
    let bad_version = send_bytes(addr, b"GET /healthz HTTP/1.2\r\nhost: x\r\n\r\n").unwrap();
    assert_problem(&bad_version, 400);
    let two_lengths = send_bytes(
        addr,
        b"POST /v1/outbound-webhook-events HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    )
    .unwrap();
    assert_problem(&two_lengths, 400);
    let long_target = format!(
        "GET /healthz?q={} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let long = send_bytes(addr, long_target.as_bytes()).unwrap();
    assert_problem(&long, 414);
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_problem(&send_bytes(addr, many.as_bytes()).unwrap(), 431);
    // An answer before the bad request goes out unchanged, then the problem.
    let mut stream = connect(addr);
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.2\r\nhost: x\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_one(&mut stream).unwrap().status, 200);
    assert_problem(&read_one(&mut stream).unwrap(), 400);
}

#[test]
fn host_must_be_named_once_and_a_declared_body_over_the_limit_is_refused_unread() {
    let target = Target::start(&[]);
    let addr = target.addr();
    let none = send_bytes(addr, b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n").unwrap();
    assert_eq!(assert_problem(&none, 400)["errors"][0]["field"], "Host");
    let two = send_bytes(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    assert_problem(&two, 400);
    // HTTP/1.0 needs no Host.
    let old = send_bytes(addr, b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(old.status, 200);

    // 50 MB announced with Expect: 100-continue: 413 at once, never "100 Continue".
    let mut stream = connect(addr);
    stream
        .write_all(
            format!(
                "POST /v1/outbound-webhook-events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 x-organization-id: {ORG}\r\ncontent-type: application/json\r\n\
                 expect: 100-continue\r\ncontent-length: 50000000\r\n\r\n",
                target.key
            )
            .as_bytes(),
        )
        .unwrap();
    let reply = read_one(&mut stream).unwrap();
    assert_problem(&reply, 413);
    assert_eq!(reply.header("connection"), Some("close"));
}

/// Sends a POST whose body follows its head a moment later, as from a slow
/// link; the answer, or the error that the connection was lost.
fn post_with_late_body(
    stream: &mut TcpStream,
    key: &str,
    body: &[u8],
) -> std::io::Result<RawReply> {
    let head = format!(
        "POST /v1/outbound-webhook-events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         x-organization-id: {ORG}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    std::thread::sleep(Duration::from_millis(50));
    stream.write_all(body)?;
    read_one(stream)
}

#[test]
fn keep_alive_posts_refused_before_their_body_keep_their_connection_or_are_told_it_closes() {
    let target = Target::start(&[]);
    let body = br#"{"eventType":"x","payload":{}}"#;
    let mut stream = connect(target.addr());
    for i in 0..20 {
        let reply = post_with_late_body(&mut stream, "hlk_unknown_key", body)
            .unwrap_or_else(|e| panic!("request {i}: the connection was lost without a word: {e}"));
        assert_problem(&reply, 401);
        assert_eq!(reply.header("connection"), None, "request {i}: {reply:?}");
    }
    // Still usable for a request that succeeds.
    let reply = post_with_late_body(&mut stream, &target.key, body).unwrap();
    assert_eq!(reply.status, 201, "{reply:?}");

    // A large body is not read just to keep the connection: it is closed, and said so.
    let large = format!(
        r#"{{"eventType":"x","payload":{{"p":"{}"}}}}"#,
        "a".repeat(200_000)
    );
    let reply = post_with_late_body(&mut stream, "hlk_unknown_key", large.as_bytes()).unwrap();
    assert_problem(&reply, 401);
    assert_eq!(reply.header("connection"), Some("close"));
}

#[test]
fn a_client_that_never_reads_its_answers_is_disconnected_after_the_client_timeout() {
    let target = Target::start(&["--client-timeout", "1"]);
    let one = send_bytes(
        target.addr(),
        b"GET /openapi.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    // Far more answer than the socket buffers on both sides hold.
    let count = 2000;
    let mut requests = Vec::new();
    for _ in 0..count {
        requests.extend_from_slice(b"GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n");
    }
    let mut stream = connect(target.addr());
    stream.write_all(&requests).unwrap();
    // Reads nothing for three client timeouts; the server cannot make progress.
    std::thread::sleep(Duration::from_secs(3));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "the connection is still open after {received} bytes of {}: {e}",
                one.body.len() * count
            ),
        }
    };
    assert!(
        received < one.body.len() * count,
        "every answer arrived ({ended}): the server waited for the reader"
    );
    record_figures(
        "slow_reader",
        &format!(
            "{received} of {} bytes reached the client before the server closed ({ended})",
            one.body.len() * count
        ),
    );
    // The server is fine and serves others.
    assert_eq!(
        send_bytes(
            target.addr(),
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap()
        .status,
        200
    );
}

#[test]
fn unknown_keys_and_ids_have_a_budget_and_a_miss_is_remembered() {
    lookup_budgets(&Target::start(&["--unknown-lookups-per-second", "1"]));
}

/// On PostgreSQL, where each lookup is a query.
#[test]
fn unknown_keys_and_ids_have_a_budget_and_a_miss_is_remembered_on_postgres() {
    let test = "wire::unknown_keys_and_ids_have_a_budget_and_a_miss_is_remembered_on_postgres";
    if let Some(target) = Target::start_on_postgres(test, &["--unknown-lookups-per-second", "1"]) {
        lookup_budgets(&target);
    }
}

fn lookup_budgets(target: &Target) {
    let client = target.client();
    let delivery = target.runtime.block_on(client.one_delivery());
    let get = |token: &str, path: &str| {
        let request = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
             x-organization-id: {ORG}\r\nconnection: close\r\n\r\n"
        );
        send_bytes(target.addr(), request.as_bytes()).unwrap()
    };
    let attempt = |id: &str| {
        let body = json!({"status": "failed"}).to_string();
        let request = format!(
            "POST /v1/outbound-webhook-deliveries/{id}/attempts HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {}\r\nx-organization-id: {ORG}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            target.key,
            body.len()
        );
        send_bytes(target.addr(), request.as_bytes()).unwrap()
    };
    let endpoints = "/v1/outbound-webhook-endpoints";

    // Unknown keys from one address: a burst of five, then 429 with Retry-After.
    let started = Instant::now();
    let statuses: Vec<u16> = (0..12)
        .map(|i| get(&format!("hlk_01UNKNOWN{i}_secret"), endpoints).status)
        .collect();
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    let refused = get("hlk_01UNKNOWN_last_secret", endpoints);
    let problem = assert_problem(&refused, 429);
    assert!(
        refused
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("unknown or revoked")
    );
    assert!(
        statuses.contains(&429) || started.elapsed() > Duration::from_secs(7),
        "{statuses:?}"
    );
    // A valid key from the same address is served all the same.
    assert_eq!(get(&target.key, endpoints).status, 200);

    // One unknown delivery id again and again: remembered, never throttled.
    for _ in 0..12 {
        assert_problem(&attempt("dlv_01UNKNOWN"), 404);
    }
    // Many unknown ids: the key's budget runs out.
    let statuses: Vec<u16> = (0..12)
        .map(|i| attempt(&format!("dlv_01UNKNOWN{i}")).status)
        .collect();
    assert!(statuses[..4].iter().all(|s| *s == 404), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Known deliveries are not throttled.
    assert_eq!(attempt(&delivery).status, 200);
}
