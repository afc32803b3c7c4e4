//! hookledger: an event-sourced ledger of outbound webhook deliveries.
//!
//! Senders record every delivery attempt; each is appended as an immutable event to
//! its delivery's stream ([`store`]), folded into read models ([`projections`]),
//! and chained into a tamper-evident history ([`chain`]) that auditors can replay
//! and verify.
//!
//! What the product promises (routes, rules, the event model, hashes, backends,
//! the command line) is `docs/DESIGN.md`; this crate is the server and the
//! command line around the pure domain in the `projections` crate.
//!
//! # Layout
//!
//! Dependencies point inward: the HTTP layer calls the ledger, the ledger calls
//! the pure decisions of `projections` and the store, and the store knows
//! nothing of webhooks.
//!
//! * [`cli`]: the `hookledger` command line, one module per command (`serve`,
//!   `keys`, `projections`, `audit`), and `open`, which opens the store a command
//!   works on. `main.rs` only parses the arguments and calls [`cli::run`].
//!
//! * [`api`]: the HTTP API on axum: one router per resource (`endpoints`,
//!   `events`, `deliveries`, `attempts`, `ops`), the one error type `ApiError`
//!   rendered as problem+json (`error`), the extractors that validate every
//!   input (`extract`, `input`), paging (`page`), metrics and the per-request
//!   middleware (`observe`). Handlers parse, call the ledger and reply.
//!
//! * [`ledger`]: the write path: load state, decide, append with the expected
//!   version and the claims a command takes, wait for the read model to show
//!   the append. Also API keys, answers from the log at a past position
//!   (`history`) and the in-process locks that serialise repeats.
//!   [`limits`]: what one client may send and one organization may keep, set
//!   by `serve`'s flags (`cli::limit_args`); the ledger and the extractors hold
//!   requests to them.
//!
//! * [`node`]: one running ledger (store, projector, ledger) as the server and
//!   every command open it.
//!
//! * [`projector`]: the read model inside the process, fed from the store in
//!   position order with the ledger digest alongside; `replay` is the staged
//!   replay that `projections rebuild` runs. [`snapshot`] saves and checks the
//!   read model on disk; [`diff`] compares two models for `projections rebuild
//!   --verify`.
//!
//! * [`store`]: the `EventStore` trait, its one error type and the record format
//!   every backend shares; `sequencer` (what every append does: versions,
//!   positions, time, hash chain), `batch` (a run of the log handed to a
//!   replay as checked archives), and one module per backend: `embedded` (the
//!   segment log: `segment`, `frame`, `writer`, `index`, `checkpoint`, `fs`),
//!   `postgres` and `memory`.
//!
//! * [`chain`]: the per-stream hash chain and the running ledger digest.
//!   [`audit`]: what `audit verify` checks and what `audit export` writes.
//!
//! * [`admin`]: the Unix socket through which `hookledger keys` reaches a
//!   running server. [`telemetry`]: logging, set up once.

pub mod admin;
pub mod api;
pub mod audit;
pub mod chain;
pub mod cli;
pub mod files;
pub mod kv;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod node;
pub mod projector;
pub mod store;
pub mod telemetry;
