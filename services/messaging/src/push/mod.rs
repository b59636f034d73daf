//! Push delivery: each push subscription's messages are sent to its endpoint as signed
//! CloudEvents ([`request`]), to addresses the operator lets pushes reach ([`guard`]).
//!
//! Every replica runs a worker per push subscription. A worker leases messages the way a
//! pull does (so two replicas never send the same delivery at once), up to the
//! subscription's concurrency in flight; a 2xx answer acknowledges, anything else (another
//! status, a timeout, a refused connection) is a nack: redelivered after the backoff (or the
//! endpoint's `Retry-After`, within the backoff's cap), dead after the last attempt. The
//! request may take as long as the ack deadline. Each attempt is written to the delivery
//! log (`push_attempts`), of which the latest are kept.

pub(crate) mod guard;
pub(crate) mod request;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path, Query};
use plinth_shared::ids::{from_millis, now_millis};
use plinth_types::ErrorBody;
use plinth_types::messaging::{PushAttempt, PushAttemptsResponse};
use reqwest::header::RETRY_AFTER;
use serde::Deserialize;
use sqlx::Row;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::delivery::{Settle, Taken, settle, take};
use crate::subscriptions::{
    SubscriptionRow, authorized_subscription, get_subscription_by_id, push_subscription_ids,
};
use crate::{Background, Messaging, log_error};

use self::guard::Guard;
use self::request::Origin;

/// Most of an endpoint's answer body that is read.
const MAX_ANSWER_BYTES: usize = 64 << 10;
/// Attempts the delivery log keeps per subscription.
const KEPT_ATTEMPTS: i64 = 200;
/// How often a worker rereads its subscription (to notice a delete), and the longest it
/// sleeps between looks for due retries.
const RELOAD: Duration = Duration::from_secs(5);

/// What push delivery shares in a process: the HTTP client and the running workers.
#[derive(Debug)]
pub(crate) struct Pusher {
    client: reqwest::Client,
    guard: Guard,
    running: std::sync::Mutex<HashSet<String>>,
    wake: Notify,
}

impl Pusher {
    /// A pusher whose requests reach only what `guard` permits.
    pub(crate) fn new(guard: Guard) -> Result<Pusher, reqwest::Error> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(guard.clone()))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on the client's behalf, past the guard.
            .no_proxy()
            .user_agent(concat!("plinth-push/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Pusher {
            client,
            guard,
            running: std::sync::Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// The address rule of push endpoints.
    pub(crate) fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Starts workers for new push subscriptions now rather than at the next look.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps a worker running for every push subscription, until the service is dropped.
pub(crate) async fn supervise(background: Background) {
    loop {
        let Some(messaging) = background.upgrade() else {
            return;
        };
        let ids = match messaging.shared.store().pool().acquire().await {
            Ok(mut conn) => push_subscription_ids(&mut conn).await,
            Err(err) => Err(err.into()),
        };
        match ids {
            Ok(ids) => {
                for id in ids {
                    if messaging.push.running().insert(id.clone()) {
                        tokio::spawn(worker(background.clone(), id));
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot list push subscriptions"),
        }
        let push = messaging.push.clone();
        drop(messaging);
        tokio::select! {
            () = push.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn worker(background: Background, id: String) {
    if let Err(err) = work(&background, &id).await {
        tracing::warn!(subscription_id = %id, error = %err, "push worker stopped; restarting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    background.push.running().remove(&id);
}

/// Delivers one subscription's messages until it is deleted or the service dropped.
async fn work(background: &Background, id: &str) -> Result<(), ApiError> {
    let mut sub: Option<Arc<SubscriptionRow>> = None;
    let mut read_at = tokio::time::Instant::now();
    let mut permits = Arc::new(Semaphore::new(0));
    let settled = Arc::new(Notify::new());
    let nudged = background.deliveries.nudges(id);
    // Watched from the start, so no message appended between a take and a wait is missed.
    let mut watches = Vec::new();
    loop {
        let Some(messaging) = background.upgrade() else {
            return Ok(());
        };
        let current = match &sub {
            Some(current) if read_at.elapsed() < RELOAD => current.clone(),
            _ => {
                let mut conn = messaging.shared.store().pool().acquire().await?;
                let Some(row) = get_subscription_by_id(&mut conn, id).await? else {
                    return Ok(());
                };
                let Some(push) = &row.subscription.push else {
                    return Ok(());
                };
                if sub.is_none() {
                    permits = Arc::new(Semaphore::new(push.max_concurrency as usize));
                    for partition in 0..row.topic.topic.partition_count {
                        let log = messaging
                            .logs
                            .partition(&row.topic.id, partition)
                            .await
                            .map_err(log_error)?;
                        watches.push(log.watch());
                    }
                }
                read_at = tokio::time::Instant::now();
                let row = Arc::new(row);
                sub = Some(row.clone());
                row
            }
        };
        let free = permits.available_permits();
        if free == 0 {
            drop(messaging);
            tokio::select! {
                _ = permits.acquire() => {}
                () = tokio::time::sleep(RELOAD) => {}
            }
            continue;
        }
        let taken = take(&messaging, &current, free).await?;
        if taken.is_empty() {
            let wake = Wake {
                settled: &settled,
                nudged: &nudged,
                watches: &mut watches,
            };
            wait_for_work(messaging, &current, wake).await?;
            continue;
        }
        for one in taken {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            tokio::spawn(deliver(
                background.clone(),
                current.clone(),
                one,
                permit,
                settled.clone(),
            ));
        }
    }
}

/// What ends a worker's wait.
struct Wake<'a> {
    /// A delivery of this worker was settled (perhaps to be retried soon).
    settled: &'a Notify,
    /// Dead letters were redriven.
    nudged: &'a Notify,
    /// The partitions' high-water offsets.
    watches: &'a mut Vec<tokio::sync::watch::Receiver<u64>>,
}

/// Waits for a new message, a settled delivery of this worker, a redrive, or the next
/// retry that is due (rereading the subscription at least every [`RELOAD`]); without
/// holding the service open while it waits.
async fn wait_for_work(
    messaging: Messaging,
    sub: &SubscriptionRow,
    wake: Wake<'_>,
) -> Result<(), ApiError> {
    let next_due: Option<i64> = sqlx::query(
        "SELECT MIN(visible_at) AS due FROM subscription_messages WHERE subscription_id = $1 \
         AND state < 2",
    )
    .bind(&sub.id)
    .fetch_one(messaging.shared.store().pool())
    .await?
    .try_get("due")?;
    let wait = next_due.map_or(RELOAD, |due| {
        Duration::from_millis((due - now_millis()).clamp(0, RELOAD.as_millis() as i64) as u64)
    });
    drop(messaging);
    if wake.watches.is_empty() {
        tokio::time::sleep(wait).await;
        return Ok(());
    }
    let changed =
        futures::future::select_all(wake.watches.iter_mut().map(|w| Box::pin(w.changed())));
    tokio::select! {
        _ = changed => {}
        () = wake.settled.notified() => {}
        () = wake.nudged.notified() => {}
        () = tokio::time::sleep(wait) => {}
    }
    Ok(())
}

/// What came of one push request.
struct Outcome {
    status: Option<u16>,
    error: Option<String>,
    retry_after_ms: Option<i64>,
}

/// Sends one delivery and settles it by the answer.
async fn deliver(
    background: Background,
    sub: Arc<SubscriptionRow>,
    taken: Taken,
    permit: OwnedSemaphorePermit,
    settled: Arc<Notify>,
) {
    let at = now_millis();
    let started = tokio::time::Instant::now();
    let outcome = send(&background.push, &sub, &taken).await;
    let latency_ms = started.elapsed().as_millis() as i64;
    drop(permit);
    let working = background.shared.hold_open().await;
    if let (Some(messaging), Some(_working)) = (background.upgrade(), working) {
        let how = match (outcome.error.is_none(), outcome.retry_after_ms) {
            (true, _) => Settle::Ack,
            (false, Some(ms)) => Settle::Nack {
                delay_ms: Some(ms.min((sub.subscription.retry_backoff_max_seconds * 1000) as i64)),
            },
            (false, None) => Settle::Nack { delay_ms: None },
        };
        if let Err(err) = record(&messaging, &sub, &taken, at, latency_ms, &outcome).await {
            tracing::warn!(subscription = %sub.subscription.name, error = %err, "cannot log a push attempt");
        }
        let settling = settle(&messaging, &sub, std::slice::from_ref(&taken.lease_id), how);
        if let Err(err) = settling.await {
            tracing::warn!(subscription = %sub.subscription.name, error = %err, "cannot settle a push");
        }
        let usage = messaging.shared.usage();
        usage.record(&sub.project_id, "messages_delivered", 1);
        usage.record(
            &sub.project_id,
            "message_bytes_delivered",
            taken.message.value.len() as u64,
        );
    }
    settled.notify_one();
}

/// Sends the request; any answer but a 2xx is a failure.
async fn send(pusher: &Pusher, sub: &SubscriptionRow, taken: &Taken) -> Outcome {
    let failed = |error: String| Outcome {
        status: None,
        error: Some(error),
        retry_after_ms: None,
    };
    let Some(push) = &sub.subscription.push else {
        return failed("not a push subscription".into());
    };
    let url = match Url::parse(&push.endpoint) {
        Ok(url) => url,
        Err(err) => return failed(format!("bad endpoint: {err}")),
    };
    if let Err(err) = pusher.guard.check_literal(&url) {
        return failed(err);
    }
    let origin = Origin {
        project_id: &sub.project_id,
        topic: &sub.topic.topic.name,
        subscription: &sub.subscription.name,
    };
    let secret = sub.push_secret.as_ref().map_or("", |s| s.expose());
    let (headers, body) = request::build(&origin, taken, secret, now_millis() / 1000);
    // The answer must come while the lease still holds, or a 2xx could not acknowledge.
    let deadline = Duration::from_secs(sub.subscription.ack_deadline_seconds);
    let timeout = deadline
        .saturating_sub((deadline / 10).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    let sent = pusher
        .client
        .post(url)
        .headers(headers)
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return failed(format!("no answer within {timeout:?}")),
        Err(err) => return failed(describe(&err)),
    };
    let status = response.status();
    let retry_after_ms = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|seconds| seconds.max(0) * 1000);
    // Some of the body is read (and dropped) so a short answer's connection can be reused;
    // a long one is cut off rather than held in memory.
    let mut response = response;
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    Outcome {
        status: Some(status.as_u16()),
        error: (!status.is_success()).then(|| format!("the endpoint answered {status}")),
        retry_after_ms: retry_after_ms.filter(|_| !status.is_success()),
    }
}

/// A client error with its causes, which say what actually went wrong (refused, reset,
/// the guard's refusal).
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Writes an attempt to the delivery log, and now and then prunes the log to its length.
async fn record(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    taken: &Taken,
    at: i64,
    latency_ms: i64,
    outcome: &Outcome,
) -> Result<(), ApiError> {
    let pool = messaging.shared.store().pool();
    sqlx::query(
        "INSERT INTO push_attempts (subscription_id, at, partition_no, offset_no, attempt, \
         status, latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&sub.id)
    .bind(at)
    .bind(i64::from(taken.partition))
    .bind(taken.offset as i64)
    .bind(i64::from(taken.attempt))
    .bind(outcome.status.map(i64::from))
    .bind(latency_ms)
    .bind(outcome.error.as_deref())
    .execute(pool)
    .await?;
    // About one attempt in fifty prunes, which keeps the log near its length at a fiftieth
    // of the cost.
    if (taken.offset + u64::from(taken.attempt)).is_multiple_of(50) {
        sqlx::query(
            "DELETE FROM push_attempts WHERE subscription_id = $1 AND at < (SELECT at FROM \
             push_attempts WHERE subscription_id = $1 ORDER BY at DESC LIMIT 1 OFFSET $2)",
        )
        .bind(&sub.id)
        .bind(KEPT_ATTEMPTS - 1)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttemptsQuery {
    /// Most attempts to return (1 to 200, default 50).
    pub limit: Option<i64>,
}

/// The latest push attempts of a subscription, newest first: when, which message, the
/// endpoint's status, the latency and what went wrong.
#[utoipa::path(
    get,
    path = "/subscriptions/{subscription}/push-attempts",
    tag = "messaging",
    params(
        ("subscription" = String, Path, description = "Subscription name"),
        AttemptsQuery,
    ),
    responses(
        (status = 200, description = "The latest attempts", body = PushAttemptsResponse),
        (status = 404, description = "No such subscription", body = ErrorBody),
    )
)]
pub async fn list_attempts(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Query(query): Query<AttemptsQuery>,
) -> Result<Json<PushAttemptsResponse>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=KEPT_ATTEMPTS).contains(&limit) {
        return Err(ApiError::InvalidParameter(format!(
            "`limit` must be 1 to {KEPT_ATTEMPTS}"
        )));
    }
    let rows = sqlx::query(
        "SELECT at, partition_no, offset_no, attempt, status, latency_ms, error \
         FROM push_attempts WHERE subscription_id = $1 \
         ORDER BY at DESC, partition_no DESC, offset_no DESC, attempt DESC LIMIT $2",
    )
    .bind(&sub.id)
    .bind(limit)
    .fetch_all(messaging.shared.store().pool())
    .await?;
    let attempts = rows
        .iter()
        .map(|row| {
            Ok(PushAttempt {
                at: from_millis(row.try_get("at")?),
                partition: row.try_get::<i64, _>("partition_no")? as u32,
                offset: row.try_get::<i64, _>("offset_no")? as u64,
                attempt: row.try_get::<i64, _>("attempt")? as u32,
                status: row.try_get::<Option<i64>, _>("status")?.map(|s| s as u16),
                latency_ms: row.try_get::<i64, _>("latency_ms")?.max(0) as u64,
                error: row.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(PushAttemptsResponse { attempts }))
}
