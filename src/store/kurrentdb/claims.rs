//! Claims on KurrentDB: a name an append takes (an `Idempotency-Key`, a
//! `sourceKey`), unique across every node while it holds: for good, or for a
//! time to live after the append's time.
//!
//! The official Rust client has no multi-stream append, so a claim cannot be
//! written in the same atomic step as the append that takes it. Instead:
//!
//! 1. The append is planned whole (its events, their ids, hashes and times,
//!    the exact revision it expects, and each claim's time to live): an
//!    **intention**, identified by its first event's id.
//! 2. Each of its claims is taken, in a fixed order, by writing the intention
//!    to the claim's own stream with an expected revision: `NoStream` for a
//!    claim never taken, or the revision of the stream's last event when that
//!    event released it or its holder's time to live has passed. Of racing
//!    intentions, exactly one gets each claim.
//! 3. With every claim held, the events are appended at the planned revision
//!    with their planned ids.
//!
//! Anyone who finds a claim held by an intention **settles** it by running
//! the same steps for it: writing the same events with the same ids at the
//! same revisions, which KurrentDB treats as repeats of writes already made.
//! So a writer that crashed after step 2 has its append completed by the
//! next node that wants the claim: the write is not lost and not made twice.
//! An intention that cannot complete (a claim is held by a completed one, or
//! its stream has moved past the planned revision: both facts are for good)
//! is dead: its claims are released by appending a release to each claim
//! stream it holds, and its writer plans again or reports the duplicate.
//!
//! **Expiry.** A claim held by a completed intention holds until that
//! intention's time plus the claim's time to live, judged against the time
//! of the intention that wants it (the same rule as every other backend's,
//! with the appending processes' clocks). Past it, the newcomer takes the
//! claim over by writing its own intention after the holder's: so the holder
//! is always settled first, and a crashed writer's append is completed
//! before its expired claim passes on. An intention that took a claim, was
//! not released from it, and no longer holds it was therefore completed, and
//! settling it again finds it complete.
//!
//! An intention is complete exactly when its events are in its stream; its
//! claims are then never released, only taken over once they expire. Claim
//! streams are outside the ledger's `$all` filter and take no ledger position.

use super::Shared;
use super::intention::{ClaimEvent, Intention};
use super::positions::LogPosition;
use super::record::Planned;
use super::server::Appended;
use crate::store::{Error, Result};

/// Intentions settled within one another, at most: each holds claims before
/// the one it waits for, in claim order, so a chain cannot loop.
const MAX_DEPTH: usize = 16;
/// Events a claim stream may hold before it is suspicious.
const MAX_HISTORY: usize = 4096;

/// How settling an intention ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Its events are in its stream. `position` is where the server says the
    /// write lies in `$all`, if this settlement wrote it.
    Completed { position: Option<LogPosition> },
    /// Its claim `claim` (a digest) was taken by the complete intention whose
    /// last event is `revision` of KurrentDB stream `stream`.
    Duplicate {
        claim: String,
        stream: String,
        revision: u64,
    },
    /// It cannot complete and its claims are released: plan again.
    Retry,
}

/// One claim stream: every intention that took the claim, in order, and the
/// releases of those that died.
#[derive(Debug)]
struct History {
    last_revision: Option<u64>,
    events: Vec<ClaimEvent>,
}

impl History {
    /// The intention holding the claim now, if any.
    fn holder(&self) -> Option<&Intention> {
        match self.events.last() {
            Some(ClaimEvent::Intended(i)) => Some(i),
            _ => None,
        }
    }

    /// Whether `id` was released from this claim: it died.
    fn released(&self, id: uuid::Uuid) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, ClaimEvent::Released(r) if *r == id))
    }

    /// Whether `id` ever took this claim.
    fn took(&self, id: uuid::Uuid) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, ClaimEvent::Intended(i) if i.id() == id))
    }
}

async fn history(shared: &Shared, stream: &str) -> Result<History> {
    let fetched = shared
        .server
        .read_stream(stream, Some(0), MAX_HISTORY)
        .await?;
    if fetched.len() == MAX_HISTORY {
        return Err(Error::Unavailable(format!(
            "the claim stream {stream} holds {MAX_HISTORY} events or more"
        )));
    }
    let mut events = Vec::with_capacity(fetched.len());
    for event in &fetched {
        let claim_event = ClaimEvent::decode(event)?;
        events.push(claim_event);
    }
    Ok(History {
        last_revision: fetched.last().map(|e| e.revision),
        events,
    })
}

/// Takes every claim of `intention` and appends its events, or finds why it
/// cannot (see the module documentation). Safe to run for any intention, by
/// any node, any number of times, concurrently.
pub async fn settle(shared: &Shared, intention: &Intention) -> Result<Settled> {
    settle_within(shared, intention, 0).await
}

async fn settle_within(shared: &Shared, intention: &Intention, depth: usize) -> Result<Settled> {
    if depth > MAX_DEPTH {
        return Err(Error::Unavailable(
            "claims wait on each other too deeply; try again".into(),
        ));
    }
    let json = intention.to_json()?;
    for claim in &intention.claims {
        let key = &claim.key;
        let stream = shared.names.claim_stream(key);
        loop {
            let history = history(shared, &stream).await?;
            if history.released(intention.id()) {
                // Someone found it dead (a fact for good) and released it.
                release(shared, intention).await?;
                return Ok(Settled::Retry);
            }
            let take = match history.holder() {
                Some(holder) if holder.id() == intention.id() => break,
                // It held the claim until it expired and passed on, which
                // only happens to a completed intention.
                _ if history.took(intention.id()) => break,
                Some(holder) => {
                    let holder = holder.clone();
                    match Box::pin(settle_within(shared, &holder, depth + 1)).await? {
                        Settled::Completed { .. }
                            if holder.holds_at(key, intention.recorded_at()) =>
                        {
                            release(shared, intention).await?;
                            return Ok(Settled::Duplicate {
                                claim: key.clone(),
                                stream: shared.names.stream(&holder.stream),
                                revision: holder.last_revision(),
                            });
                        }
                        // Complete, and expired by this intention's time.
                        Settled::Completed { .. } => true,
                        // The holder is dead and has let go: look again.
                        Settled::Duplicate { .. } | Settled::Retry => false,
                    }
                }
                None => true,
            };
            if take {
                let taken = shared
                    .server
                    .append(
                        &stream,
                        history.last_revision,
                        vec![intention.intended(key, &json)?],
                    )
                    .await?;
                if let Appended::Written { .. } = taken {
                    break;
                }
            }
        }
    }
    let events = intention
        .events
        .iter()
        .map(Planned::to_event_data)
        .collect::<Result<Vec<_>>>()?;
    let name = shared.names.stream(&intention.stream);
    match shared
        .server
        .append(&name, intention.expected, events)
        .await?
    {
        Appended::Written { position } => Ok(Settled::Completed { position }),
        Appended::WrongRevision { .. } => {
            release(shared, intention).await?;
            Ok(Settled::Retry)
        }
    }
}

/// Releases every claim `intention` holds.
async fn release(shared: &Shared, intention: &Intention) -> Result<()> {
    for claim in &intention.claims {
        let key = &claim.key;
        let stream = shared.names.claim_stream(key);
        loop {
            let history = history(shared, &stream).await?;
            match history.holder() {
                Some(holder) if holder.id() == intention.id() => {
                    let released = shared
                        .server
                        .append(
                            &stream,
                            history.last_revision,
                            vec![intention.released(key)?],
                        )
                        .await?;
                    match released {
                        Appended::Written { .. } => break,
                        Appended::WrongRevision { .. } => continue,
                    }
                }
                _ => break,
            }
        }
    }
    Ok(())
}
