//! Load from a separate process of the bench's own, beside wrk: the bench's
//! executable started again with [`SPEC`] set, one thread running every
//! connection on a current-thread tokio runtime (as `wrk -t1` runs them on one
//! event loop). Each connection sends a prepared request, reads the whole
//! answer (its `Content-Length`), and sends the next; each latency is from the
//! write's start to the answer's last byte, and every one is kept, so the
//! percentiles are exact rather than wrk's.
//!
//! It exists because two load generators that agree are a measurement, and
//! one is an opinion: on this machine wrk's p99 for `hookledger` has run far
//! above what the server itself and this client see (BENCHMARKS, "Where the
//! tail comes from"). Its output is wrk's summary format, read by the same
//! parser.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wrk::{self, Load, Pick, Requests};

/// Set in the child: the file naming what to send, where, and for how long.
const SPEC: &str = "HOOKLEDGER_BENCH_CLIENT";

/// What the child is asked to do.
#[derive(serde::Serialize, serde::Deserialize)]
struct Spec {
    addr: SocketAddr,
    connections: usize,
    seconds: f64,
    cycle: bool,
    /// Each request, whole: request line, headers and body.
    requests: Vec<String>,
    /// Where the summary goes.
    out: String,
}

/// Runs the client against `addr` for `length` with `connections`
/// connections, in a process of its own; `wrk_cpu` of the result is the
/// client's CPU.
pub fn run(
    work: &Path,
    addr: SocketAddr,
    requests: &Requests,
    connections: usize,
    length: Duration,
) -> Load {
    let out = work.join("client-summary.txt");
    let _ = std::fs::remove_file(&out);
    let spec = Spec {
        addr,
        connections,
        seconds: length.as_secs_f64(),
        cycle: requests.pick == Pick::Cycle,
        requests: requests
            .paths
            .iter()
            .map(|path| format_request(requests, path, addr))
            .collect(),
        out: out.display().to_string(),
    };
    let spec_file = work.join("client-spec.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).expect("spec")).expect("spec file");
    let cpu_before = wrk::children_cpu();
    let status = Command::new(std::env::current_exe().expect("this executable"))
        .env(SPEC, &spec_file)
        .status()
        .expect("the client starts");
    assert!(status.success(), "the load client failed: {status}");
    let cpu = wrk::children_cpu() - cpu_before;
    let text = std::fs::read_to_string(&out).expect("the client wrote its summary");
    Load::parse(&text, cpu)
}

fn format_request(requests: &Requests, path: &str, addr: SocketAddr) -> String {
    let mut head = format!("{} {path} HTTP/1.1\r\nhost: {addr}\r\n", requests.method);
    for (name, value) in &requests.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if requests.method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", requests.body.len()));
    }
    head.push_str("\r\n");
    head.push_str(&requests.body);
    head
}

/// In the child, runs the load, writes its summary and returns true;
/// elsewhere returns false at once. The bench's `main` calls it first.
pub fn run_if_child() -> bool {
    let Some(spec) = std::env::var_os(SPEC) else {
        return false;
    };
    let spec: Spec =
        serde_json::from_slice(&std::fs::read(spec).expect("the spec file")).expect("a spec");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let spec = std::rc::Rc::new(spec);
    let started = Instant::now();
    let ends = started + Duration::from_secs_f64(spec.seconds);
    let results = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..spec.connections)
            .map(|c| tokio::task::spawn_local(connection(spec.clone(), c, ends)))
            .collect();
        let mut all = Connection::default();
        for task in tasks {
            let one = task.await.expect("a connection's task");
            all.latencies_us.extend(one.latencies_us);
            all.bad_status += one.bad_status;
            all.socket_errors += one.socket_errors;
        }
        all
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = results.latencies_us;
    latencies.sort_unstable();
    let mut summary = format!(
        "requests {}\nduration_us {}\nstatus_errors {}\nsocket_errors {}\n",
        latencies.len(),
        (seconds * 1e6) as u64,
        results.bad_status,
        results.socket_errors
    );
    for p in wrk::PERCENTILES {
        let at = ((latencies.len() as f64 * p / 100.0) as usize).min(latencies.len().max(1) - 1);
        summary.push_str(&format!(
            "p{p} {}\n",
            latencies.get(at).copied().unwrap_or(0)
        ));
    }
    std::fs::write(&spec.out, summary).expect("the summary");
    true
}

#[derive(Default)]
struct Connection {
    latencies_us: Vec<u64>,
    bad_status: u64,
    socket_errors: u64,
}

/// One keep-alive connection, request after request until `ends`.
async fn connection(spec: std::rc::Rc<Spec>, index: usize, ends: Instant) -> Connection {
    let mut done = Connection::default();
    let Ok(mut stream) = tokio::net::TcpStream::connect(spec.addr).await else {
        done.socket_errors += 1;
        return done;
    };
    let _ = stream.set_nodelay(true);
    // A fixed seed per connection (xorshift): the same picks every run.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ ((index as u64 + 1) * 0x2545_f491_4f6c_dd1d);
    let mut next = index;
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < ends {
        let pick = if spec.cycle {
            next = (next + 1) % spec.requests.len();
            next
        } else {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % spec.requests.len() as u64) as usize
        };
        let sent = Instant::now();
        match exchange(&mut stream, spec.requests[pick].as_bytes(), &mut buf).await {
            Ok(status) => {
                done.latencies_us.push(sent.elapsed().as_micros() as u64);
                if !(200..400).contains(&status) {
                    done.bad_status += 1;
                }
            }
            Err(_) => {
                done.socket_errors += 1;
                return done;
            }
        }
    }
    done
}

/// Sends one request and reads its whole answer; returns its status.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request).await?;
    let mut filled = 0;
    let (head_end, status, length) = loop {
        filled += read_more(stream, buf, filled).await?;
        if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, status, length);
        }
    };
    while filled - head_end < length {
        filled += read_more(stream, buf, filled).await?;
    }
    Ok(status)
}

/// Reads what has arrived into `buf` after its first `filled` bytes, growing
/// it when full; the connection closing is an error.
async fn read_more(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    filled: usize,
) -> std::io::Result<usize> {
    if filled == buf.len() {
        buf.resize(buf.len() * 2, 0);
    }
    match stream.read(&mut buf[filled..]).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        n => Ok(n),
    }
}
