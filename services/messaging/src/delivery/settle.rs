//! Acks, nacks and lease extensions: settling deliveries by their lease ids.

use std::collections::{BTreeMap, HashMap, HashSet};

use plinth_shared::ApiError;
use plinth_shared::ids::now_millis;
use sqlx::Row;

use super::{ACKED, LEASED, WAITING, advance_committed};
use crate::subscriptions::SubscriptionRow;
use crate::{Messaging, log_error};

/// What a lease operation does to a leased message.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Settle {
    Ack,
    /// Redeliver after this delay, or after the backoff.
    Nack {
        delay_ms: Option<i64>,
    },
    /// Lease for this long from now.
    Extend {
        by_ms: i64,
    },
}

/// Settles deliveries by lease; returns the leases that no longer held (ended, replaced by a
/// redelivery, already settled, or never issued).
///
/// The leases are settled with one statement per attempt number they name (a nack's backoff
/// depends on it) and per 500 leases: a consumer acking a large batch holds the store's
/// writer for a few statements rather than two per lease.
pub(crate) async fn settle(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    leases: &[String],
    how: Settle,
) -> Result<Vec<String>, ApiError> {
    let now = now_millis();
    let mut expired = Vec::new();
    // Each lease once, grouped by the attempt it names; a lease of no partition of the topic
    // was never issued.
    let mut by_attempt: BTreeMap<u32, Vec<NamedLease<'_>>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for lease in leases {
        match parse_lease_attempt(lease) {
            Some(_) if !seen.insert(lease.as_str()) => expired.push(lease.clone()),
            Some((partition, offset, attempt)) if partition < sub.topic.topic.partition_count => {
                by_attempt
                    .entry(attempt)
                    .or_default()
                    .push((lease, partition, offset));
            }
            _ => expired.push(lease.clone()),
        }
    }
    // Where each partition named starts, asked before the transaction (on Kafka it is a
    // round trip, which must not hold the store's writer).
    let mut starts = BTreeMap::new();
    if matches!(how, Settle::Ack) {
        for (_, partition, _) in by_attempt.values().flatten() {
            if let std::collections::btree_map::Entry::Vacant(entry) = starts.entry(*partition) {
                let log = messaging
                    .logs
                    .partition(&sub.topic.id, *partition)
                    .await
                    .map_err(log_error)?;
                entry.insert(log.start().await.map_err(log_error)?);
            }
        }
    }
    let mut acked = BTreeMap::new();
    let mut tx = messaging.shared.store().begin().await?;
    for (attempt, group) in &by_attempt {
        let (state, visible_at, lease) = match how {
            Settle::Ack => (ACKED, now, "NULL"),
            Settle::Nack { delay_ms } => (
                WAITING,
                now + delay_ms.unwrap_or_else(|| sub.backoff_ms(*attempt)),
                "NULL",
            ),
            Settle::Extend { by_ms } => (LEASED, now + by_ms, "lease_id"),
        };
        for chunk in distinct_chunks(group, 500) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 6)).collect();
            // Only a lease that still holds matches: its row is leased to it, and the lease
            // has not ended.
            let sql = format!(
                "UPDATE subscription_messages SET state = $1, visible_at = $2, lease_id = {lease} \
                 WHERE subscription_id = $3 AND state = $4 AND visible_at > $5 \
                 AND lease_id IN ({}) RETURNING partition_no, offset_no, published_at",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(state)
                .bind(visible_at)
                .bind(&sub.id)
                .bind(LEASED)
                .bind(now);
            for (lease, _, _) in &chunk {
                query = query.bind(lease.as_str());
            }
            let mut matched = HashMap::new();
            for row in query.fetch_all(&mut *tx).await? {
                let at = (
                    row.try_get::<i64, _>("partition_no")? as u32,
                    row.try_get::<i64, _>("offset_no")? as u64,
                );
                // Only a redriven dead letter keeps its publication time in its row.
                let redriven = row.try_get::<Option<i64>, _>("published_at")?.is_some();
                matched.insert(at, redriven);
            }
            for (lease, partition, offset) in &chunk {
                match matched.get(&(*partition, *offset)) {
                    None => expired.push((*lease).clone()),
                    Some(redriven) if matches!(how, Settle::Ack) => {
                        *acked.entry(*partition).or_insert(false) |= *redriven;
                    }
                    Some(_) => {}
                }
            }
        }
    }
    for (partition, redriven) in acked {
        let start = starts.get(&partition).copied().unwrap_or(0);
        advance_committed(&mut tx, &sub.id, partition, start, redriven).await?;
    }
    tx.commit().await?;
    if !matches!(how, Settle::Extend { .. }) {
        let settled = leases
            .iter()
            .filter(|lease| !expired.contains(lease))
            .cloned();
        messaging.deliveries.announce_settled(&sub.id, settled);
    }
    Ok(expired)
}

/// A lease with the partition and offset it names.
type NamedLease<'a> = (&'a String, u32, u64);

/// Splits leases into chunks of at most `size` in which no two name the same message: a
/// statement's answer names messages, not leases, so a stale lease beside the live one of
/// its message (the same attempt number again after a redrive) must go in another chunk.
fn distinct_chunks<'a>(leases: &[NamedLease<'a>], size: usize) -> Vec<Vec<NamedLease<'a>>> {
    let mut chunks: Vec<Vec<NamedLease<'a>>> = Vec::new();
    let mut messages: Vec<HashSet<(u32, u64)>> = Vec::new();
    for lease in leases {
        let at = (lease.1, lease.2);
        let free =
            (0..chunks.len()).find(|i| chunks[*i].len() < size && !messages[*i].contains(&at));
        let index = free.unwrap_or_else(|| {
            chunks.push(Vec::new());
            messages.push(HashSet::new());
            chunks.len() - 1
        });
        messages[index].insert(at);
        chunks[index].push(*lease);
    }
    chunks
}

/// The partition, offset and attempt a lease id names.
fn parse_lease_attempt(lease: &str) -> Option<(u32, u64, u32)> {
    let mut parts = lease.split('.');
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    Some((partition, offset, attempt))
}
