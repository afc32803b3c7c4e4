//! `hookledger erase --org ORG` and `hookledger compact`.
//!
//! `erase` records the erasure of every body an organization has recorded
//! (for offboarding): from then on no view serves them, and every hash still
//! verifies. When a server holds the embedded ledger, the request goes to it
//! over the admin socket and the server removes the bytes from the disk in the
//! background; otherwise this command opens the ledger and removes them
//! itself before it exits.
//!
//! `compact` carries out, while the server is stopped, every erasure the
//! server has not yet taken off the disk: what `serve` does in the
//! background.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::admin::{self, Request, Response};
use crate::cli::{Backend, Error, StoreArgs, open};
use crate::erasure::Eraser;
use crate::limits::MAX_ORGANIZATION_ID;
use crate::node::Node;

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The organization whose payloads and response bodies are erased.
    #[arg(long)]
    pub org: String,
}

pub async fn erase(args: &StoreArgs, erase: EraseArgs) -> Result<(), Error> {
    let org = erase.org;
    if org.is_empty()
        || org.len() > MAX_ORGANIZATION_ID
        || !org.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::Setup(format!(
            "--org must be 1 to {MAX_ORGANIZATION_ID} visible ASCII characters"
        )));
    }
    let request = Request::EraseOrganization { org: org.clone() };
    if args.backend == Backend::Embedded
        && let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(30), admin::call(&args.data, &request)).await
    {
        let position = answered(response)?;
        println!(
            "erased the bodies of {org} recorded before position {position}; the running server removes them from the disk in the background"
        );
        return Ok(());
    }
    let node = open_node(args).await?;
    let response = admin::handle(&node.ledger, request).await;
    let position = answered(response)?;
    let pass = eraser(args, &node)?
        .pass()
        .await
        .map_err(|e| Error::setup("removing the erased bodies failed", e))?;
    close(node);
    println!(
        "erased the bodies of {org} recorded before position {position}: {} removed from the disk",
        pass.removed
    );
    Ok(())
}

pub async fn compact(args: &StoreArgs) -> Result<(), Error> {
    let node = open_node(args).await?;
    let pass = eraser(args, &node)?
        .pass()
        .await
        .map_err(|e| Error::setup("compaction failed", e))?;
    close(node);
    println!(
        "compacted through position {}: {} erasures, {} bodies removed from the disk",
        pass.through, pass.erasures, pass.removed
    );
    Ok(())
}

fn answered(response: Response) -> Result<u64, Error> {
    match response {
        Response::Erased { position, .. } => Ok(position),
        Response::Failed { error } => Err(Error::Setup(error)),
        other => Err(Error::Setup(format!("unexpected answer: {other:?}"))),
    }
}

/// The ledger opened by this process, its read model caught up.
async fn open_node(args: &StoreArgs) -> Result<Node, Error> {
    let store = open::try_store_for_writing(args).await.map_err(|e| {
        Error::setup(
            "cannot open the ledger (a running server compacts in the background; stop it to compact now)",
            e,
        )
    })?;
    let node = Node::start(store, args.projector_config())
        .await
        .map_err(|e| Error::setup("cannot open the read model", e))?;
    node.ready()
        .await
        .map_err(|e| Error::setup("cannot load the read model", e))?;
    Ok(node)
}

fn eraser(args: &StoreArgs, node: &Node) -> Result<Arc<Eraser>, Error> {
    Eraser::open(node.store.clone(), node.projector.clone(), &args.data)
        .map(Arc::new)
        .map_err(|e| Error::setup("cannot open the eraser's state", e))
}

fn close(node: Node) {
    // Keeps the next start fast; a failure only costs a longer replay later.
    if let Err(e) = node.close() {
        tracing::warn!(error = %e, "could not write the read model out");
    }
}
