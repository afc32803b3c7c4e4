//! A **test double** of KurrentDB's gRPC API, for hookledger's tests and
//! benches: no machine here can run KurrentDB itself (no .NET, no container
//! engine, no package), so CI checks the KurrentDB backend against this.
//!
//! It serves the `.proto` files the official `kurrentdb` client crate ships
//! (compiled at build time, see `build.rs`) over real gRPC on a loopback port,
//! so the backend talks to it through the real client, exactly as it would to
//! a server. It implements only the calls that backend makes, with
//! KurrentDB's documented semantics (see [`log`]): expected revisions, one
//! ordered `$all` whose positions are not dense, idempotent appends by event
//! id, stream-prefix filters and catch-up subscriptions to `$all`, and the
//! maximum append size. It keeps everything in memory, has no cluster, no
//! authentication and no TLS, and is not KurrentDB: a guarantee checked only
//! here is checked only against this reading of KurrentDB's documentation.
//!
//! Tests can also hold the appends to some streams ([`Hold`]), to stop a
//! writer between two steps and then lose or land its held write.
#![cfg(feature = "enabled")]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, oneshot, watch};

pub mod log;
mod service;

pub use log::DEFAULT_MAX_APPEND_SIZE;

/// The code tonic generated from the client's `.proto` files.
#[allow(clippy::all, missing_debug_implementations, unreachable_pub)]
pub mod proto {
    pub mod event_store {
        pub mod client {
            include!(concat!(env!("OUT_DIR"), "/event_store.client.rs"));
            pub mod streams {
                include!(concat!(env!("OUT_DIR"), "/event_store.client.streams.rs"));
            }
            pub mod server_features {
                include!(concat!(
                    env!("OUT_DIR"),
                    "/event_store.client.server_features.rs"
                ));
            }
        }
    }
    pub mod google {
        pub mod rpc {
            include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
        }
    }
}

/// How to start a double.
#[derive(Debug, Clone)]
pub struct Options {
    /// KurrentDB's `MaxAppendSize`: the most bytes of data and metadata one
    /// append may carry.
    pub max_append_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_append_size: DEFAULT_MAX_APPEND_SIZE,
        }
    }
}

/// What the double has served since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// `Streams.Append` calls, whatever their outcome.
    pub appends: u64,
    /// `Streams.Read` calls that were reads, not subscriptions.
    pub reads: u64,
    pub subscriptions: u64,
    /// Events in `$all`.
    pub events: usize,
}

/// A running double on a loopback port; stops when dropped.
#[derive(Debug)]
pub struct KurrentDbDouble {
    address: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl KurrentDbDouble {
    /// Starts a double with KurrentDB's defaults.
    pub async fn start() -> KurrentDbDouble {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> KurrentDbDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the double binds a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let state = Arc::new(State {
            log: Mutex::new(log::Log::new(options.max_append_size)),
            written: watch::Sender::new(0),
            holds: Mutex::new(Vec::new()),
            counters: Counters::default(),
            max_append_size: options.max_append_size,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let streams = service::StreamsService(state.clone());
        let server = tonic::transport::Server::builder()
            .add_service(
                proto::event_store::client::streams::streams_server::StreamsServer::new(streams)
                    // Room for a whole maximum-size event, as KurrentDB's own.
                    .max_decoding_message_size(64 * 1024 * 1024)
                    .max_encoding_message_size(64 * 1024 * 1024),
            )
            .add_service(
                proto::event_store::client::server_features::server_features_server::ServerFeaturesServer::new(
                    service::FeaturesService,
                ),
            )
            .serve_with_incoming_shutdown(
                // As KurrentDB's own server: no Nagle delay on its answers.
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |accepted| {
                        accepted.inspect(|socket| {
                            let _ = socket.set_nodelay(true);
                        })
                    },
                ),
                async {
                    let _ = stopped.await;
                },
            );
        tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("the KurrentDB test double stopped: {e}");
            }
        });
        KurrentDbDouble {
            address,
            state,
            stop: Some(stop),
        }
    }

    /// The connection string a KurrentDB client takes.
    pub fn url(&self) -> String {
        format!("esdb://{}?tls=false", self.address)
    }

    pub fn stats(&self) -> Stats {
        let c = &self.state.counters;
        Stats {
            appends: c.appends.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            events: self.state.log().len(),
        }
    }

    /// Holds every append to a stream whose name starts with `prefix`, from
    /// now until the returned [`Hold`] is released or discarded.
    pub fn hold_appends(&self, prefix: &str) -> Hold {
        let inner = Arc::new(HoldInner {
            prefix: prefix.as_bytes().to_vec(),
            state: watch::Sender::new(HoldState::Holding),
            held: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        self.state.holds().push(inner.clone());
        Hold { inner }
    }
}

impl Drop for KurrentDbDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Appends held by [`KurrentDbDouble::hold_appends`]: each waits, unanswered,
/// until the hold is released (they are then written, even if their client
/// has gone: a write that reached the server before its client died) or
/// discarded (never written: a write lost with its client). Dropping the hold
/// releases it.
#[derive(Debug)]
pub struct Hold {
    inner: Arc<HoldInner>,
}

impl Hold {
    /// Waits until at least `n` appends are being held, at most `timeout`.
    pub async fn held(&self, n: usize, timeout: Duration) -> bool {
        let waiting = async {
            loop {
                let notified = self.inner.changed.notified();
                if self.inner.held.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, waiting).await.is_ok()
    }

    /// Writes the held appends, and lets later ones through.
    pub fn release(&self) {
        self.inner.state.send_replace(HoldState::Release);
    }

    /// Drops the held appends unwritten, and lets later ones through.
    pub fn discard(&self) {
        self.inner.state.send_replace(HoldState::Discard);
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.inner.state.send_if_modified(|s| {
            let holding = *s == HoldState::Holding;
            if holding {
                *s = HoldState::Release;
            }
            holding
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldState {
    Holding,
    Release,
    Discard,
}

#[derive(Debug)]
struct HoldInner {
    prefix: Vec<u8>,
    state: watch::Sender<HoldState>,
    held: AtomicUsize,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    reads: AtomicU64,
    subscriptions: AtomicU64,
}

/// What the services share.
#[derive(Debug)]
struct State {
    log: Mutex<log::Log>,
    /// The number of events in the log, for subscriptions to wait on.
    written: watch::Sender<usize>,
    holds: Mutex<Vec<Arc<HoldInner>>>,
    counters: Counters,
    max_append_size: usize,
}

impl State {
    fn log(&self) -> MutexGuard<'_, log::Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn holds(&self) -> MutexGuard<'_, Vec<Arc<HoldInner>>> {
        self.holds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hold still holding appends to `stream`, if any.
    fn hold_for(&self, stream: &[u8]) -> Option<Arc<HoldInner>> {
        let mut holds = self.holds();
        holds.retain(|h| *h.state.borrow() == HoldState::Holding);
        holds
            .iter()
            .find(|h| stream.starts_with(&h.prefix))
            .cloned()
    }

    fn append(
        &self,
        stream: &[u8],
        expected: log::Expected,
        events: Vec<log::Proposed>,
    ) -> log::Outcome {
        let mut log = self.log();
        let outcome = log.append(stream, expected, events, now_ticks());
        let len = log.len();
        drop(log);
        self.written.send_replace(len);
        outcome
    }
}

/// Now in .NET ticks (100 ns) since the Unix epoch, as KurrentDB's `created`.
fn now_ticks() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_nanos() / 100) as u64)
        .unwrap_or(0)
}
