//! Logging, set up once: human-readable on a terminal, JSON lines elsewhere, always
//! on stderr so that a command's stdout carries only its output.
//!
//! JSON lines are tracing-subscriber's format (`timestamp`, `level`, `fields`,
//! `target`, `span`, `spans`) written by `json-subscriber`, which keeps each
//! span's fields as JSON text when the span opens; tracing-subscriber parsed
//! them back into a map for every line, twice (`span` and `spans`), and that
//! was most of what a request's log line cost.
//!
//! Lines are formatted where they are logged and written by a thread of their
//! own (`tracing-appender`'s non-blocking writer), which takes every line queued
//! since its last write and writes them together. A request's log line then
//! costs its handler the formatting, not a `write` to a pipe or a terminal that
//! may be slow to read. Nothing is dropped: when 128 000 lines are waiting, a
//! thread that logs waits for room, as it would have waited on stderr.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    Pretty,
    Json,
}

/// Keeps the log's writer thread; dropping it writes out every queued line.
/// Hold it until the command's last line is logged.
#[derive(Debug)]
pub struct Guard {
    _worker: WorkerGuard,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` level.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Pretty => false,
        LogFormat::Json => true,
    };
    // Buffered: the writer thread flushes after each batch of queued lines,
    // so a burst costs one write, and no line waits for the next.
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("hookledger-logs")
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests that run several commands) keeps the first subscriber.
    let _ = if json {
        registry
            .with(json_subscriber::layer().with_writer(writer))
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init()
    };
    Guard { _worker: worker }
}
