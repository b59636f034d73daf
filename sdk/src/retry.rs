//! When a failed request is sent again, and how long the client waits before it does.
//!
//! Only idempotent methods are retried: a POST that timed out may have taken effect, and
//! sending it again could create a second project or mint a second secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};

/// The wait before the first retry; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// The longest wait between two attempts that the client chooses itself.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The longest `Retry-After` the client honours; a server asking for more still gets its
/// retry, only sooner, so that one call never hangs for minutes.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(5);

/// Tells whether a request with this method may be sent twice with the same effect as once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method)
}

/// Tells whether a response status says the same request may succeed a moment later.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// Tells whether a transport failure is worth another attempt: the connection could not be
/// made, or the attempt ran out of time.
pub(crate) fn is_retryable_transport(err: &reqwest::Error) -> bool {
    err.is_connect() || err.is_timeout()
}

/// Reads the wait a response asks for in its `Retry-After` header, capped.
///
/// Only the delta-seconds form is understood, which is what Plinth sends; an HTTP-date (from
/// some proxy) is ignored and the client's own backoff applies instead.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value)
}

/// Parses a `Retry-After` value in seconds (RFC 9110, section 10.2.3), capped.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP))
}

/// The exponentially growing, jittered waits between the attempts of one request.
#[derive(Debug)]
pub(crate) struct Backoff {
    retries: u32,
    rng: XorShift,
}

impl Backoff {
    /// Starts the waits of a new request.
    pub(crate) fn new() -> Self {
        Backoff {
            retries: 0,
            rng: XorShift::seeded(),
        }
    }

    /// Returns the wait before the next retry and moves on to the one after.
    ///
    /// The wait lies between half the ceiling and the ceiling ("equal jitter"), so that many
    /// clients failing at once do not all come back at the same instant, while none retries
    /// immediately.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let ceiling = ceiling(self.retries);
        self.retries = self.retries.saturating_add(1);

        let half = u64::try_from(ceiling.as_nanos() / 2).unwrap_or(u64::MAX);
        let spread = self.rng.next() % (half + 1);
        Duration::from_nanos(half + spread)
    }
}

/// Returns the longest wait before retry number `retries` (counting from 0).
fn ceiling(retries: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2_u32.saturating_pow(retries))
        .min(BACKOFF_CAP)
}

/// A xorshift64 generator: plenty for spreading retries, and no dependency to pull in.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    /// Seeds a generator from the clock and a process-wide counter, so that requests started
    /// in the same nanosecond still draw different waits.
    fn seeded() -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);

        let count = STARTED.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Truncating the nanoseconds keeps their fast-moving low bits, which is all a seed
        // needs; the odd multiplier spreads consecutive counts apart, and `| 1` keeps the
        // state non-zero, which xorshift requires.
        let seed = (nanos as u64) ^ count.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn only_idempotent_methods_are_retryable() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&method), "{method} should be retried");
        }
        for method in [Method::POST, Method::PATCH] {
            assert!(!is_idempotent(&method), "{method} must not be retried");
        }
    }

    #[test]
    fn only_transient_statuses_are_retryable() {
        for status in [429, 502, 503, 504] {
            assert!(
                is_retryable_status(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 400, 401, 403, 404, 409, 500, 501] {
            assert!(
                !is_retryable_status(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }

    #[test]
    fn ceiling_doubles_from_100ms_up_to_2s() {
        let ceilings: Vec<u128> = (0..8).map(|retry| ceiling(retry).as_millis()).collect();

        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(ceiling(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn waits_are_jittered_within_half_the_ceiling() {
        let mut backoff = Backoff::new();

        for retry in 0..20 {
            let wait = backoff.next_wait();
            let ceiling = ceiling(retry);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "retry {retry} waited {wait:?}"
            );
        }
    }

    #[test]
    fn jitter_differs_between_requests() {
        let waits: Vec<Duration> = (0..8).map(|_| Backoff::new().next_wait()).collect();

        assert!(
            waits.iter().any(|wait| *wait != waits[0]),
            "all waits equal: {waits:?}"
        );
    }

    #[test]
    fn retry_after_seconds_are_parsed_and_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("3600"), Some(RETRY_AFTER_CAP));
        assert_eq!(
            parse_retry_after(&u64::MAX.to_string()),
            Some(RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn retry_after_other_forms_are_ignored() {
        for value in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(value), None, "{value:?}");
        }
    }

    #[test]
    fn retry_after_is_read_from_the_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);

        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    }
}
