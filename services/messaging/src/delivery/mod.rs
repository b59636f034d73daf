//! The delivery state of subscriptions: leases, acks, nacks, redelivery and dead letters.
//!
//! Every message a subscription has fetched from the log and not yet passed with its
//! committed offset has a row in `subscription_messages`: waiting (delayed, or nacked until
//! a retry time), leased (until the lease ends), acknowledged, or dead. A pull first takes
//! rows that are due (a retry time reached, a lease ended), then fetches new messages from
//! the log at the subscription's cursor. An ack moves the committed offset past every
//! acknowledged or dead message in a row and deletes the acknowledged rows.
//!
//! A message past its last attempt is dead: its row stays, with the payload, until it is
//! redriven (back to waiting, attempts from zero, read from the row rather than the log,
//! which may no longer hold it) or the subscription is deleted. A copy goes to the
//! subscription's dead-letter topic, if it has one.
//!
//! Every change of a row is conditional on the state it was read in, so an ack racing a
//! redelivery, or two replicas' pulls, settle each message once; the loser sees its lease as
//! expired. The in-memory cursor only moves once the rows it covers have committed.
//!
//! `registry` keeps the per-subscription state of this process (cursors, the feeds of
//! settled leases, push workers' wake-ups); `settle` has acks, nacks and extensions; `groups`
//! has the Kafka consumer groups that share a subscription's partitions out among replicas
//! (on the embedded log this process fetches from all of them).

mod groups;
mod registry;
mod settle;

use std::collections::BTreeSet;

use bytes::Bytes;
use plinth_shared::ApiError;
use plinth_shared::ids::{now_millis, random_hex};
use plinth_types::messaging::Delivery;
use sqlx::{AnyConnection, Row};

use crate::log::LogError;
use crate::message::StoredMessage;
use crate::publish::{append_stored, to_wire};
use crate::subscriptions::SubscriptionRow;
use crate::{Messaging, log_error};

pub(crate) use self::groups::keep_groups;
pub use self::registry::Deliveries;
use self::registry::Positions;
pub(crate) use self::settle::{Settle, settle};

pub(crate) const WAITING: i64 = 0;
const LEASED: i64 = 1;
const ACKED: i64 = 2;
pub(crate) const DEAD: i64 = 3;

/// A lease id: partition, offset and attempt, and random bits so that no one can guess
/// another delivery's lease.
fn lease_id(partition: u32, offset: u64, attempt: u32) -> String {
    format!("{partition}.{offset}.{attempt}.{}", random_hex(8))
}

/// A message's place: subscription, partition, offset.
#[derive(Clone, Copy)]
struct At<'a> {
    subscription: &'a str,
    partition: u32,
    offset: u64,
}

/// A row's state as read, which a change must still find.
#[derive(Clone, Copy)]
struct Was {
    state: i64,
    attempts: u32,
    visible_at: i64,
}

/// A row's new state.
struct Now<'a> {
    state: i64,
    attempts: u32,
    visible_at: i64,
    lease: Option<&'a str>,
}

/// Inserts the row of a message fetched for the first time; false when it already has one,
/// or when the committed offset has passed it (another replica, whose cursor is not this
/// one's, delivered and acknowledged it already).
async fn insert(tx: &mut AnyConnection, at: At<'_>, now: Now<'_>) -> Result<bool, ApiError> {
    let inserted = sqlx::query(
        "INSERT INTO subscription_messages (subscription_id, partition_no, offset_no, state, \
         attempts, visible_at, lease_id) SELECT $1, $2, $3, $4, $5, $6, $7 \
         WHERE $3 >= (SELECT committed FROM subscription_offsets \
         WHERE subscription_id = $1 AND partition_no = $2) \
         ON CONFLICT (subscription_id, partition_no, offset_no) DO NOTHING",
    )
    .bind(at.subscription)
    .bind(i64::from(at.partition))
    .bind(at.offset as i64)
    .bind(now.state)
    .bind(i64::from(now.attempts))
    .bind(now.visible_at)
    .bind(now.lease)
    .execute(&mut *tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Changes a row that is still as it was read; false when something else changed it first.
async fn change(
    tx: &mut AnyConnection,
    at: At<'_>,
    was: Was,
    now: Now<'_>,
) -> Result<bool, ApiError> {
    let changed = sqlx::query(
        "UPDATE subscription_messages SET state = $1, attempts = $2, visible_at = $3, \
         lease_id = $4 WHERE subscription_id = $5 AND partition_no = $6 AND offset_no = $7 \
         AND state = $8 AND attempts = $9 AND visible_at = $10",
    )
    .bind(now.state)
    .bind(i64::from(now.attempts))
    .bind(now.visible_at)
    .bind(now.lease)
    .bind(at.subscription)
    .bind(i64::from(at.partition))
    .bind(at.offset as i64)
    .bind(was.state)
    .bind(i64::from(was.attempts))
    .bind(was.visible_at)
    .execute(&mut *tx)
    .await?;
    Ok(changed.rows_affected() == 1)
}

/// Marks a message dead, keeping its payload; false when something else changed its row
/// first.
async fn bury(tx: &mut AnyConnection, at: At<'_>, was: Was, f: &Fetched) -> Result<bool, ApiError> {
    let changed = sqlx::query(
        "UPDATE subscription_messages SET state = $1, visible_at = $2, lease_id = NULL, \
         payload = $3, published_at = $4 WHERE subscription_id = $5 AND partition_no = $6 \
         AND offset_no = $7 AND state = $8 AND attempts = $9 AND visible_at = $10",
    )
    .bind(DEAD)
    .bind(now_millis())
    .bind(f.message.encode().to_vec())
    .bind(f.timestamp)
    .bind(at.subscription)
    .bind(i64::from(at.partition))
    .bind(at.offset as i64)
    .bind(was.state)
    .bind(i64::from(was.attempts))
    .bind(was.visible_at)
    .execute(&mut *tx)
    .await?;
    Ok(changed.rows_affected() == 1)
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
    /// The row as read, for a redelivery; `None` for a first delivery.
    was: Option<Was>,
    timestamp: i64,
    message: StoredMessage,
}

impl Fetched {
    fn attempts(&self) -> u32 {
        self.was.map_or(0, |was| was.attempts)
    }
}

/// A message leased for delivery.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) lease_id: String,
    pub(crate) attempt: u32,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    /// When it was published, in milliseconds since the epoch.
    pub(crate) timestamp: i64,
    pub(crate) message: StoredMessage,
}

impl Taken {
    /// The delivery as the API shows it.
    pub(crate) fn into_delivery(self) -> Result<Delivery, ApiError> {
        Ok(Delivery {
            lease_id: self.lease_id,
            attempt: self.attempt,
            message: to_wire(self.partition, self.offset, self.timestamp, self.message)?,
        })
    }
}

/// Takes up to `max` deliverable messages and leases them; marks messages past their last
/// attempt dead (and copies them to the dead-letter topic).
pub(crate) async fn take(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    max: usize,
) -> Result<Vec<Taken>, ApiError> {
    let entry = messaging.deliveries.entry(&sub.id);
    let mut cursors = entry.lock().await;
    let owned = groups::owned_partitions(messaging, sub).await?;
    let generation = owned.as_ref().map_or(0, |a| a.generation);
    let seeks = match owned {
        Some(_) => groups::seeks(messaging, sub).await?,
        None => 0,
    };
    let now = now_millis();
    let mut working = match cursors.as_ref() {
        Some(cursors) if cursors.generation == generation && cursors.seeks == seeks => {
            cursors.next.clone()
        }
        _ => {
            let mut conn = messaging.shared.store().pool().acquire().await?;
            load_cursors(&mut conn, sub).await?
        }
    };
    let (due, gone) = due_messages(messaging, sub, now, max).await?;
    let owned = owned.map(|a| a.partitions);
    let (fresh, delayed, starts) = new_messages(
        messaging,
        sub,
        (&mut working, owned.as_ref()),
        now,
        max - due.len(),
    )
    .await?;
    let working = Positions {
        generation,
        seeks,
        next: working,
    };

    // Past its last attempt, a message is dead instead of out again; a copy goes to the
    // dead-letter topic, with where it came from and how often it was tried.
    let max_attempts = sub.subscription.max_delivery_attempts;
    let (dead, live): (Vec<_>, Vec<_>) = due
        .into_iter()
        .chain(fresh)
        .partition(|f| f.attempts() >= max_attempts);
    if let (Some(dead_letter), false) = (&sub.dead_letter, dead.is_empty()) {
        let messages = dead.iter().map(|f| dead_letter_copy(sub, f)).collect();
        append_stored(messaging, dead_letter, messages).await?;
    }

    // Nothing to deliver, settle or delay: no transaction (an idle stream or push worker
    // looks often).
    if dead.is_empty() && gone.is_empty() && delayed.is_empty() && live.is_empty() {
        *cursors = Some(working);
        return Ok(Vec::new());
    }
    let deadline = now + (sub.subscription.ack_deadline_seconds * 1000) as i64;
    let mut taken = Vec::with_capacity(live.len());
    let mut settled = BTreeSet::new();
    let mut tx = messaging.shared.store().begin().await?;
    let acked = |attempts| Now {
        state: ACKED,
        attempts,
        visible_at: now,
        lease: None,
    };
    for f in &dead {
        let at = At {
            subscription: &sub.id,
            partition: f.partition,
            offset: f.offset,
        };
        if let Some(was) = f.was {
            bury(&mut tx, at, was, f).await?;
        }
        settled.insert(f.partition);
    }
    for &(partition, offset, was) in &gone {
        change(
            &mut tx,
            At {
                subscription: &sub.id,
                partition,
                offset,
            },
            was,
            acked(was.attempts),
        )
        .await?;
        settled.insert(partition);
    }
    for &(partition, offset, at_time) in &delayed {
        let at = At {
            subscription: &sub.id,
            partition,
            offset,
        };
        insert(
            &mut tx,
            at,
            Now {
                state: WAITING,
                attempts: 0,
                visible_at: at_time,
                lease: None,
            },
        )
        .await?;
    }
    for f in live {
        let attempt = f.attempts() + 1;
        let lease = lease_id(f.partition, f.offset, attempt);
        let at = At {
            subscription: &sub.id,
            partition: f.partition,
            offset: f.offset,
        };
        let leased = Now {
            state: LEASED,
            attempts: attempt,
            visible_at: deadline,
            lease: Some(&lease),
        };
        let won = match f.was {
            Some(was) => change(&mut tx, at, was, leased).await?,
            None => insert(&mut tx, at, leased).await?,
        };
        // Settled or taken by someone else since it was read: not delivered here.
        if won {
            taken.push(Taken {
                lease_id: lease,
                attempt,
                partition: f.partition,
                offset: f.offset,
                timestamp: f.timestamp,
                message: f.message,
            });
        }
    }
    for partition in settled {
        let start = starts.get(partition as usize).copied().unwrap_or(0);
        advance_committed(&mut tx, &sub.id, partition, start, false).await?;
    }
    tx.commit().await?;
    // Only now do the rows exist that the moved cursor relies on.
    *cursors = Some(working);
    Ok(taken)
}

/// Messages whose retry time or lease end has come, read back from the log; and those the
/// log no longer holds (retention removed them before they were acknowledged).
async fn due_messages(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    now: i64,
    max: usize,
) -> Result<(Vec<Fetched>, Vec<(u32, u64, Was)>), ApiError> {
    let rows = sqlx::query(
        "SELECT partition_no, offset_no, state, attempts, visible_at, payload, published_at \
         FROM subscription_messages WHERE subscription_id = $1 AND state < $2 \
         AND visible_at <= $3 ORDER BY visible_at, partition_no, offset_no LIMIT $4",
    )
    .bind(&sub.id)
    .bind(ACKED)
    .bind(now)
    .bind(max as i64)
    .fetch_all(messaging.shared.store().pool())
    .await?;
    let mut due = Vec::new();
    let mut gone = Vec::new();
    for row in rows {
        let partition = row.try_get::<i64, _>("partition_no")? as u32;
        let offset = row.try_get::<i64, _>("offset_no")? as u64;
        let was = Was {
            state: row.try_get("state")?,
            attempts: row.try_get::<i64, _>("attempts")? as u32,
            visible_at: row.try_get("visible_at")?,
        };
        // A redriven dead letter brings its own payload.
        if let Some(payload) = row.try_get::<Option<Vec<u8>>, _>("payload")? {
            due.push(Fetched {
                partition,
                offset,
                was: Some(was),
                timestamp: row.try_get::<Option<i64>, _>("published_at")?.unwrap_or(0),
                message: StoredMessage::decode(&Bytes::from(payload))
                    .map_err(ApiError::internal)?,
            });
            continue;
        }
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(log_error)?;
        match log.read(offset, 1, 1).await {
            Ok(records) => {
                let Some(record) = records.into_iter().next().filter(|r| r.offset == offset) else {
                    continue;
                };
                let message = StoredMessage::decode(&record.payload).map_err(ApiError::internal)?;
                due.push(Fetched {
                    partition,
                    offset,
                    was: Some(was),
                    timestamp: record.timestamp,
                    message,
                });
            }
            Err(LogError::OffsetOutOfRange { offset, start, .. }) if offset < start => {
                gone.push((partition, offset, was));
            }
            // Past the end as the log reports it this moment, although it was delivered:
            // a broker's answer behind its own records (Tansu's, see `kafka`). Next time.
            Err(LogError::OffsetOutOfRange { offset, end, .. }) => {
                tracing::debug!(
                    partition,
                    offset,
                    end,
                    "a due message is past the end; later"
                );
            }
            Err(err) => return Err(log_error(err)),
        }
    }
    Ok((due, gone))
}

/// New messages from the log at the cursors, partition by partition (only from the
/// partitions `owned`, when a consumer group shares them out); delayed ones are set aside
/// with their delivery time. Also returns each partition's first retained offset (0 for one
/// not owned).
#[allow(clippy::type_complexity)]
async fn new_messages(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    (cursors, owned): (&mut [u64], Option<&BTreeSet<u32>>),
    now: i64,
    max: usize,
) -> Result<(Vec<Fetched>, Vec<(u32, u64, i64)>, Vec<u64>), ApiError> {
    let mut fresh = Vec::new();
    let mut delayed = Vec::new();
    let mut starts = Vec::with_capacity(cursors.len());
    for (partition, cursor) in cursors.iter_mut().enumerate() {
        let partition = partition as u32;
        if owned.is_some_and(|owned| !owned.contains(&partition)) {
            starts.push(0);
            continue;
        }
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(log_error)?;
        let (start, end) = log.bounds().await.map_err(log_error)?;
        starts.push(start);
        *cursor = (*cursor).max(start);
        if fresh.len() >= max || *cursor >= end {
            continue;
        }
        let records = match log.read(*cursor, max - fresh.len(), 4 << 20).await {
            Ok(records) => records,
            // The end went back since it was read (a broker answering behind its own
            // records, see `kafka`), or retention went past the cursor: fetch next time,
            // from where the log then starts.
            Err(LogError::OffsetOutOfRange { offset, start, end }) => {
                tracing::debug!(partition, offset, start, end, "the log moved under a fetch");
                continue;
            }
            Err(err) => return Err(log_error(err)),
        };
        for record in records {
            *cursor = record.offset + 1;
            let message = StoredMessage::decode(&record.payload).map_err(ApiError::internal)?;
            match message.deliver_at {
                Some(at) if at > now => delayed.push((partition, record.offset, at)),
                _ => fresh.push(Fetched {
                    partition,
                    offset: record.offset,
                    was: None,
                    timestamp: record.timestamp,
                    message,
                }),
            }
        }
    }
    Ok((fresh, delayed, starts))
}

/// The copy of a message sent to the dead-letter topic: the original with headers saying
/// where it came from, when it was published and how often it was tried.
fn dead_letter_copy(sub: &SubscriptionRow, f: &Fetched) -> StoredMessage {
    let mut message = f.message.clone();
    for (name, value) in [
        ("plinth-dead-letter-topic", sub.topic.topic.name.clone()),
        (
            "plinth-dead-letter-subscription",
            sub.subscription.name.clone(),
        ),
        ("plinth-dead-letter-partition", f.partition.to_string()),
        ("plinth-dead-letter-offset", f.offset.to_string()),
        ("plinth-dead-letter-attempts", f.attempts().to_string()),
        ("plinth-dead-letter-published-at", f.timestamp.to_string()),
    ] {
        message.headers.insert(name.into(), value);
    }
    message.deliver_at = None;
    message
}

/// Moves a partition's committed offset past every acknowledged or dead message in a row
/// (and past what retention removed, `start`), and deletes the acknowledged rows below it:
/// also those of redriven messages that lay below it already, when `below` says that some
/// were acknowledged.
async fn advance_committed(
    tx: &mut AnyConnection,
    subscription_id: &str,
    partition: u32,
    start: u64,
    below: bool,
) -> Result<(), ApiError> {
    let committed: i64 = sqlx::query(
        "SELECT committed FROM subscription_offsets WHERE subscription_id = $1 AND partition_no = $2",
    )
    .bind(subscription_id)
    .bind(i64::from(partition))
    .fetch_one(&mut *tx)
    .await?
    .try_get("committed")?;
    let mut next = committed.max(start as i64);
    loop {
        let rows = sqlx::query(
            "SELECT offset_no, state FROM subscription_messages WHERE subscription_id = $1 \
             AND partition_no = $2 AND offset_no >= $3 ORDER BY offset_no LIMIT 1000",
        )
        .bind(subscription_id)
        .bind(i64::from(partition))
        .bind(next)
        .fetch_all(&mut *tx)
        .await?;
        let fetched = rows.len();
        let before = next;
        for row in rows {
            let state = row.try_get::<i64, _>("state")?;
            if row.try_get::<i64, _>("offset_no")? != next || (state != ACKED && state != DEAD) {
                break;
            }
            next += 1;
        }
        if fetched < 1000 || next - before < 1000 {
            break;
        }
    }
    if next == committed && !below {
        return Ok(());
    }
    // Below `next` every row is settled, except rows below the log's start, whose messages
    // are gone: all go but the dead and redriven, which keep their payloads.
    sqlx::query(
        "DELETE FROM subscription_messages WHERE subscription_id = $1 AND partition_no = $2 \
         AND offset_no < $3 AND (state = $4 OR published_at IS NULL)",
    )
    .bind(subscription_id)
    .bind(i64::from(partition))
    .bind(next)
    .bind(ACKED)
    .execute(&mut *tx)
    .await?;
    if next == committed {
        return Ok(());
    }
    sqlx::query(
        "UPDATE subscription_offsets SET committed = $1 WHERE subscription_id = $2 \
         AND partition_no = $3",
    )
    .bind(next)
    .bind(subscription_id)
    .bind(i64::from(partition))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
