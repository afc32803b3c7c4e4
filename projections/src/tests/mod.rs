//! The rules of `docs/DESIGN.md` §3 and the folds of §6, one file per concern, each test a
//! given / when / then over [`crate::testing`]. Property tests compare the folds
//! with a straightforward reference; `views` pins the JSON of the record-attempt contract (§1).

mod api_keys;
mod attempts;
mod endpoints;
mod erasure;
mod event_status;
mod fan_out;
mod health;
mod log;
mod properties;
mod source_keys;
mod tenancy;
mod views;
