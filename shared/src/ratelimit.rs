//! Per-key request rates: a token bucket (GCRA, from governor) per API key, in memory.
//!
//! Each replica keeps its own buckets, so with N replicas behind a balancer a key can reach
//! up to N times its rate; the limit is a guard against runaway callers, not a billing meter.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use plinth_types::console::RateLimit;

use crate::error::ApiError;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A key's bucket with the limit it was made for.
type Entry = Arc<(RateLimit, Bucket)>;

/// The buckets of every rate-limited key this replica has seen since it started. Only
/// authenticated keys get one, so the map grows with the number of keys, not of requests.
#[derive(Default)]
pub struct RateLimits {
    buckets: RwLock<HashMap<String, Entry, foldhash::fast::RandomState>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Takes one request from `key_id`'s bucket, which holds `limit`.
    ///
    /// # Errors
    ///
    /// Returns `rate_limited` with the wait until the next request is allowed.
    pub fn check(&self, key_id: &str, limit: RateLimit) -> Result<(), ApiError> {
        let known = self
            .buckets
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key_id)
            .cloned();
        let entry = match known {
            Some(entry) if entry.0 == limit => entry,
            // A new key, or the operator changed its limit: start a bucket of that size,
            // unless a concurrent request of the same key just did.
            _ => {
                let mut buckets = self
                    .buckets
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let slot = buckets
                    .entry(key_id.to_owned())
                    .or_insert_with(|| Arc::new(new_bucket(limit)));
                if slot.0 != limit {
                    *slot = Arc::new(new_bucket(limit));
                }
                slot.clone()
            }
        };
        match entry.1.check() {
            Ok(_) => Ok(()),
            Err(not_until) => Err(ApiError::RateLimited {
                retry_after: not_until.wait_time_from(self.clock.now()),
                limit: limit.burst,
            }),
        }
    }
}

fn new_bucket(limit: RateLimit) -> (RateLimit, Bucket) {
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::per_second(per_second).allow_burst(burst);
    (
        limit,
        RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limits = RateLimits::default();
        let limit = RateLimit {
            per_second: 1,
            burst: 3,
        };
        for _ in 0..3 {
            limits.check("key_a", limit).unwrap();
        }
        match limits.check("key_a", limit) {
            Err(ApiError::RateLimited { retry_after, limit }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
                assert_eq!(limit, 3);
            }
            other => panic!("expected rate_limited, got {other:?}"),
        }
        // Another key has its own bucket.
        limits.check("key_b", limit).unwrap();
    }

    #[test]
    fn concurrent_first_requests_share_one_bucket() {
        let limits = Arc::new(RateLimits::default());
        let limit = RateLimit {
            per_second: 1,
            burst: 4,
        };
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let limits = limits.clone();
                std::thread::spawn(move || limits.check("key", limit).is_ok())
            })
            .collect();
        let passed = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(passed, 4);
    }

    #[test]
    fn a_changed_limit_takes_effect() {
        let limits = RateLimits::default();
        let small = RateLimit {
            per_second: 1,
            burst: 1,
        };
        limits.check("key", small).unwrap();
        assert!(limits.check("key", small).is_err());
        limits
            .check(
                "key",
                RateLimit {
                    per_second: 1,
                    burst: 5,
                },
            )
            .unwrap();
    }
}
