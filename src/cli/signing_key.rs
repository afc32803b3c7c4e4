//! `hookledger signing-key ...`: show the public keys tree heads are signed
//! with, and rotate to a new signing key. A rotation keeps every old public
//! key in the file, so heads signed before it still verify; servers read the
//! file when they start, so restart each one after rotating.

use clap::Subcommand;

use crate::cli::serve::SigningKeyArgs;
use crate::cli::{Error, StoreArgs};
use crate::signing::KeyRing;

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Print the public keys by key id (JSON), the one that signs marked `current`.
    Show {
        #[command(flatten)]
        signing: SigningKeyArgs,
    },
    /// Sign from now on with a new key; the old one's public key stays published.
    /// Restart every server using the file afterwards.
    Rotate {
        #[command(flatten)]
        signing: SigningKeyArgs,
    },
}

pub fn run(store: &StoreArgs, command: SigningKeyCommand) -> Result<(), Error> {
    let ring = match command {
        SigningKeyCommand::Show { signing } => KeyRing::open(&signing.path(store)),
        SigningKeyCommand::Rotate { signing } => {
            let path = signing.path(store);
            if signing.signing_key.is_none() {
                crate::files::create_dir_all(&store.data)
                    .map_err(|e| Error::setup("cannot make the data directory", e))?;
            }
            KeyRing::rotate(&path)
        }
    }
    .map_err(|e| Error::setup("the signing key", e))?;
    println!("{}", ring.published_json());
    Ok(())
}
