//! Prometheus metrics: requests and latency by route template and status, time
//! spent appending (in `Ledger::execute`), projection lag, the store's
//! append/fsync counters when the backend reports them, and the change feed's
//! open connections and events sent by how they follow (never by organization).
//!
//! Gauges that describe other components (lag, store counters) are read at scrape
//! time, so nothing here polls or runs in the background.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

use crate::store::CommitTimes;
use crate::store::commit_times::BUCKETS_MICROS;

/// What a store reports about its durability work, read at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Appends acknowledged since the store opened.
    pub appends: u64,
    /// fsyncs (group commits) since the store opened.
    pub fsyncs: u64,
    /// How long those commits took.
    pub commit_times: CommitTimes,
}

/// Reads the store's counters; the embedded backend supplies one.
pub type StoreStatsFn = Arc<dyn Fn() -> StoreStats + Send + Sync>;

/// Every label takes a bounded set of values, whatever clients send: the
/// route is a template of the router (or `unmatched`), the method one of the
/// standard ones (or `other`) and the status a three-digit code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

/// How a feed connection follows: `long_poll` or `event_stream`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 0.5 ms to about 16 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 0.1 ms to about 13 s: an append includes its fsync.
fn append_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histograms<RequestLabels>,
    append: Histograms<CommandLabels>,
    lag: Gauge,
    store_appends: Gauge,
    store_fsyncs: Gauge,
    batch_size: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The store counters at the previous scrape, for the batch size in between.
    last_stats: Mutex<StoreStats>,
    commit_times: Arc<StoreCommitTimes>,
    store_wait: Histograms<CommandLabels>,
    model_wait: Histograms<CommandLabels>,
    feed_connections: Family<FeedLabels, Gauge>,
    feed_events: Family<FeedLabels, Counter>,
    feed_refused: Counter,
    requests_running: Gauge,
    requests_waiting: Gauge,
    requests_refused_busy: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookledger");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency: Histograms<RequestLabels> = Family::new_with_constructor(request_buckets);
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response",
            latency.clone(),
        );
        let append: Histograms<CommandLabels> = Family::new_with_constructor(append_buckets);
        registry.register(
            "append_duration_seconds",
            "Time in the write path: decide, append, fsync, wait for the read model",
            append.clone(),
        );
        let store_wait: Histograms<CommandLabels> = Family::new_with_constructor(append_buckets);
        registry.register(
            "append_store_wait_seconds",
            "Time a write waited for the store to make its events durable (the group commit's queue and the commit), within append_duration_seconds",
            store_wait.clone(),
        );
        let model_wait: Histograms<CommandLabels> = Family::new_with_constructor(append_buckets);
        registry.register(
            "append_model_wait_seconds",
            "Time a write waited, once durable, for the read model to fold its events before its answer was read, within append_duration_seconds",
            model_wait.clone(),
        );
        let lag = Gauge::default();
        registry.register(
            "projection_lag_events",
            "Store head minus projector position",
            lag.clone(),
        );
        let store_appends = Gauge::default();
        registry.register(
            "store_appends",
            "Appends the store acknowledged since it opened",
            store_appends.clone(),
        );
        let store_fsyncs = Gauge::default();
        registry.register(
            "store_fsyncs",
            "Group commits that made appends durable since the store opened (an fsync of the embedded log, a transaction on PostgreSQL)",
            store_fsyncs.clone(),
        );
        let batch_size = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "store_fsync_batch_size",
            "Mean appends per fsync since the previous scrape",
            batch_size.clone(),
        );
        let commit_times = Arc::new(StoreCommitTimes::default());
        registry.register_collector(Box::new(commit_times.clone()));
        let feed_connections = Family::<FeedLabels, Gauge>::default();
        registry.register(
            "feed_connections",
            "Feed connections open now (long-polls waiting and event streams)",
            feed_connections.clone(),
        );
        let feed_events = Family::<FeedLabels, Counter>::default();
        registry.register(
            "feed_events_sent",
            "Feed events sent on long-polls and event streams",
            feed_events.clone(),
        );
        let feed_refused = Counter::default();
        registry.register(
            "feed_connections_refused",
            "Long-polls and event streams refused (429) past the feed connection limits",
            feed_refused.clone(),
        );
        let requests_running = Gauge::default();
        registry.register(
            "requests_running",
            "Requests running their handlers under fair admission",
            requests_running.clone(),
        );
        let requests_waiting = Gauge::default();
        registry.register(
            "requests_waiting",
            "Requests waiting for their turn under fair admission",
            requests_waiting.clone(),
        );
        let requests_refused_busy = Counter::default();
        registry.register(
            "requests_refused_busy",
            "Requests refused (429) because their organization had too many waiting, or waited too long",
            requests_refused_busy.clone(),
        );
        Metrics {
            requests_running,
            requests_waiting,
            requests_refused_busy,
            feed_connections,
            feed_events,
            feed_refused,
            registry,
            requests,
            latency,
            append,
            lag,
            store_appends,
            store_fsyncs,
            batch_size,
            last_stats: Mutex::new(StoreStats::default()),
            commit_times,
            store_wait,
            model_wait,
        }
    }

    /// Counts one answered request. `route` must be a route template and
    /// `method` a fixed name: each distinct value makes new series.
    pub fn record_request(
        &self,
        route: &str,
        method: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            route: route.to_owned(),
            method,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_append(&self, command: &'static str, elapsed: Duration) {
        self.append
            .get_or_create(&CommandLabels { command })
            .observe(elapsed.as_secs_f64());
    }

    /// What a write waited for, by command; nothing for one that wrote nothing.
    pub fn record_waits(&self, command: &'static str, waits: &crate::ledger::Waits) {
        if *waits == crate::ledger::Waits::default() {
            return;
        }
        let labels = CommandLabels { command };
        self.store_wait
            .get_or_create(&labels)
            .observe(waits.store.as_secs_f64());
        self.model_wait
            .get_or_create(&labels)
            .observe(waits.model.as_secs_f64());
    }

    pub fn feed_opened(&self, mode: &'static str) {
        self.feed_connections
            .get_or_create(&FeedLabels { mode })
            .inc();
    }

    pub fn feed_closed(&self, mode: &'static str) {
        self.feed_connections
            .get_or_create(&FeedLabels { mode })
            .dec();
    }

    pub fn feed_sent(&self, mode: &'static str, events: u64) {
        self.feed_events
            .get_or_create(&FeedLabels { mode })
            .inc_by(events);
    }

    pub fn feed_refused(&self) {
        self.feed_refused.inc();
    }

    pub fn refused_busy(&self) {
        self.requests_refused_busy.inc();
    }

    /// Sets the fair admission gauges, read at each scrape.
    pub fn set_admission(&self, running: usize, waiting: usize) {
        self.requests_running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        self.requests_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The text exposition, after reading the scrape-time gauges.
    pub fn render(&self, lag: u64, store: Option<StoreStats>) -> String {
        self.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        if let Some(now) = store {
            self.store_appends
                .set(i64::try_from(now.appends).unwrap_or(i64::MAX));
            self.store_fsyncs
                .set(i64::try_from(now.fsyncs).unwrap_or(i64::MAX));
            let mut last = self.last_stats.lock().unwrap_or_else(|e| e.into_inner());
            let fsyncs = now.fsyncs.saturating_sub(last.fsyncs);
            if fsyncs > 0 {
                let appends = now.appends.saturating_sub(last.appends);
                self.batch_size.set(appends as f64 / fsyncs as f64);
            }
            *last = now;
            *self
                .commit_times
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(now.commit_times);
        }
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep the scrape readable regardless.
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }
}

/// `store_commit_duration_seconds`: how long the store's group commits took,
/// as the store counted them up to this scrape. Absent for a store that does
/// not report them.
#[derive(Debug, Default)]
struct StoreCommitTimes(Mutex<Option<CommitTimes>>);

impl Collector for StoreCommitTimes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(times) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Ok(());
        };
        let buckets: Vec<(f64, u64)> = BUCKETS_MICROS
            .iter()
            .map(|&upper| upper as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(times.counts)
            .collect();
        let mut metric = encoder.encode_descriptor(
            "store_commit_duration_seconds",
            "Time each group commit took: the write and fsync of the embedded log, the transaction on PostgreSQL, the append on KurrentDB; every append it covers waits that long",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(
            times.sum_micros as f64 / 1e6,
            times.count(),
            &buckets,
            None,
        )
    }
}
