//! `hookledger projections rebuild [--verify]`: replay the log from position 1
//! into a fresh read-model store beside the live one, swap it in atomically,
//! and with `--verify` list every row where the live model differs.
//!
//! The live model is held open by a running server, so the command refuses to
//! run beside one rather than change its files under it.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Error, StoreArgs, open};
use crate::kv;
use crate::model::{self, Chain, Model};
use crate::store::EventStore;

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the whole log into a fresh read model and swap it in.
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Compare the rebuilt model with the live one row by row and list every
    /// difference; exit 1 if there is any.
    #[arg(long)]
    pub verify: bool,
}

/// Events read from the store per call: a few megabytes, enough to make
/// each stage's hand-over cheap.
const BATCH: usize = 4096;

pub async fn run(args: &StoreArgs, command: ProjectionsCommand) -> Result<(), Error> {
    let ProjectionsCommand::Rebuild(rebuild) = command;
    let file = model::file_in(&args.data);
    // Held until the swap: no server can open the model meanwhile.
    let memory = args.model_memory();
    let live = match model::open(&file, memory.page_cache) {
        Ok(stored) => Some(stored),
        Err(model::Error::Kv(kv::Error::Locked(_))) => {
            return Err(Error::Setup(format!(
                "the read model in {} is open in a running server; stop it before rebuilding \
                 (`audit verify` and `audit export` work beside a running server)",
                args.data.display()
            )));
        }
        Err(e) if rebuild.verify => {
            return Err(Error::CheckFailed(format!(
                "the live read model cannot be read, so there is nothing to verify against: {e}"
            )));
        }
        Err(e) => {
            eprintln!("the live read model cannot be read ({e}); it will be replaced");
            None
        }
    };
    let store = open::store_for_reading(args).await?;
    let fresh_file = file.with_file_name("rebuild.redb");
    match std::fs::remove_file(&fresh_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::setup(
                &format!("cannot remove {}", fresh_file.display()),
                e,
            ));
        }
    }
    let fresh = model::open(&fresh_file, memory.page_cache)
        .map_err(|e| Error::setup("cannot create the new read model", e))?;
    let rebuilt = Arc::new(
        Model::start(
            fresh.kv,
            Chain::default(),
            None,
            model::Options::bulk(args.settings(), memory.overlay),
        )
        .map_err(|e| Error::setup("cannot start the new read model", e))?,
    );
    let started = Instant::now();
    replay(store.as_ref(), rebuilt.clone(), "rebuild").await?;
    rebuilt
        .close()
        .map_err(|e| Error::setup("cannot write the new read model", e))?;
    let elapsed = started.elapsed();
    let events = rebuilt.applied();
    println!(
        "rebuilt {events} events in {:.2} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let differences = match live {
        Some(live) if rebuild.verify => verify(args, store.as_ref(), live, &rebuilt).await?,
        _ => Vec::new(),
    };
    if !differences.is_empty() {
        println!("verify: {} difference(s):", differences.len());
        for difference in &differences {
            println!("  {difference}");
        }
    }
    drop(rebuilt);
    std::fs::rename(&fresh_file, &file)
        .and_then(|()| crate::files::sync_dir(&model::dir_in(&args.data)))
        .map_err(|e| Error::setup("cannot swap the new read model in", e))?;
    println!(
        "swapped in the new read model at position {events}: {}",
        file.display()
    );
    if !differences.is_empty() {
        return Err(Error::CheckFailed(format!(
            "the live read model differs from the log in {} place(s)",
            differences.len()
        )));
    }
    Ok(())
}

/// Every difference between the live model, caught up with the log as a
/// server would, and the rebuilt one.
async fn verify(
    args: &StoreArgs,
    store: &dyn EventStore,
    live: model::Stored,
    rebuilt: &Model,
) -> Result<Vec<String>, Error> {
    if let Err(reason) = crate::projector::trusted(store, &live).await {
        return Ok(vec![format!(
            "the live read model does not belong to this log as it stands: {reason}"
        )]);
    }
    let from = live.tip.position();
    let live = Arc::new(
        Model::start(
            live.kv,
            live.tip,
            live.log_id,
            model::Options::bulk(args.settings(), args.model_memory().overlay),
        )
        .map_err(|e| Error::setup("cannot open the live read model", e))?,
    );
    replay(store, live.clone(), "catch up live").await?;
    live.flush()
        .map_err(|e| Error::setup("cannot write the live read model", e))?;
    let differences = model::compare::stores(
        live.snapshot()
            .map_err(|e| Error::setup("cannot read the live model", e))?
            .as_ref(),
        rebuilt
            .snapshot()
            .map_err(|e| Error::setup("cannot read the rebuilt model", e))?
            .as_ref(),
    )
    .map_err(|e| Error::CheckFailed(format!("comparing the models failed: {e}")))?;
    if differences.is_empty() {
        println!(
            "verify: no difference between the live read model (position {from}, caught up to {}) and the rebuild",
            live.applied()
        );
    }
    live.close()
        .map_err(|e| Error::setup("cannot close the live read model", e))?;
    Ok(differences)
}

/// Folds the log into `model` from its position to the head, showing progress.
pub async fn replay(store: &dyn EventStore, model: Arc<Model>, label: &str) -> Result<(), Error> {
    let progress = Arc::new(Progress::new(label, model.applied(), store.head()));
    let shown = progress.clone();
    crate::projector::replay(store, model.clone(), BATCH, move |p| shown.at(p))
        .await
        .map_err(|e| Error::CheckFailed(e.to_string()))?;
    progress.done(model.applied());
    Ok(())
}

/// A progress bar on a terminal, a plain line every few seconds elsewhere.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    pub fn new(label: &str, from: u64, to: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(to);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar.set_position(from);
            bar
        });
        Progress {
            bar,
            label: label.to_owned(),
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub fn at(&self, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Duration::from_secs(2) {
                    eprintln!("{}: at position {position}", self.label);
                    *last = Instant::now();
                }
            }
        }
    }

    pub fn done(&self, position: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.finish_and_clear();
        }
    }
}
