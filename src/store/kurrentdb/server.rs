//! Every call the backend makes to KurrentDB, through the official client,
//! with the client's errors turned into the store's. Nothing here knows about
//! claims, positions or hash chains.
//!
//! The calls: appends to one stream with an expected revision (`NoStream` or
//! an exact revision), reads of one stream forwards or backwards, reads of
//! `$all` forwards from a position (or backwards from the end) and catch-up
//! subscriptions to `$all`, both with a server-side stream-prefix filter.

use std::time::Duration;

use kurrentdb::{
    Client, ClientSettings, ReadAllOptions, ReadStreamOptions, StreamPosition, StreamState,
    SubscribeToAllOptions, SubscriptionFilter,
};

use super::positions::LogPosition;
use super::record::Fetched;
use crate::store::{Error, Result};

/// How long one call may take before it counts as failed.
const DEADLINE: Duration = Duration::from_secs(30);

/// A connection to one KurrentDB server or cluster.
#[derive(Clone)]
pub struct Server {
    client: Client,
    /// The `$all` filter: streams under the ledger's prefix.
    prefix: String,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never shown.
        f.debug_struct("Server")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// How an append went, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Written (or found written before, with the same event ids). `position`
    /// is where the server says the write lies in `$all`, if it says.
    Written { position: Option<LogPosition> },
    /// The stream is not at the revision expected; nothing was written.
    /// `current` is its last revision, `None` when it does not exist.
    WrongRevision { current: Option<u64> },
}

/// Where a forward read of `$all` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Start,
    /// This position and after.
    At(LogPosition),
}

impl Server {
    /// Connects to `url` (`esdb://…`, `kurrentdb://…`, with `+discover` for a
    /// cluster); the client connects lazily, on the first call.
    pub fn connect(url: &str, ledger_prefix: &str) -> Result<Server> {
        let settings: ClientSettings = url
            .parse()
            .map_err(|e| Error::Unavailable(format!("bad KurrentDB URL: {e}")))?;
        let client = Client::new(settings)
            .map_err(|e| Error::Unavailable(format!("cannot start the KurrentDB client: {e}")))?;
        Ok(Server {
            client,
            prefix: ledger_prefix.to_owned(),
        })
    }

    fn filter(&self) -> SubscriptionFilter {
        SubscriptionFilter::on_stream_name().add_prefix(&self.prefix)
    }

    /// Appends `events` to `stream`, which must be at `expected` (`None`: no stream).
    pub async fn append(
        &self,
        stream: &str,
        expected: Option<u64>,
        events: Vec<kurrentdb::EventData>,
    ) -> Result<Appended> {
        let state = match expected {
            Some(revision) => StreamState::StreamRevision(revision),
            None => StreamState::NoStream,
        };
        let options = kurrentdb::AppendToStreamOptions::default()
            .stream_state(state)
            .deadline(DEADLINE);
        match self.client.append_to_stream(stream, &options, events).await {
            Ok(written) => {
                let p = written.position;
                // An append found written before may come back without a position.
                let position = (p.commit != 0 || p.prepare != 0).then_some((p.commit, p.prepare));
                Ok(Appended::Written { position })
            }
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                let current = match current {
                    kurrentdb::CurrentRevision::Current(r) => Some(r),
                    kurrentdb::CurrentRevision::NoStream => None,
                };
                Ok(Appended::WrongRevision { current })
            }
            Err(e) => Err(failed(&format!("appending to {stream}"), e)),
        }
    }

    /// Up to `max` events of `stream` from revision `from` forwards, or its
    /// last `max` events backwards when `from` is `None`; empty when the
    /// stream does not exist.
    pub async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        max: usize,
    ) -> Result<Vec<Fetched>> {
        let options = ReadStreamOptions::default()
            .max_count(max)
            .deadline(DEADLINE);
        let options = match from {
            Some(revision) => options
                .position(StreamPosition::Position(revision))
                .forwards(),
            None => options.position(StreamPosition::End).backwards(),
        };
        let context = || format!("reading {stream}");
        let mut read = match self.client.read_stream(stream, &options).await {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(failed(&context(), e)),
        };
        let mut events = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(event)) => {
                    if let Some(event) = event.event {
                        events.push(Fetched::from(event));
                    }
                }
                Ok(None) => return Ok(events),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
                Err(e) => return Err(failed(&context(), e)),
            }
        }
    }

    /// Up to `max` of the ledger's events in `$all` order from `from`.
    pub async fn read_all(&self, from: From, max: usize) -> Result<Vec<Fetched>> {
        let start = match from {
            From::Start => StreamPosition::Start,
            From::At((commit, prepare)) => {
                StreamPosition::Position(kurrentdb::Position { commit, prepare })
            }
        };
        let options = ReadAllOptions::default()
            .position(start)
            .forwards()
            .filter(self.filter())
            .max_count(max)
            .deadline(DEADLINE);
        self.collect_all(&options, "reading $all").await
    }

    /// Where the ledger's last event lies in `$all`, if it has one.
    pub async fn last_position(&self) -> Result<Option<LogPosition>> {
        let options = ReadAllOptions::default()
            .position(StreamPosition::End)
            .backwards()
            .filter(self.filter())
            .max_count(1)
            .deadline(DEADLINE);
        let last = self
            .collect_all(&options, "reading the end of $all")
            .await?;
        Ok(last.first().map(|e| e.position))
    }

    async fn collect_all(&self, options: &ReadAllOptions, context: &str) -> Result<Vec<Fetched>> {
        let mut read = self
            .client
            .read_all(options)
            .await
            .map_err(|e| failed(context, e))?;
        let mut events = Vec::new();
        while let Some(event) = read.next().await.map_err(|e| failed(context, e))? {
            if let Some(event) = event.event {
                events.push(Fetched::from(event));
            }
        }
        Ok(events)
    }

    /// A catch-up subscription to the ledger's events in `$all`, after
    /// `after` (from the start if `None`).
    pub async fn subscribe(&self, after: Option<LogPosition>) -> Subscription {
        let start = match after {
            None => StreamPosition::Start,
            Some((commit, prepare)) => {
                StreamPosition::Position(kurrentdb::Position { commit, prepare })
            }
        };
        let options = SubscribeToAllOptions::default()
            .position(start)
            .filter(self.filter());
        Subscription(self.client.subscribe_to_all(&options).await)
    }
}

/// See [`Server::subscribe`].
pub struct Subscription(kurrentdb::Subscription);

impl Subscription {
    /// The next event, waiting for one to be written if need be.
    pub async fn next(&mut self) -> Result<Fetched> {
        loop {
            let resolved = self
                .0
                .next()
                .await
                .map_err(|e| failed("following $all", e))?;
            if let Some(event) = resolved.event {
                return Ok(Fetched::from(event));
            }
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription(..)")
    }
}

/// A failed call: its outcome is unknown, as with any I/O that did not answer.
fn failed(context: &str, e: kurrentdb::Error) -> Error {
    Error::io(context, std::io::Error::other(e.to_string()))
}
