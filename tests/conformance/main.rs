//! Placeholder so `cargo test` builds while the EventStore conformance suite is
//! written on the `store` branch; that branch's file replaces this one.
