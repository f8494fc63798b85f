//! Shows tansu's fetch race without ssepush: three producers (two idempotent with
//! `linger.ms=1`, like two ssepush instances, and one batching two records at a time, like the
//! soak's), 100 records a second each (200 for the batching one), write to one partition while two consumers read it with `fetch.wait.max.ms=10`, as ssepush's consumer
//! does. Prints, per consumer, the acknowledged offsets it never received and what it received
//! around them.
//!
//! tansu 0.6's memory storage reserves a batch's offsets (raises the high watermark) before it
//! stores the batch; a fetch in between lists the partition's batches below the high
//! watermark, finds a later producer's batch but not the one still being stored, and returns
//! it, so the consumer moves past the late batch for good. On a 2-core machine a consumer
//! misses an offset every minute or two (run it for a few minutes if none shows); with
//! `FETCH_WAIT_MS=500` (librdkafka's default) misses are far rarer.
//!
//!     cargo run --release -p bench --example tansu_fetch_race -- [SECONDS]

use bench::tansu::{Broker, find_tansu};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let fetch_wait = std::env::var("FETCH_WAIT_MS").unwrap_or_else(|_| "10".into());
    let tansu = find_tansu().ok_or_else(|| anyhow::anyhow!("tansu not on PATH"))?;
    let log_dir = std::env::temp_dir().join("tansu-fetch-race");
    let broker = Broker::start(&tansu, &log_dir, "t").await?;
    let addr = broker.addr.to_string();
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut producers = Vec::new();
    for (i, (idempotent, linger)) in [(true, "1"), (true, "1"), (false, "5")]
        .into_iter()
        .enumerate()
    {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("acks", "all")
            .set("enable.idempotence", idempotent.to_string())
            .set("linger.ms", linger)
            .create()?;
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let value = format!("p{i}:{n}");
                n += 1;
                if let Ok(delivery) =
                    producer.send_result(FutureRecord::<(), _>::to("t").payload(&value))
                {
                    let acked = acked.clone();
                    tokio::spawn(async move {
                        if let Ok(Ok(d)) = delivery.await {
                            acked
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(d.offset);
                        }
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let mut consumers = Vec::new();
    for c in 0..2 {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("group.id", format!("race-{c}"))
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", &fetch_wait)
            .set("enable.partition.eof", "false")
            .create()?;
        consumer.subscribe(&["t"])?;
        consumers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            let until = end + Duration::from_secs(5);
            while Instant::now() < until {
                let next = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await;
                if let Ok(Ok(m)) = next {
                    received.push(m.offset());
                }
            }
            received
        }));
    }
    for producer in producers {
        producer.await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (c, consumer) in consumers.into_iter().enumerate() {
        let received = consumer.await?;
        let seen: BTreeSet<i64> = received.iter().copied().collect();
        let missed: Vec<i64> = acked.difference(&seen).copied().collect();
        println!(
            "consumer {c}: {} offsets acknowledged, {} received, {} never received",
            acked.len(),
            seen.len(),
            missed.len()
        );
        for m in missed.iter().take(5) {
            let i = received.iter().position(|&o| o > *m).unwrap_or(0);
            let around = &received[i.saturating_sub(4)..(i + 4).min(received.len())];
            println!("  missed {m}; received in this order around it: {around:?}");
        }
    }
    broker.stop().await;
    Ok(())
}
