//! Usage counters: counted in memory on the hot path, flushed in batches to the store, and
//! read per project, metric and UTC day so an operator can bill from them.

use std::collections::HashMap;
use std::sync::Mutex;

use plinth_types::console::UsageRecord;
use sqlx::Row;
use time::{Date, OffsetDateTime, format_description::FormatItem, macros::format_description};

use crate::error::ApiError;
use crate::ids::now_millis;
use crate::store::Store;

const DAY_FORMAT: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Returns `date` as `YYYY-MM-DD`.
pub fn day_string(date: Date) -> String {
    date.format(DAY_FORMAT).unwrap_or_default()
}

/// Returns the UTC date `days` days after 1970-01-01.
fn epoch_day(days: i64) -> Date {
    let midnight = OffsetDateTime::UNIX_EPOCH + time::Duration::days(days);
    midnight.date()
}

/// Parses a `YYYY-MM-DD` day.
///
/// # Errors
///
/// Returns `invalid_parameter` naming `field`.
pub fn parse_day(field: &str, text: &str) -> Result<Date, ApiError> {
    Date::parse(text, DAY_FORMAT)
        .map_err(|_| ApiError::InvalidParameter(format!("`{field}` must be a YYYY-MM-DD day")))
}

/// Pending counts: project -> (day as days since the epoch, metric) -> amount. Nested so that the hot path looks a
/// project up by `&str` and allocates only the first time a project counts something.
type Pending = HashMap<String, HashMap<(i64, &'static str), u64, Hasher>, Hasher>;

/// Only authenticated projects count, so a fast seeded hasher is enough here.
type Hasher = foldhash::fast::RandomState;

/// The counters not yet written to the store.
#[derive(Debug)]
pub struct Usage {
    store: Store,
    pending: Mutex<Pending>,
}

impl Usage {
    /// Builds the counters over `store`.
    pub fn new(store: Store) -> Usage {
        Usage {
            store,
            pending: Mutex::default(),
        }
    }

    /// Counts `amount` of `metric` for `project_id` today (UTC).
    pub fn record(&self, project_id: &str, metric: &'static str, amount: u64) {
        if amount == 0 {
            return;
        }
        // Days since the epoch: a division, where a calendar date would cost a conversion on
        // every request. UTC days are exactly 86,400 Unix seconds.
        let day = now_millis().div_euclid(86_400_000);
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let counters = match pending.get_mut(project_id) {
            Some(counters) => counters,
            None => pending.entry(project_id.to_owned()).or_default(),
        };
        *counters.entry((day, metric)).or_default() += amount;
    }

    /// Writes the pending counters in one transaction. On failure they are kept for the
    /// next flush, so nothing counted is lost while the store is away.
    ///
    /// # Errors
    ///
    /// Returns the store's failure.
    pub async fn flush(&self) -> Result<(), ApiError> {
        let batch = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if batch.is_empty() {
            return Ok(());
        }
        match self.write(&batch).await {
            Ok(()) => {
                for counters in batch.values() {
                    for ((_, metric), amount) in counters {
                        metrics::counter!("plinth_usage_total", "metric" => *metric)
                            .increment(*amount);
                    }
                }
                Ok(())
            }
            Err(err) => {
                let mut pending = self
                    .pending
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                for (project_id, counters) in batch {
                    let kept = pending.entry(project_id).or_default();
                    for (key, amount) in counters {
                        *kept.entry(key).or_default() += amount;
                    }
                }
                Err(err)
            }
        }
    }

    async fn write(&self, batch: &Pending) -> Result<(), ApiError> {
        let mut tx = self.store.begin().await?;
        for (project_id, counters) in batch {
            for ((day, metric), amount) in counters {
                sqlx::query(
                    "INSERT INTO usage_daily (project_id, day, metric, value) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, day, metric) \
                     DO UPDATE SET value = usage_daily.value + excluded.value",
                )
                .bind(project_id)
                .bind(day_string(epoch_day(*day)))
                .bind(*metric)
                .bind(i64::try_from(*amount).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads a project's usage from `from` to `to` (inclusive), optionally of one metric.
    ///
    /// # Errors
    ///
    /// Returns the store's failure.
    pub async fn report(
        &self,
        project_id: &str,
        from: Date,
        to: Date,
        metric: Option<&str>,
    ) -> Result<Vec<UsageRecord>, ApiError> {
        let rows = sqlx::query(
            "SELECT day, metric, value FROM usage_daily \
             WHERE project_id = $1 AND day >= $2 AND day <= $3 AND (metric = $4 OR $5 = 1) \
             ORDER BY day, metric",
        )
        .bind(project_id)
        .bind(day_string(from))
        .bind(day_string(to))
        .bind(metric.unwrap_or(""))
        .bind(i64::from(metric.is_none()))
        .fetch_all(self.store.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let value: i64 = row.try_get("value")?;
                Ok(UsageRecord {
                    day: row.try_get("day")?,
                    metric: row.try_get("metric")?,
                    value: value.max(0) as u64,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn epoch_days_map_to_utc_dates() {
        assert_eq!(epoch_day(0), date!(1970 - 01 - 01));
        assert_eq!(epoch_day(20_000), date!(2024 - 10 - 04));
        let today = OffsetDateTime::now_utc().date();
        assert_eq!(epoch_day(now_millis().div_euclid(86_400_000)), today);
    }

    #[test]
    fn days_format_and_parse() {
        let day = date!(2026 - 12 - 03);
        assert_eq!(day_string(day), "2026-12-03");
        assert_eq!(parse_day("from", "2026-12-03").unwrap(), day);
        assert!(parse_day("from", "2026-13-01").is_err());
        assert!(parse_day("from", "yesterday").is_err());
    }
}
