//! Who is following the feed, and waking them when their organization's
//! events are folded.
//!
//! Every long-poll and event stream holds a [`Subscription`] while it is open:
//! it counts against the organization's and the node's number of feed
//! connections ([`FeedLimits`]), and carries a `watch` of the organization's
//! last sequence number. One task, running only while someone follows, waits
//! for the read model to advance and then reads the last sequence of each
//! followed organization once, however many connections follow it, and
//! updates those watches; a follower wakes only when its own organization
//! moved. Under a stream of folds, sweeps are at least [`SWEEP_INTERVAL`]
//! apart and the task rests [`REST_PER_SWEEP`] times as long as its last
//! sweep took, so however many organizations are followed it spends at most
//! a small, fixed share of a core, never one lookup per fold per follower;
//! what grows with them is how soon a follower wakes.
//!
//! It must not read events or hold any: followers read their pages themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::api::error::ApiError;
use crate::api::metrics::Metrics;
use crate::projector::Projector;

/// The shortest time between two sweeps of the followed organizations.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(2);
/// How many times as long as a sweep took the task rests before the next.
pub const REST_PER_SWEEP: u32 = 50;

/// What following the feed may hold of a server (`serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    /// Long-polls and event streams one organization may hold open at once.
    pub per_organization: usize,
    /// Long-polls and event streams the server holds open at once, of every
    /// organization; kept below `--max-connections` so followers never take
    /// every connection.
    pub per_node: usize,
    /// The longest a long-poll is held before it answers empty, whatever
    /// `wait` asked for (at most [`super::MAX_WAIT`]).
    pub max_wait: Duration,
}

impl Default for FeedLimits {
    fn default() -> Self {
        FeedLimits {
            per_organization: 16,
            per_node: 128,
            max_wait: super::MAX_WAIT,
        }
    }
}

/// How a connection follows: it labels the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    LongPoll,
    Stream,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::LongPoll => "long_poll",
            Mode::Stream => "event_stream",
        }
    }
}

/// The followers of one server.
#[derive(Debug)]
pub struct Feeds {
    limits: FeedLimits,
    metrics: Arc<Metrics>,
    followed: Mutex<Followed>,
    /// Set once the server stops accepting: every follower ends.
    closing: watch::Sender<bool>,
    /// Told when the last follower leaves, so the sweeping task ends.
    idle: Notify,
}

#[derive(Debug, Default)]
struct Followed {
    connections: usize,
    organizations: HashMap<String, Organization>,
    sweeping: bool,
}

#[derive(Debug)]
struct Organization {
    connections: usize,
    last_sequence: watch::Sender<u64>,
}

impl Feeds {
    pub fn new(limits: FeedLimits, metrics: Arc<Metrics>) -> Feeds {
        Feeds {
            limits,
            metrics,
            followed: Mutex::new(Followed::default()),
            closing: watch::Sender::new(false),
            idle: Notify::new(),
        }
    }

    pub fn limits(&self) -> FeedLimits {
        self.limits
    }

    /// Ends every follower: the server is shutting down.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the server is shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Opens a feed connection for `org`, or 429 when the organization or the
    /// server holds as many as it may. Starts the sweeping task if none runs.
    pub fn subscribe(
        self: &Arc<Self>,
        org: &str,
        mode: Mode,
        projector: &Arc<Projector>,
    ) -> Result<Subscription, ApiError> {
        let mut followed = lock(&self.followed);
        let of_org = followed.organizations.get(org).map_or(0, |o| o.connections);
        let refused = if followed.connections >= self.limits.per_node {
            Some(format!(
                "this server holds {} feed connections, the most it may \
                 (limit max-feed-connections: {}); retry shortly",
                followed.connections, self.limits.per_node
            ))
        } else if of_org >= self.limits.per_organization {
            Some(format!(
                "this organization holds {of_org} feed connections, the most it may \
                 (limit max-feed-connections-per-org: {}); close one first",
                self.limits.per_organization
            ))
        } else {
            None
        };
        if let Some(what) = refused {
            self.metrics.feed_refused();
            return Err(ApiError::TooManyRequests {
                what,
                retry_after: 1,
            });
        }
        followed.connections += 1;
        let organization = followed
            .organizations
            .entry(org.to_owned())
            .or_insert_with(|| Organization {
                connections: 0,
                last_sequence: watch::Sender::new(0),
            });
        organization.connections += 1;
        let last_sequence = organization.last_sequence.subscribe();
        if !followed.sweeping {
            followed.sweeping = true;
            tokio::spawn(sweep(self.clone(), projector.clone()));
        }
        drop(followed);
        self.metrics.feed_opened(mode.label());
        Ok(Subscription {
            feeds: self.clone(),
            org: org.to_owned(),
            mode,
            last_sequence,
            closing: self.closing(),
        })
    }

    fn unsubscribe(&self, org: &str, mode: Mode) {
        let mut followed = lock(&self.followed);
        followed.connections = followed.connections.saturating_sub(1);
        if let Some(organization) = followed.organizations.get_mut(org) {
            organization.connections = organization.connections.saturating_sub(1);
            if organization.connections == 0 {
                followed.organizations.remove(org);
            }
        }
        if followed.connections == 0 {
            self.idle.notify_one();
        }
        drop(followed);
        self.metrics.feed_closed(mode.label());
    }

    /// The followed organizations and their watches; `None` (and the
    /// sweeping marked as stopped) when nobody follows any more.
    fn followed(&self) -> Option<Vec<(String, watch::Sender<u64>)>> {
        let mut followed = lock(&self.followed);
        if followed.organizations.is_empty() {
            followed.sweeping = false;
            return None;
        }
        Some(
            followed
                .organizations
                .iter()
                .map(|(org, o)| (org.clone(), o.last_sequence.clone()))
                .collect(),
        )
    }
}

/// One open feed connection; dropping it frees its place.
#[derive(Debug)]
pub struct Subscription {
    feeds: Arc<Feeds>,
    org: String,
    mode: Mode,
    last_sequence: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

/// Why a wait for new events ended without any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Deadline,
    Closing,
}

impl Subscription {
    /// Waits until the organization may have an event after `after`, or
    /// until `deadline`, or until the server shuts down. May wake without a
    /// new event; never misses one folded after the caller last read.
    pub async fn changed_after(
        &mut self,
        after: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), Ended> {
        let until = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            moved = self.last_sequence.wait_for(|last| *last > after) => match moved {
                Ok(_) => Ok(()),
                // The server dropped its followers: it is going away.
                Err(_) => Err(Ended::Closing),
            },
            () = until_closing(&mut self.closing) => Err(Ended::Closing),
            () = until => Err(Ended::Deadline),
        }
    }

    /// Counts `n` events sent on this connection.
    pub fn sent(&self, n: u64) {
        self.feeds.metrics.feed_sent(self.mode.label(), n);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.feeds.unsubscribe(&self.org, self.mode);
    }
}

/// While anyone follows: after each advance of the read model, reads each
/// followed organization's last sequence number and wakes its followers if
/// it moved.
async fn sweep(feeds: Arc<Feeds>, projector: Arc<Projector>) {
    let mut closing = feeds.closing();
    loop {
        let seen = projector.position();
        let Some(followed) = feeds.followed() else {
            return;
        };
        let started = std::time::Instant::now();
        if let Ok(view) = projector.view() {
            for (org, last_sequence) in followed {
                match view.last_sequence(&org) {
                    Ok(last) => {
                        last_sequence.send_if_modified(|known| {
                            let moved = last > *known;
                            *known = (*known).max(last);
                            moved
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "the feed could not read a sequence"),
                }
            }
        }
        // Rest before waiting, so the first fold after a quiet spell is
        // swept at once, and a stream of folds is swept at a bounded rate.
        let rest = started.elapsed().saturating_mul(REST_PER_SWEEP);
        tokio::time::sleep(rest.max(SWEEP_INTERVAL)).await;
        tokio::select! {
            advanced = projector.wait_for(seen + 1) => {
                if advanced.is_err() {
                    // The projector stopped: nothing will advance until it is
                    // rebuilt; look again now and then rather than spin.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            () = feeds.idle.notified() => {}
            () = until_closing(&mut closing) => {
                lock(&feeds.followed).sweeping = false;
                return;
            }
        }
    }
}

/// Resolves once the server is shutting down (or gone).
async fn until_closing(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

fn lock(followed: &Mutex<Followed>) -> MutexGuard<'_, Followed> {
    followed.lock().unwrap_or_else(|e| e.into_inner())
}
