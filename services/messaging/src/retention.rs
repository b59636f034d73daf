//! The retention sweep: old and surplus segments of every topic's partitions are deleted by
//! a background task, by the topic's `retention_seconds` and `retention_bytes`.

use std::sync::Weak;
use std::time::Duration;

use plinth_shared::ids::now_millis;
use plinth_shared::{ApiError, Shared};
use sqlx::Row;

use crate::backend::Logs;
use crate::logs::FileLogs;
use crate::{Messaging, log_error};

/// How often the sweep runs. Retention is coarse anyway: it deletes whole segments.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(30);

impl Messaging {
    /// Applies every topic's retention to its partitions once; returns the number of
    /// segments deleted. The background sweep calls it every half minute.
    ///
    /// # Errors
    ///
    /// Returns the metadata store's or the log's failure.
    pub async fn apply_retention(&self) -> Result<usize, ApiError> {
        match self.logs.file() {
            Some(logs) => apply(&self.shared, logs).await,
            // Kafka applies the topics' retention configs itself.
            None => Ok(0),
        }
    }
}

async fn apply(shared: &Shared, logs: &FileLogs) -> Result<usize, ApiError> {
    let topics = sqlx::query(
        "SELECT id, partitions, retention_seconds, retention_bytes FROM topics \
         WHERE retention_seconds IS NOT NULL OR retention_bytes IS NOT NULL",
    )
    .fetch_all(shared.store().pool())
    .await?;
    let now = now_millis();
    let mut deleted = 0;
    for topic in topics {
        let id: String = topic.try_get("id")?;
        let partitions = topic.try_get::<i64, _>("partitions")?.max(0) as u32;
        let max_age = topic
            .try_get::<Option<i64>, _>("retention_seconds")?
            .map(|s| s.max(0) as u64 * 1000);
        let max_bytes = topic
            .try_get::<Option<i64>, _>("retention_bytes")?
            .map(|b| b.max(0) as u64);
        for partition in 0..partitions {
            let log = match logs.partition(&id, partition).await {
                Ok(log) => log,
                // Deleted since the query: nothing to trim.
                Err(crate::log::LogError::NoSuchLog(_)) => continue,
                Err(err) => return Err(log_error(err)),
            };
            deleted += log
                .apply_retention(now, max_age, max_bytes)
                .await
                .map_err(log_error)?;
        }
    }
    Ok(deleted)
}

/// Runs [`Messaging::apply_retention`] every [`SWEEP_EVERY`] until the logs are closed (it
/// holds them only while it works, so it never keeps their lock alive).
pub(crate) async fn sweep(shared: Shared, logs: Weak<Logs>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(logs) = logs.upgrade() else {
            return;
        };
        let applied = match logs.file() {
            Some(file) => apply(&shared, file).await,
            None => Ok(0),
        };
        drop(logs);
        match applied {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "log segments past retention deleted"),
            Err(err) => tracing::warn!(error = %err, "retention sweep failed"),
        }
        if let Err(err) = crate::dedup::forget_expired(shared.store().pool()).await {
            tracing::warn!(error = %err, "expired message ids not forgotten");
        }
    }
}
