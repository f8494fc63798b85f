//! The consume loop: records into the v3 hub, offsets stored only after that.

use rdkafka::{
    ClientConfig, Message,
    consumer::{CommitMode, Consumer, StreamConsumer},
};
use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;

use super::{Kafka, Settings, context::Context, record};
use crate::hub::Position;

pub type KafkaConsumer = StreamConsumer<Context>;

/// Consumer settings for at-least-once delivery in a group of this instance's own.
pub fn config(settings: &Settings) -> ClientConfig {
    let session = settings.session_timeout.as_millis().max(1000);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", &settings.group)
        .set("client.id", &settings.group)
        .set("enable.partition.eof", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // Offsets are stored by hand once a record is in the hub.
        .set("enable.auto.offset.store", "false")
        // A new instance reads what the topic still holds, to fill its history; records
        // older than the history window are skipped by the hub.
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 3).to_string())
        .set("topic.metadata.refresh.interval.ms", "2000")
        .set("reconnect.backoff.max.ms", "2000");
    config
}

pub fn create(settings: &Settings) -> anyhow::Result<Arc<KafkaConsumer>> {
    let consumer: KafkaConsumer = config(settings).create_with_context(Context::new("consumer"))?;
    consumer.subscribe(&[&settings.topic])?;
    Ok(Arc::new(consumer))
}

pub async fn run(consumer: Arc<KafkaConsumer>, kafka: Kafka, shutdown: CancellationToken) {
    let shared = &kafka.shared;
    let settings = &shared.settings;
    let errors = super::context::Throttle::new(Duration::from_secs(10));
    let mut flood = ErrorFlood::default();
    // Next offset expected per partition; going back below it means a redelivery, or a topic
    // that was deleted and created again.
    let mut expected: HashMap<i32, i64> = HashMap::new();
    let mut check = tokio::time::interval(Duration::from_secs(2));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = check.tick() => {
                restart_recreated_partitions(&consumer, &kafka, &mut expected).await;
                continue;
            }
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                if errors.allow() {
                    tracing::warn!(error = %e, "kafka consume error (repeats are muted for 10 s)");
                }
                // Errors are queued events, one per failed connect and the like: drain them at
                // once, or the assignment queued behind an outage's errors waits its turn (a
                // pause per error once held it back ~30 s). Only a flood is slowed down.
                if flood.hit() {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                continue;
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let parsed = record::parse(message.payload(), settings.max_message);
        if expected.get(&partition).is_some_and(|&next| offset < next) {
            let position = Position::new(partition as u64, offset as u64);
            let seen = parsed
                .as_ref()
                .ok()
                .and_then(|(user, text)| shared.hub.knows(user, position, text));
            let restarted = match seen {
                Some(same) => !same,
                None => {
                    log_ends_before(&consumer, &settings.topic, partition, expected[&partition])
                        .await
                }
            };
            if restarted {
                tracing::warn!(
                    partition,
                    offset,
                    "kafka partition starts over; forgetting its old positions"
                );
                shared.hub.reset_lane(partition as u64);
            }
        }
        expected.insert(partition, offset + 1);
        match parsed {
            Ok((user, text)) => {
                let age = message
                    .timestamp()
                    .to_millis()
                    .and_then(|ts| u64::try_from(now_millis() - ts).ok())
                    .map_or(Duration::ZERO, Duration::from_millis);
                let position = Position::new(partition as u64, offset as u64);
                shared.hub.publish_at(user, text, position, age);
                shared.records.fetch_add(1, Relaxed);
            }
            Err(why) => {
                shared.skipped.fetch_add(1, Relaxed);
                tracing::warn!(partition, offset, reason = %why, "skipping bad kafka record");
            }
        }
        shared.progress.notify_waiters();
        if let Err(e) = consumer.store_offset_from_message(&message)
            && errors.allow()
        {
            tracing::warn!(error = %e, "kafka offset store failed");
        }
    }
    // A plain thread, not the blocking pool: a sync commit against a broker that just went
    // away can block for good, and the runtime would then never finish shutting down. The caller
    // bounds the wait; a commit still pending when the process exits is simply redelivered.
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("kafka-final-commit".into())
        .spawn(move || {
            let _ = done.send(consumer.commit_consumer_state(CommitMode::Sync));
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "kafka final commit not started");
        return;
    }
    match result.await {
        Ok(Ok(())) => tracing::info!("kafka offsets committed; consumer stopped"),
        Ok(Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        ))) => {
            tracing::info!("kafka consumer stopped; no new offsets to commit")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "kafka final commit failed"),
        Err(_) => tracing::warn!("kafka final commit thread ended without an answer"),
    }
}

/// A partition whose log now ends before the offset we expect next was deleted and created
/// anew (some brokers then answer fetches past the end with silence rather than an error), so
/// read it again from the start and forget its old positions.
async fn restart_recreated_partitions(
    consumer: &Arc<KafkaConsumer>,
    kafka: &Kafka,
    expected: &mut HashMap<i32, i64>,
) {
    let topic = &kafka.shared.settings.topic;
    let partitions: Vec<(i32, i64)> = expected.iter().map(|(p, o)| (*p, *o)).collect();
    for (partition, next) in partitions {
        let Some((low, high)) = watermarks(consumer, topic, partition).await else {
            continue;
        };
        if high >= next {
            continue;
        }
        tracing::warn!(
            partition,
            next,
            high,
            "kafka partition was recreated; reading it from the start"
        );
        kafka.shared.hub.reset_lane(partition as u64);
        let consumer = consumer.clone();
        let topic = topic.clone();
        let rewound = tokio::task::spawn_blocking(move || {
            // Stored too, or the next auto-commit would write the stale position back.
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(low))?;
            consumer.store_offsets(&tpl)?;
            consumer.seek(
                &topic,
                partition,
                rdkafka::Offset::Offset(low),
                Duration::from_secs(2),
            )
        })
        .await;
        match rewound {
            Ok(Ok(())) => {
                expected.insert(partition, low);
            }
            // Typically between a revoke and the next assignment. `expected` stays as it was,
            // so the next check sees the short log again and retries.
            Ok(Err(e)) => tracing::warn!(partition, error = %e, "kafka rewind failed; retrying"),
            Err(e) => tracing::warn!(partition, error = %e, "kafka rewind task failed"),
        }
    }
}

async fn watermarks(
    consumer: &Arc<KafkaConsumer>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        consumer.fetch_watermarks(&topic, partition, Duration::from_secs(2))
    })
    .await
    .ok()?
    .ok()
}

/// True when the partition's log now ends before `next`: the topic was created anew.
async fn log_ends_before(
    consumer: &Arc<KafkaConsumer>,
    topic: &str,
    partition: i32,
    next: i64,
) -> bool {
    watermarks(consumer, topic, partition)
        .await
        .is_some_and(|(_, high)| high < next)
}

/// More than [`ErrorFlood::PER_SECOND`] consume errors within a second: a client failing on
/// every poll, which would otherwise spin.
#[derive(Default)]
struct ErrorFlood {
    window: Option<std::time::Instant>,
    count: u32,
}

impl ErrorFlood {
    const PER_SECOND: u32 = 100;

    fn hit(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .window
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            self.window = Some(now);
            self.count = 0;
        }
        self.count += 1;
        self.count > Self::PER_SECOND
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_config_is_at_least_once_in_its_own_group() {
        let settings = Settings {
            brokers: "b:9092".into(),
            topic: "v3_messages".into(),
            group: "ssepush-host-3000".into(),
            timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(6),
            max_message: 65536,
        };
        let c = config(&settings);
        assert_eq!(c.get("group.id"), Some("ssepush-host-3000"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(c.get("heartbeat.interval.ms"), Some("2000"));
    }
}
