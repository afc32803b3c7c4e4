//! hookledger's one integration binary: the real router served over TCP on port
//! 0, driven like a client would, every response checked against
//! `schemas/openapi.json`. Modules are areas of the API.

mod across_nodes;
mod audit;
mod auth;
mod backends;
mod binary;
mod cli;
mod compaction;
mod concurrency;
mod corruption;
mod crash;
mod docs;
mod erasure;
mod erasure_binary;
mod erasure_disk;
mod exact;
mod fair;
mod faults;
mod feed;
mod feed_binary;
mod flow;
mod helpers;
mod hostile;
mod http;
mod idempotency;
#[cfg(feature = "kurrentdb")]
mod kurrentdb;
mod limits;
mod lists;
mod logs;
mod multinode;
mod operator;
mod ops;
mod outside;
mod pages;
mod postgres;
mod postgres_tls;
mod proofs;
mod prove_cli;
mod queries;
mod raw;
mod record_attempt;
mod schema;
mod security;
mod signing;
mod sse;
mod stats;
#[path = "../support/frames.rs"]
mod support_frames;
#[cfg(feature = "kurrentdb")]
#[path = "../support/kurrentdb.rs"]
mod support_kurrentdb;
#[path = "../support/postgres.rs"]
mod support_postgres;
mod wire;
