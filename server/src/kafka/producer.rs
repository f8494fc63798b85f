//! Producing v3 messages, and probing the broker for readiness.

use rdkafka::{
    ClientConfig,
    error::KafkaError,
    producer::{FutureProducer, FutureRecord, Producer as _},
    types::RDKafkaErrorCode,
    util::Timeout,
};
use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

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
    /// The topic's partition count, when connected.
    pub partitions: Option<usize>,
}

/// How long past `--kafka-timeout` a POST waits for librdkafka's own verdict.
const REPORT_MARGIN: Duration = Duration::from_secs(2);

/// A producer that has delivered nothing for this many `--kafka-timeout`s while the broker
/// answers is taken to be stuck.
const STUCK_AFTER: u32 = 3;

pub struct Producer {
    /// Replaced when it is stuck: an idempotent producer that the broker no longer knows (a
    /// broker that lost its state, a fenced producer) can fail every send from then on.
    inner: RwLock<Arc<Live>>,
    /// Failed sends log their details at most once per period; each 503 is logged anyway.
    send_errors: Throttle,
    /// Where the metadata probe runs.
    calls: super::calls::Calls,
    /// A failed send's probe is under way.
    probing: AtomicBool,
}

/// One librdkafka producer and what it has achieved.
struct Live {
    producer: FutureProducer<Context>,
    created: Instant,
    /// When a send last succeeded, as milliseconds after `created`; 0 for never.
    last_ok_ms: AtomicU64,
}

impl Live {
    fn since_ok(&self) -> Duration {
        let ok = Duration::from_millis(self.last_ok_ms.load(Relaxed));
        self.created.elapsed().saturating_sub(ok)
    }
}

impl Producer {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            inner: RwLock::new(Arc::new(Self::create(settings)?)),
            send_errors: Throttle::new(Duration::from_secs(10)),
            calls: super::calls::Calls::start("kafka-probe")?,
            probing: AtomicBool::new(false),
        })
    }

    fn create(settings: &Settings) -> anyhow::Result<Live> {
        let producer = ClientConfig::new()
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
        Ok(Live {
            producer,
            created: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Arc<Live> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a failed send: puts a new producer in place of `failed` (once, whoever gets here
    /// first) if librdkafka calls it fatally broken, or if it has not delivered anything for
    /// [`STUCK_AFTER`] timeouts although the broker answers metadata requests (asked only then:
    /// a probe is a metadata request).
    async fn replace_if_stuck(&self, failed: &Arc<Live>, settings: &Settings) {
        let stuck_for = settings.timeout * STUCK_AFTER;
        let why = if let Some((code, reason)) = failed.producer.client().fatal_error() {
            format!("fatal error {code:?}: {reason}")
        } else if failed.since_ok() >= stuck_for && self.probe_for_failure(settings).await {
            format!(
                "no delivery for {} while the broker answers",
                humantime::format_duration(stuck_for)
            )
        } else {
            return;
        };
        let mut slot = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&slot, failed) {
            return;
        }
        match Self::create(settings) {
            Ok(fresh) => {
                tracing::warn!(%why, "kafka producer replaced by a new one");
                *slot = Arc::new(fresh);
            }
            Err(e) => {
                tracing::warn!(%why, error = %e, "kafka producer is stuck and could not be replaced");
            }
        }
    }

    /// Whether the broker answers, asked for a failed send unless another one's probe is under
    /// way (then `false`: that one decides). Probes run in turn on one thread, each waiting up
    /// to its timeout while the broker is down, so concurrent failures must not each queue one.
    async fn probe_for_failure(&self, settings: &Settings) -> bool {
        struct Probing<'a>(&'a AtomicBool);
        impl Drop for Probing<'_> {
            fn drop(&mut self) {
                self.0.store(false, Relaxed);
            }
        }
        if self.probing.swap(true, Relaxed) {
            return false;
        }
        // Cleared however this ends, a POST dropped mid-probe included.
        let _probing = Probing(&self.probing);
        self.probe(settings).await.connected
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
        let live = self.current();
        let send = live.producer.send(record, Timeout::After(settings.timeout));
        // librdkafka itself fails the message after `message.timeout.ms`, and only that answer
        // is final: a message abandoned earlier could still be produced after the 503 once the
        // broker is back. Its timeouts are checked once a second, hence the margin.
        let sent = tokio::time::timeout(settings.timeout + REPORT_MARGIN, send).await;
        if matches!(sent, Ok(Ok(_))) {
            let ms = u64::try_from(live.created.elapsed().as_millis()).unwrap_or(u64::MAX);
            live.last_ok_ms.store(ms.max(1), Relaxed);
        } else {
            self.replace_if_stuck(&live, settings).await;
        }
        match sent {
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
        let live = self.current();
        let topic = settings.topic.clone();
        let result = self
            .calls
            .run(move || {
                live.producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_millis(1500))
            })
            .await;
        let topic = &settings.topic;
        let mut partitions = None;
        let (connected, reason, detail) = match result {
            Ok(Ok(metadata)) => match metadata.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    partitions = Some(t.partitions().len());
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
            partitions,
        }
    }
}
