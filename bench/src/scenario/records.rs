//! What the Kafka scenarios share: a producer that sets each record's timestamp (CreateTime)
//! and counts acknowledgements instead of keeping a future per record, so a backlog of
//! millions costs no memory in the load generator; and a reading of one `/metrics` value.

use crate::http::metric;
use anyhow::{Context as _, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::ThreadedProducer;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: the clock of record timestamps.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Microseconds since the Unix epoch: the clock shared by the load generator's processes.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Acknowledgements counted by librdkafka's delivery callback.
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.0.ok
        } else {
            &self.0.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A producer of unkeyed records to one topic.
pub struct Producer {
    inner: ThreadedProducer<Counting>,
    acks: Arc<Acks>,
    topic: String,
    sent: u64,
}

impl Producer {
    /// Batching for a backlog: large batches, a few ms of linger. One request in flight at a
    /// time, so tansu stores the batches in order (see `examples/tansu_fetch_race.rs`).
    pub fn backlog(broker: SocketAddr, topic: &str) -> Result<Self> {
        Self::new(
            broker,
            topic,
            &[
                ("linger.ms", "20"),
                ("batch.num.messages", "100000"),
                ("batch.size", "4000000"),
                ("queue.buffering.max.messages", "1000000"),
                ("queue.buffering.max.kbytes", "1048576"),
            ],
        )
    }

    /// For records at a steady rate: a short linger.
    pub fn steady(broker: SocketAddr, topic: &str) -> Result<Self> {
        Self::new(
            broker,
            topic,
            &[
                ("linger.ms", "2"),
                ("batch.num.messages", "10000"),
                ("queue.buffering.max.messages", "1000000"),
                ("socket.nagle.disable", "true"),
            ],
        )
    }

    fn new(broker: SocketAddr, topic: &str, tuning: &[(&str, &str)]) -> Result<Self> {
        let acks = Arc::new(Acks::default());
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", broker.to_string())
            .set("message.timeout.ms", "60000")
            .set("max.in.flight.requests.per.connection", "1");
        for (key, value) in tuning {
            config.set(*key, *value);
        }
        let inner = config
            .create_with_context(Counting(acks.clone()))
            .context("create producer")?;
        Ok(Self {
            inner,
            acks,
            topic: topic.to_owned(),
            sent: 0,
        })
    }

    /// Hands one record to librdkafka, stamped `timestamp_ms` (CreateTime) when given, waiting
    /// while its queue is full.
    pub async fn send(&mut self, value: &[u8], timestamp_ms: Option<i64>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut record = BaseRecord::<(), [u8]>::to(&self.topic).payload(value);
            if let Some(ts) = timestamp_ms {
                record = record.timestamp(ts);
            }
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    ensure!(
                        Instant::now() < deadline,
                        "producer queue stayed full for 120 s"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, _)) => bail!("produce: {err}"),
            }
        }
    }

    /// Records handed over so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits until every record sent has been acknowledged or has failed (up to `max`);
    /// returns how many the broker acknowledged.
    pub async fn flush(&self, max: Duration) -> Result<u64> {
        let deadline = Instant::now() + max;
        loop {
            let ok = self.acks.ok.load(Ordering::Relaxed);
            let failed = self.acks.failed.load(Ordering::Relaxed);
            if ok + failed >= self.sent {
                return Ok(ok);
            }
            ensure!(
                Instant::now() < deadline,
                "{} of {} records unacknowledged after {max:?}",
                self.sent - ok - failed,
                self.sent
            );
            self.inner.poll(Duration::ZERO);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Records acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acks.ok.load(Ordering::Relaxed)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let _ = self.inner.flush(Duration::from_secs(1));
    }
}

/// Kafka records the server has read and kept (`ssepush_kafka_records_total`).
pub const RECORDS_READ: &str = "ssepush_kafka_records_total";

/// Waits until `name` at `addr` reaches `target`, polling every `every`; gives up after
/// `stall` without progress or `max` in all. Returns the last value read.
pub async fn wait_for_metric(
    addr: SocketAddr,
    name: &str,
    target: f64,
    every: Duration,
    stall: Duration,
    max: Duration,
) -> f64 {
    let start = Instant::now();
    let (mut last, mut last_change) = (f64::NAN, Instant::now());
    loop {
        let now = metric(addr, name).await.unwrap_or(f64::NAN);
        if now >= target {
            return now;
        }
        if now != last && !now.is_nan() {
            last = now;
            last_change = Instant::now();
        }
        if last_change.elapsed() > stall || start.elapsed() > max {
            return last;
        }
        tokio::time::sleep(every).await;
    }
}

/// Produces one record for `user` every second until the server has read at least
/// `target` records (its consumer is assigned and live), for up to `max`.
pub async fn probe_consumer(
    producer: &mut Producer,
    server: SocketAddr,
    user: &str,
    target: f64,
    max: Duration,
) -> Result<()> {
    let deadline = Instant::now() + max;
    loop {
        producer
            .send(format!("{user}:probe").as_bytes(), None)
            .await?;
        producer.flush(Duration::from_secs(10)).await?;
        let wait_until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < wait_until {
            if metric(server, RECORDS_READ).await.unwrap_or(0.0) >= target {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ensure!(
            Instant::now() < deadline,
            "the server's consumer read no probe record within {max:?}"
        );
    }
}
