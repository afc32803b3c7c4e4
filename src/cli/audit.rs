//! `hookledger audit ...`: replay one delivery's history, verify the whole log,
//! print the ledger digest, export events as JSON Lines, prove and check
//! proofs (`prove`). All of them only read, so they can run beside a live server.

use std::io::Write;

use clap::{Args, Subcommand};
use projections::event::stream;
use projections::view::DeliveryView;
use projections::{Event, MemoryRows};
use serde_json::json;

use crate::audit::{self, Expected, Exported};
use crate::chain::{Hash, LedgerDigest};
use crate::cli::projections::Progress;
use crate::cli::{Error, StoreArgs, check_proof, open, prove};
use crate::store::{EventStore, RecordedEvent};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print each event of a delivery with the delivery's state after it (JSON Lines).
    Replay {
        /// The delivery id (`dlv_...`).
        #[arg(long)]
        delivery: String,
    },
    /// Check every record, every stream's hash chain, and a digest or Merkle
    /// root kept elsewhere; exit 1 naming the first bad position.
    Verify(VerifyArgs),
    /// Print `{position, digest}` of the whole log, to keep somewhere else.
    Digest,
    /// Write events as JSON Lines to stdout, for external tools.
    Export {
        /// Only events of this organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Print an RFC 9162 inclusion or consistency proof, or a tree head, over
    /// the whole ledger or one organization's tree (JSON), from the log alone.
    Prove(prove::ProveArgs),
    /// Check a proof against heads kept in files, and the heads' signatures
    /// with --keys; exit 1 naming what fails. Needs no data directory.
    CheckProof(check_proof::CheckProofArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A digest printed earlier by `audit digest` (hex).
    #[arg(long, requires = "position")]
    pub digest: Option<String>,
    /// The position that digest was taken at.
    #[arg(long, requires = "digest")]
    pub position: Option<u64>,
    /// A root of the whole-ledger Merkle tree kept earlier (hex), from
    /// `audit prove --head`: the tree is recomputed from the log alone.
    #[arg(long, requires = "size")]
    pub root: Option<String>,
    /// The tree size that root is of (the events up to that position).
    #[arg(long, requires = "root", value_parser = clap::value_parser!(u64).range(1..))]
    pub size: Option<u64>,
}

pub async fn run(args: &StoreArgs, command: AuditCommand) -> Result<(), Error> {
    match command {
        AuditCommand::Replay { delivery } => replay(args, &delivery).await,
        AuditCommand::Verify(verify_args) => verify(args, verify_args).await,
        AuditCommand::Digest => digest(args).await,
        AuditCommand::Export { org } => export(args, org.as_deref()).await,
        AuditCommand::Prove(prove_args) => prove::prove(args, prove_args).await,
        AuditCommand::CheckProof(check_args) => check_proof::run(check_args),
    }
}

async fn verify(args: &StoreArgs, verify_args: VerifyArgs) -> Result<(), Error> {
    let mut expected = Vec::new();
    if let (Some(digest), Some(position)) = (verify_args.digest, verify_args.position) {
        expected.push(Expected::Digest {
            position,
            digest: parse_hash("--digest", &digest)?,
        });
    }
    if let (Some(root), Some(size)) = (verify_args.root, verify_args.size) {
        expected.push(Expected::Root {
            size,
            root: parse_hash("--root", &root)?,
        });
    }
    let store = match open::store_for_reading(args).await {
        Ok(store) => store,
        Err(e) => return Err(corrupt_on_open(args, e)),
    };
    let progress = Progress::new("verify", 0, store.head());
    let report = audit::verify(store.as_ref(), &expected, |p| progress.at(p))
        .await
        .map_err(|e| Error::setup("reading the log failed", e))?;
    progress.done(report.digest.position);
    match report.failure {
        None => {
            println!(
                "ok: {} events in {} streams; every checksum, hash chain and schema holds",
                report.digest.position, report.streams
            );
            let bodies = report.bodies;
            println!(
                "bodies: {} kept, each matching its digest; {} erased from the disk, their digests still in the chain; {} erasures recorded",
                bodies.kept, bodies.erased, bodies.erasures
            );
            for kept in &expected {
                match kept {
                    Expected::Digest { position, .. } => {
                        println!("ok: the digest at position {position} matches")
                    }
                    Expected::Root { size, .. } => {
                        println!("ok: the Merkle root at size {size} matches")
                    }
                }
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

fn parse_hash(flag: &str, text: &str) -> Result<Hash, Error> {
    let bytes = hex::decode(text.trim())
        .map_err(|e| Error::Setup(format!("{flag} must be 64 hex digits: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| Error::Setup(format!("{flag} must be 64 hex digits (32 bytes)")))
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
