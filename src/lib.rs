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
//! * [`ledger`]: the write path: load the rows a command needs, decide,
//!   append with the expected version and the claims a command takes, and
//!   answer as of the append's position (the snapshot the client sees). Also
//!   API keys, idempotency records and the in-process locks that serialise
//!   repeats. [`limits`]: what one client may send and one organization may
//!   keep, set by `serve`'s flags (`cli::limit_args`); the ledger and the
//!   extractors hold requests to them.
//!
//! * [`node`]: one running ledger (store, projector, ledger) as the server and
//!   every command open it.
//!
//! * [`projector`]: keeps the read model caught up with the store, in position
//!   order with the ledger digest alongside: it opens the model, sets aside one
//!   that is damaged, of another log or ahead of it, and replays the log's
//!   tail; `replay` is the staged replay that `projections rebuild` and a
//!   catch-up run.
//!
//! * [`model`]: the read model on disk: the rows of the `projections` folds in
//!   tables of [`kv`] (redb, each value sealed with a checksum), a memtable of
//!   the latest folds over them (`overlay`, `live`), point reads and answers as
//!   of a position (`view`), index-merged lists (`list`) and the row-by-row
//!   comparison of `projections rebuild --verify` (`compare`). [`kv`] is the
//!   byte-level store and the `layered` memtable both the model and the log's
//!   index flush from.
//!
//! * [`store`]: the `EventStore` trait, its one error type and the record format
//!   every backend shares; `sequencer` (what every append does: versions,
//!   positions, time, hash chain, claims), `batch` (a run of the log handed to
//!   a replay as checked archives), and one module per backend: `embedded` (the
//!   segment log: `segment`, `frame`, `writer`, `fs`, and `index`, its stream
//!   and position index on disk), `postgres` and `memory`.
//!
//! * [`chain`]: the per-stream hash chain and the running ledger digest.
//!   [`merkle`]: RFC 9162 trees over event hashes (the read model keeps one
//!   per organization and one over the ledger), their proofs and verifiers.
//!   [`signing`]: the Ed25519 keys tree heads are signed with and the exact
//!   bytes signed; the API's `proofs` routes and `audit prove` serve them.
//!   [`audit`]: what `audit verify` checks and what `audit export` writes.
//!
//! * [`erasure`]: taking erased bodies off the disk (the eraser, which
//!   `serve` runs in the background and `compact` and `erase` run to the
//!   end) and `serve --retention`.
//!
//! * [`admin`]: the Unix socket through which `hookledger keys` and
//!   `hookledger erase` reach a running server. [`telemetry`]: logging, set up once, written by a thread
//!   of its own. [`files`]: files and directories created private (0600, 0700)
//!   whatever the umask.

pub mod admin;
pub mod api;
pub mod audit;
pub mod chain;
pub mod cli;
pub mod erasure;
pub mod files;
pub mod kv;
pub mod ledger;
pub mod limits;
pub mod merkle;
pub mod model;
pub mod node;
pub mod projector;
pub mod signing;
pub mod store;
pub mod telemetry;
