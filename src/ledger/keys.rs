//! API keys: issued with a secret shown once, stored as the SHA-256 of the secret,
//! compared in constant time, refused from the moment they are revoked.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use projections::{ApiKey, Command, Rejection};

use super::{Context, Error, Ledger, new_ulid};
use crate::store;

/// A newly issued API key. `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key_id: String,
    pub organization_id: String,
    pub token: String,
}

impl Ledger {
    /// Issues a key for `organization_id`. The token is returned once; only the
    /// SHA-256 of its secret is stored.
    pub async fn issue_key(&self, organization_id: &str) -> Result<IssuedKey, Error> {
        let ulid = new_ulid().to_string();
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| {
            store::Error::Unavailable(format!("the system random source failed: {e}"))
        })?;
        let secret = hex::encode(secret);
        let key_id = format!("key_{ulid}");
        let command = Command::IssueApiKey {
            key_id: key_id.clone(),
            organization_id: organization_id.to_owned(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        let ctx = Context {
            organization_id: organization_id.to_owned(),
            ..Context::default()
        };
        self.execute(command, &ctx, None).await?;
        Ok(IssuedKey {
            key_id,
            organization_id: organization_id.to_owned(),
            token: format!("hlk_{ulid}_{secret}"),
        })
    }

    pub async fn revoke_key(&self, key_id: &str) -> Result<(), Error> {
        let org = self
            .view()?
            .api_key(key_id)?
            .map(|k| k.organization_id)
            .ok_or_else(|| Rejection::ApiKeyNotFound(key_id.to_owned()))?;
        let ctx = Context {
            organization_id: org,
            ..Context::default()
        };
        let command = Command::RevokeApiKey {
            key_id: key_id.to_owned(),
        };
        self.execute(command, &ctx, None).await.map(drop)
    }

    /// [`Ledger::authenticate`], and if the model does not know the key, again
    /// after catching it up with the store: a key issued through another process
    /// sharing the store works at once.
    pub async fn authenticate_synced(&self, token: &str) -> Result<Option<ApiKey>, Error> {
        if let Some(key) = self.authenticate(token)? {
            return Ok(Some(key));
        }
        if !token.starts_with("hlk_") {
            return Ok(None);
        }
        self.sync().await?;
        self.authenticate(token)
    }

    /// The live key a bearer token belongs to, if it is valid and not revoked.
    /// The secret is compared in constant time.
    pub fn authenticate(&self, token: &str) -> Result<Option<ApiKey>, Error> {
        let Some((ulid, secret)) = token.strip_prefix("hlk_").and_then(|t| t.split_once('_'))
        else {
            return Ok(None);
        };
        let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let Some(key) = self.view()?.api_key(&format!("key_{ulid}"))? else {
            return Ok(None);
        };
        let matches: bool = key.secret_sha256.ct_eq(&presented).into();
        Ok((matches && key.revoked_at.is_none()).then_some(key))
    }
}
