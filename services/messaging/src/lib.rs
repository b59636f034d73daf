//! Messaging: topics, publishing and partition reads under `/messaging/v1`, on the shared
//! auth and quota layer.
//!
//! - [`names`]: topic names, validated once.
//! - [`backend`]: the message log the service runs on, one interface to [`log`] (the
//!   embedded durable log, one per partition: segment files, group commit, recovery of a
//!   torn tail, retention; [`logs`] keeps every partition's log open) and to [`kafka`].
//! - [`message`]: how a message is stored as a log record's payload.
//! - [`topics`], [`publish`], [`subscriptions`]: the HTTP routes; `dedup` drops producer
//!   retries within the deduplication window.
//! - [`delivery`]: the delivery state of subscriptions (leases, acks, nacks, redelivery, dead
//!   letters), in the metadata store on either backend; [`pull`], [`stream`], [`seek`] and
//!   [`dead_letters`] are its routes, and [`push`] delivers push subscriptions' messages to
//!   their endpoints.
//! - [`notifications`]: bucket notifications, and the relay of the storage outbox to them.
//!
//! A topic is a row in the metadata store; its messages live in the message log. A publish
//! answers once its messages are durable; a reader only ever sees durable messages.

pub mod backend;
pub mod dead_letters;
mod dedup;
pub mod delivery;
pub mod kafka;
pub mod log;
pub mod logs;
pub mod message;
pub mod names;
pub mod notifications;
pub mod publish;
pub mod pull;
pub mod push;
mod retention;
pub mod seek;
pub mod stream;
pub mod subscriptions;
pub mod topics;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};

use axum::extract::FromRef;
use plinth_shared::Shared;
use plinth_shared::config::MessagingBackend;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::backend::Logs;
use crate::kafka::KafkaLogs;
use crate::log::LogConfig;
use crate::logs::FileLogs;

/// The messaging service's state.
#[derive(Clone, Debug)]
pub struct Messaging {
    shared: Shared,
    logs: Arc<Logs>,
    /// Spreads keyless messages over partitions in turn.
    round_robin: Arc<AtomicU64>,
    /// Where each subscription's fetching stands.
    deliveries: Arc<delivery::Deliveries>,
    /// Push delivery's client and workers.
    push: Arc<push::Pusher>,
    /// Topics and their projects' quotas as publishes last read them.
    topic_cache: Arc<TopicCache>,
}

/// Cached topic rows with the quotas in force, by project and topic name, with when they
/// were read.
type TopicCache = quick_cache::sync::Cache<
    (String, String),
    (
        std::time::Instant,
        topics::TopicRow,
        plinth_types::console::Quotas,
    ),
>;

/// See [`Messaging::open_handle`].
#[derive(Clone, Debug)]
pub struct OpenHandle(Weak<Logs>);

impl OpenHandle {
    /// Whether any clone of the service is still alive.
    pub fn is_open(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// The service as its background tasks hold it: without keeping the message log open, so
/// that dropping the service closes it (and frees its lock) and ends the tasks.
#[derive(Clone, Debug)]
pub(crate) struct Background {
    shared: Shared,
    logs: Weak<Logs>,
    round_robin: Arc<AtomicU64>,
    deliveries: Arc<delivery::Deliveries>,
    push: Arc<push::Pusher>,
    topic_cache: Arc<TopicCache>,
}

impl Background {
    /// The service, while it is still open.
    pub(crate) fn upgrade(&self) -> Option<Messaging> {
        Some(Messaging {
            shared: self.shared.clone(),
            logs: self.logs.upgrade()?,
            round_robin: self.round_robin.clone(),
            deliveries: self.deliveries.clone(),
            push: self.push.clone(),
            topic_cache: self.topic_cache.clone(),
        })
    }
}

impl FromRef<Messaging> for Shared {
    fn from_ref(messaging: &Messaging) -> Shared {
        messaging.shared.clone()
    }
}

impl Messaging {
    /// Opens the message log the configuration names, and starts the retention sweep.
    ///
    /// # Errors
    ///
    /// Returns an error when `messaging_url` is unusable or its directory cannot be created.
    pub async fn open(shared: Shared) -> Result<Messaging, std::io::Error> {
        let logs = match shared
            .config()
            .messaging_backend()
            .map_err(std::io::Error::other)?
        {
            MessagingBackend::File(dir) => {
                let config = LogConfig {
                    segment_bytes: shared.config().messaging_segment_bytes,
                };
                let logs = FileLogs::open(&dir, config).await?;
                sweep_orphan_logs(&shared, &logs).await?;
                Logs::File(logs)
            }
            MessagingBackend::Kafka(brokers) => Logs::Kafka(
                KafkaLogs::connect(
                    &brokers,
                    shared.config().messaging_kafka_replication,
                    shared.config().messaging_kafka_verify_offsets,
                    shared.config().messaging_kafka_session_timeout.as_millis() as u64,
                )
                .map_err(std::io::Error::other)?,
            ),
        };
        let guard = push::guard::Guard::new(
            shared
                .config()
                .messaging_push_allow()
                .map_err(std::io::Error::other)?,
        );
        let pusher = push::Pusher::new(guard).map_err(std::io::Error::other)?;
        let messaging = Messaging {
            shared,
            logs: Arc::new(logs),
            round_robin: Arc::new(AtomicU64::new(0)),
            deliveries: Arc::default(),
            push: Arc::new(pusher),
            topic_cache: Arc::new(quick_cache::sync::Cache::new(10_000)),
        };
        tokio::spawn(retention::sweep(
            messaging.shared.clone(),
            Arc::downgrade(&messaging.logs),
        ));
        tokio::spawn(push::supervise(messaging.background()));
        tokio::spawn(notifications::relay(messaging.background()));
        if messaging.logs.kafka().is_some() {
            tokio::spawn(delivery::keep_groups(messaging.background()));
            tokio::spawn(leave_groups_at_shutdown(messaging.background()));
        }
        Ok(messaging)
    }

    /// Tells whether this service's message log is still open, in any clone of it: a
    /// stopped server has let go of it once every request and task holding it is done.
    pub fn open_handle(&self) -> OpenHandle {
        OpenHandle(Arc::downgrade(&self.logs))
    }

    /// The Kafka cluster the service runs on, if it does: for operators' tools and tests to
    /// see this replica's consumer groups.
    pub fn kafka(&self) -> Option<&KafkaLogs> {
        self.logs.kafka()
    }

    /// The service for a background task to hold.
    pub(crate) fn background(&self) -> Background {
        Background {
            shared: self.shared.clone(),
            logs: Arc::downgrade(&self.logs),
            round_robin: self.round_robin.clone(),
            deliveries: self.deliveries.clone(),
            push: self.push.clone(),
            topic_cache: self.topic_cache.clone(),
        }
    }
}

/// Once the server begins to shut down, leaves this replica's Kafka consumer groups, so
/// that other replicas take its partitions over at once; the service stays open until the
/// groups were told.
async fn leave_groups_at_shutdown(background: Background) {
    let mut stopping = background.shared.stopping();
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        return;
    }
    let Some(messaging) = background.upgrade() else {
        return;
    };
    let _working = messaging.shared.hold_open().await;
    if let Some(kafka) = messaging.logs.kafka() {
        kafka.leave_groups().await;
    }
}

/// Removes the embedded logs of topics that have no row: a crash after a topic's row was
/// deleted and before its files were, or after a create made the files and before its row
/// committed. The directory is locked to this process, so no create is in flight.
async fn sweep_orphan_logs(shared: &Shared, logs: &FileLogs) -> Result<(), std::io::Error> {
    let rows = sqlx::query("SELECT id FROM topics")
        .fetch_all(shared.store().pool())
        .await
        .map_err(std::io::Error::other)?;
    let known: std::collections::HashSet<String> = rows
        .iter()
        .filter_map(|row| sqlx::Row::try_get::<String, _>(row, "id").ok())
        .collect();
    let mut removed = 0;
    for id in logs.topic_ids().await? {
        if !known.contains(&id) {
            logs.delete_topic(&id).await?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "logs of topics that no longer exist removed");
    }
    Ok(())
}

/// The answer to a log failure with no more specific meaning at its call site: a partition
/// that stopped after a failed write, or a closed one, is a backend to retry later; a
/// damaged one, or a read past its ends, is the server's fault.
pub(crate) fn log_error(err: log::LogError) -> plinth_shared::ApiError {
    use plinth_shared::ApiError;
    match err {
        log::LogError::Failed | log::LogError::Closed | log::LogError::Backend(_) => {
            ApiError::Unavailable(err.into())
        }
        // The topic was deleted while the request was on its way.
        log::LogError::NoSuchLog(_) => ApiError::TopicNotFound("(deleted)".into()),
        log::LogError::Io(_)
        | log::LogError::Corrupt { .. }
        | log::LogError::OffsetOutOfRange { .. }
        | log::LogError::PayloadTooLarge { .. } => ApiError::internal(err),
    }
}

#[derive(OpenApi)]
#[openapi(tags((name = "messaging", description = "Topics and messages")))]
struct MessagingDoc;

/// Builds the messaging routes (and their OpenAPI paths).
pub fn router(messaging: Messaging) -> OpenApiRouter {
    let v1 = OpenApiRouter::new()
        .routes(routes!(topics::create_topic, topics::list_topics))
        .routes(routes!(
            topics::get_topic,
            topics::update_topic,
            topics::delete_topic
        ))
        .routes(routes!(publish::publish))
        .routes(routes!(publish::read_partition))
        .routes(routes!(
            subscriptions::create_subscription,
            subscriptions::list_subscriptions
        ))
        .routes(routes!(
            subscriptions::get_subscription,
            subscriptions::delete_subscription
        ))
        .routes(routes!(pull::pull))
        .routes(routes!(pull::ack))
        .routes(routes!(pull::nack))
        .routes(routes!(pull::extend))
        .routes(routes!(seek::seek))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::redrive))
        .routes(routes!(push::list_attempts))
        .routes(routes!(stream::stream))
        .routes(routes!(
            notifications::create_notification,
            notifications::list_notifications
        ))
        .routes(routes!(notifications::delete_notification));
    OpenApiRouter::with_openapi(MessagingDoc::openapi())
        .nest("/messaging/v1", v1)
        .with_state(messaging)
}
