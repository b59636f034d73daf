//! The pull routes: pull, ack, nack and extend. The delivery state behind them is in
//! [`crate::delivery`].

use std::time::Duration;

use axum::extract::State;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Json, Path};
use plinth_types::ErrorBody;
use plinth_types::messaging::{LeaseRequest, LeaseResponse, PullRequest, PullResponse};

use crate::delivery::{Settle, Taken, settle, take};
use crate::subscriptions::{MAX_DEADLINE_SECONDS, SubscriptionRow, authorized_subscription};
use crate::{Messaging, log_error};

/// Most messages one pull returns or one settle names, and longest a pull waits.
const MAX_PULL: usize = 1000;
const MAX_WAIT_SECONDS: u64 = 30;

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
    if sub.subscription.push.is_some() {
        return Err(ApiError::SubscriptionIsPush(sub.subscription.name));
    }
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

    // The wait ends well inside the server's request timeout, so an empty long poll is an
    // empty answer, not a 408.
    let timeout = messaging.shared.config().request_timeout;
    let wait = Duration::from_secs(wait).min(timeout.saturating_sub(Duration::from_secs(2)));
    let until = tokio::time::Instant::now() + wait;
    let mut watches = Vec::new();
    for partition in 0..sub.topic.topic.partition_count {
        let log = messaging
            .logs
            .partition(&sub.topic.id, partition)
            .await
            .map_err(log_error)?;
        watches.push(log.watch());
    }
    loop {
        let taken = take(&messaging, &sub, max).await?;
        if !taken.is_empty() || tokio::time::Instant::now() >= until {
            let bytes = taken.iter().map(|t| t.message.value.len() as u64).sum();
            let deliveries = taken
                .into_iter()
                .map(Taken::into_delivery)
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(project_id) = caller.project_id() {
                messaging.shared.usage().record(
                    project_id,
                    "messages_delivered",
                    deliveries.len() as u64,
                );
                messaging
                    .shared
                    .usage()
                    .record(project_id, "message_bytes_delivered", bytes);
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
            (changed, _, _) = changed => {
                // A closed watch: the topic was deleted under the wait.
                if changed.is_err() {
                    return Ok(Json(PullResponse { messages: Vec::new() }));
                }
            }
            () = tick => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Checks the leases of an ack, nack or extension and settles them.
async fn settled(
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
    let expired = settle(messaging, sub, leases, how).await?;
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
        settled(&messaging, &sub, &body.lease_ids, Settle::Ack).await?,
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
        settled(&messaging, &sub, &body.lease_ids, Settle::Nack { delay_ms }).await?,
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
        settled(&messaging, &sub, &body.lease_ids, Settle::Extend { by_ms }).await?,
    ))
}
