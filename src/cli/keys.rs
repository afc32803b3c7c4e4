//! `hookledger keys create --org ORG` and `hookledger keys revoke KEY_ID`.
//!
//! A key is shown once, as the last line of stdout, so scripts can take it with
//! `tail -n 1`; the ledger keeps only the SHA-256 of its secret. When a server
//! holds the embedded ledger, the request goes to it over the admin socket, so a
//! new key works and a revoked one stops working at once, without a restart. On
//! PostgreSQL or KurrentDB the command appends straight to the shared ledger,
//! and every server hears of it from there.

use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use crate::admin::{self, Request, Response};
use crate::cli::{Backend, Error, StoreArgs, open};
use crate::limits::MAX_ORGANIZATION_ID;
use crate::node::Node;
use crate::store::EventStore;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue an API key for an organization; the key alone is the last line of stdout.
    Create {
        /// The organization the key acts for (the `x-organization-id` it must send).
        #[arg(long)]
        org: String,
    },
    /// Revoke an API key by its id (`key_...`); it is refused from then on.
    Revoke {
        /// The key's id, as printed by `keys create`.
        key_id: String,
    },
}

pub async fn run(args: &StoreArgs, command: KeysCommand) -> Result<(), Error> {
    let request = match command {
        KeysCommand::Create { org } if org.trim().is_empty() => {
            return Err(Error::Setup("--org must not be empty".into()));
        }
        // The key is used with `x-organization-id: ORG`, a header: visible
        // ASCII, and short enough to bound the events it appears in.
        KeysCommand::Create { org }
            if org.len() > MAX_ORGANIZATION_ID || !org.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            return Err(Error::Setup(format!(
                "--org must be 1 to {MAX_ORGANIZATION_ID} visible ASCII characters"
            )));
        }
        KeysCommand::Create { org } => Request::CreateKey { org },
        KeysCommand::Revoke { key_id } => Request::RevokeKey { key_id },
    };
    let response = match args.backend {
        // Keys go straight into the shared ledger; no server is asked.
        Backend::Postgres | Backend::Kurrentdb => {
            let shared = match args.backend {
                Backend::Postgres => "the PostgreSQL database",
                _ => "the KurrentDB server",
            };
            let store = open::try_store_for_writing(args)
                .await
                .map_err(|e| Error::setup(&format!("cannot reach {shared}"), e))?;
            carry_out(args, store, request).await?
        }
        // A running server holds the log: ask it first, which fails at once
        // when none is listening, rather than wait on the log's lock.
        Backend::Embedded => match ask_server(args, &request).await {
            Ok(response) => response,
            Err(_) => match open::try_store_for_writing(args).await {
                Ok(store) => carry_out(args, store, request).await?,
                // A server started meanwhile: it answers now.
                Err(crate::store::Error::Unavailable(reason)) => ask_server(args, &request)
                    .await
                    .map_err(|e| {
                        Error::Setup(format!(
                            "the ledger is held by another process ({reason}) and its admin socket did not answer: {e}"
                        ))
                    })?,
                Err(e) => return Err(Error::setup("cannot open the ledger", e)),
            },
        },
    };
    match response {
        Response::KeyCreated {
            key_id,
            organization_id,
            token,
        } => {
            println!("key id: {key_id}");
            println!("organization: {organization_id}");
            println!("this key is shown only once; send it as `authorization: Bearer <key>`:");
            println!("{token}");
            Ok(())
        }
        Response::KeyRevoked { key_id } => {
            println!("revoked {key_id}");
            Ok(())
        }
        Response::Failed { error } => Err(Error::Setup(error)),
        Response::Erased { .. } => Err(Error::Setup("unexpected answer to a key request".into())),
    }
}

/// Carries out `request` on a store this process opened.
async fn carry_out(
    args: &StoreArgs,
    store: Arc<dyn EventStore>,
    request: Request,
) -> Result<Response, Error> {
    let node = match Node::start(store, args.projector_config()).await {
        Ok(node) => node,
        // A server on a shared database holds this data directory's read
        // model: it answers, as a server on the embedded log does.
        Err(crate::projector::Error::Locked(_)) => {
            return ask_server(args, &request).await.map_err(|e| {
                Error::Setup(format!(
                    "the read model in {} is held by another process and its admin socket did not answer: {e}",
                    args.data.display()
                ))
            });
        }
        Err(e) => return Err(Error::setup("cannot open the read model", e)),
    };
    node.ready()
        .await
        .map_err(|e| Error::setup("cannot load the read model", e))?;
    let response = admin::handle(&node.ledger, request).await;
    // Keeps the next start fast; a failure only costs a longer replay later.
    if let Err(e) = node.close() {
        tracing::warn!(error = %e, "could not write the read model out");
    }
    Ok(response)
}

/// Asks the server running on the data directory, if one answers in time.
async fn ask_server(args: &StoreArgs, request: &Request) -> std::io::Result<Response> {
    const PATIENCE: Duration = Duration::from_secs(30);
    tokio::time::timeout(PATIENCE, admin::call(&args.data, request))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 30 s"))?
}
