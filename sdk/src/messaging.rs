//! The messaging API: topics, publishing, partition reads, subscriptions and a consumer
//! loop, at `{base}/messaging/v1`.

use std::future::Future;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use reqwest::Method;
use url::Url;

use plinth_types::messaging::{
    BucketNotification, CreateBucketNotification, CreateSubscription, CreateTopic,
    DeadLettersResponse, Delivery, LeaseRequest, LeaseResponse, MessageRef, OutgoingMessage,
    PublishRequest, PublishResponse, Published, PullRequest, PullResponse, PushAttemptsResponse,
    ReadResponse, RedriveRequest, RedriveResponse, SeekRequest, Subscription, Topic, UpdateTopic,
};

use crate::client::Client;
use crate::error::Error;

/// How long an event stream may stay open: as long as its caller wants.
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Where a partition read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// The oldest message retention has kept.
    Start,
    /// This offset.
    Offset(u64),
    /// The first message stored at or after this time.
    Time(time::OffsetDateTime),
}

/// How [`Client::consume`] pulls and runs its handler.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerOptions {
    /// Messages asked for per pull.
    pub max_messages: usize,
    /// How long a pull waits for a first message, in seconds (at most 30).
    pub wait_seconds: u64,
    /// Handlers running at once.
    pub concurrency: usize,
    /// While a handler runs, its lease is extended to this many seconds, every half of it
    /// (or of the subscription's ack deadline, if that is shorter).
    pub lease_seconds: u64,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_messages: 10,
            wait_seconds: 20,
            concurrency: 4,
            lease_seconds: 30,
        }
    }
}

/// Topics, publishing and reads.
impl Client {
    fn messaging_url(&self, segments: &[&str]) -> Result<Url, Error> {
        self.url(
            ["messaging", "v1"]
                .into_iter()
                .chain(segments.iter().copied()),
        )
    }

    /// Creates a topic (`POST /topics`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `invalid_topic_name`, `topic_name_taken`, `invalid_field`
    /// or `quota_exceeded` when the topic is refused.
    pub async fn create_topic(&self, topic: &CreateTopic) -> Result<Topic, Error> {
        let url = self.messaging_url(&["topics"])?;
        self.send_json(self.request(Method::POST, url).json(topic))
            .await
    }

    /// Lists the project's topics, by name (`GET /topics`).
    ///
    /// # Errors
    ///
    /// Only the failures every call shares.
    pub async fn list_topics(&self) -> Result<Vec<Topic>, Error> {
        let url = self.messaging_url(&["topics"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Returns a topic with each partition's offsets (`GET /topics/{topic}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`.
    pub async fn get_topic(&self, topic: &str) -> Result<Topic, Error> {
        let url = self.messaging_url(&["topics", topic])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Changes a topic's retention (`PATCH /topics/{topic}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`.
    pub async fn update_topic(&self, topic: &str, update: &UpdateTopic) -> Result<Topic, Error> {
        let url = self.messaging_url(&["topics", topic])?;
        self.send_json(self.request(Method::PATCH, url).json(update))
            .await
    }

    /// Deletes a topic and its messages (`DELETE /topics/{topic}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        let url = self.messaging_url(&["topics", topic])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }

    /// Publishes one message; returns once it is durable.
    ///
    /// # Errors
    ///
    /// As [`Client::publish_batch`].
    pub async fn publish(&self, topic: &str, message: OutgoingMessage) -> Result<Published, Error> {
        let mut published = self.publish_batch(topic, vec![message]).await?;
        published
            .pop()
            .ok_or_else(|| Error::Config("the server answered no position".into()))
    }

    /// Publishes up to 1000 messages at once (`POST /topics/{topic}/messages`): all are
    /// stored, or (for a refused one) none. Returns each one's partition and offset, in order.
    /// A publish is not retried: a retry could store a message twice unless it carries a
    /// `message_id`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`, `invalid_message` or
    /// `message_too_large` (with the message's `index` in the details).
    pub async fn publish_batch(
        &self,
        topic: &str,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<Published>, Error> {
        let url = self.messaging_url(&["topics", topic, "messages"])?;
        let body = PublishRequest { messages };
        let answer: PublishResponse = self
            .send_json(self.request(Method::POST, url).json(&body))
            .await?;
        Ok(answer.messages)
    }

    /// Reads up to `limit` messages of one partition (replay, no subscription needed).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`, `partition_not_found` or
    /// `offset_out_of_range`.
    pub async fn read_partition(
        &self,
        topic: &str,
        partition: u32,
        from: ReadFrom,
        limit: usize,
    ) -> Result<ReadResponse, Error> {
        let partition = partition.to_string();
        let url = self.messaging_url(&["topics", topic, "partitions", &partition, "messages"])?;
        let mut query = vec![("limit", limit.to_string())];
        match from {
            ReadFrom::Start => {}
            ReadFrom::Offset(offset) => query.push(("offset", offset.to_string())),
            ReadFrom::Time(time) => query.push((
                "time",
                time.format(&time::format_description::well_known::Rfc3339)
                    .map_err(|err| Error::Config(err.to_string()))?,
            )),
        }
        self.send_json(self.request(Method::GET, url).query(&query))
            .await
    }
}

/// Subscriptions and delivery.
impl Client {
    /// Creates a subscription on a topic (`POST /subscriptions`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`, `invalid_subscription_name`,
    /// `subscription_name_taken` or `invalid_field`.
    pub async fn create_subscription(
        &self,
        subscription: &CreateSubscription,
    ) -> Result<Subscription, Error> {
        let url = self.messaging_url(&["subscriptions"])?;
        self.send_json(self.request(Method::POST, url).json(subscription))
            .await
    }

    /// Lists the project's subscriptions (`GET /subscriptions`).
    ///
    /// # Errors
    ///
    /// Only the failures every call shares.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, Error> {
        let url = self.messaging_url(&["subscriptions"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Returns a subscription's settings (`GET /subscriptions/{name}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found`.
    pub async fn get_subscription(&self, subscription: &str) -> Result<Subscription, Error> {
        let url = self.messaging_url(&["subscriptions", subscription])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Deletes a subscription and its delivery state (`DELETE /subscriptions/{name}`).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found`.
    pub async fn delete_subscription(&self, subscription: &str) -> Result<(), Error> {
        let url = self.messaging_url(&["subscriptions", subscription])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }

    /// Pulls up to `max_messages` deliveries, waiting up to `wait_seconds` for a first one.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found` or `invalid_field`.
    pub async fn pull(
        &self,
        subscription: &str,
        max_messages: usize,
        wait_seconds: u64,
    ) -> Result<Vec<Delivery>, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "pull"])?;
        let body = PullRequest {
            max_messages: Some(max_messages),
            wait_seconds: Some(wait_seconds),
        };
        let answer: PullResponse = self
            .send_json(self.request(Method::POST, url).json(&body))
            .await?;
        Ok(answer.messages)
    }

    async fn lease_call(
        &self,
        subscription: &str,
        verb: &str,
        lease_ids: Vec<String>,
        seconds: Option<u64>,
    ) -> Result<LeaseResponse, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, verb])?;
        let body = LeaseRequest { lease_ids, seconds };
        self.send_json(self.request(Method::POST, url).json(&body))
            .await
    }

    /// Acknowledges deliveries; returns the leases that no longer held.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found` or `invalid_field`.
    pub async fn ack(
        &self,
        subscription: &str,
        lease_ids: Vec<String>,
    ) -> Result<LeaseResponse, Error> {
        self.lease_call(subscription, "ack", lease_ids, None).await
    }

    /// Gives deliveries back, for redelivery after `delay_seconds` or the subscription's
    /// backoff.
    ///
    /// # Errors
    ///
    /// As [`Client::ack`].
    pub async fn nack(
        &self,
        subscription: &str,
        lease_ids: Vec<String>,
        delay_seconds: Option<u64>,
    ) -> Result<LeaseResponse, Error> {
        self.lease_call(subscription, "nack", lease_ids, delay_seconds)
            .await
    }

    /// Extends leases to `seconds` from now.
    ///
    /// # Errors
    ///
    /// As [`Client::ack`].
    pub async fn extend(
        &self,
        subscription: &str,
        lease_ids: Vec<String>,
        seconds: u64,
    ) -> Result<LeaseResponse, Error> {
        self.lease_call(subscription, "extend", lease_ids, Some(seconds))
            .await
    }

    /// Moves a subscription to a time or a partition's offset.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found`, `invalid_field`,
    /// `partition_not_found` or `offset_out_of_range`.
    pub async fn seek(&self, subscription: &str, to: &SeekRequest) -> Result<(), Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "seek"])?;
        self.send_empty(self.request(Method::POST, url).json(to))
            .await
    }

    /// Streams a subscription's deliveries as they come (the server's event stream), with at
    /// most `max_in_flight` (100 when absent) unsettled at once: settle each with
    /// [`Client::ack`], [`Client::nack`] or [`Client::extend`]. The stream ends when the
    /// server closes it (it does at shutdown); call again to go on.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found`, `subscription_is_push` or
    /// `invalid_parameter`; the stream's items fail with [`Error::Transport`] when the
    /// connection breaks and [`Error::MalformedResponse`] when the server reports an error.
    pub async fn stream(
        &self,
        subscription: &str,
        max_in_flight: Option<usize>,
    ) -> Result<impl futures::Stream<Item = Result<Delivery, Error>> + Send + 'static, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "stream"])?;
        let mut query = Vec::new();
        if let Some(max) = max_in_flight {
            query.push(("max_in_flight", max.to_string()));
        }
        // The body stays open for as long as the caller streams, past the client's
        // per-request timeout.
        let request = self
            .request(Method::GET, url)
            .query(&query)
            .timeout(STREAM_TIMEOUT);
        let response = self.send(request).await?;
        Ok(response
            .bytes_stream()
            .eventsource()
            .filter_map(|event| async move {
                match event {
                    Ok(event) if event.event == "message" => {
                        Some(serde_json::from_str::<Delivery>(&event.data).map_err(Error::Decode))
                    }
                    Ok(event) if event.event == "error" => {
                        Some(Err(Error::MalformedResponse(event.data)))
                    }
                    Ok(_) => None,
                    Err(EventStreamError::Transport(err)) => Some(Err(Error::Transport(err))),
                    Err(err) => Some(Err(Error::MalformedResponse(err.to_string()))),
                }
            }))
    }

    /// Lists a page of a subscription's dead letters (messages past their last attempt),
    /// after the `next` of the previous page.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found` or `invalid_parameter`.
    pub async fn dead_letters(
        &self,
        subscription: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<DeadLettersResponse, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "dead-letters"])?;
        let mut query = Vec::new();
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.send_json(self.request(Method::GET, url).query(&query))
            .await
    }

    /// Delivers dead letters again with fresh attempts: those named, or all of them.
    /// Returns how many are due again.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found` or `invalid_field`.
    pub async fn redrive(
        &self,
        subscription: &str,
        messages: Option<Vec<MessageRef>>,
    ) -> Result<u64, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "redrive"])?;
        let body = RedriveRequest { messages };
        let answer: RedriveResponse = self
            .send_json(self.request(Method::POST, url).json(&body))
            .await?;
        Ok(answer.redriven)
    }

    /// The latest push attempts of a push subscription, newest first.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `subscription_not_found`.
    pub async fn push_attempts(&self, subscription: &str) -> Result<PushAttemptsResponse, Error> {
        let url = self.messaging_url(&["subscriptions", subscription, "push-attempts"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Publishes a storage bucket's object events (an [`ObjectEvent`] as each message's value)
    /// to a topic.
    ///
    /// [`ObjectEvent`]: plinth_types::messaging::ObjectEvent
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `topic_not_found`, `invalid_bucket_name`, `invalid_field`
    /// or `notification_exists`.
    pub async fn create_bucket_notification(
        &self,
        notification: &CreateBucketNotification,
    ) -> Result<BucketNotification, Error> {
        let url = self.messaging_url(&["bucket-notifications"])?;
        self.send_json(self.request(Method::POST, url).json(notification))
            .await
    }

    /// Lists the project's bucket notifications.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] when the credential lacks `messaging:publish`.
    pub async fn list_bucket_notifications(&self) -> Result<Vec<BucketNotification>, Error> {
        let url = self.messaging_url(&["bucket-notifications"])?;
        self.send_json(self.request(Method::GET, url)).await
    }

    /// Stops a bucket notification.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Api`] with `notification_not_found`.
    pub async fn delete_bucket_notification(&self, id: &str) -> Result<(), Error> {
        let url = self.messaging_url(&["bucket-notifications", id])?;
        self.send_empty(self.request(Method::DELETE, url)).await
    }

    /// Runs `handler` on every message of a subscription, `concurrency` at a time: pulls,
    /// extends each lease while its handler runs, acks when it returns `Ok` and nacks (for
    /// the subscription's backoff) when it returns `Err`. Returns only when a pull fails.
    ///
    /// # Errors
    ///
    /// Returns the error of the pull that failed.
    pub async fn consume<F, Fut, E>(
        &self,
        subscription: &str,
        options: ConsumerOptions,
        handler: F,
    ) -> Result<(), Error>
    where
        F: Fn(Delivery) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let lease = options.lease_seconds.max(1);
        // The first extension must come before the lease the pull gave ends.
        let deadline = self
            .get_subscription(subscription)
            .await?
            .ack_deadline_seconds;
        let every = Duration::from_secs(lease.min(deadline).max(1)) / 2;
        loop {
            let deliveries = self
                .pull(subscription, options.max_messages, options.wait_seconds)
                .await?;
            futures::stream::iter(deliveries)
                .for_each_concurrent(options.concurrency.max(1), |delivery| async {
                    let lease_id = delivery.lease_id.clone();
                    let run = handler(delivery);
                    let keep = async {
                        loop {
                            tokio::time::sleep(every).await;
                            // A lost extension is not fatal: at worst the message comes again.
                            let _ = self
                                .extend(subscription, vec![lease_id.clone()], lease)
                                .await;
                        }
                    };
                    let outcome = tokio::select! {
                        outcome = run => outcome,
                        () = keep => unreachable!("the lease loop never ends"),
                    };
                    // A failed ack or nack leaves the message to come back after its lease.
                    let _ = match outcome {
                        Ok(()) => self.ack(subscription, vec![lease_id]).await,
                        Err(_) => self.nack(subscription, vec![lease_id], None).await,
                    };
                })
                .await;
        }
    }
}
