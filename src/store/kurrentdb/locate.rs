//! Where an event is in the ledger: its dense position, once the follower has
//! numbered it. An append waits here to learn its positions; a read of a
//! stream, to give each event its position; `sync_head`, for the follower to
//! pass the ledger's last event.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use super::follow::{self, Located};
use super::positions::LogPosition;
use super::record::Fetched;
use crate::store::{Error, Result};

/// How long a caller waits for the follower to number an event it knows is
/// written, before the store calls itself unavailable.
const NUMBERING_DEADLINE: Duration = Duration::from_secs(30);

/// Waits until the follower has numbered every ledger event up to prepare
/// position `prepare` (a store that does not follow catches up instead).
pub async fn reach(shared: &Shared, prepare: u64) -> Result<()> {
    let reached = |p: &follow::Progress| p.last.is_some_and(|last| last.1 >= prepare);
    if !shared.following.load(Ordering::SeqCst) {
        if !reached(&shared.follower.progress()) {
            follow::catch_up(shared).await?;
        }
        return Ok(());
    }
    let mut progress = shared.follower.watch();
    let waited = tokio::time::timeout(NUMBERING_DEADLINE, async {
        loop {
            if reached(&progress.borrow_and_update()) {
                return Ok(());
            }
            shared.follower.failure()?;
            if progress.changed().await.is_err() {
                return Err(Error::Unavailable("store dropped".into()));
            }
        }
    })
    .await;
    waited.unwrap_or_else(|_| {
        Err(Error::Unavailable(format!(
            "the ledger's follower did not reach $all position {prepare} within {NUMBERING_DEADLINE:?}"
        )))
    })
}

/// The ledger position of `event`, read from its stream; `None` if this store
/// has not numbered it and, not following, will not without a sync.
pub async fn number(shared: &Shared, event: &Fetched) -> Result<Option<u64>> {
    let prepare = event.position.1;
    if prepare == u64::MAX {
        return Err(Error::Unavailable(
            "this KurrentDB server gives no positions for events read from a stream; hookledger needs a later version".into(),
        ));
    }
    let numbered = |shared: &Shared| {
        shared
            .follower
            .progress()
            .last
            .is_some_and(|last| last.1 >= prepare)
    };
    if !numbered(shared) {
        if !shared.following.load(Ordering::SeqCst) {
            return Ok(None);
        }
        reach(shared, prepare).await?;
    }
    match shared.follower.position_of(prepare)? {
        Some(position) => Ok(Some(position)),
        None => Err(Error::Corrupt {
            file: format!("kurrentdb:{}", event.stream).into(),
            offset: prepare,
            position: 0,
            reason: "a ledger event that $all, filtered on the ledger's prefix, does not hold"
                .into(),
        }),
    }
}

/// The ledger position of the event at `revision` of KurrentDB stream `name`,
/// written just now (`hint`: where the server said the write lies) or before.
pub async fn locate(
    shared: &Shared,
    name: &str,
    revision: u64,
    hint: Option<LogPosition>,
) -> Result<u64> {
    if let Some(hint) = hint {
        match shared.follower.locate(name, revision) {
            Located::Known(position) => return Ok(position),
            Located::Later(mut numbered) => {
                let mut progress = shared.follower.watch();
                let deadline = tokio::time::sleep(NUMBERING_DEADLINE);
                tokio::pin!(deadline);
                loop {
                    // Already past the write without hearing of it (a write
                    // found made before, numbered long ago): look it up.
                    if progress.borrow_and_update().last.is_some_and(|l| l >= hint) {
                        if let Ok(position) = numbered.try_recv() {
                            return Ok(position);
                        }
                        break;
                    }
                    tokio::select! {
                        position = &mut numbered => match position {
                            Ok(position) => return Ok(position),
                            Err(_) => break,
                        },
                        changed = progress.changed() => if changed.is_err() { break },
                        () = &mut deadline => break,
                    }
                }
                shared.follower.forget(name, revision);
            }
        }
    }
    shared.follower.failure()?;
    let fetched = shared.server.read_stream(name, Some(revision), 1).await?;
    let event = fetched
        .first()
        .filter(|e| e.revision == revision)
        .ok_or_else(|| Error::Unavailable(format!("{name} has no event at revision {revision}")))?;
    number(shared, event).await?.ok_or_else(|| {
        Error::Unavailable(format!("{name} revision {revision} is not numbered yet"))
    })
}
