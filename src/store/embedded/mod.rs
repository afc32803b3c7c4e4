//! The embedded backend: hookledger's own append-only segment log.
