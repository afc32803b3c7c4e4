//! `hookledger projections rebuild [--verify]`: replay the log from position 1 into
//! fresh read models, write a new snapshot, and with `--verify` list every
//! difference from the live snapshot.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{Error, StoreArgs, open};
use crate::node::snapshot_file;
use crate::snapshot::Snapshot;
use crate::store::EventStore;

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replay the whole log into fresh read models and write a new snapshot.
    Rebuild(RebuildArgs),
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// Compare the rebuilt models with the live snapshot and list every difference;
    /// exit 1 if there is any.
    #[arg(long)]
    pub verify: bool,
}

/// Events read from the store per call: a few megabytes, enough to make
/// each stage's hand-over cheap.
const BATCH: usize = 4096;

pub async fn run(args: &StoreArgs, command: ProjectionsCommand) -> Result<(), Error> {
    let ProjectionsCommand::Rebuild(rebuild) = command;
    let store = open::store_for_reading(args).await?;
    let file = snapshot_file(&args.data);
    let live = if rebuild.verify {
        Some(
            Snapshot::load(&file)
                .map_err(|e| Error::CheckFailed(format!("nothing to verify against: {e}")))?,
        )
    } else {
        None
    };
    let started = Instant::now();
    let rebuilt = replay(store.as_ref(), Snapshot::default(), "rebuild").await?;
    let elapsed = started.elapsed();
    let events = rebuilt.position();
    println!(
        "rebuilt {events} events in {:.2} s ({:.0} events/s)",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let differences = match live {
        Some(live) => {
            let from = live.position();
            // The live snapshot may lag the log; a server would replay the tail too.
            let live = replay(store.as_ref(), live, "catch up live").await?;
            let differences = crate::diff::snapshots(&live, &rebuilt);
            if differences.is_empty() {
                println!(
                    "verify: no difference between the live snapshot (position {from}, caught up to {}) and the rebuild",
                    live.position()
                );
            } else {
                println!("verify: {} difference(s):", differences.len());
                for difference in &differences {
                    println!("  {difference}");
                }
            }
            differences.len()
        }
        None => 0,
    };
    rebuilt
        .save(&file)
        .map_err(|e| Error::setup("cannot write the new snapshot", e))?;
    println!("wrote {} at position {events}", file.display());
    if differences > 0 {
        return Err(Error::CheckFailed(format!(
            "the live snapshot differs from the log in {differences} place(s)"
        )));
    }
    Ok(())
}

/// Folds the log from `state`'s position to the head, showing progress.
pub async fn replay(
    store: &dyn EventStore,
    state: Snapshot,
    label: &str,
) -> Result<Snapshot, Error> {
    let progress = std::sync::Arc::new(Progress::new(label, state.position(), store.head()));
    let shown = progress.clone();
    let state = crate::projector::replay(store, state, BATCH, move |p| shown.at(p))
        .await
        .map_err(|e| Error::CheckFailed(e.to_string()))?;
    progress.done(state.position());
    Ok(state)
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
