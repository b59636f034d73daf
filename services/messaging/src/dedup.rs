//! Producer deduplication: a message published with a `message_id` already seen on its
//! topic within the deduplication window (`messaging_dedup_window`) is not stored again; the
//! answer names where the first one went, marked `duplicate`.
//!
//! Before the append, the publish claims each id with a row (`partition_no = -1`) that lives
//! [`CLAIM_MS`]; a second publish of the id meanwhile waits for the first to finish. After the
//! append the rows say where the messages went and live for the window; if the append fails
//! they are deleted. A crash (or a request dropped mid-write) between the append and that
//! update leaves a claim that expires, after which a retry is stored a second time: the
//! window holds for every publish that was answered.

use std::collections::HashMap;
use std::time::Duration;

use plinth_shared::ApiError;
use plinth_shared::ids::now_millis;
use plinth_types::messaging::Published;
use sqlx::Row;

use crate::Messaging;
use crate::message::StoredMessage;
use crate::publish::append_stored;
use crate::topics::TopicRow;

/// How long a claim holds before another publish may take the id over.
const CLAIM_MS: i64 = 60_000;
/// How long a publish waits for other publishes' claims on its ids to finish.
const WAIT_FOR_CLAIM: Duration = Duration::from_secs(5);

/// What the ids of a batch found.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// For each message of the batch: `None` to store it, or the answer of the earlier one.
    pub(crate) duplicates: Vec<Option<Dup>>,
    /// The ids this publish claimed, with the index of their message.
    claimed: Vec<(String, usize)>,
}

/// Where the earlier message with the same id is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Dup {
    /// Stored by an earlier publish.
    Stored(Published),
    /// Earlier in this batch, at this index.
    InBatch(usize),
}

/// Claims the batch's message ids; finds those already stored within the window.
pub(crate) async fn claim(
    messaging: &Messaging,
    topic_id: &str,
    messages: &[StoredMessage],
) -> Result<Seen, ApiError> {
    let now = now_millis();
    let mut seen = Seen {
        duplicates: vec![None; messages.len()],
        claimed: Vec::new(),
    };
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        let Some(id) = message.message_id.as_deref() else {
            continue;
        };
        match first.get(id) {
            Some(&earlier) => seen.duplicates[index] = Some(Dup::InBatch(earlier)),
            None => {
                first.insert(id, index);
            }
        }
    }
    // Claimed in id order, so two batches sharing ids cannot each wait on the other's
    // uncommitted claim (PostgreSQL would abort one of them as a deadlock).
    let mut ids: Vec<(&str, usize)> = first.into_iter().collect();
    ids.sort_unstable();
    let mut contested = Vec::new();
    let mut tx = messaging.shared.store().begin().await?;
    for (id, index) in ids {
        let inserted = sqlx::query(
            "INSERT INTO message_ids (topic_id, message_id, partition_no, offset_no, \
             expires_at) VALUES ($1, $2, -1, -1, $3) ON CONFLICT DO NOTHING",
        )
        .bind(topic_id)
        .bind(id)
        .bind(now + CLAIM_MS)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            seen.claimed.push((id.to_owned(), index));
        } else {
            contested.push((id, index));
        }
    }
    tx.commit().await?;
    // One wait for the whole batch, not one per id.
    let give_up = tokio::time::Instant::now() + WAIT_FOR_CLAIM;
    for (id, index) in contested {
        match contest(messaging, topic_id, id, give_up).await {
            Ok(Some(published)) => seen.duplicates[index] = Some(Dup::Stored(published)),
            Ok(None) => seen.claimed.push((id.to_owned(), index)),
            Err(err) => {
                release(messaging, topic_id, &seen).await;
                return Err(err);
            }
        }
    }
    Ok(seen)
}

/// Settles an id someone else has a row for: where its message is, or `None` once this
/// publish has claimed it (the row had expired).
async fn contest(
    messaging: &Messaging,
    topic_id: &str,
    id: &str,
    give_up: tokio::time::Instant,
) -> Result<Option<Published>, ApiError> {
    let pool = messaging.shared.store().pool();
    loop {
        let now = now_millis();
        let row = sqlx::query(
            "SELECT partition_no, offset_no, expires_at FROM message_ids \
             WHERE topic_id = $1 AND message_id = $2",
        )
        .bind(topic_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            // Released by a failed publish: claim it afresh.
            let inserted = sqlx::query(
                "INSERT INTO message_ids (topic_id, message_id, partition_no, offset_no, \
                 expires_at) VALUES ($1, $2, -1, -1, $3) ON CONFLICT DO NOTHING",
            )
            .bind(topic_id)
            .bind(id)
            .bind(now + CLAIM_MS)
            .execute(pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(None);
            }
            continue;
        };
        let partition: i64 = row.try_get("partition_no")?;
        let offset: i64 = row.try_get("offset_no")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        if expires_at <= now {
            let taken = sqlx::query(
                "UPDATE message_ids SET partition_no = -1, offset_no = -1, expires_at = $1 \
                 WHERE topic_id = $2 AND message_id = $3 AND expires_at = $4",
            )
            .bind(now + CLAIM_MS)
            .bind(topic_id)
            .bind(id)
            .bind(expires_at)
            .execute(pool)
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(None);
            }
            continue;
        }
        if partition >= 0 {
            return Ok(Some(Published {
                partition: partition as u32,
                offset: offset as u64,
                duplicate: true,
            }));
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(ApiError::Unavailable(
                format!("a publish of message id `{id}` is still in progress; retry").into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Records where the claimed ids' messages went, for the window.
pub(crate) async fn complete(
    messaging: &Messaging,
    topic_id: &str,
    seen: &Seen,
    published: &[Published],
) -> Result<(), ApiError> {
    if seen.claimed.is_empty() {
        return Ok(());
    }
    let window = messaging.shared.config().messaging_dedup_window.as_millis() as i64;
    let expires_at = now_millis() + window;
    let mut tx = messaging.shared.store().begin().await?;
    for (id, index) in &seen.claimed {
        let at = published[*index];
        sqlx::query(
            "UPDATE message_ids SET partition_no = $1, offset_no = $2, expires_at = $3 \
             WHERE topic_id = $4 AND message_id = $5",
        )
        .bind(i64::from(at.partition))
        .bind(at.offset as i64)
        .bind(expires_at)
        .bind(topic_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Each message's answer, in the order sent: where it was stored (`stored` is in the order of
/// `indexes`), or, for a duplicate, where the first of its id is.
pub(crate) fn answers(seen: &Seen, indexes: &[usize], stored: Vec<Published>) -> Vec<Published> {
    let total = seen.duplicates.len().max(indexes.len());
    let mut published = vec![Published::default(); total];
    for (index, at) in indexes.iter().zip(stored) {
        published[*index] = at;
    }
    for (index, dup) in seen.duplicates.iter().enumerate() {
        published[index] = match dup {
            None => continue,
            Some(Dup::Stored(at)) => *at,
            // The earlier one is answered already: it comes first.
            Some(Dup::InBatch(earlier)) => Published {
                duplicate: true,
                ..published[*earlier]
            },
        };
    }
    published
}

/// Appends messages to a topic, each whose id the topic saw within the window only once:
/// for publishers that need no quota in between (the bucket notification relay).
pub(crate) async fn append_once(
    messaging: &Messaging,
    topic: &TopicRow,
    messages: Vec<StoredMessage>,
) -> Result<Vec<Published>, ApiError> {
    let seen = claim(messaging, &topic.id, &messages).await?;
    let (indexes, fresh): (Vec<usize>, Vec<StoredMessage>) = messages
        .into_iter()
        .enumerate()
        .filter(|(index, _)| seen.duplicates[*index].is_none())
        .unzip();
    let stored = if fresh.is_empty() {
        Vec::new()
    } else {
        match append_stored(messaging, topic, fresh).await {
            Ok(stored) => stored,
            Err(err) => {
                release(messaging, &topic.id, &seen).await;
                return Err(err);
            }
        }
    };
    let published = answers(&seen, &indexes, stored);
    if let Err(err) = complete(messaging, &topic.id, &seen, &published).await {
        tracing::warn!(error = %err, "message ids not recorded; their claims expire");
    }
    Ok(published)
}

/// Gives up the claims of a publish that failed, so a retry need not wait for them.
pub(crate) async fn release(messaging: &Messaging, topic_id: &str, seen: &Seen) {
    let released = async {
        let mut tx = messaging.shared.store().begin().await?;
        for (id, _) in &seen.claimed {
            sqlx::query(
                "DELETE FROM message_ids WHERE topic_id = $1 AND message_id = $2 \
                 AND partition_no = -1",
            )
            .bind(topic_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok::<_, ApiError>(())
    };
    if let Err(err) = released.await {
        tracing::warn!(error = %err, "message id claims not released; they expire by themselves");
    }
}

/// Forgets ids past their window; the retention sweep calls it.
pub(crate) async fn forget_expired(messaging_pool: &sqlx::AnyPool) -> Result<u64, ApiError> {
    let deleted = sqlx::query("DELETE FROM message_ids WHERE expires_at <= $1")
        .bind(now_millis())
        .execute(messaging_pool)
        .await?;
    Ok(deleted.rows_affected())
}
