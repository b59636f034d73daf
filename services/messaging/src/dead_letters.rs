//! Dead letters: messages that used up their delivery attempts, listed with their payloads
//! and redriven (delivered again, attempts from zero) once the consumer is fixed.

use axum::extract::State;
use bytes::Bytes;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_shared::ids::{from_millis, now_millis};
use plinth_types::ErrorBody;
use plinth_types::messaging::{DeadLetter, DeadLettersResponse, RedriveRequest, RedriveResponse};
use serde::Deserialize;
use sqlx::Row;

use crate::Messaging;
use crate::delivery::{DEAD, WAITING};
use crate::message::StoredMessage;
use crate::publish::to_wire;
use crate::subscriptions::authorized_subscription;

/// Most dead letters one page lists or one redrive names.
const MAX_PAGE: usize = 1000;

/// Query of a dead-letter listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Most dead letters to return (1 to 1000, default 100).
    pub limit: Option<usize>,
}

/// Reads a page token: the partition and offset of the last dead letter listed.
fn parse_after(after: &str) -> Option<(i64, i64)> {
    let (partition, offset) = after.split_once('.')?;
    Some((partition.parse().ok()?, offset.parse().ok()?))
}

/// Lists a subscription's dead letters by partition and offset, with their payloads.
#[utoipa::path(
    get,
    path = "/subscriptions/{subscription}/dead-letters",
    tag = "messaging",
    params(
        ("subscription" = String, Path, description = "Subscription name"),
        DeadLettersQuery,
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = DeadLettersResponse),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn list_dead_letters(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Query(query): Query<DeadLettersQuery>,
) -> Result<Json<DeadLettersResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidParameter(format!(
            "`limit` must be 1 to {MAX_PAGE}"
        )));
    }
    let (after_partition, after_offset) = match &query.after {
        Some(after) => parse_after(after)
            .ok_or_else(|| ApiError::InvalidParameter("`after` is not a page token".into()))?,
        None => (-1, -1),
    };
    let rows = sqlx::query(
        "SELECT partition_no, offset_no, attempts, visible_at, payload, published_at \
         FROM subscription_messages WHERE subscription_id = $1 AND state = $2 \
         AND (partition_no > $3 OR (partition_no = $3 AND offset_no > $4)) \
         ORDER BY partition_no, offset_no LIMIT $5",
    )
    .bind(&sub.id)
    .bind(DEAD)
    .bind(after_partition)
    .bind(after_offset)
    .bind((limit + 1) as i64)
    .fetch_all(messaging.shared.store().pool())
    .await?;
    let more = rows.len() > limit;
    let mut dead_letters = Vec::with_capacity(rows.len().min(limit));
    for row in rows.into_iter().take(limit) {
        let payload: Vec<u8> = row
            .try_get::<Option<Vec<u8>>, _>("payload")?
            .unwrap_or_default();
        let stored = StoredMessage::decode(&Bytes::from(payload)).map_err(ApiError::internal)?;
        let published_at = row.try_get::<Option<i64>, _>("published_at")?.unwrap_or(0);
        dead_letters.push(DeadLetter {
            attempts: row.try_get::<i64, _>("attempts")?.max(0) as u32,
            dead_at: from_millis(row.try_get("visible_at")?),
            message: to_wire(
                row.try_get::<i64, _>("partition_no")? as u32,
                row.try_get::<i64, _>("offset_no")? as u64,
                published_at,
                stored,
            )?,
        });
    }
    let next = match dead_letters.last() {
        Some(last) if more => Some(format!(
            "{}.{}",
            last.message.partition, last.message.offset
        )),
        _ => None,
    };
    Ok(Json(DeadLettersResponse { dead_letters, next }))
}

/// Delivers dead letters again, each with a fresh set of attempts: every one, or those
/// named.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/redrive",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "How many are due again", body = RedriveResponse),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn redrive(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<RedriveRequest>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let now = now_millis();
    let redrive_sql = "UPDATE subscription_messages SET state = $1, attempts = 0, \
         visible_at = $2, lease_id = NULL WHERE subscription_id = $3 AND state = $4";
    let mut tx = messaging.shared.store().begin().await?;
    let mut redriven = 0;
    match &body.messages {
        None => {
            redriven = sqlx::query(redrive_sql)
                .bind(WAITING)
                .bind(now)
                .bind(&sub.id)
                .bind(DEAD)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        Some(messages) => {
            if messages.is_empty() || messages.len() > MAX_PAGE {
                return Err(ApiError::InvalidField {
                    field: "messages".into(),
                    reason: format!("must name 1 to {MAX_PAGE} messages"),
                });
            }
            let one = format!("{redrive_sql} AND partition_no = $5 AND offset_no = $6");
            for message in messages {
                redriven += sqlx::query(sqlx::AssertSqlSafe(one.as_str()))
                    .bind(WAITING)
                    .bind(now)
                    .bind(&sub.id)
                    .bind(DEAD)
                    .bind(i64::from(message.partition))
                    .bind(message.offset as i64)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
        }
    }
    tx.commit().await?;
    messaging.deliveries.nudge(&sub.id);
    tracing::info!(subscription = %sub.subscription.name, redriven, "dead letters redriven");
    Ok(Json(RedriveResponse { redriven }))
}
