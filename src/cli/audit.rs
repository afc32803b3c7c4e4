//! `hookledger audit ...`: replay one delivery's history, verify the whole log,
//! print the ledger digest, export events as JSON Lines. All of them only read,
//! so they can run beside a live server.

use std::io::Write;

use clap::{Args, Subcommand};
use projections::event::stream;
use projections::view::DeliveryView;
use projections::{Event, MemoryRows};
use serde_json::json;

use crate::audit::{self, Expected, Exported};
use crate::chain::{Hash, LedgerDigest};
use crate::cli::projections::Progress;
use crate::cli::{Error, StoreArgs, open};
use crate::store::{EventStore, RecordedEvent};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print each event of a delivery with the delivery's state after it (JSON Lines).
    Replay {
        /// The delivery id (`dlv_...`).
        #[arg(long)]
        delivery: String,
    },
    /// Check every record, every stream's hash chain and the digest; exit 1 naming
    /// the first bad position.
    Verify(VerifyArgs),
    /// Print `{position, digest}` of the whole log, to keep somewhere else.
    Digest,
    /// Write events as JSON Lines to stdout, for external tools.
    Export {
        /// Only events of this organization.
        #[arg(long)]
        org: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A digest printed earlier by `audit digest` (hex).
    #[arg(long, requires = "position")]
    pub digest: Option<String>,
    /// The position that digest was taken at.
    #[arg(long, requires = "digest")]
    pub position: Option<u64>,
}

pub async fn run(args: &StoreArgs, command: AuditCommand) -> Result<(), Error> {
    match command {
        AuditCommand::Replay { delivery } => replay(args, &delivery).await,
        AuditCommand::Verify(verify_args) => verify(args, verify_args).await,
        AuditCommand::Digest => digest(args).await,
        AuditCommand::Export { org } => export(args, org.as_deref()).await,
    }
}

async fn verify(args: &StoreArgs, verify_args: VerifyArgs) -> Result<(), Error> {
    let expected = match (verify_args.digest, verify_args.position) {
        (Some(digest), Some(position)) => Some(Expected {
            position,
            digest: parse_digest(&digest)?,
        }),
        _ => None,
    };
    let store = match open::store_for_reading(args).await {
        Ok(store) => store,
        Err(e) => return Err(corrupt_on_open(args, e)),
    };
    let progress = Progress::new("verify", 0, store.head());
    let report = audit::verify(store.as_ref(), expected, |p| progress.at(p))
        .await
        .map_err(|e| Error::setup("reading the log failed", e))?;
    progress.done(report.digest.position);
    match report.failure {
        None => {
            println!(
                "ok: {} events in {} streams; every checksum, hash chain and schema holds",
                report.digest.position, report.streams
            );
            if let Some(expected) = expected {
                println!("ok: the digest at position {} matches", expected.position);
            }
            println!(
                "digest {} at position {}",
                report.digest.hex(),
                report.digest.position
            );
            Ok(())
        }
        Some(failure) => {
            println!(
                "FAILED at position {}: {}",
                failure.position, failure.reason
            );
            println!(
                "the history is intact up to position {} (digest {})",
                report.digest.position,
                report.digest.hex()
            );
            Err(Error::CheckFailed(format!(
                "verification failed at position {}",
                failure.position
            )))
        }
    }
}

/// A log too damaged to open is a failed check, named by position, not a setup error.
fn corrupt_on_open(args: &StoreArgs, error: Error) -> Error {
    if args.backend != crate::cli::Backend::Embedded {
        return error;
    }
    match crate::store::embedded::EmbeddedStore::open_read_only(&args.data) {
        Err(e) if audit::corrupt_position(&e).is_some() => {
            let position = audit::corrupt_position(&e).unwrap_or_default();
            println!("FAILED at position {position}: {e}");
            Error::CheckFailed(format!("verification failed at position {position}"))
        }
        _ => error,
    }
}

fn parse_digest(text: &str) -> Result<Hash, Error> {
    let bytes = hex::decode(text.trim())
        .map_err(|e| Error::Setup(format!("--digest must be 64 hex digits: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| Error::Setup("--digest must be 64 hex digits (32 bytes)".into()))
}

async fn digest(args: &StoreArgs) -> Result<(), Error> {
    let store = open::store_for_reading(args).await?;
    let mut digest = LedgerDigest::default();
    for_each_event(store.as_ref(), |event| {
        digest.fold(event.position, &event.hash);
        Ok(())
    })
    .await?;
    println!(
        "{}",
        json!({"position": digest.position, "digest": digest.hex()})
    );
    Ok(())
}

async fn export(args: &StoreArgs, org: Option<&str>) -> Result<(), Error> {
    let store = open::store_for_reading(args).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for_each_event(store.as_ref(), |event| {
        if let Some(org) = org {
            let data = decode(event)?;
            if data.event.organization_id() != org {
                return Ok(());
            }
        }
        let line = Exported::new(event).map_err(Error::CheckFailed)?;
        serde_json::to_writer(&mut out, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| Error::setup("writing the export failed", e))
    })
    .await?;
    out.flush()
        .map_err(|e| Error::setup("writing the export failed", e))
}

/// Each event of a delivery with the delivery's state after it, folded from
/// the log alone in one pass through it, so it runs beside a live server: the
/// acceptance that fanned the delivery out, then its attempts.
async fn replay(args: &StoreArgs, delivery_id: &str) -> Result<(), Error> {
    let store = open::store_for_reading(args).await?;
    let own_stream = stream::delivery(delivery_id);
    let mut history: Vec<RecordedEvent> = Vec::new();
    let mut owner: Option<(String, String)> = None;
    for_each_event(store.as_ref(), |event| {
        if event.stream == own_stream {
            history.push(event.clone());
        } else if owner.is_none()
            && event.event_type == "WebhookEventAccepted"
            && let Event::WebhookEventAccepted(e) = decode(event)?.event
            && e.deliveries.iter().any(|d| d.delivery_id == delivery_id)
        {
            owner = Some((e.organization_id, e.event_id));
            history.push(event.clone());
        }
        Ok(())
    })
    .await?;
    let (org, _) =
        owner.ok_or_else(|| Error::Setup(format!("no delivery {delivery_id} in the ledger")))?;
    let mut rows = MemoryRows::default();
    for event in &history {
        let Ok(()) = projections::apply(&mut rows, &decode(event)?, &args.settings());
        let state = rows
            .tenant(&org)
            .and_then(|t| t.delivery(delivery_id))
            .map(DeliveryView::from);
        let line = json!({
            "event": Exported::new(event).map_err(Error::CheckFailed)?,
            "state": state,
        });
        println!("{line}");
    }
    Ok(())
}

fn decode(event: &RecordedEvent) -> Result<projections::Recorded, Error> {
    crate::model::decode(event).map_err(|e| Error::CheckFailed(e.to_string()))
}

/// Calls `f` on every event in position order.
async fn for_each_event(
    store: &dyn EventStore,
    mut f: impl FnMut(&RecordedEvent) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut next = 1;
    loop {
        let events = store
            .read_all(next, 8192)
            .await
            .map_err(|e| Error::CheckFailed(format!("reading the log failed: {e}")))?;
        let Some(last) = events.last() else {
            return Ok(());
        };
        next = last.position + 1;
        for event in &events {
            f(event)?;
        }
    }
}
