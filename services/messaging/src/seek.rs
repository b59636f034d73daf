//! Seeking a subscription: moving its committed offsets to a time or an offset.

use axum::extract::State;
use axum::http::StatusCode;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_types::ErrorBody;
use plinth_types::messaging::SeekRequest;

use crate::subscriptions::authorized_subscription;
use crate::{Messaging, log_error};

/// Moves a subscription to a time (every partition) or one partition to an offset. What lies
/// before the target counts as acknowledged, what lies after as never delivered, so seeking
/// back replays and seeking forward skips, as in Pub/Sub and Kafka.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/seek",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = SeekRequest,
    responses(
        (status = 204, description = "Moved"),
        (status = 400, description = "No target, two targets, or an offset outside the partition", body = ErrorBody),
        (status = 404, description = "No such subscription or partition", body = ErrorBody),
    )
)]
pub async fn seek(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<SeekRequest>,
) -> Result<StatusCode, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let partitions = sub.topic.topic.partition_count;
    let invalid = |reason: &str| ApiError::InvalidField {
        field: "seek".into(),
        reason: reason.into(),
    };
    let targets: Vec<(u32, u64)> = match (body.time, body.partition, body.offset) {
        (Some(time), None, None) => {
            let millis = (time.unix_timestamp_nanos() / 1_000_000) as i64;
            let mut targets = Vec::new();
            for partition in 0..partitions {
                let log = messaging
                    .logs
                    .partition(&sub.topic.id, partition)
                    .await
                    .map_err(log_error)?;
                targets.push((
                    partition,
                    log.offset_for_time(millis).await.map_err(log_error)?,
                ));
            }
            targets
        }
        (None, Some(partition), Some(offset)) => {
            if partition >= partitions {
                return Err(ApiError::PartitionNotFound {
                    topic: sub.topic.topic.name.clone(),
                    partition,
                });
            }
            let log = messaging
                .logs
                .partition(&sub.topic.id, partition)
                .await
                .map_err(log_error)?;
            let (start, end) = log.bounds().await.map_err(log_error)?;
            if !(start..=end).contains(&offset) {
                return Err(ApiError::OffsetOutOfRange {
                    partition,
                    offset,
                    start,
                    end,
                });
            }
            vec![(partition, offset)]
        }
        _ => return Err(invalid("give `time`, or `partition` and `offset`")),
    };

    // The cursors are held while the rows change, so no pull works from the old position.
    let entry = messaging.deliveries.entry(&sub.id);
    let mut cursors = entry.lock().await;
    let mut tx = messaging.shared.store().begin().await?;
    for &(partition, offset) in &targets {
        // Dead letters (and redriven ones) before the target keep their rows and payloads;
        // those from it on will be delivered afresh from the log.
        sqlx::query(
            "DELETE FROM subscription_messages WHERE subscription_id = $1 AND partition_no = $2 \
             AND (published_at IS NULL OR offset_no >= $3)",
        )
        .bind(&sub.id)
        .bind(i64::from(partition))
        .bind(offset as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE subscription_offsets SET committed = $1 WHERE subscription_id = $2 AND partition_no = $3")
            .bind(offset as i64)
            .bind(&sub.id)
            .bind(i64::from(partition))
            .execute(&mut *tx)
            .await?;
    }
    // Replicas that fetch from these partitions read their positions again.
    sqlx::query("UPDATE subscriptions SET seeks = seeks + 1 WHERE id = $1")
        .bind(&sub.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    *cursors = None;
    tracing::info!(subscription = %sub.subscription.name, "subscription seeked");
    Ok(StatusCode::NO_CONTENT)
}
