//! Producing v3 messages, and probing the broker for readiness.

use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord, Producer as _},
    util::Timeout,
};
use std::{sync::Arc, time::Duration};

use super::{Settings, context::Context, record};
use crate::hub::Position;

/// Kafka could not take a message in time.
#[derive(Debug, thiserror::Error)]
#[error("kafka is unavailable: {0}")]
pub struct Unavailable(pub String);

/// How long past `--kafka-timeout` a POST waits for librdkafka's own verdict.
const REPORT_MARGIN: Duration = Duration::from_secs(2);

pub struct Producer {
    inner: Arc<FutureProducer<Context>>,
}

impl Producer {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let inner = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", &settings.group)
            .set("acks", "all")
            // A retried send must not become a second record with a second id.
            .set("enable.idempotence", "true")
            .set("socket.nagle.disable", "true")
            // Bounds the whole delivery, retries included, so a POST never waits longer.
            .set(
                "message.timeout.ms",
                settings.timeout.as_millis().to_string(),
            )
            .set("linger.ms", "1")
            .set("reconnect.backoff.max.ms", "2000")
            .create_with_context(Context::new("producer"))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Sends `user:text` keyed by `user` (so one user's messages share a partition and an
    /// order) and returns where Kafka stored it.
    pub async fn send(
        &self,
        settings: &Settings,
        user: &str,
        text: &str,
    ) -> Result<Position, super::Unavailable> {
        let value = record::encode(user, text);
        let record = FutureRecord::to(&settings.topic).key(user).payload(&value);
        let send = self.inner.send(record, Timeout::After(settings.timeout));
        // librdkafka itself fails the message after `message.timeout.ms`, and only that answer
        // is final: a message abandoned earlier could still be produced after the 503 once the
        // broker is back. Its timeouts are checked once a second, hence the margin.
        match tokio::time::timeout(settings.timeout + REPORT_MARGIN, send).await {
            Ok(Ok(d)) => Ok(Position::new(d.partition as u64, d.offset as u64)),
            Ok(Err((e, _))) => Err(super::Unavailable(e.to_string())),
            Err(_) => {
                tracing::warn!(
                    "librdkafka gave no delivery report in time; the message may still be produced"
                );
                Err(super::Unavailable(format!(
                    "no acknowledgement within {:?}",
                    settings.timeout
                )))
            }
        }
    }

    /// (connected, reason): does the broker answer, and does it have the topic?
    pub async fn probe(&self, settings: &Settings) -> (bool, String) {
        let producer = self.inner.clone();
        let topic = settings.topic.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_millis(1500))
        })
        .await;
        let topic = &settings.topic;
        match result {
            Ok(Ok(metadata)) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => (
                    true,
                    format!(
                        "kafka connected; topic {topic} has {} partition(s)",
                        t.partitions().len()
                    ),
                ),
                _ => (
                    false,
                    format!("kafka connected but topic {topic} does not exist"),
                ),
            },
            Ok(Err(e)) => (
                false,
                format!("kafka unreachable at {}: {e}", settings.brokers),
            ),
            Err(e) => (false, format!("kafka probe failed: {e}")),
        }
    }
}
