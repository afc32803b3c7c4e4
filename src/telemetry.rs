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
//! since its last write and writes them together, then rests for
//! [`PAUSE`] before the next write. A request's log line then costs its handler
//! the formatting, not a `write` to a pipe or a terminal that may be slow to
//! read, and under load the writer thread wakes once per batch rather than once
//! per line. A line logged after a quiet spell is written at once. Nothing is
//! dropped: when 128 000 lines are waiting, a thread that logs waits for room,
//! as it would have waited on stderr.

use std::io::{BufWriter, IsTerminal, Write};
use std::time::Duration;

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
    // The writer thread flushes after each batch of queued lines, so a batch
    // costs one write, and no line waits for the next.
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("stderr-log")
        .finish(Paced(BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        )));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests that run several commands) keeps the first subscriber.
    let _ = if json {
        registry
            // A request has one span, so the list of spans would repeat
            // the current one on every line.
            .with(
                json_subscriber::layer()
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init()
    };
    Guard { _worker: worker }
}

/// How long the log's writer thread rests after a write. Lines logged
/// meanwhile queue up (waking no one) and go out together in the next write;
/// at 20 000 lines a second that is about 20 lines a write instead of one.
pub const PAUSE: Duration = Duration::from_millis(1);

/// A buffered writer whose flush writes what is buffered, then rests for
/// [`PAUSE`] if there was anything to write.
#[derive(Debug)]
struct Paced<W: Write>(BufWriter<W>);

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let wrote = !self.0.buffer().is_empty();
        self.0.flush()?;
        if wrote {
            std::thread::sleep(PAUSE);
        }
        Ok(())
    }
}
