//! Making, changing and deleting the Kafka topics behind Plinth topics.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{KafkaLogs, REQUEST_TIMEOUT, Retention, blocking, kafka_error, topic_name};
use crate::log::{LogError, MAX_PAYLOAD};

impl KafkaLogs {
    /// Creates a topic's Kafka topic, and waits until its partitions can be used.
    ///
    /// # Errors
    ///
    /// Returns the broker's refusal.
    pub async fn create_topic(
        &self,
        topic_id: &str,
        partitions: u32,
        retention: Retention,
    ) -> Result<(), LogError> {
        let name = topic_name(topic_id);
        let configs = retention.configs();
        let largest = (MAX_PAYLOAD + 4096).to_string();
        let mut topic = NewTopic::new(
            &name,
            partitions as i32,
            TopicReplication::Fixed(self.client.replication),
        );
        for (key, value) in &configs {
            topic = topic.set(key, value);
        }
        topic = topic.set("max.message.bytes", &largest);
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .client
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(kafka_error)?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(LogError::Backend(format!("cannot create {topic}: {code}")));
            }
        }
        // Until the cluster's metadata has the partitions, appends and reads would fail.
        let client = self.client.clone();
        blocking(move || {
            let until = Instant::now() + REQUEST_TIMEOUT;
            loop {
                let reader = client.reader()?;
                let metadata = reader
                    .fetch_metadata(Some(&name), REQUEST_TIMEOUT)
                    .map_err(kafka_error);
                client.give_back(reader);
                let ready = metadata?.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && t.partitions().len() as u32 >= partitions
                });
                if ready {
                    return Ok(());
                }
                if Instant::now() >= until {
                    return Err(LogError::Backend(format!("{name} did not appear in time")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
    }

    /// Sets a topic's retention.
    ///
    /// # Errors
    ///
    /// Returns the broker's refusal.
    pub async fn update_retention(
        &self,
        topic_id: &str,
        retention: Retention,
    ) -> Result<(), LogError> {
        let name = topic_name(topic_id);
        let configs = retention.configs();
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(&name));
        for (key, value) in &configs {
            alter = alter.set(key, value);
        }
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let altered = self.client.admin.alter_configs([&alter], &options).await;
        let results = match altered {
            // Kafka-compatible brokers without AlterConfigs (Tansu) keep the retention the
            // topic was created with; the row still records the new one.
            Err(KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)) => {
                tracing::warn!(topic = %name, "this broker cannot change topic configs; retention unchanged on Kafka");
                return Ok(());
            }
            other => other.map_err(kafka_error)?,
        };
        for result in results {
            if let Err((_, code)) = result {
                return Err(LogError::Backend(format!(
                    "cannot set the retention of {name}: {code}"
                )));
            }
        }
        Ok(())
    }

    /// Deletes a topic's Kafka topic; one already gone is no error.
    ///
    /// # Errors
    ///
    /// Returns the broker's refusal.
    pub async fn delete_topic(&self, topic_id: &str) -> Result<(), LogError> {
        let name = topic_name(topic_id);
        self.client.watches().retain(|(topic, _), _| *topic != name);
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .client
            .admin
            .delete_topics(&[&name], &options)
            .await
            .map_err(kafka_error)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((topic, code)) => {
                    return Err(LogError::Backend(format!("cannot delete {topic}: {code}")));
                }
            }
        }
        Ok(())
    }
}
