//! Budgets for the requests that cost the store a lookup and find nothing.
//!
//! A key or an id this node's read model does not know may still exist: it may
//! have been created through another process sharing the store, so the node
//! asks the store before answering 401 or 404. On PostgreSQL that is a query
//! per request, so a client sending unknown keys or ids could keep the
//! database busy for everyone. Two things bound it:
//!
//! - **Budgets.** Each client address (an IPv6 one by its /64) may fail
//!   authentication, and each key may look up unknown delivery or endpoint
//!   ids, at a sustained rate with bursts of [`BURST_SECONDS`] worth; past it
//!   the answer is 429 with `Retry-After` and nothing is asked of the store.
//!   Valid keys from an address over its budget are still served: they are
//!   known without a lookup.
//! - **A short memory of misses.** A key or id looked up in vain is answered
//!   from memory for [`Throttle::forget_after`] without another lookup or any
//!   budget: a client retrying one bad key or id in a loop costs nothing.
//!   Ids and keys are made by the server and unguessable, so one that did
//!   not exist a moment ago is not about to.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] budgets and misses each; past
//! that, idle budgets and expired misses are dropped first, then the oldest.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::error::ApiError;

/// A burst may spend this many seconds' worth of a budget at once.
pub const BURST_SECONDS: u32 = 5;
/// Budgets and misses remembered at most, each.
pub const MAX_TRACKED: usize = 65_536;

/// The budgets of one server.
#[derive(Debug)]
pub struct Throttle {
    per_second: f64,
    burst: f64,
    forget_after: Duration,
    addresses: Mutex<Buckets<IpAddr>>,
    keys: Mutex<Buckets<String>>,
    misses: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Throttle {
    /// Budgets of `per_second` failed lookups (at least one), misses kept for `forget_after`.
    pub fn new(per_second: u32, forget_after: Duration) -> Throttle {
        let per_second = f64::from(per_second.max(1));
        Throttle {
            per_second,
            burst: per_second * f64::from(BURST_SECONDS),
            forget_after,
            addresses: Mutex::new(Buckets::default()),
            keys: Mutex::new(Buckets::default()),
            misses: Mutex::new(HashMap::new()),
        }
    }

    /// How long a miss is answered from memory.
    pub fn forget_after(&self) -> Duration {
        self.forget_after
    }

    /// Spends one unit of `address`'s budget for unauthenticated requests.
    pub fn charge_address(&self, address: Option<IpAddr>) -> Result<(), ApiError> {
        // Connections always have a peer; a request served some other way
        // (a test's `oneshot`) shares one budget.
        let address = client(address.unwrap_or(IpAddr::from([0, 0, 0, 0])));
        let mut buckets = lock(&self.addresses);
        self.charge(&mut buckets, address)
            .map_err(|retry_after| ApiError::TooManyRequests {
                what: "too many requests with unknown or revoked API keys from this address".into(),
                retry_after,
            })
    }

    /// Spends one unit of `key_id`'s budget for lookups of unknown ids.
    pub fn charge_key(&self, key_id: &str) -> Result<(), ApiError> {
        let mut buckets = lock(&self.keys);
        self.charge(&mut buckets, key_id.to_owned())
            .map_err(|retry_after| ApiError::TooManyRequests {
                what: "too many requests for unknown ids with this API key".into(),
                retry_after,
            })
    }

    /// Whether `what` was looked up in vain within the last [`Throttle::forget_after`].
    pub fn recently_missed(&self, what: &[&str]) -> bool {
        let digest = digest(what);
        let misses = lock(&self.misses);
        misses
            .get(&digest)
            .is_some_and(|at| at.elapsed() < self.forget_after)
    }

    /// Remembers that `what` was looked up in vain.
    pub fn missed(&self, what: &[&str]) {
        let now = Instant::now();
        let mut misses = lock(&self.misses);
        if misses.len() >= MAX_TRACKED {
            misses.retain(|_, at| now.duration_since(*at) < self.forget_after);
        }
        if misses.len() >= MAX_TRACKED {
            misses.clear();
        }
        misses.insert(digest(what), now);
    }

    /// Takes a unit from `key`'s bucket, or says in how many seconds one is back.
    fn charge<K: Hash + Eq>(&self, buckets: &mut Buckets<K>, key: K) -> Result<(), u64> {
        let now = Instant::now();
        if buckets.0.len() >= MAX_TRACKED && !buckets.0.contains_key(&key) {
            // Full buckets are idle ones: forgetting them changes nothing.
            buckets
                .0
                .retain(|_, bucket| self.refilled(bucket, now) < self.burst);
            if buckets.0.len() >= MAX_TRACKED {
                buckets.0.clear();
            }
        }
        let burst = self.burst;
        let bucket = buckets.0.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let earned = now.duration_since(bucket.at).as_secs_f64() * self.per_second;
        (bucket.tokens + earned).min(self.burst)
    }
}

#[derive(Debug)]
struct Buckets<K>(HashMap<K, Bucket>);

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets(HashMap::new())
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The client an address stands for: an IPv4 address itself (also when
/// mapped into IPv6), an IPv6 address by its /64 prefix, since one host
/// commonly holds a whole /64 and could otherwise take a new budget per request.
fn client(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Misses are kept as digests: a key or id may be kilobytes long.
fn digest(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_its_burst_then_refuses_with_a_wait() {
        let throttle = Throttle::new(2, Duration::from_secs(2));
        let address = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..2 * BURST_SECONDS {
            throttle.charge_address(address).unwrap();
        }
        match throttle.charge_address(address) {
            Err(ApiError::TooManyRequests { retry_after, .. }) => assert_eq!(retry_after, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another address has its own budget.
        throttle
            .charge_address(Some(IpAddr::from([127, 0, 0, 2])))
            .unwrap();
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_slash_64() {
        let throttle = Throttle::new(1, Duration::from_secs(2));
        for host in 0..BURST_SECONDS {
            let address: std::net::Ipv6Addr = format!("2001:db8:1:2::{host}").parse().unwrap();
            throttle.charge_address(Some(address.into())).unwrap();
        }
        let same_prefix: std::net::Ipv6Addr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(throttle.charge_address(Some(same_prefix.into())).is_err());
        let other_prefix: std::net::Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        throttle.charge_address(Some(other_prefix.into())).unwrap();
        let mapped: std::net::Ipv6Addr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client(mapped.into()), IpAddr::from([192, 0, 2, 1]));
    }

    #[test]
    fn misses_are_remembered_for_a_while_only() {
        let throttle = Throttle::new(1, Duration::from_secs(3600));
        assert!(!throttle.recently_missed(&["org", "dlv_1"]));
        throttle.missed(&["org", "dlv_1"]);
        assert!(throttle.recently_missed(&["org", "dlv_1"]));
        assert!(!throttle.recently_missed(&["org", "dlv_2"]));
        assert!(!throttle.recently_missed(&["orgdlv_1"]));
        let forgetful = Throttle::new(1, Duration::ZERO);
        forgetful.missed(&["org", "dlv_1"]);
        assert!(!forgetful.recently_missed(&["org", "dlv_1"]));
    }

    #[test]
    fn memory_stays_bounded_under_unique_addresses() {
        let throttle = Throttle::new(1, Duration::from_secs(1));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = throttle.charge_address(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(lock(&throttle.addresses).0.len() <= MAX_TRACKED);
    }
}
