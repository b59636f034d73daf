//! What this process keeps per subscription: fetch cursors, the leases settled here (for
//! event streams), and the wake-ups of push workers.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, Notify, broadcast};

/// Per subscription, the next offset to fetch from each partition's log. Kept in memory and
/// rebuilt from the rows on first use; a pull holds its subscription's entry, so two pulls
/// in this process never fetch the same message.
#[derive(Debug, Default)]
pub struct Deliveries {
    cursors: std::sync::Mutex<HashMap<String, Cursors>>,
    /// Per subscription with an open event stream in this process: the leases acked or
    /// nacked here, so the stream knows what it has in flight.
    settled: std::sync::Mutex<HashMap<String, broadcast::Sender<String>>>,
    /// Per subscription with a push worker: woken when dead letters are redriven.
    nudges: std::sync::Mutex<HashMap<String, Arc<Notify>>>,
}

/// One subscription's cursors; `None` until loaded.
type Cursors = Arc<Mutex<Option<Positions>>>;

/// Where fetching stands in each partition, as of a consumer-group assignment and a seek
/// (on Kafka; both 0 on the embedded log): with a new assignment, or after a seek made on
/// another replica, positions are read again, since another replica may have fetched from
/// a partition while it held it, and a seek moves them.
#[derive(Clone, Debug)]
pub(crate) struct Positions {
    pub(crate) generation: u64,
    pub(crate) seeks: i64,
    pub(crate) next: Vec<u64>,
}

impl Deliveries {
    /// The cursors of a subscription, to lock while its delivery state changes.
    pub(crate) fn entry(&self, subscription_id: &str) -> Cursors {
        let mut cursors = self
            .cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cursors
            .entry(subscription_id.to_owned())
            .or_default()
            .clone()
    }

    /// Drops a deleted subscription's cursors.
    pub(crate) fn forget(&self, subscription_id: &str) {
        self.cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(subscription_id);
        self.nudge_map().remove(subscription_id);
    }

    fn nudge_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.nudges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What wakes a subscription's waiting push worker when messages became due at once.
    pub(crate) fn nudges(&self, subscription_id: &str) -> Arc<Notify> {
        self.nudge_map()
            .entry(subscription_id.to_owned())
            .or_default()
            .clone()
    }

    /// Wakes the subscription's push worker, if it has one here.
    pub(crate) fn nudge(&self, subscription_id: &str) {
        if let Some(nudge) = self.nudge_map().get(subscription_id) {
            nudge.notify_one();
        }
    }

    fn settled_feeds(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<String>>> {
        self.settled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hears of every lease of the subscription acked or nacked in this process.
    pub(crate) fn watch_settled(&self, subscription_id: &str) -> broadcast::Receiver<String> {
        self.settled_feeds()
            .entry(subscription_id.to_owned())
            .or_insert_with(|| broadcast::Sender::new(4096))
            .subscribe()
    }

    /// Drops the subscription's feed once no stream listens to it.
    pub(crate) fn unwatch_settled(&self, subscription_id: &str) {
        let mut feeds = self.settled_feeds();
        if feeds
            .get(subscription_id)
            .is_some_and(|feed| feed.receiver_count() == 0)
        {
            feeds.remove(subscription_id);
        }
    }

    pub(super) fn announce_settled(
        &self,
        subscription_id: &str,
        leases: impl Iterator<Item = String>,
    ) {
        if let Some(feed) = self.settled_feeds().get(subscription_id) {
            for lease in leases {
                let _ = feed.send(lease);
            }
        }
    }
}
