//! `hookledger serve`: open the ledger, catch the read model up, serve the API,
//! and on SIGTERM or Ctrl-C stop accepting, finish in-flight requests and write
//! the read model out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::api::fair::FairLimits;
use crate::api::feed::FeedLimits;
use crate::api::metrics::StoreStats;
use crate::api::{self, AppState};
use crate::cli::limit_args::LimitArgs;
use crate::cli::{Error, StoreArgs, open};
use crate::erasure::{Eraser, Retention};
use crate::node::Node;
use crate::signing::KeyRing;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOOKLEDGER_LISTEN", default_value = "127.0.0.1:3001")]
    pub listen: SocketAddr,

    /// Seconds a client may take to send a request's headers, and again its
    /// body, and each write of an answer may wait for the client to read
    /// before the connection is closed; a connection idle for as long is closed.
    #[arg(long, env = "HOOKLEDGER_CLIENT_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_timeout: u64,

    /// Connections served at once; more wait until one closes.
    #[arg(long, env = "HOOKLEDGER_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Requests with an unknown or revoked API key each client address may
    /// send per second, and lookups of unknown delivery or endpoint ids each
    /// key may make, in bursts of up to five seconds' worth; past it, 429 with
    /// Retry-After. Each costs the store a lookup on PostgreSQL. A key or id
    /// found missing is answered from memory for 2 s.
    #[arg(long, env = "HOOKLEDGER_UNKNOWN_LOOKUPS_PER_SECOND", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub unknown_lookups_per_second: u32,

    /// Long-polls and event streams of the change feed one organization may
    /// hold open at once; past it, 429.
    #[arg(long, env = "HOOKLEDGER_MAX_FEED_CONNECTIONS_PER_ORG", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_feed_connections_per_org: u64,

    /// Long-polls and event streams of the change feed the server holds open
    /// at once, of every organization (at most half of --max-connections, so
    /// followers never take every connection); past it, 429.
    #[arg(long, env = "HOOKLEDGER_MAX_FEED_CONNECTIONS", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_feed_connections: u64,

    /// Seconds a long-poll of the change feed is held at most before it
    /// answers empty, whatever its `wait` asks (which is at most 60); lower it
    /// below a load balancer's idle timeout.
    #[arg(long, env = "HOOKLEDGER_FEED_MAX_WAIT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub feed_max_wait: u64,

    /// Erase every payload and response body older than this (`90d`,
    /// `720h`, `30m`), in the background: each organization's erasure is
    /// recorded in its history, the bodies are served as erased from then
    /// on, and compaction removes them from the disk. Hashes, proofs and
    /// everything else are kept. Default: keep bodies for good.
    #[arg(long, env = "HOOKLEDGER_RETENTION", value_parser = retention, allow_hyphen_values = true)]
    pub retention: Option<Duration>,

    /// Requests whose handlers run at once, of every organization; more wait
    /// their turn, and when one finishes, the next to run is a waiting one of
    /// the organization that used the least handler time lately (requests
    /// without a known API key count as one organization; probes, `/metrics`
    /// and the change feed never wait). 0 turns fair admission off: every
    /// request runs at once, whoever sends it.
    #[arg(long, env = "HOOKLEDGER_MAX_REQUESTS_IN_FLIGHT", default_value_t = FairLimits::default().in_flight as u64, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub max_requests_in_flight: u64,

    /// Requests of one organization whose handlers run at once; more wait
    /// their turn even when the server has room.
    #[arg(long, env = "HOOKLEDGER_MAX_REQUESTS_IN_FLIGHT_PER_ORG", default_value_t = FairLimits::default().in_flight_per_class as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_requests_in_flight_per_org: u64,

    /// Requests of one organization waiting for their turn at once; one more
    /// is 429 with Retry-After, as is a request that waited the client
    /// timeout for its turn.
    #[arg(long, env = "HOOKLEDGER_MAX_QUEUED_REQUESTS_PER_ORG", default_value_t = FairLimits::default().queued_per_class as u64, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub max_queued_requests_per_org: u64,

    #[command(flatten)]
    pub signing: SigningKeyArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Where the keys that sign tree heads are.
#[derive(Debug, Clone, Args)]
pub struct SigningKeyArgs {
    /// The file of Ed25519 keys tree heads are signed with (made, mode 0600,
    /// if missing). Default: `signing-keys` in the data directory. Every
    /// server on one shared log (PostgreSQL, KurrentDB) must be given the
    /// same file, or the heads one signs will not verify with the keys
    /// another publishes.
    #[arg(long, env = "HOOKLEDGER_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

impl SigningKeyArgs {
    /// The key file these arguments name for `store`.
    pub fn path(&self, store: &StoreArgs) -> PathBuf {
        self.signing_key
            .clone()
            .unwrap_or_else(|| KeyRing::default_path(&store.data))
    }
}

fn retention(text: &str) -> Result<Duration, String> {
    let keep = crate::cli::units::parse_duration(text)?;
    if keep < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(keep)
}

impl ServeArgs {
    fn limits(&self) -> api::Limits {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        api::Limits {
            client_timeout: Duration::from_secs(self.client_timeout),
            max_connections: count(self.max_connections),
            unknown_lookups_per_second: self.unknown_lookups_per_second,
            fair: FairLimits {
                in_flight: count(self.max_requests_in_flight),
                in_flight_per_class: count(self.max_requests_in_flight_per_org),
                queued_per_class: count(self.max_queued_requests_per_org),
            },
        }
    }

    fn feed_limits(&self) -> FeedLimits {
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let half_the_connections = (count(self.max_connections) / 2).max(1);
        FeedLimits {
            per_organization: count(self.max_feed_connections_per_org),
            per_node: count(self.max_feed_connections).min(half_the_connections),
            max_wait: Duration::from_secs(self.feed_max_wait),
        }
    }
}

pub async fn run(store_args: &StoreArgs, args: ServeArgs) -> Result<(), Error> {
    let limits = args.limits.limits();
    limits
        .check_fits(crate::store::MAX_EVENT_BYTES)
        .map_err(Error::Setup)?;
    let store = open::store_for_writing(store_args).await?;
    let signing_keys = open_signing_keys(store_args, &args.signing)?;
    if limits.check_fits(store.max_event_bytes()).is_err() {
        // A store with a lower limit of its own (KurrentDB's maximum append
        // size) answers the events over it with 413; say so once, here.
        tracing::warn!(
            largest_event = limits.largest_event_bytes(),
            store_limit = store.max_event_bytes(),
            "these limits allow events over this store's limit on one event; a request that would record one is refused with 413"
        );
    }
    let node = Node::start(store, store_args.projector_config())
        .await
        .map_err(|e| Error::setup("cannot open the read model", e))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::setup(&format!("cannot listen on {}", args.listen), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::setup("cannot read the listening address", e))?;
    node.ledger.set_limits(limits);
    tracing::info!(listen = %local, data = %store_args.data.display(), head = node.store.head(), "hookledger is serving");
    let admin = crate::admin::listen(&store_args.data, node.ledger.clone())
        .map_err(|e| Error::setup("cannot open the admin socket", e))?;
    tokio::spawn(hint_when_keyless(
        node.clone(),
        store_args.data.display().to_string(),
    ));
    let erasing = start_erasing(store_args, &node, args.retention)?;
    let mut state = AppState::new(node.clone())
        .with_feed_limits(args.feed_limits())
        .with_signing_keys(signing_keys);
    if node.store.commit_stats().is_some() {
        let store = node.store.clone();
        state = state.with_store_stats(move || {
            let stats = store.commit_stats().unwrap_or_default();
            StoreStats {
                appends: stats.appends,
                fsyncs: stats.commits,
                commit_times: stats.times,
            }
        });
    }
    let served = api::serve_with(listener, state, args.limits(), shutdown_signal()).await;
    admin.abort();
    for task in erasing {
        task.abort();
    }
    tracing::info!("stopped accepting; in-flight requests are done");
    let closing = node.clone();
    match tokio::task::spawn_blocking(move || closing.close()).await {
        Ok(Ok(())) => tracing::info!(
            position = node.projector.position(),
            "wrote the read model out"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not write the read model out; the next start replays more")
        }
        Err(e) => tracing::warn!(error = %e, "writing the read model out failed"),
    }
    served.map_err(|e| Error::setup("the server failed", e))
}

/// The ring that signs tree heads; on a shared log without `--signing-key`,
/// a warning that each server then signs with a key of its own.
fn open_signing_keys(store: &StoreArgs, args: &SigningKeyArgs) -> Result<KeyRing, Error> {
    if args.signing_key.is_none() && store.backend != crate::cli::Backend::Embedded {
        tracing::warn!(
            "several servers may share this log: give them all the same --signing-key file, \
             or each signs tree heads with a key the others do not publish"
        );
    }
    let path = args.path(store);
    let ring = KeyRing::open_or_create(&path)
        .map_err(|e| Error::setup("cannot open the tree-head signing key", e))?;
    tracing::info!(path = %path.display(), key_id = %ring.current().key_id, "signing tree heads");
    Ok(ring)
}

/// Starts the background work of erasure: the eraser, which takes erased
/// bodies off the disk, and retention if it is asked for.
fn start_erasing(
    store_args: &StoreArgs,
    node: &Node,
    retention: Option<Duration>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let eraser = Eraser::open(node.store.clone(), node.projector.clone(), &store_args.data)
        .map_err(|e| Error::setup("cannot open the eraser's state", e))?;
    let ready = node.clone();
    let mut tasks = vec![tokio::spawn(async move {
        if ready.ready().await.is_ok() {
            Arc::new(eraser).follow().await;
        }
    })];
    if let Some(keep) = retention {
        let job = Retention::new(
            node.ledger.clone(),
            node.store.clone(),
            node.projector.clone(),
            keep,
        );
        tracing::info!(keep = ?keep, every = ?job.interval(), "bodies older than the retention time are erased");
        let ready = node.clone();
        tasks.push(tokio::spawn(async move {
            if ready.ready().await.is_ok() {
                job.run().await;
            }
        }));
    }
    Ok(tasks)
}

/// On an empty ledger, says how to get a first key.
async fn hint_when_keyless(node: Node, data: String) {
    if node.ready().await.is_err() {
        return;
    }
    let keyless = node
        .ledger
        .view()
        .and_then(|v| Ok(!v.has_api_keys()?))
        .unwrap_or(false);
    if keyless {
        tracing::info!(
            "no API keys yet: create one with `hookledger keys create --org <ORGANIZATION> --data {data}` \
             and send it as `authorization: Bearer <key>` with `x-organization-id: <ORGANIZATION>`"
        );
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
