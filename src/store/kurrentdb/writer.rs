//! Appends on KurrentDB: plan each append on its stream's tip, then write it
//! with the exact revision it was planned on.
//!
//! An append's hash chain and `recordedAt` are computed here, before it is
//! written: its events chain on the stream's last hash, and are stamped with
//! this process's clock (never earlier than the stream's last event or any
//! event this process has seen). The write expects the exact revision the
//! plan was made on, so a stream that moved in between (another node wrote
//! to it) refuses it whole, and the append is planned again on the new tip.
//!
//! Group commit: appends to one stream queue behind the one being written,
//! and each write takes every append that queued meanwhile, planned one after
//! the other, as one KurrentDB append (within the maximum append size). So a
//! process never races itself on a stream, and concurrent appends to a hot
//! stream share writes. Appends to different streams are written
//! concurrently, over the client's one connection: without a multi-stream
//! append in the client, that is as far as batching across streams goes.
//! KurrentDB makes each write durable before it answers.
//!
//! An append that takes claims is written alone, through the claims
//! protocol ([`claims`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::claims::{self, Settled};
use super::intention::Intention;
use super::positions::LogPosition;
use super::record::{self, Planned};
use super::server::Appended as Written;
use super::tips::{Tip, read_tip};
use super::{Shared, answer};
use crate::chain::ZERO;
use crate::store::sequencer::{Pending, now_micros};
use crate::store::{CommitStats, Error, Result};

/// Times an append is planned again after its stream moved before giving up.
const RETRIES: usize = 64;

/// The appends waiting for each stream's writer.
#[derive(Debug, Default)]
pub struct Queues {
    waiting: Mutex<HashMap<String, Vec<Pending>>>,
    /// Appends acknowledged.
    pub appends: AtomicU64,
    /// KurrentDB appends that wrote ledger events.
    writes: AtomicU64,
    /// How long each of those appends took.
    clock: crate::store::CommitClock,
}

impl Queues {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Vec<Pending>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> CommitStats {
        CommitStats {
            appends: self.appends.load(Ordering::Relaxed),
            commits: self.writes.load(Ordering::Relaxed),
            times: self.clock.times(),
        }
    }
}

/// Queues `pending` behind its stream's writer, starting one if none runs.
pub fn enqueue(shared: &Arc<Shared>, pending: Pending) {
    let stream = pending.stream.clone();
    let start = {
        let mut waiting = shared.queues.waiting();
        match waiting.get_mut(&stream) {
            Some(queue) => {
                queue.push(pending);
                false
            }
            None => {
                waiting.insert(stream.clone(), vec![pending]);
                true
            }
        }
    };
    if start {
        tokio::spawn(drain(shared.clone(), stream));
    }
}

/// One stream's writer: writes what queued until nothing is left.
async fn drain(shared: Arc<Shared>, stream: String) {
    loop {
        let batch = {
            let mut waiting = shared.queues.waiting();
            match waiting.get_mut(&stream) {
                Some(queue) if !queue.is_empty() => std::mem::take(queue),
                _ => {
                    waiting.remove(&stream);
                    return;
                }
            }
        };
        write(&shared, &stream, batch).await;
    }
}

/// An append planned on a tip.
pub struct Staged {
    pub pending: Pending,
    pub first_version: u64,
    pub planned: Vec<Planned>,
}

impl Staged {
    pub fn last_version(&self) -> u64 {
        self.first_version + self.planned.len() as u64 - 1
    }
}

/// Writes the appends of `batch`, all to `stream`, in order.
async fn write(shared: &Arc<Shared>, stream: &str, batch: Vec<Pending>) {
    let name = shared.names.stream(stream);
    let mut queue: VecDeque<Pending> = batch.into();
    // The tip, and whether it was read from the server just now.
    let mut known: Option<(Option<Tip>, bool)> = None;
    let mut retries = 0;
    while !queue.is_empty() {
        let (tip, fresh) = match known {
            Some(known) => known,
            None => match shared.tips.get(&name) {
                Some(tip) => (tip, false),
                None => match read_tip(shared, &name).await {
                    Ok(tip) => (tip, true),
                    Err(e) => {
                        for pending in queue {
                            let _ = pending.reply.send(Err(answer::copy_error(&e)));
                        }
                        return;
                    }
                },
            },
        };
        let run = take_run(&mut queue, shared.max_append_bytes);
        let claimed = !run[0].claims.is_empty();
        let staged = match stage(shared, stream, tip, fresh, run) {
            Ok(staged) => staged,
            Err(stale) => {
                // An expectation failed on a remembered tip: read the real one.
                requeue(&mut queue, stale);
                known = None;
                shared.tips.forget(&name);
                continue;
            }
        };
        if staged.is_empty() {
            known = Some((tip, fresh));
            continue;
        }
        let started = std::time::Instant::now();
        let outcome = if claimed {
            write_claimed(shared, stream, tip, &staged).await
        } else {
            write_plain(shared, &name, tip, &staged).await
        };
        match outcome {
            Ok(Some(Done::Written(position))) => {
                shared.queues.clock.record(started.elapsed());
                retries = 0;
                let last = staged.last().expect("a staged run");
                let after = Tip {
                    version: last.last_version(),
                    hash: last.planned.last().map_or(ZERO, |p| p.hash),
                    recorded_at: last.planned.last().map_or(0, |p| p.recorded_at),
                };
                shared.tips.set(&name, Some(after));
                known = Some((Some(after), true));
                shared.queues.writes.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(answer::acknowledge(
                    shared.clone(),
                    name.clone(),
                    staged,
                    position,
                ));
            }
            Ok(Some(Done::Duplicate(claim, stream, revision))) => {
                known = Some((tip, false));
                tokio::spawn(answer::refuse_duplicate(
                    shared.clone(),
                    staged,
                    claim,
                    stream,
                    revision,
                ));
            }
            Ok(None) => {
                // The stream moved: plan the run again on its new tip.
                retries += 1;
                shared.tips.forget(&name);
                known = None;
                let run: Vec<Pending> = staged.into_iter().map(|s| s.pending).collect();
                if retries > RETRIES {
                    for pending in run {
                        let _ = pending.reply.send(Err(Error::Unavailable(format!(
                            "{stream} moved under {RETRIES} attempts in a row; try again"
                        ))));
                    }
                    retries = 0;
                } else {
                    requeue(&mut queue, run);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, stream, "a KurrentDB append failed");
                shared.tips.forget(&name);
                known = None;
                for s in staged {
                    let _ = s.pending.reply.send(Err(answer::copy_error(&e)));
                }
            }
        }
    }
}

/// How a write ended, short of an error; `None` in its place: the stream was
/// not at the revision planned on.
enum Done {
    /// Written; where the server says it lies in `$all`, if it says.
    Written(Option<LogPosition>),
    /// A claim (its digest) is held by the complete append ending at
    /// `revision` of KurrentDB stream `stream`.
    Duplicate(String, String, u64),
}

async fn write_plain(
    shared: &Shared,
    name: &str,
    tip: Option<Tip>,
    staged: &[Staged],
) -> Result<Option<Done>> {
    let events = staged
        .iter()
        .flat_map(|s| &s.planned)
        .map(Planned::to_event_data)
        .collect::<Result<Vec<_>>>()?;
    match shared
        .server
        .append(name, tip.map(|t| t.version), events)
        .await?
    {
        Written::Written { position } => Ok(Some(Done::Written(position))),
        Written::WrongRevision { .. } => Ok(None),
    }
}

async fn write_claimed(
    shared: &Shared,
    stream: &str,
    tip: Option<Tip>,
    staged: &[Staged],
) -> Result<Option<Done>> {
    let [one] = staged else {
        return Err(Error::Unavailable(
            "an append with claims is written alone".into(),
        ));
    };
    let intention = Intention::new(
        stream,
        tip.map(|t| t.version),
        &one.pending.claims,
        one.planned.clone(),
    );
    match claims::settle(shared, &intention).await? {
        Settled::Completed { position } => Ok(Some(Done::Written(position))),
        Settled::Duplicate {
            claim,
            stream,
            revision,
        } => Ok(Some(Done::Duplicate(claim, stream, revision))),
        Settled::Retry => Ok(None),
    }
}

/// Takes the appends to write together from the front of `queue`: one with
/// claims alone; otherwise those without, while they fit one KurrentDB append.
fn take_run(queue: &mut VecDeque<Pending>, max_bytes: usize) -> Vec<Pending> {
    let mut run = Vec::new();
    let mut bytes = 0;
    while let Some(next) = queue.front() {
        let claimed = !next.claims.is_empty();
        let size = wire_size(next);
        if !run.is_empty() && (claimed || bytes + size > max_bytes) {
            break;
        }
        bytes += size;
        run.extend(queue.pop_front());
        if claimed {
            break;
        }
    }
    run
}

fn requeue(queue: &mut VecDeque<Pending>, run: Vec<Pending>) {
    for pending in run.into_iter().rev() {
        queue.push_front(pending);
    }
}

/// The bytes KurrentDB counts for an append's events.
pub fn wire_size(pending: &Pending) -> usize {
    pending
        .events
        .iter()
        .map(|e| e.data.len() + e.metadata.len() + e.content.len() + record::ENVELOPE_BYTES)
        .sum()
}

/// Plans `run` on `tip`, one append after the other. An append whose
/// expectation fails is answered with a conflict if the tip is `fresh`; if it
/// is only remembered, the whole run comes back to be planned on the real one.
fn stage(
    shared: &Shared,
    stream: &str,
    tip: Option<Tip>,
    fresh: bool,
    run: Vec<Pending>,
) -> Result<Vec<Staged>, Vec<Pending>> {
    if !fresh {
        let mut current = tip.map(|t| t.version);
        for pending in &run {
            if !pending.expected.matches(current) {
                return Err(run);
            }
            current = Some(current.map_or(0, |v| v + 1) + pending.events.len() as u64 - 1);
        }
    }
    let clock = shared.follower.progress().clock;
    let mut tip = tip;
    let mut staged = Vec::with_capacity(run.len());
    for pending in run {
        let actual = tip.map(|t| t.version);
        if !pending.expected.matches(actual) {
            let _ = pending.reply.send(Err(Error::Conflict {
                expected: pending.expected,
                actual,
            }));
            continue;
        }
        // Time never runs backwards in a stream, nor behind what this process saw.
        let recorded_at = now_micros()
            .max(clock)
            .max(tip.map_or(i64::MIN, |t| t.recorded_at));
        let first_version = actual.map_or(0, |v| v + 1);
        let mut prev_hash = tip.map_or(ZERO, |t| t.hash);
        let mut planned = Vec::with_capacity(pending.events.len());
        for (k, event) in pending.events.iter().enumerate() {
            let p = record::plan(
                stream,
                first_version + k as u64,
                event,
                recorded_at,
                prev_hash,
            );
            prev_hash = p.hash;
            planned.push(p);
        }
        tip = Some(Tip {
            version: first_version + planned.len() as u64 - 1,
            hash: prev_hash,
            recorded_at,
        });
        staged.push(Staged {
            pending,
            first_version,
            planned,
        });
    }
    Ok(staged)
}
