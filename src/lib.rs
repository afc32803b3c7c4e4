//! hookledger: an event-sourced ledger of outbound webhook deliveries.
//!
//! Senders record every delivery attempt; each is appended as an immutable event to
//! its delivery's stream ([`store`]), folded into read models ([`projections`]),
//! and chained into a tamper-evident history ([`chain`]) that auditors can replay
//! and verify.

pub mod admin;
pub mod api;
pub mod audit;
pub mod chain;
pub mod cli;
pub mod diff;
pub mod ledger;
pub mod limits;
pub mod node;
pub mod projector;
mod replay;
pub mod snapshot;
pub mod store;
pub mod telemetry;
