//! Request ids for requests that arrive without one.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes request ids shaped like random UUIDs, without a system call per request (a random
/// UUID asks the kernel for entropy each time, a measurable cost on small requests).
///
/// Each id is a counter passed through a hash keyed at random when the process starts
/// (SipHash, `std`'s `RandomState`): ids never repeat within a process, do not collide
/// across processes in practice (128 bits under independent keys), and reveal nothing of
/// how many requests the process has served, which a plain counter would tell any tenant.
#[derive(Clone, Debug)]
pub(super) struct RequestIds {
    key: RandomState,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        Self {
            key: RandomState::new(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The id of the `n`th request, as UUID text.
    fn id(&self, n: u64) -> String {
        let high = self.key.hash_one((n, 0u8));
        let low = self.key.hash_one((n, 1u8));
        let bits = (u128::from(high) << 64) | u128::from(low);
        let hex = format!("{bits:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&self.id(n)).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_do_not_repeat() {
        let mut ids = RequestIds::new();
        let request = Request::new(());
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = ids.make_request_id(&request).expect("an id");
            let text = id.header_value().to_str().expect("ascii").to_owned();
            let groups: Vec<usize> = text.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{text}");
            assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
            assert!(seen.insert(text), "an id repeated");
        }
    }

    #[test]
    fn processes_make_different_ids() {
        // Two generators stand for two processes: each has its own key.
        let (a, b) = (RequestIds::new(), RequestIds::new());
        assert_ne!(a.id(0), b.id(0));
        assert_ne!(a.id(0), a.id(1));
    }
}
