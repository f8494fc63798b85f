//! librdkafka callbacks: its logs and errors into tracing, without flooding, and rebalances.

use rdkafka::{
    ClientContext,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, ConsumerContext, Rebalance},
    error::{KafkaError, KafkaResult},
    topic_partition_list::TopicPartitionList,
};
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// Lets a repeating message through at most once per period, so a broker that stays down is
/// reported clearly instead of once per retry.
pub struct Throttle {
    period: Duration,
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            last: Mutex::new(None),
        }
    }

    pub fn allow(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.period) {
            return false;
        }
        *last = Some(now);
        true
    }
}

pub struct Context {
    role: &'static str,
    errors: Throttle,
    assignments: AtomicU64,
    /// The last offset the broker confirmed committing, per partition.
    committed: Mutex<HashMap<i32, i64>>,
}

impl Context {
    pub fn new(role: &'static str) -> Self {
        Self {
            role,
            errors: Throttle::new(Duration::from_secs(10)),
            assignments: AtomicU64::new(0),
            committed: Mutex::default(),
        }
    }

    /// The last offset of `partition` the broker confirmed committing for this group. A read
    /// that starts below it did not come from the broker's committed offset.
    pub fn committed(&self, partition: i32) -> Option<i64> {
        self.committed_offsets().get(&partition).copied()
    }

    /// Forgets `partition`'s committed offset: its topic was created anew.
    pub fn forget_committed(&self, partition: i32) {
        self.committed_offsets().remove(&partition);
    }

    fn committed_offsets(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        self.committed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many partition assignments the consumer has had: a record read under a newer one
    /// than the last may be a redelivery from the committed offset.
    pub fn assignments(&self) -> u64 {
        self.assignments.load(Relaxed)
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.errors.allow() {
                    tracing::warn!(client = self.role, facility, "librdkafka: {message}");
                }
            }
            _ => tracing::debug!(client = self.role, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.errors.allow() {
            tracing::warn!(client = self.role, %error, "kafka: {reason} (repeats are muted for 10 s)");
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            tracing::info!(partitions = %describe(tpl), "kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.assignments.fetch_add(1, Relaxed);
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned")
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let mut committed = self.committed_offsets();
                for e in offsets.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        committed.insert(e.partition(), o);
                    }
                }
                drop(committed);
                tracing::debug!(offsets = %describe(offsets), "kafka offsets committed")
            }
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if self.errors.allow() {
                    tracing::warn!(error = %e, "kafka offset commit failed");
                }
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(",")
}
