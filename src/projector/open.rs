//! Opening a node's read model: the store named in the configuration if it
//! belongs to this log up to its position, else a fresh one, with the old
//! file set aside and the reason logged.

use std::sync::Arc;

use super::{Config, Error, Start};
use crate::kv::{self, RedbKv};
use crate::model::{self, Chain, Model};
use crate::store::EventStore;

/// Opens the model `config` names if it matches the log; else a fresh one.
pub(super) async fn open_model(
    store: &dyn EventStore,
    config: &Config,
) -> Result<(Model, Start), Error> {
    let Some(file) = &config.file else {
        return Ok((fresh_model(config)?, Start::Fresh { reason: None }));
    };
    let reason = match model::open(file, config.cache_bytes) {
        Ok(stored) => match trusted(store, &stored).await {
            Ok(()) => {
                let position = stored.tip.position();
                let model = Model::start(stored.kv, stored.tip, stored.log_id, config.options)?;
                return Ok((model, Start::Resumed { position }));
            }
            Err(reason) => reason,
        },
        Err(model::Error::Kv(kv::Error::Locked(path))) => return Err(Error::Locked(path)),
        Err(e) => e.to_string(),
    };
    if store.head() > 0 || file.exists() {
        tracing::warn!(%reason, file = %file.display(), "setting the read model aside; it is rebuilt from the log");
    }
    model::set_aside(file)
        .map_err(|e| Error::Stopped(format!("cannot set {} aside: {e}", file.display()).into()))?;
    Ok((
        fresh_model(config)?,
        Start::Fresh {
            reason: Some(reason),
        },
    ))
}

pub(super) fn fresh_model(config: &Config) -> Result<Model, Error> {
    let kv: Arc<dyn kv::Kv> = match &config.file {
        Some(file) => model::open(file, config.cache_bytes)?.kv,
        None => Arc::new(RedbKv::in_memory(&model::tables::ALL).map_err(model::Error::from)?),
    };
    Ok(Model::start(kv, Chain::default(), None, config.options)?)
}

/// Whether a store's contents can be trusted to be this log's up to its
/// position; the reason it cannot be, if not.
pub(crate) async fn trusted(store: &dyn EventStore, stored: &model::Stored) -> Result<(), String> {
    let position = stored.tip.position();
    match stored.format {
        None if position == 0 => return Ok(()),
        Some(model::tables::FORMAT) => {}
        Some(other) => {
            return Err(format!(
                "it is of format {other}; this build reads format {}",
                model::tables::FORMAT
            ));
        }
        None => return Err("it has no format record".into()),
    }
    if position == 0 {
        return Ok(());
    }
    let head = store.sync_head().await.map_err(|e| e.to_string())?;
    if position > head {
        return Err(format!(
            "it is at position {position} but the log ends at {head}"
        ));
    }
    let hash_at = |position: u64| async move {
        let events = store
            .read_all(position, 1)
            .await
            .map_err(|e| format!("cannot read position {position} to check it: {e}"))?;
        events
            .first()
            .filter(|e| e.position == position)
            .map(|e| e.hash)
            .ok_or_else(|| format!("the log has no position {position}"))
    };
    if stored.log_id != Some(hash_at(1).await?) {
        return Err("it was built from another log".into());
    }
    if hash_at(position).await? != stored.tip.last_hash {
        return Err(format!("it does not match the log at position {position}"));
    }
    Ok(())
}
