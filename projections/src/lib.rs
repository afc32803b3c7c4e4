//! hookledger's domain: the event types each stream records, the pure decisions that
//! produce them, and the pure folds that turn them into the read models the API
//! serves.
//!
//! This crate does no I/O and reads no clock: time comes in on each recorded event,
//! ids come from the caller. That is what lets a rebuild from the log reproduce the
//! live read model exactly.

#![forbid(unsafe_code)]

pub mod body;
pub mod canonical;
pub mod decide;
pub mod event;
mod fast;
pub mod fold_decode;
pub mod health;
mod json;
pub mod key;
pub mod model;
pub mod rows;
pub mod values;
pub mod view;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use body::Body;
pub use canonical::JsonObject;
pub use decide::{Command, Rejection, decide};
pub use event::{Event, Metadata, Recorded};
pub use key::Key;
pub use model::{ApiKey, Attempt, Delivery, Endpoint, Settings, WebhookEvent, apply};
pub use rows::{MemoryRows, Rows, Tenant};
pub use values::{AttemptStatus, EventStatus, HttpStatusCode, NonEmptyString, RetryAt, Timestamp};
