//! librdkafka callbacks: its logs and errors into tracing, without flooding, and rebalances.

use crate::metrics::Metrics;
use rdkafka::statistics::Statistics;
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
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// Lets a repeating event through at most `per_period` times a period: a log line that would
/// repeat once per retry while a broker stays down, or the errors a consumer drains at once
/// before a flood of them is slowed down.
pub struct Throttle {
    period: Duration,
    per_period: u32,
    /// When the current period started, and how many were let through in it.
    window: Mutex<Option<(Instant, u32)>>,
}

impl Throttle {
    /// Once per period.
    pub const fn new(period: Duration) -> Self {
        Self::up_to(1, period)
    }

    pub const fn up_to(per_period: u32, period: Duration) -> Self {
        Self {
            period,
            per_period,
            window: Mutex::new(None),
        }
    }

    pub fn allow(&self) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match &mut *window {
            Some((start, n)) if now.duration_since(*start) < self.period => {
                *n += 1;
                *n <= self.per_period
            }
            slot => {
                *slot = Some((now, 1));
                true
            }
        }
    }
}

pub struct Context {
    role: &'static str,
    /// Where the consumer's lag per partition goes, from librdkafka's statistics.
    lag: Option<Metrics>,
    errors: Throttle,
    assignments: AtomicU64,
    /// Partitions the consumer has now.
    assigned: AtomicUsize,
    /// The last offset the broker confirmed holding for the group, per partition.
    committed: Mutex<HashMap<i32, i64>>,
}

impl Context {
    pub fn new(role: &'static str) -> Self {
        Self {
            role,
            lag: None,
            errors: Throttle::new(Duration::from_secs(10)),
            assignments: AtomicU64::new(0),
            assigned: AtomicUsize::new(0),
            committed: Mutex::default(),
        }
    }

    /// Reports the consumer's lag per partition into `metrics` (needs
    /// `statistics.interval.ms`).
    pub fn with_lag_into(mut self, metrics: Metrics) -> Self {
        self.lag = Some(metrics);
        self
    }

    /// The last offset of `partition` the broker confirmed holding for this group. A read
    /// that starts below it did not come from the broker's committed offset.
    pub fn committed(&self, partition: i32) -> Option<i64> {
        self.committed_offsets().get(&partition).copied()
    }

    /// Notes that the broker holds `offset` as the group's committed offset of `partition`.
    /// librdkafka reports no result for the loop's own commits (asynchronous, with no reply
    /// queue), so the loop asks the broker (see `consumer::note_committed`); commits librdkafka
    /// makes itself come through [`ConsumerContext::commit_callback`].
    pub fn confirm_committed(&self, partition: i32, offset: i64) {
        self.committed_offsets().insert(partition, offset);
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

    /// How many partitions the consumer has now: none before it joins its group, while a
    /// rebalance moves them, or when another process in the same group has them all.
    pub fn assigned(&self) -> usize {
        self.assigned.load(Relaxed)
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

    fn stats(&self, statistics: Statistics) {
        let Some(metrics) = &self.lag else {
            return;
        };
        for topic in statistics.topics.values() {
            // Partition -1 is librdkafka's internal "unassigned" one; -1 lag is "unknown".
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    metrics.kafka_lag(*id, partition.consumer_lag);
                }
            }
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
            self.assigned.store(0, Relaxed);
            tracing::info!(partitions = %describe(tpl), "kafka partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.assignments.fetch_add(1, Relaxed);
                self.assigned.store(tpl.count(), Relaxed);
                tracing::info!(partitions = %describe(tpl), "kafka partitions assigned")
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for e in offsets.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        self.confirm_committed(e.partition(), o);
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_through_up_to_its_count_each_period() {
        let once = Throttle::new(Duration::from_secs(3600));
        assert!(once.allow());
        assert!(!once.allow());
        let flood = Throttle::up_to(3, Duration::from_secs(3600));
        let allowed: Vec<bool> = (0..5).map(|_| flood.allow()).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        let every_time = Throttle::up_to(1, Duration::ZERO);
        assert!((0..5).all(|_| every_time.allow()));
    }
}
