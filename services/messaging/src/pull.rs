//! Pull delivery: leases, acks, nacks, lease extensions, redelivery and dead letters.
//!
//! Every message a subscription has fetched from the log and not yet passed with its
//! committed offset has a row in `subscription_messages`: waiting (delayed, or nacked until
//! a retry time), leased (until the lease expires), or acknowledged. A pull first takes rows
//! that are due (a retry time reached, a lease expired), then fetches new messages from the
//! log at the subscription's cursor. An ack advances the committed offset past every
//! acknowledged message in a row and deletes their rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_shared::ids::{now_millis, random_hex};
use plinth_types::ErrorBody;
use plinth_types::messaging::{Delivery, LeaseRequest, LeaseResponse, PullRequest, PullResponse};
use sqlx::{AnyConnection, Row};
use tokio::sync::Mutex;

use crate::Messaging;
use crate::message::StoredMessage;
use crate::publish::{append_stored, to_wire};
use crate::subscriptions::{MAX_DEADLINE_SECONDS, SubscriptionRow, authorized_subscription};

const WAITING: i64 = 0;
const LEASED: i64 = 1;
const ACKED: i64 = 2;

/// Most messages one pull returns, and longest it waits.
const MAX_PULL: usize = 1000;
const MAX_WAIT_SECONDS: u64 = 30;

/// Per subscription, the next offset to fetch from each partition's log. Kept in memory and
/// rebuilt from the rows on first use; a pull holds its subscription's entry, so two pulls
/// never fetch the same message.
#[derive(Debug, Default)]
pub struct Deliveries {
    cursors: std::sync::Mutex<HashMap<String, Cursors>>,
}

/// One subscription's cursors, one per partition; `None` until loaded.
type Cursors = Arc<Mutex<Option<Vec<u64>>>>;

impl Deliveries {
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
    pub(crate) async fn forget(&self, subscription_id: &str) {
        self.cursors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(subscription_id);
    }
}

/// A lease id: partition, offset and attempt, and random bits so that no one can guess
/// another delivery's lease.
fn lease_id(partition: u32, offset: u64, attempt: u32) -> String {
    format!("{partition}.{offset}.{attempt}.{}", random_hex(8))
}

fn parse_lease(lease: &str) -> Option<(u32, u64)> {
    let mut parts = lease.split('.');
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some((partition, offset))
}

/// Reads where each partition's fetching stands: past the last message with a row, or at
/// the committed offset.
async fn load_cursors(
    conn: &mut AnyConnection,
    sub: &SubscriptionRow,
) -> Result<Vec<u64>, ApiError> {
    let mut cursors = vec![0u64; sub.topic.topic.partition_count as usize];
    let committed = sqlx::query(
        "SELECT partition_no, committed FROM subscription_offsets WHERE subscription_id = $1",
    )
    .bind(&sub.id)
    .fetch_all(&mut *conn)
    .await?;
    for row in committed {
        let partition = row.try_get::<i64, _>("partition_no")? as usize;
        if let Some(cursor) = cursors.get_mut(partition) {
            *cursor = row.try_get::<i64, _>("committed")?.max(0) as u64;
        }
    }
    let fetched = sqlx::query(
        "SELECT partition_no, MAX(offset_no) AS last FROM subscription_messages \
         WHERE subscription_id = $1 GROUP BY partition_no",
    )
    .bind(&sub.id)
    .fetch_all(&mut *conn)
    .await?;
    for row in fetched {
        let partition = row.try_get::<i64, _>("partition_no")? as usize;
        let last = row.try_get::<i64, _>("last")?.max(0) as u64;
        if let Some(cursor) = cursors.get_mut(partition) {
            *cursor = (*cursor).max(last + 1);
        }
    }
    Ok(cursors)
}

/// One message fetched for delivery, before its row is written.
struct Fetched {
    partition: u32,
    offset: u64,
    attempts: u32,
    timestamp: i64,
    message: StoredMessage,
}

/// Takes up to `max` deliverable messages and leases them; moves messages past their last
/// attempt to the dead-letter topic.
async fn take(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    max: usize,
) -> Result<Vec<Delivery>, ApiError> {
    let entry = messaging.deliveries.entry(&sub.id);
    let mut cursors = entry.lock().await;
    let now = now_millis();
    let mut conn = messaging.shared.store().pool().acquire().await?;
    if cursors.is_none() {
        *cursors = Some(load_cursors(&mut conn, sub).await?);
    }
    let Some(cursors) = cursors.as_mut() else {
        return Ok(Vec::new());
    };

    // Messages whose retry time or lease end has come.
    let due = sqlx::query(
        "SELECT partition_no, offset_no, attempts FROM subscription_messages \
         WHERE subscription_id = $1 AND state < $2 AND visible_at <= $3 \
         ORDER BY visible_at, partition_no, offset_no LIMIT $4",
    )
    .bind(&sub.id)
    .bind(ACKED)
    .bind(now)
    .bind(max as i64)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut fetched = Vec::new();
    let mut gone = Vec::new();
    for row in due {
        let partition = row.try_get::<i64, _>("partition_no")? as u32;
        let offset = row.try_get::<i64, _>("offset_no")? as u64;
        let attempts = row.try_get::<i64, _>("attempts")? as u32;
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(ApiError::internal)?;
        match log.read(offset, 1, 1).await {
            Ok(records) if records.first().is_some_and(|r| r.offset == offset) => {
                let record = &records[0];
                let message = StoredMessage::decode(&record.payload).map_err(ApiError::internal)?;
                fetched.push(Fetched {
                    partition,
                    offset,
                    attempts,
                    timestamp: record.timestamp,
                    message,
                });
            }
            // Retention deleted it before it was acknowledged, as a Kafka log would.
            _ => gone.push((partition, offset)),
        }
    }

    // New messages from the log, partition by partition.
    let mut delayed = Vec::new();
    let partitions = sub.topic.topic.partition_count;
    for partition in 0..partitions {
        if fetched.len() >= max {
            break;
        }
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(ApiError::internal)?;
        let cursor = &mut cursors[partition as usize];
        *cursor = (*cursor).max(log.start());
        if *cursor >= log.high_water() {
            continue;
        }
        let records = log
            .read(*cursor, max - fetched.len(), 4 << 20)
            .await
            .map_err(ApiError::internal)?;
        for record in records {
            *cursor = record.offset + 1;
            let message = StoredMessage::decode(&record.payload).map_err(ApiError::internal)?;
            match message.deliver_at {
                Some(at) if at > now => delayed.push((partition, record.offset, at)),
                _ => fetched.push(Fetched {
                    partition,
                    offset: record.offset,
                    attempts: 0,
                    timestamp: record.timestamp,
                    message,
                }),
            }
        }
    }

    // Past its last attempt, a message goes to the dead-letter topic (with where it came
    // from and how often it was tried) instead of out again; with no such topic it is
    // retried for as long as the log keeps it.
    let max_attempts = sub.subscription.max_delivery_attempts;
    let (dead, live): (Vec<_>, Vec<_>) = fetched
        .into_iter()
        .partition(|f| sub.dead_letter.is_some() && f.attempts >= max_attempts);
    if let (Some(dead_letter), false) = (&sub.dead_letter, dead.is_empty()) {
        let messages = dead
            .iter()
            .map(|f| {
                let mut message = f.message.clone();
                for (name, value) in [
                    ("plinth-dead-letter-topic", sub.topic.topic.name.clone()),
                    (
                        "plinth-dead-letter-subscription",
                        sub.subscription.name.clone(),
                    ),
                    ("plinth-dead-letter-partition", f.partition.to_string()),
                    ("plinth-dead-letter-offset", f.offset.to_string()),
                    ("plinth-dead-letter-attempts", f.attempts.to_string()),
                ] {
                    message.headers.insert(name.into(), value);
                }
                message.deliver_at = None;
                message
            })
            .collect();
        append_stored(messaging, dead_letter, messages).await?;
    }

    let deadline = now + (sub.subscription.ack_deadline_seconds * 1000) as i64;
    let mut deliveries = Vec::with_capacity(live.len());
    let mut tx = messaging.shared.store().begin().await?;
    for f in &dead {
        set_state(
            &mut tx,
            sub,
            f.partition,
            f.offset,
            ACKED,
            f.attempts,
            now,
            None,
        )
        .await?;
    }
    for &(partition, offset) in &gone {
        set_state(&mut tx, sub, partition, offset, ACKED, 0, now, None).await?;
    }
    for &(partition, offset, at) in &delayed {
        set_state(&mut tx, sub, partition, offset, WAITING, 0, at, None).await?;
    }
    for f in live {
        let attempt = f.attempts + 1;
        let lease = lease_id(f.partition, f.offset, attempt);
        set_state(
            &mut tx,
            sub,
            f.partition,
            f.offset,
            LEASED,
            attempt,
            deadline,
            Some(&lease),
        )
        .await?;
        deliveries.push(Delivery {
            lease_id: lease,
            attempt,
            message: to_wire(f.partition, f.offset, f.timestamp, f.message)?,
        });
    }
    let settled: Vec<u32> = dead
        .iter()
        .map(|f| f.partition)
        .chain(gone.iter().map(|g| g.0))
        .collect();
    for partition in settled {
        advance_committed(&mut tx, &sub.id, partition).await?;
    }
    tx.commit().await?;
    Ok(deliveries)
}

/// Writes a message's delivery state, inserting its row on first delivery.
#[allow(clippy::too_many_arguments)]
async fn set_state(
    tx: &mut AnyConnection,
    sub: &SubscriptionRow,
    partition: u32,
    offset: u64,
    state: i64,
    attempts: u32,
    visible_at: i64,
    lease: Option<&str>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO subscription_messages (subscription_id, partition_no, offset_no, state, \
         attempts, visible_at, lease_id) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (subscription_id, partition_no, offset_no) DO UPDATE SET \
         state = $4, attempts = $5, visible_at = $6, lease_id = $7",
    )
    .bind(&sub.id)
    .bind(i64::from(partition))
    .bind(offset as i64)
    .bind(state)
    .bind(i64::from(attempts))
    .bind(visible_at)
    .bind(lease)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Moves a partition's committed offset past every acknowledged message in a row, and
/// deletes their rows.
async fn advance_committed(
    tx: &mut AnyConnection,
    subscription_id: &str,
    partition: u32,
) -> Result<(), ApiError> {
    let committed: i64 = sqlx::query(
        "SELECT committed FROM subscription_offsets WHERE subscription_id = $1 AND partition_no = $2",
    )
    .bind(subscription_id)
    .bind(i64::from(partition))
    .fetch_one(&mut *tx)
    .await?
    .try_get("committed")?;
    let rows = sqlx::query(
        "SELECT offset_no, state FROM subscription_messages WHERE subscription_id = $1 \
         AND partition_no = $2 AND offset_no >= $3 ORDER BY offset_no LIMIT 1000",
    )
    .bind(subscription_id)
    .bind(i64::from(partition))
    .bind(committed)
    .fetch_all(&mut *tx)
    .await?;
    let mut next = committed;
    for row in rows {
        if row.try_get::<i64, _>("offset_no")? != next || row.try_get::<i64, _>("state")? != ACKED {
            break;
        }
        next += 1;
    }
    if next == committed {
        return Ok(());
    }
    sqlx::query("DELETE FROM subscription_messages WHERE subscription_id = $1 AND partition_no = $2 AND offset_no < $3")
        .bind(subscription_id)
        .bind(i64::from(partition))
        .bind(next)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE subscription_offsets SET committed = $1 WHERE subscription_id = $2 AND partition_no = $3")
        .bind(next)
        .bind(subscription_id)
        .bind(i64::from(partition))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Pulls up to `max_messages` messages, waiting up to `wait_seconds` for a first one.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/pull",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = PullRequest,
    responses(
        (status = 200, description = "Leased deliveries, possibly none", body = PullResponse),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn pull(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let max = body.max_messages.unwrap_or(10);
    if !(1..=MAX_PULL).contains(&max) {
        return Err(ApiError::InvalidField {
            field: "max_messages".into(),
            reason: format!("must be 1 to {MAX_PULL}"),
        });
    }
    let wait = body.wait_seconds.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::InvalidField {
            field: "wait_seconds".into(),
            reason: format!("must be 0 to {MAX_WAIT_SECONDS}"),
        });
    }

    let until = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut watches = Vec::new();
    for partition in 0..sub.topic.topic.partition_count {
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(ApiError::internal)?;
        watches.push(log.watch());
    }
    loop {
        let deliveries = take(&messaging, &sub, max).await?;
        if !deliveries.is_empty() || tokio::time::Instant::now() >= until {
            if let Some(project_id) = caller.project_id() {
                let bytes = deliveries
                    .iter()
                    .map(|d| d.message.value_base64.as_ref().map_or(0, String::len))
                    .sum::<usize>();
                messaging.shared.usage().record(
                    project_id,
                    "messages_delivered",
                    deliveries.len() as u64,
                );
                messaging.shared.usage().record(
                    project_id,
                    "message_bytes_delivered",
                    bytes as u64,
                );
            }
            return Ok(Json(PullResponse {
                messages: deliveries,
            }));
        }
        // New messages wake the wait at once; retries and lease ends are checked every
        // quarter second.
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        let tick = tokio::time::sleep(Duration::from_millis(250));
        tokio::select! {
            _ = changed => {}
            () = tick => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// What a lease operation does to a leased message.
enum Settle {
    Ack,
    Nack { delay_ms: Option<i64> },
    Extend { by_ms: i64 },
}

async fn settle(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    leases: &[String],
    how: Settle,
) -> Result<LeaseResponse, ApiError> {
    if leases.is_empty() || leases.len() > MAX_PULL {
        return Err(ApiError::InvalidField {
            field: "lease_ids".into(),
            reason: format!("must hold 1 to {MAX_PULL} leases"),
        });
    }
    let now = now_millis();
    let mut expired = Vec::new();
    let mut acked: BTreeMap<u32, ()> = BTreeMap::new();
    let mut tx = messaging.shared.store().begin().await?;
    for lease in leases {
        let Some((partition, offset)) = parse_lease(lease) else {
            expired.push(lease.clone());
            continue;
        };
        let found = sqlx::query(
            "SELECT attempts FROM subscription_messages WHERE subscription_id = $1 \
             AND partition_no = $2 AND offset_no = $3 AND lease_id = $4 AND state = $5",
        )
        .bind(&sub.id)
        .bind(i64::from(partition))
        .bind(offset as i64)
        .bind(lease)
        .bind(LEASED)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(found) = found else {
            expired.push(lease.clone());
            continue;
        };
        let attempts = found.try_get::<i64, _>("attempts")? as u32;
        match how {
            Settle::Ack => {
                set_state(&mut tx, sub, partition, offset, ACKED, attempts, now, None).await?;
                acked.insert(partition, ());
            }
            Settle::Nack { delay_ms } => {
                let delay = delay_ms.unwrap_or_else(|| sub.backoff_ms(attempts));
                set_state(
                    &mut tx,
                    sub,
                    partition,
                    offset,
                    WAITING,
                    attempts,
                    now + delay,
                    None,
                )
                .await?;
            }
            Settle::Extend { by_ms } => {
                set_state(
                    &mut tx,
                    sub,
                    partition,
                    offset,
                    LEASED,
                    attempts,
                    now + by_ms,
                    Some(lease),
                )
                .await?;
            }
        }
    }
    for partition in acked.keys() {
        advance_committed(&mut tx, &sub.id, *partition).await?;
    }
    tx.commit().await?;
    Ok(LeaseResponse { expired })
}

fn seconds(body: &LeaseRequest, required: bool) -> Result<Option<i64>, ApiError> {
    match body.seconds {
        None if required => Err(ApiError::InvalidField {
            field: "seconds".into(),
            reason: "is required".into(),
        }),
        Some(s) if s > MAX_DEADLINE_SECONDS || (required && s == 0) => {
            Err(ApiError::InvalidField {
                field: "seconds".into(),
                reason: format!("must be {} to {MAX_DEADLINE_SECONDS}", u64::from(required)),
            })
        }
        other => Ok(other.map(|s| (s * 1000) as i64)),
    }
}

/// Acknowledges deliveries: they are not delivered again.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/ack",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = LeaseRequest,
    responses((status = 200, description = "Leases that no longer held", body = LeaseResponse))
)]
pub async fn ack(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    Ok(Json(
        settle(&messaging, &sub, &body.lease_ids, Settle::Ack).await?,
    ))
}

/// Gives deliveries back: redelivered after `seconds`, or after the subscription's backoff.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/nack",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = LeaseRequest,
    responses((status = 200, description = "Leases that no longer held", body = LeaseResponse))
)]
pub async fn nack(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let delay_ms = seconds(&body, false)?;
    Ok(Json(
        settle(&messaging, &sub, &body.lease_ids, Settle::Nack { delay_ms }).await?,
    ))
}

/// Extends leases to `seconds` from now, for handlers that need longer.
#[utoipa::path(
    post,
    path = "/subscriptions/{subscription}/extend",
    tag = "messaging",
    params(("subscription" = String, Path, description = "Subscription name")),
    request_body = LeaseRequest,
    responses((status = 200, description = "Leases that no longer held", body = LeaseResponse))
)]
pub async fn extend(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Json(body): Json<LeaseRequest>,
) -> Result<Json<LeaseResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let by_ms = seconds(&body, true)?.unwrap_or(0);
    Ok(Json(
        settle(&messaging, &sub, &body.lease_ids, Settle::Extend { by_ms }).await?,
    ))
}
