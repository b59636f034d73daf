//! Consumer groups for subscriptions on Kafka: every replica that delivers a subscription's
//! messages joins the subscription's group (`plinth.{subscription id}`), and the group
//! protocol shares the topic's partitions out among them. A replica fetches new messages
//! only from the partitions assigned to it; leases and acks stay in the metadata store, so
//! any replica can settle or redeliver any message. The offset below each partition's oldest
//! unsettled message (the subscription's committed offset) is committed to the group by the
//! partition's owner, where Kafka's tools show the subscription's lag.
//!
//! A member's consumer never fetches records itself: it pauses every partition it is given
//! (reads go through the pooled readers at Plinth's own positions) and is polled only to
//! take part in the group. One thread per member polls it; librdkafka adds its own threads
//! per consumer, which is why a replica leaves a group once it has stopped delivering.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminOptions;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{KafkaLogs, REQUEST_TIMEOUT, blocking, kafka_error, topic_name};
use crate::log::LogError;

/// How often a member's consumer is polled, which is how soon it sees a rebalance.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// The partitions a member holds, and how many assignments it has had: a new generation
/// means positions may have moved while another member held a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Rebalances seen; 0 before the first assignment.
    pub generation: u64,
    /// The topic's partitions this member fetches from.
    pub partitions: BTreeSet<u32>,
}

/// Hears the group's rebalances: pauses what is assigned and publishes it.
struct Membership {
    assignment: watch::Sender<Assignment>,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = match rebalance {
            Rebalance::Assign(list) => {
                if let Err(err) = consumer.pause(list) {
                    tracing::warn!(error = %err, "assigned partitions not paused");
                }
                list.elements()
                    .iter()
                    .map(|e| e.partition() as u32)
                    .collect()
            }
            Rebalance::Revoke(_) => BTreeSet::new(),
            Rebalance::Error(err) => {
                tracing::warn!(error = %err, "consumer group rebalance failed");
                return;
            }
        };
        self.assignment.send_modify(|now| {
            now.generation += 1;
            now.partitions = partitions;
        });
    }
}

/// This process's place in one subscription's group.
pub struct Member {
    topic_id: String,
    /// The consumer, owned by its polling thread, which closes it when told to stop (a
    /// delivery waiting for the first assignment then learns it will not come).
    consumer: Weak<BaseConsumer<Membership>>,
    topic: String,
    assignment: watch::Receiver<Assignment>,
    /// Tells the polling thread to stop, which closes the consumer (leaving the group).
    stop: Arc<AtomicBool>,
    /// When a delivery last asked for the assignment.
    used: Mutex<Instant>,
    /// The offsets last committed, by partition, in the assignment of that generation (a
    /// commit lost to a rebalance is made again after it).
    committed: Mutex<(u64, HashMap<u32, u64>)>,
    /// The polling thread, for a shutdown to wait until the consumer has left.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("topic", &self.topic)
            .field("assignment", &*self.assignment.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Member {
    /// The partitions held now; a member that has not had its first assignment waits up to
    /// `first` for it (a join takes a few seconds), and holds nothing if it has not come.
    pub async fn assignment(&self, first: Duration) -> Assignment {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let mut assignment = self.assignment.clone();
        if assignment.borrow().generation == 0 {
            let _ = tokio::time::timeout(first, assignment.wait_for(|a| a.generation > 0)).await;
        }
        assignment.borrow().clone()
    }

    /// The partitions held now (none before the first assignment).
    pub fn partitions(&self) -> BTreeSet<u32> {
        self.assignment.borrow().partitions.clone()
    }

    /// The id of the subscription's topic.
    pub fn topic_id(&self) -> &str {
        &self.topic_id
    }

    /// Commits the subscription's committed offsets of the partitions this member holds,
    /// those that changed since the last commit. The commit is sent in the background; one
    /// lost to a rebalance is made again by the next owner.
    pub fn commit(&self, offsets: &[(u32, u64)]) {
        let (generation, held) = {
            let assignment = self.assignment.borrow();
            (assignment.generation, assignment.partitions.clone())
        };
        let mut last = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        if last.0 != generation {
            *last = (generation, HashMap::new());
        }
        let committed = &mut last.1;
        let mut list = TopicPartitionList::new();
        for &(partition, offset) in offsets {
            if held.contains(&partition) && committed.get(&partition) != Some(&offset) {
                let added = list.add_partition_offset(
                    &self.topic,
                    partition as i32,
                    Offset::Offset(offset as i64),
                );
                if added.is_ok() {
                    committed.insert(partition, offset);
                }
            }
        }
        if list.count() == 0 {
            return;
        }
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        if let Err(err) = consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(error = %err, "group offsets not committed");
            committed.clear();
        }
    }

    fn idle_for(&self) -> Duration {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// Every group this process is a member of, by subscription id.
pub(super) struct Groups {
    config: ClientConfig,
    members: Mutex<HashMap<String, Arc<Member>>>,
    /// Set by [`Groups::close`]: no group is joined any more.
    closed: AtomicBool,
}

impl Groups {
    /// Groups whose consumers start from `base` (brokers, client id), with a session timeout
    /// of `session_ms`: how long a replica that died keeps its partitions.
    pub(super) fn new(base: &ClientConfig, session_ms: u64) -> Groups {
        let mut config = base.clone();
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 3).max(100).to_string(),
            )
            // Should a fetch start before the pause, it stays small.
            .set("fetch.message.max.bytes", "65536")
            .set("queued.max.messages.kbytes", "64")
            .set("auto.offset.reset", "latest");
        Groups {
            config,
            members: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Member>>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This process's member of a subscription's group, joining it on first use.
    pub(super) fn join(
        &self,
        subscription_id: &str,
        topic_id: &str,
    ) -> Result<Arc<Member>, LogError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(LogError::Closed);
        }
        if let Some(member) = self.members().get(subscription_id) {
            return Ok(member.clone());
        }
        let topic = topic_name(topic_id);
        let (sender, assignment) = watch::channel(Assignment::default());
        let consumer: BaseConsumer<Membership> = self
            .config
            .clone()
            .set("group.id", group_name(subscription_id))
            .create_with_context(Membership { assignment: sender })
            .map_err(kafka_error)?;
        consumer.subscribe(&[&topic]).map_err(kafka_error)?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let member = Arc::new(Member {
            consumer: Arc::downgrade(&consumer),
            topic_id: topic_id.to_owned(),
            topic,
            assignment,
            stop: stop.clone(),
            used: Mutex::new(Instant::now()),
            committed: Mutex::new((0, HashMap::new())),
            thread: Mutex::new(None),
        });
        let mut members = self.members();
        // Another request joined meanwhile: keep its member, and let this one go.
        if let Some(member) = members.get(subscription_id) {
            return Ok(member.clone());
        }
        members.insert(subscription_id.to_owned(), member.clone());
        drop(members);
        let name = format!(
            "plinth-group-{}",
            &subscription_id[..subscription_id.len().min(8)]
        );
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Every partition is paused: a poll serves the group, it brings no
                    // records (any fetched before a pause took hold are dropped).
                    let _ = consumer.poll(POLL_EVERY);
                }
                // The only lasting reference: dropping it closes the consumer, which leaves
                // the group.
                drop(consumer);
            })
            .map_err(|err| LogError::Backend(format!("cannot start a group thread: {err}")))?;
        *member.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(member)
    }

    /// Leaves every group, and waits until each consumer has told its group (so that the
    /// partitions go to other replicas at once, not after the session timeout); joins none
    /// after. Blocks: for a shutdown, on a blocking thread.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let members: Vec<_> = self.members().drain().map(|(_, member)| member).collect();
        let mut threads = Vec::new();
        for member in members {
            member.stop.store(true, Ordering::Relaxed);
            threads.extend(
                member
                    .thread
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
        }
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Leaves a subscription's group, if this process is a member.
    pub(super) fn leave(&self, subscription_id: &str) {
        self.members().remove(subscription_id);
    }

    /// Leaves the groups no delivery has used for `idle`, so their partitions go to the
    /// replicas still delivering; returns the subscriptions left.
    pub(super) fn leave_idle(&self, idle: Duration) -> Vec<String> {
        let mut left = Vec::new();
        self.members().retain(|id, member| {
            let keep = member.idle_for() < idle;
            if !keep {
                left.push(id.clone());
            }
            keep
        });
        left
    }

    /// The members this process has, by subscription id.
    pub(super) fn all(&self) -> Vec<(String, Arc<Member>)> {
        self.members()
            .iter()
            .map(|(id, member)| (id.clone(), member.clone()))
            .collect()
    }
}

/// The consumer group of a subscription.
fn group_name(subscription_id: &str) -> String {
    format!("plinth.{subscription_id}")
}

/// The consumer groups of subscriptions, on the cluster.
impl KafkaLogs {
    /// This process's member of a subscription's consumer group, joining on first use.
    ///
    /// # Errors
    ///
    /// Returns the client's error when the consumer cannot be made.
    pub fn member(&self, subscription_id: &str, topic_id: &str) -> Result<Arc<Member>, LogError> {
        self.client.groups.join(subscription_id, topic_id)
    }

    /// The subscriptions whose groups this process is a member of, with its members.
    pub fn members(&self) -> Vec<(String, Arc<Member>)> {
        self.client.groups.all()
    }

    /// Leaves the groups no delivery here has used for `idle`; returns their subscriptions.
    pub fn leave_idle(&self, idle: Duration) -> Vec<String> {
        self.client.groups.leave_idle(idle)
    }

    /// Leaves every consumer group, for a shutdown: waits until the groups were told.
    pub async fn leave_groups(&self) {
        let client = self.client.clone();
        let _ = tokio::task::spawn_blocking(move || client.groups.close()).await;
    }

    /// Leaves a subscription's group and deletes the group, once the subscription is gone.
    /// A group that other replicas are still in stays, for the last of them to delete when
    /// it leaves; Kafka also drops empty groups itself after `offsets.retention.minutes`.
    pub async fn forget_group(&self, subscription_id: &str) {
        self.client.groups.leave(subscription_id);
        let group = group_name(subscription_id);
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        // The member's consumer leaves on its polling thread; give it that long.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match self.client.admin.delete_groups(&[&group], &options).await {
            Ok(results) => {
                for result in results {
                    if let Err((_, code)) = result {
                        tracing::debug!(%group, %code, "consumer group not deleted");
                    }
                }
            }
            Err(err) => tracing::debug!(%group, error = %err, "consumer group not deleted"),
        }
    }

    /// The offsets a subscription's group has committed on its topic, by partition (`None`
    /// where it has committed none): what Kafka's tools see of the subscription.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn group_offsets(
        &self,
        subscription_id: &str,
        topic_id: &str,
        partitions: u32,
    ) -> Result<Vec<Option<u64>>, LogError> {
        let mut config = self.client.reader_config.clone();
        config.set("group.id", group_name(subscription_id));
        let topic = topic_name(topic_id);
        blocking(move || {
            let consumer: BaseConsumer = config.create().map_err(kafka_error)?;
            let mut list = TopicPartitionList::new();
            for partition in 0..partitions {
                list.add_partition(&topic, partition as i32);
            }
            let committed = consumer
                .committed_offsets(list, REQUEST_TIMEOUT)
                .map_err(kafka_error)?;
            Ok((0..partitions)
                .map(|partition| {
                    match committed
                        .find_partition(&topic, partition as i32)
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(offset)) if offset >= 0 => Some(offset as u64),
                        _ => None,
                    }
                })
                .collect())
        })
        .await
    }
}
