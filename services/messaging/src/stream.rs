//! The event stream of a pull subscription: Server-Sent Events, one `message` event per
//! delivery (its data the delivery as a pull returns it, its id the lease), acknowledged
//! over the normal ack, nack and extend routes.
//!
//! A stream keeps at most `max_in_flight` deliveries unsettled: it sends more as acks and
//! nacks made in this process come in, or as leases end. (An extension is not seen, so an
//! extended lease counts as in flight only until its first deadline.) Waiting streams send a
//! keep-alive comment every 15 seconds; streams end when the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use plinth_shared::ApiError;
use plinth_shared::auth::Caller;
use plinth_shared::extract::{Path, Query};
use plinth_types::ErrorBody;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::delivery::{Taken, take};
use crate::subscriptions::{SubscriptionRow, authorized_subscription};
use crate::{Background, Messaging, log_error};

/// Most deliveries one stream may keep in flight, and how many it takes at once.
const MAX_IN_FLIGHT: usize = 1000;
const BATCH: usize = 100;

/// Query of a stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Most unsettled deliveries at once (1 to 1000, default 100).
    pub max_in_flight: Option<usize>,
}

/// Streams a subscription's deliveries as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/subscriptions/{subscription}/stream",
    tag = "messaging",
    params(
        ("subscription" = String, Path, description = "Subscription name"),
        StreamQuery,
    ),
    responses(
        (status = 200, description = "`text/event-stream` of `message` events", content_type = "text/event-stream"),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 409, description = "A push subscription", body = ErrorBody),
    )
)]
pub async fn stream(
    State(messaging): State<Messaging>,
    caller: Caller,
    Path(subscription): Path<String>,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let sub = authorized_subscription(&messaging, &caller, &subscription).await?;
    if sub.subscription.push.is_some() {
        return Err(ApiError::SubscriptionIsPush(sub.subscription.name));
    }
    let max = query.max_in_flight.unwrap_or(100);
    if !(1..=MAX_IN_FLIGHT).contains(&max) {
        return Err(ApiError::InvalidParameter(format!(
            "`max_in_flight` must be 1 to {MAX_IN_FLIGHT}"
        )));
    }
    let (events, received) = mpsc::channel(16);
    let background = messaging.background();
    drop(messaging);
    tokio::spawn(async move {
        let id = sub.id.clone();
        let deliveries = background.deliveries.clone();
        let settled = deliveries.watch_settled(&id);
        if let Err(err) = feed(&background, &sub, max, settled, &events).await {
            tracing::warn!(subscription = %sub.subscription.name, error = %err, "event stream stopped");
            let _ = events
                .send(Event::default().event("error").data(err.to_string()))
                .await;
        }
        deliveries.unwatch_settled(&id);
    });
    let stream = futures::stream::unfold(received, |mut received| async move {
        let event = received.recv().await?;
        Some((Ok(event), received))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Takes and sends deliveries until the client goes, the server stops (or drops the
/// service, which the stream does not hold open while it waits), or a take fails.
async fn feed(
    background: &Background,
    sub: &SubscriptionRow,
    max: usize,
    mut settled: broadcast::Receiver<String>,
    events: &mpsc::Sender<Event>,
) -> Result<(), ApiError> {
    let lease = Duration::from_secs(sub.subscription.ack_deadline_seconds);
    let mut stopping = background.shared.stopping();
    let mut watches = Vec::new();
    {
        let Some(messaging) = background.upgrade() else {
            return Ok(());
        };
        for partition in 0..sub.topic.topic.partition_count {
            let log = messaging
                .logs
                .partition(&sub.topic.id, partition)
                .await
                .map_err(log_error)?;
            watches.push(log.watch());
        }
    }
    let mut in_flight: HashMap<String, Instant> = HashMap::new();
    loop {
        if *stopping.borrow() {
            return Ok(());
        }
        let Some(messaging) = background.upgrade() else {
            return Ok(());
        };
        loop {
            match settled.try_recv() {
                Ok(lease_id) => {
                    in_flight.remove(&lease_id);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let now = Instant::now();
        in_flight.retain(|_, until| *until > now);
        let room = max - in_flight.len().min(max);
        if room > 0 {
            let taken = take(&messaging, sub, room.min(BATCH)).await?;
            if !taken.is_empty() {
                let ready = to_events(&messaging, sub, taken, now + lease, &mut in_flight)?;
                // A client slow to read must not keep the service open, nor a shutdown
                // waiting: the rest stay leased until their leases end.
                drop(messaging);
                for event in ready {
                    tokio::select! {
                        sent = events.send(event) => {
                            if sent.is_err() {
                                return Ok(());
                            }
                        }
                        _ = stopping.changed() => return Ok(()),
                    }
                }
                continue;
            }
        }
        drop(messaging);
        // Something to do comes as a settled lease (room), a new message, a lease that ends,
        // or a retry that falls due (looked for every quarter second).
        let next_end = in_flight.values().min().copied();
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        tokio::select! {
            heard = settled.recv() => {
                if let Ok(lease_id) = heard {
                    in_flight.remove(&lease_id);
                }
            }
            (changed, _, _) = changed => {
                // A closed watch: the topic was deleted under the stream.
                if changed.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = sleep_until_or_never(next_end) => {}
            _ = stopping.changed() => {}
            () = events.closed() => return Ok(()),
        }
    }
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Turns taken deliveries into events, counts them in flight, and meters them.
fn to_events(
    messaging: &Messaging,
    sub: &SubscriptionRow,
    taken: Vec<Taken>,
    lease_end: Instant,
    in_flight: &mut HashMap<String, Instant>,
) -> Result<Vec<Event>, ApiError> {
    let count = taken.len() as u64;
    let bytes: u64 = taken.iter().map(|t| t.message.value.len() as u64).sum();
    let mut ready = Vec::with_capacity(taken.len());
    for one in taken {
        let lease_id = one.lease_id.clone();
        let event = Event::default()
            .event("message")
            .id(lease_id.clone())
            .json_data(one.into_delivery()?)
            .map_err(ApiError::internal)?;
        in_flight.insert(lease_id, lease_end);
        ready.push(event);
    }
    let usage = messaging.shared.usage();
    usage.record(&sub.project_id, "messages_delivered", count);
    usage.record(&sub.project_id, "message_bytes_delivered", bytes);
    Ok(ready)
}
