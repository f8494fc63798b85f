//! Producing v3 messages, and probing the broker for readiness.

use rdkafka::{
    ClientConfig,
    error::KafkaError,
    producer::{FutureProducer, FutureRecord, Producer as _},
    types::RDKafkaErrorCode,
    util::Timeout,
};
use std::{sync::Arc, time::Duration};

use super::{
    Settings,
    context::{Context, Throttle},
    record,
};
use crate::hub::Position;

/// Kafka could not take a message in time. Its text is the client's 503 reason, so it says
/// only what kind of failure it was: librdkafka's own text names brokers and internals, and
/// goes to the log instead.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("kafka is unavailable: no acknowledgement in time")]
    Timeout,
    #[error("kafka is unavailable")]
    Failed,
}

/// What `/readyz` reports, and what the log gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub connected: bool,
    /// For anyone who asks: no broker addresses, no librdkafka text.
    pub reason: String,
    /// For the log.
    pub detail: String,
}

/// How long past `--kafka-timeout` a POST waits for librdkafka's own verdict.
const REPORT_MARGIN: Duration = Duration::from_secs(2);

pub struct Producer {
    inner: Arc<FutureProducer<Context>>,
    /// Failed sends log their details at most once per period; each 503 is logged anyway.
    send_errors: Throttle,
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
            send_errors: Throttle::new(Duration::from_secs(10)),
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
            Ok(Err((e, _))) => {
                if self.send_errors.allow() {
                    tracing::warn!(
                        error = %e,
                        brokers = %settings.brokers,
                        topic = %settings.topic,
                        "kafka produce failed (repeats are muted for 10 s)"
                    );
                }
                Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                        Unavailable::Timeout
                    }
                    _ => Unavailable::Failed,
                })
            }
            Err(_) => {
                tracing::warn!(
                    timeout = ?settings.timeout,
                    "librdkafka gave no delivery report in time; the message may still be produced"
                );
                Err(Unavailable::Timeout)
            }
        }
    }

    /// Does the broker answer, and does it have the topic?
    pub async fn probe(&self, settings: &Settings) -> Probe {
        let producer = self.inner.clone();
        let topic = settings.topic.clone();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_millis(1500))
        })
        .await;
        let topic = &settings.topic;
        let (connected, reason, detail) = match result {
            Ok(Ok(metadata)) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    let reason = format!(
                        "kafka connected; topic {topic} has {} partition(s)",
                        t.partitions().len()
                    );
                    (true, reason.clone(), reason)
                }
                t => (
                    false,
                    format!("kafka: topic {topic} does not exist"),
                    format!(
                        "kafka at {} has no topic {topic} (error: {:?})",
                        settings.brokers,
                        t.and_then(|t| t.error())
                    ),
                ),
            },
            Ok(Err(e)) => (
                false,
                "kafka: unreachable".to_owned(),
                format!("kafka unreachable at {}: {e}", settings.brokers),
            ),
            Err(e) => (
                false,
                "kafka: probe failed".to_owned(),
                format!("kafka probe failed: {e}"),
            ),
        };
        Probe {
            connected,
            reason,
            detail,
        }
    }
}
