//! A KurrentDB for a test: the real server at `HOOKLEDGER_TEST_KURRENTDB_URL`
//! when that is set, otherwise the **test double** of KurrentDB's gRPC API
//! (`tests/kurrentdb-double`), started on a loopback port for this test.
//!
//! Every test gets a ledger prefix of its own, so tests never see each
//! other's streams, on the double or on a shared real server. A check that
//! needs the double (one that holds appends to stop a writer midway) asks
//! [`Kurrent::double`] and is skipped, saying so, on a real server.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use kurrentdb_double::KurrentDbDouble;

/// The environment variable naming a real KurrentDB to test against.
pub const URL_VARIABLE: &str = "HOOKLEDGER_TEST_KURRENTDB_URL";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The server a test runs against.
#[derive(Debug)]
pub enum Kurrent {
    Real(String),
    Double(KurrentDbDouble),
}

impl Kurrent {
    /// The real server if `HOOKLEDGER_TEST_KURRENTDB_URL` is set, else a
    /// fresh double.
    pub async fn start() -> Kurrent {
        match std::env::var(URL_VARIABLE) {
            Ok(url) if !url.is_empty() => Kurrent::Real(url),
            _ => Kurrent::Double(KurrentDbDouble::start().await),
        }
    }

    pub fn url(&self) -> String {
        match self {
            Kurrent::Real(url) => url.clone(),
            Kurrent::Double(double) => double.url(),
        }
    }

    /// The double, or `None` (having said that `check` is skipped) on a real server.
    pub fn double(&self, check: &str) -> Option<&KurrentDbDouble> {
        let double = self.as_double();
        if double.is_none() {
            eprintln!("SKIPPED {check}: it holds appends midway, which only the test double can");
        }
        double
    }

    /// The double, if this is one: for a check that only looks at what it served.
    pub fn as_double(&self) -> Option<&KurrentDbDouble> {
        match self {
            Kurrent::Double(double) => Some(double),
            Kurrent::Real(_) => None,
        }
    }
}

/// A ledger prefix no other test, and no earlier run, has used.
pub fn fresh_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "hltest-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
