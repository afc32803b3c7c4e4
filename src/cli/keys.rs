//! `hookledger keys create --org ORG` and `hookledger keys revoke KEY_ID`.
//!
//! A key is shown once, as the last line of stdout, so scripts can take it with
//! `tail -n 1`; the ledger keeps only the SHA-256 of its secret. When a server
//! holds the embedded ledger, the request goes to it over the admin socket, so a
//! new key works and a revoked one stops working at once, without a restart. On
//! PostgreSQL the command appends straight to the shared database, and every
//! server hears of it from there.

use clap::Subcommand;

use crate::admin::{self, Request, Response};
use crate::cli::{Error, StoreArgs, open};
use crate::node::Node;

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
        KeysCommand::Create { org } => Request::CreateKey { org },
        KeysCommand::Revoke { key_id } => Request::RevokeKey { key_id },
    };
    let response = match open::try_store_for_writing(args).await {
        Ok(store) => match Node::start(store, args.projector_config()).await {
            Ok(node) => {
                node.ready()
                    .await
                    .map_err(|e| Error::setup("cannot load the read model", e))?;
                let response = admin::handle(&node.ledger, request).await;
                // Keeps the next start fast; a failure only costs a longer replay later.
                if let Err(e) = node.close() {
                    tracing::warn!(error = %e, "could not write the read model out");
                }
                response
            }
            // A server on a shared database holds this data directory's model:
            // ask it, as with the embedded log.
            Err(crate::projector::Error::Locked(_)) => admin::call(&args.data, &request)
                .await
                .map_err(|e| {
                    Error::Setup(format!(
                        "the read model in {} is held by another process and its admin socket did not answer: {e}",
                        args.data.display()
                    ))
                })?,
            Err(e) => return Err(Error::setup("cannot open the read model", e)),
        },
        Err(crate::store::Error::Unavailable(reason)) => admin::call(&args.data, &request)
            .await
            .map_err(|e| {
                Error::Setup(format!(
                    "the ledger is held by another process ({reason}) and its admin socket did not answer: {e}"
                ))
            })?,
        Err(e) => {
            return Err(Error::setup(
                "cannot open the ledger",
                e,
            ));
        }
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
    }
}
