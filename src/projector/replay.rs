//! Replaying the log into a read model from its position to the head, as
//! `projections rebuild` and a long catch-up do: as fast as two cores allow, so in stages on
//! their own threads, with one batch waiting between each two to keep both
//! cores busy. No more: each batch in flight is memory that a fresh process
//! must fault in and zero, which costs more than the pipeline gains by it.
//!
//! 1. read: the store reads batches and checks their frames' checksums;
//! 2. chain: each event's archive is checked and its hash folded into the
//!    ledger digest, in position order;
//! 3. decode: each event is decoded as the folds need it;
//! 4. fold: the read model takes the decoded events (and writes its
//!    overlays to disk on a thread of its own as they fill up).
//!
//! A stage hands what it is done with back to the one that made it, to be
//! reused, or freed on the thread that allocated it: a free from another
//! thread costs several times as much. Errors travel down the stages in
//! position order, after the events before them, so the one reported is the
//! first in the log.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use super::Error;
use crate::model::{Chain, Decoded, Model};
use crate::store::{Batch, EventRef, EventStore};

/// Folds the log into `model` from its position to the head; `progress`
/// hears each folded position.
pub async fn replay(
    store: &dyn EventStore,
    model: Arc<Model>,
    batch: usize,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> Result<(), Error> {
    let from = model.applied() + 1;
    let (read_tx, mut read_rx) = mpsc::channel::<Batch>(1);
    let (chained_tx, mut chained_rx) = mpsc::channel::<Result<Chained, Error>>(1);
    let (decoded_tx, mut decoded_rx) = mpsc::channel::<Result<Folded, Error>>(1);
    let (spent_tx, spent_rx) = std_mpsc::channel::<Batch>();
    let (done_tx, done_rx) = std_mpsc::channel::<Vec<Decoded>>();
    let mut tip = model.tip();
    let chain = tokio::task::spawn_blocking(move || {
        while let Some(events) = read_rx.blocking_recv() {
            let mut good = 0;
            let failed = events
                .iter()
                .try_for_each(|event| {
                    let event = event?;
                    tip.fold(event.position, event.hash)?;
                    good += 1;
                    Ok::<_, Error>(())
                })
                .err();
            let chained = Chained { events, good, tip };
            if chained_tx.blocking_send(Ok(chained)).is_err() {
                return;
            }
            if let Some(e) = failed {
                let _ = chained_tx.blocking_send(Err(e));
                return;
            }
        }
    });
    let decoder = tokio::task::spawn_blocking(move || {
        while let Some(chained) = chained_rx.blocking_recv() {
            let Chained { events, good, tip } = match chained {
                Ok(chained) => chained,
                Err(e) => {
                    let _ = decoded_tx.blocking_send(Err(e));
                    return;
                }
            };
            let mut decoded = done_rx.try_recv().unwrap_or_default();
            let failed = decode_batch(events.iter().take(good), &mut decoded).err();
            let _ = spent_tx.send(events);
            // A batch that failed to decode is not folded in part: the chain
            // covers all of it, and the replay fails at the first bad event.
            if let Some(e) = failed {
                let _ = decoded_tx.blocking_send(Err(e));
                return;
            }
            if decoded_tx
                .blocking_send(Ok(Folded { decoded, tip }))
                .is_err()
            {
                return;
            }
        }
    });
    let folder = tokio::task::spawn_blocking(move || {
        while let Some(folded) = decoded_rx.blocking_recv() {
            let Folded { decoded, tip } = folded?;
            model.apply_chained(&decoded, tip)?;
            progress(tip.position());
            let _ = done_tx.send(decoded);
        }
        Ok::<_, Error>(())
    });
    let read = read_ahead(store, &read_tx, spent_rx, from, batch).await;
    drop(read_tx);
    let _ = chain.await;
    let _ = decoder.await;
    let folded = folder
        .await
        .map_err(|e| Error::Stopped(format!("the fold task failed: {e}").into()))?;
    // An error of a later stage comes first: it is at an earlier position than a read error.
    folded?;
    read
}

/// A batch whose first `good` events passed their checks, and the chain
/// folded over them. On an error the tip is that of the events before it
/// alone, and the replay fails without a snapshot, so the decoder need not
/// say where it stopped.
#[derive(Debug)]
struct Chained {
    events: Batch,
    good: usize,
    tip: Chain,
}

/// Decoded events for the model, and the chain folded up to the last of them.
#[derive(Debug)]
struct Folded {
    decoded: Vec<Decoded>,
    tip: Chain,
}

/// Decodes `events` into `decoded`, up to the first that fails. `decoded`
/// holds the events of an earlier batch, whose slots are decoded into again
/// rather than dropped and allocated anew.
fn decode_batch<'a>(
    events: impl Iterator<Item = Result<EventRef<'a>, crate::store::Error>>,
    decoded: &mut Vec<Decoded>,
) -> Result<(), Error> {
    let mut n = 0;
    let result = events.into_iter().try_for_each(|event| {
        let event = event?;
        match decoded.get_mut(n) {
            Some(slot) => slot.refill(&event)?,
            None => decoded.push(Decoded::new(&event)?),
        }
        n += 1;
        Ok(())
    });
    decoded.truncate(n);
    result
}

/// Reads batches from `from` to the head into `tx`, reusing those that come
/// back on `spent`; stops early, without error, if the next stage has gone
/// (it failed, and the folder will say why).
async fn read_ahead(
    store: &dyn EventStore,
    tx: &mpsc::Sender<Batch>,
    spent: std_mpsc::Receiver<Batch>,
    mut from: u64,
    batch: usize,
) -> Result<(), Error> {
    loop {
        let events = store
            .read_batch(from, batch, spent.try_recv().unwrap_or_default())
            .await?;
        let Some(last) = events.last_position() else {
            return Ok(());
        };
        from = last + 1;
        if tx.send(events).await.is_err() {
            return Ok(());
        }
    }
}
