//! `hookledger keys create --org ORG` and `hookledger keys revoke KEY_ID`.
//!
//! A key is shown once, as the last line of stdout, so scripts can take it with
//! `tail -n 1`; the ledger keeps only the SHA-256 of its secret.

use clap::Subcommand;

use crate::cli::{Error, StoreArgs, open};

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

pub async fn run(store: &StoreArgs, command: KeysCommand) -> Result<(), Error> {
    match command {
        KeysCommand::Create { org } => {
            if org.trim().is_empty() {
                return Err(Error::Setup("--org must not be empty".into()));
            }
            let node = open::node_for_writing(store).await?;
            let key = node
                .ledger
                .issue_key(&org)
                .await
                .map_err(|e| Error::setup("cannot issue the key", e))?;
            save_snapshot(&node);
            println!("key id: {}", key.key_id);
            println!("organization: {}", key.organization_id);
            println!("this key is shown only once; send it as `authorization: Bearer <key>`:");
            println!("{}", key.token);
            Ok(())
        }
        KeysCommand::Revoke { key_id } => {
            let node = open::node_for_writing(store).await?;
            node.ledger
                .revoke_key(&key_id)
                .await
                .map_err(|e| Error::setup("cannot revoke the key", e))?;
            save_snapshot(&node);
            println!("revoked {key_id}");
            Ok(())
        }
    }
}

/// Keeps the next start fast; a failure only costs a longer replay later.
fn save_snapshot(node: &crate::node::Node) {
    if let Err(e) = node.save_snapshot() {
        tracing::warn!(error = %e, "could not save the read-model snapshot");
    }
}
