//! `plinth topic create|list|delete`, `plinth subscription create|list|delete`,
//! `plinth publish` and `plinth consume`, with a project's key or token.

use std::io::BufRead;

use anyhow::Context;
use plinth_sdk::Client;
use plinth_sdk::types::messaging::{
    CreateSubscription, CreateTopic, OutgoingMessage, PushConfig, StartPosition, Subscription,
    Topic,
};

use super::{Output, print_table, show_time};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopicCommand {
    /// Create a topic.
    Create {
        /// 1 to 128 letters, digits, `.`, `_` and `-`.
        name: String,
        /// Number of partitions (messages with one key stay in one, in order).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete messages older than this many seconds.
        #[arg(long)]
        retention_seconds: Option<u64>,
        /// Trim each partition past this many bytes.
        #[arg(long)]
        retention_bytes: Option<u64>,
    },
    /// List the project's topics.
    List,
    /// Delete a topic and every message in it.
    Delete {
        /// The topic's name.
        name: String,
    },
}

pub(super) async fn topic(
    client: &Client,
    output: Output,
    command: TopicCommand,
) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention_seconds,
            retention_bytes,
        } => {
            let request = CreateTopic {
                name,
                partitions: Some(partitions),
                retention_seconds,
                retention_bytes,
            };
            let topic = client.create_topic(&request).await?;
            output.show(&topic, |topic| {
                println!(
                    "Created topic {} ({} partitions).",
                    topic.name, topic.partition_count
                );
            })
        }
        TopicCommand::List => {
            let topics = client.list_topics().await?;
            output.show(&topics, |topics| {
                let rows: Vec<_> = topics.iter().map(topic_row).collect();
                print_table(["NAME", "PARTITIONS", "RETENTION", "CREATED"], &rows);
            })
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            output.say(format!("Deleted topic {name}."));
            Ok(())
        }
    }
}

fn topic_row(topic: &Topic) -> [String; 4] {
    let retention = match (topic.retention_seconds, topic.retention_bytes) {
        (None, None) => "-".to_owned(),
        (Some(s), None) => format!("{s}s"),
        (None, Some(b)) => format!("{b} B"),
        (Some(s), Some(b)) => format!("{s}s, {b} B"),
    };
    [
        topic.name.clone(),
        topic.partition_count.to_string(),
        retention,
        show_time(topic.created_at),
    ]
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SubscriptionCommand {
    /// Create a subscription on a topic.
    Create {
        /// 1 to 128 letters, digits, `.`, `_` and `-`.
        name: String,
        /// The topic to read.
        #[arg(long)]
        topic: String,
        /// Start at the oldest message kept instead of the next one published.
        #[arg(long)]
        earliest: bool,
        /// Seconds a delivery is leased before it is redelivered.
        #[arg(long)]
        ack_deadline: Option<u64>,
        /// Deliveries before a message goes to the dead-letter topic.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// A topic for messages past their last attempt.
        #[arg(long)]
        dead_letter_topic: Option<String>,
        /// Push each message to this URL (a signed CloudEvent) instead of waiting for pulls;
        /// the signing secret is printed once.
        #[arg(long)]
        push: Option<String>,
        /// Most pushes in flight at once (with `--push`).
        #[arg(long, requires = "push")]
        push_concurrency: Option<u32>,
    },
    /// List the project's subscriptions.
    List,
    /// Delete a subscription and its delivery state.
    Delete {
        /// The subscription's name.
        name: String,
    },
}

pub(super) async fn subscription(
    client: &Client,
    output: Output,
    command: SubscriptionCommand,
) -> anyhow::Result<()> {
    match command {
        SubscriptionCommand::Create {
            name,
            topic,
            earliest,
            ack_deadline,
            max_attempts,
            dead_letter_topic,
            push,
            push_concurrency,
        } => {
            let request = CreateSubscription {
                name,
                topic,
                start: Some(if earliest {
                    StartPosition::Earliest
                } else {
                    StartPosition::Latest
                }),
                ack_deadline_seconds: ack_deadline,
                max_delivery_attempts: max_attempts,
                dead_letter_topic,
                push: push.map(|endpoint| PushConfig {
                    endpoint,
                    max_concurrency: push_concurrency,
                }),
                ..CreateSubscription::default()
            };
            let created = client.create_subscription(&request).await?;
            output.show(&created, |s| {
                println!("Created subscription {} on {}.", s.name, s.topic);
                if let Some(push) = &s.push {
                    println!("It pushes to {}.", push.endpoint);
                    if let Some(secret) = &push.secret {
                        println!("Signing secret (shown once): {secret}");
                    }
                }
            })
        }
        SubscriptionCommand::List => {
            let subscriptions = client.list_subscriptions().await?;
            output.show(&subscriptions, |subscriptions| {
                let rows: Vec<_> = subscriptions.iter().map(subscription_row).collect();
                print_table(
                    ["NAME", "TOPIC", "ACK DEADLINE", "ATTEMPTS", "DEAD LETTERS"],
                    &rows,
                );
            })
        }
        SubscriptionCommand::Delete { name } => {
            client.delete_subscription(&name).await?;
            output.say(format!("Deleted subscription {name}."));
            Ok(())
        }
    }
}

fn subscription_row(subscription: &Subscription) -> [String; 5] {
    [
        subscription.name.clone(),
        subscription.topic.clone(),
        format!("{}s", subscription.ack_deadline_seconds),
        subscription.max_delivery_attempts.to_string(),
        subscription
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| "-".into()),
    ]
}

/// Arguments of `plinth publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// The topic.
    topic: String,
    /// The message's value as JSON (a bare word is taken as a string); without it, or with
    /// `-`, each line of stdin is one message's value, sent in batches of up to 100.
    value: Option<String>,
    /// The key: messages with one key go to one partition, in order.
    #[arg(long)]
    key: Option<String>,
}

fn outgoing(text: &str, key: Option<&String>) -> OutgoingMessage {
    // Not JSON (`hello`): sent as the string it is, as a shell user would mean.
    let value =
        serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_owned()));
    OutgoingMessage {
        value: Some(value),
        key: key.cloned(),
        ..OutgoingMessage::default()
    }
}

pub(super) async fn publish(
    client: &Client,
    output: Output,
    args: PublishArgs,
) -> anyhow::Result<()> {
    if let Some(value) = args.value.as_deref().filter(|v| *v != "-") {
        let published = client
            .publish(&args.topic, outgoing(value, args.key.as_ref()))
            .await?;
        return output.show(&published, |p| {
            println!(
                "Published to partition {} at offset {}.",
                p.partition, p.offset
            );
        });
    }
    let mut sent = Vec::new();
    let mut batch = Vec::new();
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        batch.push(outgoing(&line, args.key.as_ref()));
        if batch.len() == 100 {
            sent.extend(
                client
                    .publish_batch(&args.topic, std::mem::take(&mut batch))
                    .await?,
            );
        }
    }
    if !batch.is_empty() {
        sent.extend(client.publish_batch(&args.topic, batch).await?);
    }
    output.show(&sent, |sent| println!("Published {} messages.", sent.len()))
}

/// Arguments of `plinth consume`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    /// The subscription.
    subscription: String,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 10)]
    max: usize,
    /// Stop once a pull has waited this many seconds (at most 30) without a message.
    #[arg(long, default_value_t = 5)]
    wait: u64,
    /// Print the messages but leave them unacknowledged, to come back after their lease.
    #[arg(long)]
    no_ack: bool,
}

/// Prints each message as one line of JSON and acknowledges it (unless `--no-ack`).
pub(super) async fn consume(client: &Client, args: ConsumeArgs) -> anyhow::Result<()> {
    let mut received = 0;
    while received < args.max {
        let deliveries = client
            .pull(
                &args.subscription,
                (args.max - received).min(1000),
                args.wait.min(30),
            )
            .await?;
        if deliveries.is_empty() {
            break;
        }
        received += deliveries.len();
        for delivery in &deliveries {
            println!("{}", serde_json::to_string(&delivery.message)?);
        }
        if !args.no_ack {
            let leases = deliveries.into_iter().map(|d| d.lease_id).collect();
            client.ack(&args.subscription, leases).await?;
        }
    }
    Ok(())
}
