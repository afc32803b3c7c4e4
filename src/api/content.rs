//! How a stored event's content shows in the raw views (a delivery's
//! events, the change feed): `{"salt": hex, "body": …}` beside the hashed
//! data, so an auditor can check `SHA-256(salt || body)` against the digest
//! the data holds; `null` with `contentErased: true` once erased.

use serde::Serialize;
use serde_json::value::RawValue;

use super::error::ApiError;
use crate::model::Shown;
use projections::body::SALT_LEN;

/// A body kept beside a stored event.
#[derive(Debug, Serialize)]
pub(super) struct ContentView<'a> {
    /// 16 bytes, hex.
    salt: String,
    /// Canonical JSON, byte for byte what the digest covers.
    body: &'a RawValue,
}

/// The `content` and `contentErased` fields of a raw view of an event.
pub(super) fn fields<'a>(
    shown: Shown<'a>,
    position: u64,
) -> Result<(Option<ContentView<'a>>, bool), ApiError> {
    match shown {
        Shown::Nothing => Ok((None, false)),
        Shown::Erased => Ok((None, true)),
        Shown::Kept(content) => {
            let (salt, body) = content.split_at(SALT_LEN.min(content.len()));
            let body = std::str::from_utf8(body)
                .ok()
                .and_then(|text| serde_json::from_str::<&RawValue>(text).ok())
                .ok_or_else(|| {
                    ApiError::Unavailable(format!("stored content at {position} is not JSON"))
                })?;
            Ok((
                Some(ContentView {
                    salt: hex::encode(salt),
                    body,
                }),
                false,
            ))
        }
    }
}
