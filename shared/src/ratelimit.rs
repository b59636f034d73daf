//! Per-key request rates: a token bucket (GCRA, from governor) per API key, in memory.
//!
//! Each replica keeps its own buckets, so with N replicas behind a balancer a key can reach
//! up to N times its rate; the limit is a guard against runaway callers, not a billing meter.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::sync::Cache;
use plinth_types::console::RateLimit;

use crate::error::ApiError;

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// The buckets of every key seen recently.
pub struct RateLimits {
    buckets: Cache<String, Arc<(RateLimit, Bucket)>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("keys", &self.buckets.entry_count())
            .finish()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            // A key idle for ten minutes starts again with a full bucket, which it would
            // have had by then anyway at any rate of at least one per ten minutes.
            buckets: Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            clock: DefaultClock::default(),
        }
    }
}

impl RateLimits {
    /// Takes one request from `key_id`'s bucket, which holds `limit`.
    ///
    /// # Errors
    ///
    /// Returns `rate_limited` with the wait until the next request is allowed.
    pub fn check(&self, key_id: &str, limit: RateLimit) -> Result<(), ApiError> {
        let mut entry = self
            .buckets
            .get_with_by_ref(key_id, || Arc::new(new_bucket(limit)));
        if entry.0 != limit {
            // The operator changed the limit: start a bucket of the new size.
            entry = Arc::new(new_bucket(limit));
            self.buckets.insert(key_id.to_owned(), entry.clone());
        }
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
