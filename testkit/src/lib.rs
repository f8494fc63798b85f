//! Test support for the server's tests and the browser end-to-end suite: a real
//! Kafka-protocol broker (tansu) on a free loopback port, and the server binary itself
//! ([`TestServer`]).
//!
//! [`sse_parse`] reads event streams the way the HTML spec says a browser does.

pub mod server;
pub mod sse_parse;

pub use server::{TestServer, ssepush_binary};

use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use std::{
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

pub struct Broker {
    pub addr: String,
    child: Option<Child>,
    producer: Option<FutureProducer>,
}

pub const TOPIC: &str = "v3_messages";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Broker {
    /// Starts a broker with topic `v3_messages` (one partition).
    pub async fn start() -> Self {
        let mut broker = Self::stopped(free_port());
        broker.up().await;
        broker
    }

    /// A broker that is not running yet, on `port`.
    pub fn stopped(port: u16) -> Self {
        Self {
            addr: format!("127.0.0.1:{port}"),
            child: None,
            producer: None,
        }
    }

    /// Starts the broker process and creates the topic (memory storage starts empty).
    pub async fn up(&mut self) {
        assert!(self.child.is_none());
        let url = format!("tcp://{}", self.addr);
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("tansu on PATH (scripts/install-deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&self.addr).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not open {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = Command::new("tansu")
            .args([
                "topic",
                "create",
                "--broker",
                &url,
                "--partitions",
                "1",
                TOPIC,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "tansu topic create");
    }

    pub async fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    fn producer(&mut self) -> &FutureProducer {
        self.producer.get_or_insert_with(|| {
            ClientConfig::new()
                .set("bootstrap.servers", &self.addr)
                .set("message.timeout.ms", "20000")
                .set("linger.ms", "0")
                .create()
                .unwrap()
        })
    }

    /// Produces a raw record value and returns its offset.
    pub async fn produce(&mut self, value: &[u8]) -> i64 {
        self.send(FutureRecord::to(TOPIC).payload(value)).await
    }

    /// Produces a record stamped with `timestamp_ms` (CreateTime), as a producer with a wrong
    /// clock would, and returns its offset.
    pub async fn produce_stamped(&mut self, value: &[u8], timestamp_ms: i64) -> i64 {
        let record = FutureRecord::to(TOPIC)
            .payload(value)
            .timestamp(timestamp_ms);
        self.send(record).await
    }

    async fn send(&mut self, record: FutureRecord<'_, (), [u8]>) -> i64 {
        let delivery = self
            .producer()
            .send(record, Timeout::After(Duration::from_secs(20)))
            .await;
        delivery.expect("produced").offset
    }

    /// Produces `values` the way a batching producer does (`linger.ms` = `linger_ms`, all sent
    /// before any is acknowledged), so they reach the broker as multi-record batches. Returns
    /// their offsets in order.
    pub async fn produce_batched(&self, values: &[Vec<u8>], linger_ms: u32) -> Vec<i64> {
        self.produce_batched_at(values, linger_ms, None).await
    }

    /// [`Broker::produce_batched`], every record stamped `timestamp_ms` when given.
    pub async fn produce_batched_at(
        &self,
        values: &[Vec<u8>],
        linger_ms: u32,
        timestamp_ms: Option<i64>,
    ) -> Vec<i64> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("message.timeout.ms", "20000")
            .set("linger.ms", linger_ms.to_string())
            .set("batch.num.messages", "10000")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .unwrap();
        // Every record is handed to librdkafka before any is awaited (`send` would wait for
        // each in turn, one record per batch).
        let mut deliveries = Vec::with_capacity(values.len());
        for v in values {
            let mut record: FutureRecord<'_, (), [u8]> = FutureRecord::to(TOPIC).payload(v);
            record.timestamp = timestamp_ms;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    // Its queue is full: let it send some.
                    Err((_, back)) if std::time::Instant::now() < deadline => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => panic!("produce: {e}"),
                }
            }
        }
        let mut offsets = Vec::with_capacity(values.len());
        for delivery in deliveries {
            let delivered = delivery
                .await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("produced");
            offsets.push(delivered.offset);
        }
        offsets
    }

    /// Produces `values` with kafka-python, a pure-Python client that batches its own way
    /// (`linger_ms` = `linger_ms`). Returns their offsets in order.
    pub async fn produce_with_kafka_python(&self, values: &[&str], linger_ms: u32) -> Vec<i64> {
        const SCRIPT: &str = r#"
import json, sys
from kafka import KafkaProducer
addr, linger, values = sys.argv[1], int(sys.argv[2]), json.loads(sys.stdin.read())
producer = KafkaProducer(bootstrap_servers=addr, api_version=(2, 5, 0), linger_ms=linger, acks="all")
futures = [producer.send(sys.argv[3], v.encode()) for v in values]
print(json.dumps([f.get(timeout=20).offset for f in futures]))
producer.close()
"#;
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT, &self.addr, &linger_ms.to_string(), TOPIC])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 on PATH");
        let input = serde_json::to_vec(values).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stdin, &input)
            .await
            .unwrap();
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kafka-python finished within 60 s")
            .unwrap();
        assert!(
            output.status.success(),
            "kafka-python producer failed (scripts/install-deps.sh installs kafka-python)"
        );
        serde_json::from_slice(&output.stdout).expect("offsets as JSON")
    }
}
