//! Subscriptions on Kafka: the partitions this replica fetches from, as the subscription's
//! consumer group assigned them, and the task that commits the subscriptions' positions to
//! their groups and leaves the groups this replica no longer delivers from.

use std::time::Duration;

use plinth_shared::ApiError;
use sqlx::Row;

use crate::kafka::Assignment;
use crate::subscriptions::SubscriptionRow;
use crate::{Background, Messaging, log_error};

/// How often positions are committed to the groups, and idle memberships looked for.
const EVERY: Duration = Duration::from_secs(1);

/// The partitions this replica may fetch new messages from: on Kafka, those the
/// subscription's group assigned it (joining the group on first use, and waiting for the
/// first assignment up to the session timeout); `None` on the embedded log, where this
/// process is the only one and fetches from all.
pub(super) async fn owned_partitions(
    messaging: &Messaging,
    sub: &SubscriptionRow,
) -> Result<Option<Assignment>, ApiError> {
    let Some(kafka) = messaging.logs.kafka() else {
        return Ok(None);
    };
    let member = kafka.member(&sub.id, &sub.topic.id).map_err(log_error)?;
    let first = messaging.shared.config().messaging_kafka_session_timeout;
    Ok(Some(member.assignment(first).await))
}

/// How often the subscription was seeked, from any replica.
pub(super) async fn seeks(messaging: &Messaging, sub: &SubscriptionRow) -> Result<i64, ApiError> {
    let row = sqlx::query("SELECT seeks FROM subscriptions WHERE id = $1")
        .bind(&sub.id)
        .fetch_optional(messaging.shared.store().pool())
        .await?;
    match row {
        Some(row) => Ok(row.try_get("seeks")?),
        None => Err(ApiError::SubscriptionNotFound(
            sub.subscription.name.clone(),
        )),
    }
}

/// Every second, until the service closes: leaves the groups of subscriptions this replica
/// has not delivered from for `messaging_kafka_group_idle` (or that were deleted), and
/// commits every other subscription's committed offsets to its group.
pub(crate) async fn keep_groups(background: Background) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(messaging) = background.upgrade() else {
            return;
        };
        let Some(kafka) = messaging.logs.kafka() else {
            return;
        };
        let idle = messaging.shared.config().messaging_kafka_group_idle;
        for id in kafka.leave_idle(idle) {
            tracing::debug!(subscription_id = %id, "left an idle consumer group");
        }
        for (id, member) in kafka.members() {
            match committed_offsets(&messaging, &id).await {
                Ok(offsets) if offsets.is_empty() => {
                    // No positions: the subscription (or its topic) was deleted.
                    let kafka = kafka.clone();
                    tokio::spawn(async move { kafka.forget_group(&id).await });
                }
                Ok(offsets) => member.commit(&offsets),
                Err(err) => tracing::warn!(error = %err, "subscription positions not read"),
            }
        }
    }
}

/// A subscription's committed offset in each partition.
async fn committed_offsets(
    messaging: &Messaging,
    subscription_id: &str,
) -> Result<Vec<(u32, u64)>, ApiError> {
    let rows = sqlx::query(
        "SELECT partition_no, committed FROM subscription_offsets WHERE subscription_id = $1",
    )
    .bind(subscription_id)
    .fetch_all(messaging.shared.store().pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("partition_no")? as u32,
                row.try_get::<i64, _>("committed")?.max(0) as u64,
            ))
        })
        .collect()
}
