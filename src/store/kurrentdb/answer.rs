//! Answering the appends a write took, once its outcome is known: each gets
//! its positions (when the follower has numbered the write), its conflict,
//! the claim's taker, or its own copy of the error.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::positions::LogPosition;
use super::writer::Staged;
use super::{Shared, locate};
use crate::store::{Appended, Error};

/// Answers the appends of a write once their positions are known.
pub async fn acknowledge(
    shared: Arc<Shared>,
    name: String,
    staged: Vec<Staged>,
    hint: Option<LogPosition>,
) {
    let Some(last) = staged.last() else { return };
    let last_version = last.last_version();
    match locate(&shared, &name, last_version, hint).await {
        Ok(end) => {
            for s in staged {
                let n = s.planned.len() as u64;
                let last = end - (last_version - s.last_version());
                let positions: RangeInclusive<u64> = last + 1 - n..=last;
                shared.queues.appends.fetch_add(1, Ordering::Relaxed);
                let appended = Appended {
                    positions,
                    last_version: s.last_version(),
                    recorded_at: s.planned[0].recorded_at,
                };
                let _ = s.pending.reply.send(Ok(appended));
            }
        }
        Err(e) => {
            for s in staged {
                let _ = s.pending.reply.send(Err(copy_error(&e)));
            }
        }
    }
}

/// Answers an append whose claim was taken, naming where the taker ends.
pub async fn refuse_duplicate(
    shared: Arc<Shared>,
    staged: Vec<Staged>,
    key: String,
    stream: String,
    revision: u64,
) {
    let answer = locate(&shared, &stream, revision, None).await;
    for s in staged {
        let claim = s
            .pending
            .claims
            .iter()
            .find(|c| super::names::claim_key(&c.name) == key)
            .map_or_else(|| key.clone(), |c| c.name.clone());
        let reply = match &answer {
            Ok(position) => Err(Error::Duplicate {
                claim,
                position: *position,
            }),
            Err(e) => Err(copy_error(e)),
        };
        let _ = s.pending.reply.send(reply);
    }
}

/// Each waiting append gets its own copy of a shared error.
pub fn copy_error(e: &Error) -> Error {
    match e {
        Error::Unavailable(reason) => Error::Unavailable(reason.clone()),
        Error::Invalid(reason) => Error::Invalid(reason.clone()),
        Error::Io { context, source } => Error::io(
            context.clone(),
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        Error::Conflict { expected, actual } => Error::Conflict {
            expected: *expected,
            actual: *actual,
        },
        Error::Duplicate { claim, position } => Error::Duplicate {
            claim: claim.clone(),
            position: *position,
        },
        Error::Corrupt {
            file,
            offset,
            position,
            reason,
        } => Error::Corrupt {
            file: file.clone(),
            offset: *offset,
            position: *position,
            reason: reason.clone(),
        },
    }
}
